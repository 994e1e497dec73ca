//! The parties of a run, each a process on 127.0.0.1 started with a config written here: the
//! baseline echo server, framegate, and the proxies a user would pick instead (nginx, HAProxy,
//! Pushpin). Also what is read of them: CPU time and resident memory, children included.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for(port: u16, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited before listening: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "{name} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A running party; stopped when dropped.
pub struct Party {
    pub name: String,
    pub url: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Party {
    fn start(
        name: &str,
        path: &str,
        port: u16,
        mut command: Command,
        dir: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Party> {
        // Each party's output goes to a log in its folder (or nowhere, for the echo servers).
        let log = match &dir {
            Some(dir) => Stdio::from(std::fs::File::create(dir.path().join("party.log"))?),
            None => Stdio::null(),
        };
        let mut child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        wait_for(port, &mut child, name)?;
        Ok(Party {
            name: name.into(),
            url: format!("ws://127.0.0.1:{port}{path}"),
            child,
            dir,
        })
    }

    /// The party's own folder (config, and for framegate its filters).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The baseline: this program's own echo server, on `workers` threads (every core: `None`).
    pub fn echo_server(workers: Option<usize>) -> anyhow::Result<Party> {
        let port = free_port();
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["echo-server", "--listen", &format!("127.0.0.1:{port}")]);
        if let Some(workers) = workers {
            command.args(["--workers", &workers.to_string()]);
        }
        Party::start("baseline echo", "/", port, command, None)
    }

    /// framegate (release build) on `config` (routes and sinks), with the bundled filters, on
    /// one worker thread.
    pub fn framegate(name: &str, path: &str, config: &str) -> anyhow::Result<Party> {
        Self::framegate_with(name, path, config, &[], 1)
    }

    /// framegate on `workers` threads, with `extra` files (name, contents) beside the bundled
    /// filters.
    pub fn framegate_with(
        name: &str,
        path: &str,
        config: &str,
        extra: &[(&str, &[u8])],
        workers: usize,
    ) -> anyhow::Result<Party> {
        let dir = tempfile::tempdir()?;
        let filters = dir.path().join("filters");
        std::fs::create_dir_all(&filters)?;
        for module in ["echo", "tag", "query"] {
            let file = format!("{module}.wasm");
            std::fs::copy(repo().join("target/filters").join(&file), filters.join(&file))
                .context("run scripts/build-filters first")?;
        }
        for (file, contents) in extra {
            std::fs::write(filters.join(file), contents)?;
        }
        let port = free_port();
        let admin = free_port();
        let full = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin}\"\nmax_connections = 200000\nworkers = {workers}\n\
             [filters]\ndir = \"filters\"\n{config}"
        );
        std::fs::write(dir.path().join("framegate.toml"), full)?;
        let mut command = Command::new(repo().join("target/release/framegate"));
        command
            .args(["run", "framegate.toml"])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn");
        Party::start(name, path, port, command, Some(dir))
    }

    pub fn nginx(upstream: u16, tuned: bool) -> anyhow::Result<Party> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let d = dir.path().display();
        let buffers = if tuned {
            "proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 64k;"
        } else {
            ""
        };
        let config = format!(
            "worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 65536; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{upstream};\n\
                 proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\";\n\
                 proxy_buffering off; tcp_nodelay on; proxy_read_timeout 1h; {buffers} }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), config)?;
        let mut command = Command::new("nginx");
        command.args([
            "-c",
            &format!("{d}/nginx.conf"),
            "-p",
            &d.to_string(),
            "-e",
            &format!("{d}/error.log"),
        ]);
        let name = if tuned {
            "nginx (64k buffers)"
        } else {
            "nginx (default)"
        };
        Party::start(name, "/", port, command, Some(dir))
    }

    pub fn haproxy(upstream: u16) -> anyhow::Result<Party> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let config = format!(
            "global\n  nbthread 1\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 1h\n\
             timeout server 1h\n  timeout tunnel 1h\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  server up 127.0.0.1:{upstream}\n"
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config)?;
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&file);
        Party::start("HAProxy", "/", port, command, Some(dir))
    }

    /// Pushpin: its runner starts condure (facing clients), pushpin-proxy, pushpin-handler and zurl
    /// (facing the upstream). Every ZeroMQ socket is IPC in this folder, so runs never collide, and
    /// only condure listens on TCP (zurl's DNS resolver still opens wildcard UDP sockets: no setting).
    pub fn pushpin(upstream: u16) -> anyhow::Result<Party> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let d = dir.path().display();
        // Debian's internal.conf points pushpin-proxy at a system zurl (ipc:///var/run/zurl/...),
        // not at the zurl the runner starts with its IPC in rundir: without these three lines
        // the upstream request goes nowhere and the client's handshake is never answered.
        // Unset, the handler's push_in_* and command_spec open no TCP port at all.
        let config = format!(
            "[global]\ninclude={{libdir}}/internal.conf\nrundir={d}\n\
             [runner]\nservices=condure,zurl,pushpin-proxy,pushpin-handler\nhttp_port=127.0.0.1:{port}\n\
             logdir={d}\nlog_level=1\n\
             [proxy]\nroutesfile={d}/routes\nzurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in\n\
             zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream\n\
             zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out\n"
        );
        std::fs::write(dir.path().join("pushpin.conf"), config)?;
        std::fs::write(dir.path().join("routes"), format!("* 127.0.0.1:{upstream}\n"))?;
        let mut command = Command::new("pushpin");
        command.arg("--config").arg(dir.path().join("pushpin.conf"));
        Party::start("Pushpin", "/", port, command, Some(dir))
    }
}

/// Every process in the tree under `root`, itself included.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, r)| r)
            .split_whitespace()
            .collect();
        if let Some(ppid) = fields.get(1).and_then(|p| p.parse::<u32>().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        i += 1;
    }
    found
}

/// CPU time (user + system) of a process tree, in microseconds.
pub fn cpu_micros(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| stat_cpu_micros(&stat))
        .sum()
}

/// The CPU time (user + system) in a `/proc/.../stat` line, in microseconds.
pub fn stat_cpu_micros(stat: &str) -> u64 {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    ticks * 1_000_000 / clock_ticks()
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Resident memory of a process tree, in KiB.
pub fn rss_kib(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Whether a peer proxy's command is on this machine.
pub fn installed(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

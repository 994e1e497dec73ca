//! framegate's benchmark suite (`scripts/bench`): every party on 127.0.0.1, bounded loads,
//! each figure the median of interleaved repetitions, printed as a table next to the baseline
//! of the same run and written to target/bench/results.json.

mod echo_server;
mod live_queries;
mod load;
mod parties;
mod wasm_call;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use load::{Body, Load};
use parties::Party;

#[derive(Parser)]
#[command(about = "framegate's benchmarks: throughput, latency, CPU and memory, against the baseline and peers")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Repetitions of every case (interleaved across parties); the median is reported.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Measured seconds of each throughput run (after a half-second warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Idle connections opened for the memory case.
    #[arg(long, default_value_t = 50_000)]
    idle: usize,
    /// Run only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Inserts a second offered in the live queries case.
    #[arg(long, default_value_t = 10_000)]
    inserts: usize,
}

#[derive(Subcommand)]
enum Command {
    /// The baseline echo server (started by the suite itself).
    EchoServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Worker threads (tokio's); every core when not given.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// One load against any WebSocket echo (for profiling one party): prints msg/s and p99.
    Load {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages in flight on each connection.
        #[arg(long, default_value_t = 2500)]
        window: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// The server's process id, for its CPU per message.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Idle connections for the memory case, held until stdin closes (started by the suite itself).
    IdleClient {
        #[arg(long)]
        url: String,
        #[arg(long)]
        count: usize,
        /// The connections come from 127.0.0.N on, N this.
        #[arg(long)]
        first_source: u8,
        /// Offer permessage-deflate (and require it agreed).
        #[arg(long)]
        deflate: bool,
    },
}

/// One party's figures in one case.
#[derive(Debug, Clone, Serialize)]
struct Row {
    case: String,
    party: String,
    /// The headline: CPU time of the process under test per answered message.
    cpu_us_per_message: f64,
    /// CPU per message against the baseline of the same case and run (lower is cheaper).
    cpu_ratio: f64,
    messages_per_s: f64,
    /// Messages per second against the baseline of the same case and run.
    ratio: f64,
    mb_per_s: f64,
    /// Bytes on the wire per message, both ways, as the client wrote and read them.
    wire_bytes_per_message: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// The load generator's share of its one core: near 1, the client may have set the rate.
    client_load: f64,
    client_bound: bool,
    lost: u64,
}

/// One repetition's figures for one party.
struct Sample {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu: f64,
    wire: f64,
    client_load: f64,
    client_bound: bool,
    lost: u64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

const ECHO: &str = "[routes.echo]\npath = \"/echo\"\nfilters = [{ module = \"echo\" }]\n\
    [routes.echo3]\npath = \"/echo3\"\n\
    filters = [{ module = \"tag\", config = { prefix = \"\" } }, { module = \"tag\", config = { prefix = \"\" } }, { module = \"echo\" }]\n\
    [routes.echo_light]\npath = \"/echo-light\"\nfilters = [{ module = \"echo\" }]\n\
    deflate = { server_context_takeover = false, client_context_takeover = false }\n";

/// A route whose filter loops on every message starting with "s", to its 100 ms deadline.
const SPIN: &str = "[routes.spin]\npath = \"/spin\"\nfilters = [{ module = \"spin\", timeout_ms = 100 }]\n";

/// Keeps `/spin`'s filter spinning: one call after another, each cut off at its deadline.
async fn spin_forever(url: String) {
    loop {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            continue;
        };
        let _ = ws.send(Message::text("spin")).await;
        while let Some(Ok(_)) = ws.next().await {}
    }
}

/// Pass-through routes to the echo at `upstream` (a ws:// URL).
fn passthrough(upstream: &str) -> String {
    format!(
        "[sinks.up]\ntype = \"ws\"\nurl = \"{upstream}\"\n\
         [routes.up]\npath = \"/up\"\nsinks = [\"up\"]\n\
         [routes.up1]\npath = \"/up1\"\nfilters = [{{ module = \"tag\", config = {{ prefix = \"\" }} }}]\nsinks = [\"up\"]\n\
         [routes.raw]\npath = \"/raw\"\nsinks = [\"up\"]\nrelay = \"bytes\"\n"
    )
}

/// A party as a case sees it: its name and the URL to load.
struct Target {
    name: String,
    url: String,
    pid: u32,
    /// The client offers permessage-deflate and sends compressed messages.
    deflate: bool,
}

fn targets(parties: &[(&Party, &str, &str)]) -> Vec<Target> {
    parties
        .iter()
        .map(|(party, name, path)| Target {
            name: name.to_string(),
            url: format!("{}{}", party.url.trim_end_matches('/'), path),
            pid: party.pid(),
            deflate: false,
        })
        .collect()
}

/// The same targets, each once as is and once with permessage-deflate, its name marked.
fn with_and_without_deflate(plain: Vec<Target>) -> Vec<Target> {
    plain
        .into_iter()
        .flat_map(|target| {
            let compressed = Target {
                name: format!("{}, deflate", target.name),
                url: target.url.clone(),
                deflate: true,
                ..target
            };
            [target, compressed]
        })
        .collect()
}

/// Runs `load` against every target, `repetitions` times interleaved; the first target is the baseline.
async fn case(name: &str, targets: &[Target], load: &Load, repetitions: usize) -> anyhow::Result<Vec<Row>> {
    let mut samples: BTreeMap<usize, Vec<Sample>> = BTreeMap::new();
    for _ in 0..repetitions {
        for (i, target) in targets.iter().enumerate() {
            let load = Load {
                url: target.url.clone(),
                server_pid: Some(target.pid),
                deflate: target.deflate,
                ..load.clone()
            };
            let outcome = load::run(&load)
                .await
                .with_context(|| format!("{name}: {}", target.name))?;
            let rate = outcome.rate();
            let quantile = |q| outcome.quantile_us(q);
            samples.entry(i).or_default().push(Sample {
                rate,
                p50: quantile(0.5),
                p99: quantile(0.99),
                p999: quantile(0.999),
                cpu: outcome.server_cpu_us.unwrap_or(0) as f64 / outcome.messages.max(1) as f64,
                wire: outcome.wire_bytes_per_message(),
                client_load: outcome.client_load(),
                client_bound: outcome.client_bound(),
                lost: outcome.lost,
            });
        }
    }
    let pick = |i: usize, f: fn(&Sample) -> f64| median(samples[&i].iter().map(f).collect());
    let (baseline, baseline_cpu) = (pick(0, |s| s.rate), pick(0, |s| s.cpu));
    let rows: Vec<Row> = targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let (rate, cpu) = (pick(i, |s| s.rate), pick(i, |s| s.cpu));
            Row {
                case: name.to_string(),
                party: target.name.clone(),
                cpu_us_per_message: cpu,
                cpu_ratio: cpu / baseline_cpu,
                messages_per_s: rate,
                // Both ways: each message goes to the server and comes back.
                mb_per_s: rate * load.size as f64 * 2.0 / 1e6,
                wire_bytes_per_message: pick(i, |s| s.wire),
                p50_us: pick(i, |s| s.p50),
                p99_us: pick(i, |s| s.p99),
                p999_us: pick(i, |s| s.p999),
                ratio: rate / baseline,
                client_load: pick(i, |s| s.client_load),
                // Any repetition bound by its client puts the row in doubt.
                client_bound: samples[&i].iter().any(|s| s.client_bound),
                lost: samples[&i].iter().map(|s| s.lost).sum(),
            }
        })
        .collect();
    for row in &rows {
        print_row(row);
    }
    Ok(rows)
}

fn print_header() {
    println!(
        "{:<34} {:<46} {:>9} {:>7} {:>11} {:>7} {:>8} {:>9} {:>9} {:>7}",
        "case", "party", "cpu us/m", "ratio", "msg/s", "ratio", "wire B/m", "p50 us", "p99 us", "client"
    );
}

fn print_row(row: &Row) {
    println!(
        "{:<34} {:<46} {:>9.3} {:>6.2}x {:>11.0} {:>6.2}x {:>8.0} {:>9.1} {:>9.1} {:>6.0}%{}",
        row.case,
        row.party,
        row.cpu_us_per_message,
        row.cpu_ratio,
        row.messages_per_s,
        row.ratio,
        row.wire_bytes_per_message,
        row.p50_us,
        row.p99_us,
        row.client_load * 100.0,
        if row.client_bound {
            "  CLIENT-BOUND: the rate says nothing"
        } else {
            ""
        }
    );
}

#[derive(Serialize, Default)]
struct Report {
    machine: String,
    throughput: Vec<Row>,
    idle: Vec<idle::Idle>,
    hot_swap: Option<hot_swap::HotSwap>,
    wasm_call_ns: Vec<wasm_call::CallCost>,
    live_queries: Vec<live_queries::LiveQueries>,
}

mod idle;

mod hot_swap;

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn wanted(only: &Option<String>, name: &str) -> bool {
    only.as_deref().is_none_or(|o| name.contains(o))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::EchoServer { listen, workers }) => return echo_server::run(*listen, *workers),
        Some(Command::IdleClient {
            url,
            count,
            first_source,
            deflate,
        }) => return idle::hold(url, *count, *first_source, *deflate).await,
        Some(Command::Load {
            url,
            connections,
            size,
            window,
            seconds,
            pid,
        }) => {
            let load = Load {
                url: url.clone(),
                server_pid: *pid,
                ..Load::new(
                    *connections,
                    *size,
                    *window,
                    Duration::from_millis(500),
                    Duration::from_secs_f64(*seconds),
                )
            };
            let outcome = load::run(&load).await?;
            let server = outcome
                .server_cpu_us
                .map(|cpu| format!(", server {:.3} us CPU/msg", cpu as f64 / outcome.messages.max(1) as f64))
                .unwrap_or_default();
            println!(
                "{url}: {:.0} msg/s, p99 {:.1} us, {} messages{server}, client {:.0}% of a core{}",
                outcome.rate(),
                outcome.quantile_us(0.99),
                outcome.messages,
                outcome.client_load() * 100.0,
                if outcome.client_bound() { " (client-bound)" } else { "" }
            );
            return Ok(());
        }
        None => {}
    }
    let mut report = Report {
        machine: machine(),
        ..Report::default()
    };
    println!("machine: {}\n", report.machine);
    let measure = Duration::from_secs_f64(cli.seconds);
    let warmup = Duration::from_millis(500);

    // The baseline on one worker thread, as framegate: throughputs compare core for core (the
    // scaling rows compare every core).
    let baseline = Party::echo_server(Some(1))?;
    let framegate = Party::framegate("framegate", "/", ECHO)?;
    let upstream = Party::echo_server(None)?;
    let upstream_port: u16 = upstream.url.trim_end_matches('/').rsplit(':').next().unwrap().parse()?;
    let proxy = Party::framegate("framegate pass-through", "/", &passthrough(&upstream.url))?;
    let mut peers = Vec::new();
    for (command, start) in [
        (
            "nginx",
            (|p| Party::nginx(p, false)) as fn(u16) -> anyhow::Result<Party>,
        ),
        ("nginx", |p| Party::nginx(p, true)),
        ("haproxy", Party::haproxy),
        ("pushpin", Party::pushpin),
    ] {
        if !parties::installed(command) {
            println!("({command} is not installed: left out; scripts/bench installs it)");
            continue;
        }
        match start(upstream_port) {
            Ok(peer) => peers.push(peer),
            Err(e) => println!("({command} did not start: {e:#}; left out)"),
        }
    }

    let echo_targets = targets(&[
        (&baseline, "baseline echo", ""),
        (&framegate, "framegate /echo (1 filter)", "/echo"),
        (&framegate, "framegate (3 filters)", "/echo3"),
    ]);
    let mut pass: Vec<(&Party, &str, &str)> = vec![
        (&upstream, "upstream echo, direct", ""),
        (&proxy, "framegate byte relay", "/raw"),
        (&proxy, "framegate ws sink", "/up"),
        (&proxy, "framegate ws sink+filter", "/up1"),
    ];
    for peer in &peers {
        pass.push((peer, &peer.name, ""));
    }
    let pass_targets = targets(&pass);

    print_header();
    for size in [100usize, 4096] {
        for connections in [1usize, 16, 256] {
            let load = Load::new(connections, size, Load::window_for(connections, size), warmup, measure);
            for (group, targets) in [("echo", &echo_targets), ("pass-through", &pass_targets)] {
                let name = format!("{group} {size}B x{connections}");
                if wanted(&cli.only, &name) {
                    report
                        .throughput
                        .extend(case(&name, targets, &load, cli.repetitions).await?);
                }
            }
        }
    }
    // permessage-deflate at 4 KiB of JSON: what compression costs and saves, beside the same
    // messages uncompressed. Relayed routes pass compressed frames in place, so their upstream
    // must compress: framegate's own /echo.
    let deflate_load = Load {
        body: Body::Json,
        ..Load::new(16, 4096, 64, warmup, measure)
    };
    let deflate_echo = "deflate /echo JSON 4096B x16";
    if wanted(&cli.only, deflate_echo) {
        // The baseline echo speaks no deflate: it is the first row, uncompressed.
        let mut echo = targets(&[(&baseline, "baseline echo", "")]);
        echo.extend(with_and_without_deflate(targets(&[
            (&framegate, "framegate /echo", "/echo"),
            (&framegate, "framegate /echo, no context takeover", "/echo-light"),
        ])));
        report
            .throughput
            .extend(case(deflate_echo, &echo, &deflate_load, cli.repetitions).await?);
    }
    let deflate_pass = "deflate pass-through JSON 4096B x16";
    if wanted(&cli.only, deflate_pass) {
        let compressing = format!("{}echo", framegate.url);
        let relays = Party::framegate("framegate pass-through", "/", &passthrough(&compressing))?;
        let pass = with_and_without_deflate(targets(&[
            (&framegate, "upstream framegate /echo, direct", "/echo"),
            (&relays, "framegate frame relay", "/up"),
            (&relays, "framegate byte relay", "/raw"),
        ]));
        report
            .throughput
            .extend(case(deflate_pass, &pass, &deflate_load, cli.repetitions).await?);
    }

    let ping_pong = Load::new(1, 100, 1, warmup, measure);
    for (group, targets) in [("echo", &echo_targets), ("pass-through", &pass_targets)] {
        let name = format!("{group} ping-pong 100B");
        if wanted(&cli.only, &name) {
            report
                .throughput
                .extend(case(&name, targets, &ping_pong, cli.repetitions).await?);
        }
    }
    drop(peers);
    drop(proxy);
    drop(upstream);

    // Across cores: /echo on 1 worker, then on 2 and on every core (one row when they agree),
    // against the baseline echo on one worker and on every core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for size in [100usize, 4096] {
        let name = format!("scaling /echo {size}B x16");
        if wanted(&cli.only, &name) {
            let mut parties = vec![];
            for workers in std::collections::BTreeSet::from([1, 2, cores]) {
                let party_name = format!(
                    "framegate /echo, {workers} worker{}",
                    if workers == 1 { "" } else { "s" }
                );
                parties.push(Party::framegate_with(&party_name, "/", ECHO, &[], workers)?);
            }
            let everywhere = Party::echo_server(None)?;
            let mut scaling = targets(&[
                (&baseline, "baseline echo", ""),
                (&everywhere, "baseline echo, every core", ""),
            ]);
            for party in &parties {
                scaling.extend(targets(&[(party, &party.name, "/echo")]));
            }
            let load = Load::new(16, size, Load::window_for(16, size), warmup, measure);
            report
                .throughput
                .extend(case(&name, &scaling, &load, cli.repetitions).await?);
        }
    }

    let runaway_case = "echo ping-pong 100B, a filter spinning on another route";
    if wanted(&cli.only, runaway_case) {
        let runaway = Party::framegate_with(
            "framegate, /spin's filter spinning",
            "/",
            &format!("{ECHO}{SPIN}"),
            &[("spin.wat", include_bytes!("../../tests/wat/spin_on_s.wat"))],
            1,
        )?;
        let spinning = tokio::spawn(spin_forever(format!("{}spin", runaway.url)));
        let targets = targets(&[
            (&framegate, "framegate /echo", "/echo"),
            (&runaway, "framegate /echo, /spin spinning", "/echo"),
        ]);
        report
            .throughput
            .extend(case(runaway_case, &targets, &ping_pong, cli.repetitions).await?);
        spinning.abort();
    }

    if wanted(&cli.only, "hot swap") {
        report.hot_swap = Some(hot_swap::run(&framegate, measure * 3).await?);
    }
    if wanted(&cli.only, "live queries") {
        let shared = Party::framegate("framegate live queries", "/", &live_queries::routes(true))?;
        let alone = Party::framegate(
            "framegate live queries, each connection alone",
            "/",
            &live_queries::routes(false),
        )?;
        live_queries::print_header();
        let layouts = [(&shared, 100), (&shared, 1_000), (&alone, 100)];
        let mut runs: Vec<Vec<live_queries::LiveQueries>> = vec![Vec::new(); layouts.len()];
        for _ in 0..cli.repetitions {
            for ((party, connections), runs) in layouts.iter().zip(&mut runs) {
                runs.push(live_queries::run(party, *connections, cli.inserts, warmup, measure).await?);
            }
        }
        for runs in runs {
            let row = live_queries::median(runs);
            live_queries::print(&row);
            report.live_queries.push(row);
        }
    }
    if wanted(&cli.only, "wasm") {
        report.wasm_call_ns = wasm_call::measure()?;
    }
    if wanted(&cli.only, "idle") {
        // Shards of their own, as many as the connections need (idle.rs).
        report
            .idle
            .push(idle::run("baseline echo", || Party::echo_server(None), "/", cli.idle, false).await?);
        let shard = || Party::framegate("framegate", "/", ECHO);
        report
            .idle
            .push(idle::run("framegate /echo", shard, "/echo", cli.idle, false).await?);
        report
            .idle
            .push(idle::run("framegate /echo, deflate", shard, "/echo", cli.idle, true).await?);
    }

    let out = parties::repo().join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&report)?)?;
    println!("\nwritten: target/bench/results.json");
    Ok(())
}

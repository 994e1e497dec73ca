//! The `framegate` command: `run` the proxy on a config file or the embedded default,
//! `check` a config file, `replay` a session against filters, or write a `new-filter` project.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use framegate::config::{Config, DEFAULT_CONFIG};
use framegate::proxy::Proxy;
use framegate::replay;

#[derive(Parser)]
#[command(version, about = "A WebSocket edge proxy with hot-swappable WebAssembly filters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy; without CONFIG, on the embedded default configuration.
    Run {
        config: Option<PathBuf>,
        /// Listen here instead of `server.listen` (port 0: any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve the admin endpoints here instead of `server.admin`.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Validate a configuration file (and that its filter modules load).
    Check { config: PathBuf },
    /// Write a new filter project, DIR/NAME, that builds into NAME.wasm (guest-sdk/README.md).
    NewFilter {
        name: String,
        #[arg(long, value_enum)]
        lang: framegate::scaffold::Lang,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Replay a session file against a filter module (MODULE.wasm SESSION) or a route's chain
    /// (--config FILE --route NAME SESSION) and print the effects (docs/replay.md). A folder as
    /// SESSION replays every CASE.session.jsonl in it against its CASE.effects.jsonl.
    Replay {
        /// MODULE.wasm (or .wat) and SESSION.jsonl, or only SESSION.jsonl with --config.
        #[arg(num_args = 1..=2, required = true)]
        files: Vec<PathBuf>,
        #[arg(long, requires = "route")]
        config: Option<PathBuf>,
        #[arg(long, requires = "config")]
        route: Option<String>,
        /// Compare with these expected effects; exit 1 with the first difference.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// A field to leave out of the comparison: PATH, or KIND.PATH (emit.key, headers.x-id).
        #[arg(long)]
        mask: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(framegate::logs::MaskedStderr);
    match format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::parse(DEFAULT_CONFIG, "(embedded default config)")?,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Run { config, listen, admin } => run(config, listen, admin),
        Command::Check { config } => runtime(0).and_then(|r| r.block_on(async { check(&config) })),
        Command::NewFilter { name, lang, dir } => framegate::scaffold::new_filter(&name, lang, &dir)
            .map(|root| println!("wrote {}: ./build.sh builds {name}.wasm (README.md)", root.display()))
            .map_err(Into::into),
        Command::Replay {
            files,
            config,
            route,
            expect,
            mask,
        } => {
            let masks: Vec<_> = mask.iter().map(|m| replay::expect::Mask::parse(m)).collect();
            let result = replay_subject(&files, config.as_ref(), route.as_deref())
                .and_then(|(subject, session)| replay::cli(&subject, &session, expect.as_deref(), &masks));
            return match result {
                Ok(passed) if passed => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: `workers` threads, or one per core.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    Ok(builder.enable_all().build()?)
}

/// What `replay` runs against, and the session file (or folder of fixtures).
fn replay_subject(
    files: &[PathBuf],
    config: Option<&PathBuf>,
    route: Option<&str>,
) -> anyhow::Result<(replay::Subject, PathBuf)> {
    match (config, route, files) {
        (Some(config), Some(route), [session]) => {
            let config = load(Some(config))?;
            let settings =
                (config.routes.get(route)).ok_or_else(|| anyhow::anyhow!("no route `{route}` in {}", config.origin))?;
            let subject = replay::Subject::Route {
                dir: config.filters.dir.clone(),
                name: route.to_string(),
                route: Box::new(settings.clone()),
                sources: std::iter::once("bus".to_string())
                    .chain(config.sources.keys().cloned())
                    .collect(),
            };
            Ok((subject, session.clone()))
        }
        (None, None, [module, session]) => {
            let name = module
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| anyhow::anyhow!("{}: not a module file name", module.display()))?;
            let dir = module.parent().map_or_else(|| PathBuf::from("."), PathBuf::from);
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            let subject = replay::Subject::Module {
                dir,
                name: name.to_string(),
            };
            Ok((subject, session.clone()))
        }
        _ => anyhow::bail!("replay takes MODULE.wasm SESSION, or --config FILE --route NAME SESSION"),
    }
}

/// Loads everything `run` would (filters included), without listening.
fn check(path: &PathBuf) -> anyhow::Result<()> {
    let config = load(Some(path))?;
    Proxy::new(config, None)?;
    println!("{}: ok", path.display());
    Ok(())
}

fn run(path: Option<PathBuf>, listen: Option<SocketAddr>, admin: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut config = load(path.as_ref())?;
    config.server.listen = listen.unwrap_or(config.server.listen);
    config.server.admin = admin.or(config.server.admin);
    runtime(config.server.workers)?.block_on(serve(config, path))
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let watch = config.filters.watch;
    let proxy = Proxy::new(config, path)?;
    let bound = proxy.bind().await?;
    let _watcher = if watch {
        Some(framegate::proxy::watch::start(proxy.clone())?)
    } else {
        None
    };
    let admin = bound.admin.map_or("off".to_string(), |a| a.to_string());
    tracing::info!(
        "framegate listening ws={} admin={} filters={}",
        bound.ws,
        admin,
        proxy.host().dir().display()
    );
    wait_for_signal().await?;
    tracing::info!("shutting down");
    // A second signal (an impatient Ctrl-C) ends the drain at once.
    tokio::select! {
        () = proxy.shut_down() => {}
        signal = wait_for_signal() => {
            signal?;
            tracing::warn!("second signal: exiting without finishing the drain");
        }
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = term.recv() => {}
    }
    Ok(())
}

//! `mqttd`: the broker binary. CLI, logging, signals; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mqttd::config::Config;
use mqttd::server::{Resources, Server};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// A secure, fast MQTT 3.1.1 / 5.0 broker.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it: 127.0.0.1:1883 only, anonymous (local-only mode).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE and everything it names (password file, ACL, certificates and keys, log
    /// file), as start-up would, and exit: 0 if all is well, 1 (with file, line and problem) if
    /// not. Only binding the listeners' ports is left to the start.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        return match check_config(path) {
            Ok(()) => {
                println!("{}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mqttd: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("mqttd: {e:#}");
        return ExitCode::FAILURE;
    }
    if args.config.is_none() {
        warn!(
            "no --config given: local-only mode, listening on 127.0.0.1:1883 with anonymous access"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqttd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => {
            info!("mqttd stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            eprintln!("mqttd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration and every file it names, loaded as start-up loads them.
fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    Resources::load(&config)?;
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let server = Server::bind(config, shutdown.clone()).await?;
    let reloader = server.reloader();
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
                _ = sighup.recv() => {
                    info!("SIGHUP: reloading password file, ACL and certificates");
                    // Parsing and argon2 set-up are blocking work: keep them off the runtime threads.
                    let r = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload()).await;
                    continue;
                }
            }
            if shutdown.is_cancelled() {
                warn!("second signal: exiting at once");
                std::process::exit(130);
            }
            info!("signal received: shutting down gracefully (send again to exit at once)");
            shutdown.cancel();
        }
    });
    server.run().await;
    Ok(())
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .with_context(|| format!("log.level {:?} is not a valid filter", config.log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &config.log.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| {
                    let at = config.locate("log.file");
                    format!("{at}: log.file {}", path.display())
                })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        // Colour codes only for a terminal: piped into journald, a file or a test they are noise.
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    Ok(())
}

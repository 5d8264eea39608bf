//! `mqttd`: the broker binary. CLI, logging, signals; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mqttd::config::Config;
use mqttd::server::{Resources, Server};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// A secure, fast MQTT 3.1.1 / 5.0 broker.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it: 127.0.0.1:1883 only, anonymous (local-only mode),
    /// and the HTTP API on 127.0.0.1:18083 (skipped if that port is taken).
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Validate FILE and everything it names (password file, ACL, certificates and keys, log
    /// file), as start-up would, and exit: 0 if all is well, 1 (with file, line and problem) if
    /// not. Only binding the listeners' ports is left to the start.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print messages from the message history (`[history]`).
    ///
    /// Reads <persistence.path>/history.db, which the broker records when `[history] enabled =
    /// true`. Safe while the broker runs: the file is only read.
    History(HistoryArgs),
}

#[derive(clap::Args, Debug)]
struct HistoryArgs {
    /// Messages on topics matching this MQTT topic filter (`+` one level, `#` the rest; `#`
    /// does not match `$SYS`).
    #[arg(short, long, value_name = "FILTER", default_value = "#")]
    filter: String,
    /// From this time on: a duration ago ("30m", "1h", "7d") or an RFC 3339 time
    /// ("2025-01-31T12:00:00Z"). Default: the oldest recorded.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Up to this time (included), as --since. Default: the newest recorded.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Show at most the newest N of them (printed oldest first).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1000)]
    limit: usize,
    /// One JSON object per line, payload whole (base64 if it is not UTF-8), instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::History(history)) = &args.command {
        return match history_command(args.config.as_deref(), history) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mqttd history: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
            "no --config given: local-only mode, listening on 127.0.0.1:1883 with anonymous access, HTTP API on 127.0.0.1:18083"
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

/// `mqttd history`: the query, its output on stdout, skipped rows and a cut on stderr.
fn history_command(
    config_path: Option<&std::path::Path>,
    args: &HistoryArgs,
) -> anyhow::Result<()> {
    use mqttd::store::history::{self, Query, output, query, time};
    use std::io::Write as _;
    let config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    query::check_filter(&args.filter).map_err(|e| anyhow::anyhow!("--filter {e}"))?;
    let now = std::time::SystemTime::now();
    let parse = |arg: &Option<String>, name: &str| {
        arg.as_deref()
            .map(|t| time::parse_time(t, now))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{name} {e}"))
    };
    let (since, until) = (
        parse(&args.since, "--since")?,
        parse(&args.until, "--until")?,
    );
    anyhow::ensure!(args.limit > 0, "--limit must be at least 1");
    let db = history::db_path(&config.persistence.path);
    let conn = history::open_read_only(&db)?;
    if let Some(path) = config_path.filter(|_| !config.history.enabled) {
        eprintln!(
            "mqttd history: note: [history] is off in {}; showing what was recorded before",
            path.display()
        );
    }
    let q = Query {
        filter: args.filter.clone(),
        since,
        until,
        limit: args.limit,
        before: None,
    };
    let found = query::run(&conn, &q).with_context(|| db.display().to_string())?;
    for (id, why) in &found.skipped {
        let id = id.map_or("?".into(), |id| id.to_string());
        eprintln!("mqttd history: {}: row {id}: {why}; skipped", db.display());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = found.messages.iter().try_for_each(|m| {
        let line = if args.json {
            output::json_line(m)
        } else {
            output::text_line(m)
        };
        writeln!(out, "{line}")
    });
    match written.and_then(|()| out.flush()) {
        // `mqttd history | head`: the reader has had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing to standard output")?,
    }
    if found.more {
        eprintln!(
            "mqttd history: showing the newest {} message(s); older ones match too (--limit, --since)",
            args.limit
        );
    }
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

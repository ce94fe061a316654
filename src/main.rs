//! The `tracecheck` binary: parses the command line, owns exit codes and
//! turns library errors into messages (anyhow lives only here).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracecheck::assembler::CountingConsumer;
use tracecheck::config::Config;
use tracecheck::daemon::Daemon;

/// Exit code for bad input: config, model or trace files.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(name = "tracecheck", version, about = "Trace-based testing in production: checks every trace against models", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: OTLP in, traces assembled and checked, spans forwarded.
    Serve {
        /// Config file (YAML). Without it, the embedded defaults: loopback
        /// only, OTLP on 4317/4318, admin on 9464, no forwarding.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracecheck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // Quiet by default: tracecheck's own start/stop lines and every warning.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,tracecheck=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    match Config::load(path) {
        Ok(loaded) => {
            for name in &loaded.unset_env {
                tracing::warn!(variable = %name, "Config references an unset environment variable; it expands to an empty string.");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("tracecheck: config error: {e}");
            Err(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_path.as_ref()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let daemon = Daemon::start(config, CountingConsumer::default()).await?;
        tracing::info!(
            grpc = ?daemon.grpc_addr,
            http = ?daemon.http_addr,
            admin = %daemon.admin_addr,
            "tracecheck is running."
        );
        wait_for_signal().await?;
        tracing::info!(
            "Shutting down: completing buffered traces and draining the forwarding queue."
        );
        let stopped = daemon.shutdown().await;
        tracing::info!(
            flushed_traces = stopped.flushed_traces,
            undelivered_spans = stopped.undelivered_spans,
            "tracecheck stopped."
        );
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

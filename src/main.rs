//! The `tracecheck` binary: parses the command line, owns exit codes and
//! turns library errors into messages (anyhow lives only here).

mod demo;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

/// mimalloc instead of glibc's malloc: the daemon allocates per verdict and
/// per decoded value, and mimalloc's thread-local free lists halve that cost
/// (BENCHMARKS.md, "Profile"). The `system-allocator` feature keeps glibc's,
/// for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand, ValueEnum};
use tracecheck::config::{Config, LogEncoding, LogsConfig, DEFAULT_MODELS_DIR};
use tracecheck::daemon::{Daemon, ModelsStage};
use tracecheck::engine::{Engine, Verdict};
use tracecheck::evaluator::registry::ModelSource;

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
        /// only, OTLP on 4317/4318, admin on 9464, models from ./models, no
        /// forwarding.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The daemon on embedded defaults, with the example models and
    /// built-in bank-withdrawal traffic (some of it violating).
    Demo {
        /// Traces per second of synthetic traffic.
        #[arg(long, default_value_t = 20)]
        rate: u32,
    },
    /// Evaluate models offline on OTLP JSON trace files.
    Check {
        /// Model files or folders.
        #[arg(long, required = true, num_args = 1..)]
        models: Vec<PathBuf>,
        /// OTLP JSON files: one ExportTraceServiceRequest per line, or one
        /// object; gzip files too.
        #[arg(long, required = true, num_args = 1..)]
        traces: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Trace URL template with {trace_id}, shown with each result.
        #[arg(long)]
        trace_url: Option<String>,
    },
    /// Live tail of verdicts from a running daemon (its gRPC API on the
    /// admin port); reconnects when the daemon restarts.
    Watch {
        /// The daemon's admin URL (`https://` when it has `admin.tls`).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        server: String,
        /// PEM CA certificate(s) to trust for an `https://` server, instead
        /// of the system's (which honour SSL_CERT_FILE).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// File holding the admin bearer token (`admin.auth`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Only these model ids (repeatable).
        #[arg(long = "model")]
        models: Vec<String>,
        /// Only these verdicts (repeatable); default pass and fail.
        #[arg(long = "verdict", value_enum)]
        verdicts: Vec<watch::WatchVerdict>,
        #[arg(long, value_enum, default_value_t = watch::WatchFormat::Text)]
        format: watch::WatchFormat,
    },
    /// Writes a failing trace from a running daemon as a regression test:
    /// the trace as OTLP JSON beside the models that failed on it, in
    /// OUT/trace-TRACE_ID/ (run it with the `check` command it prints).
    Promote {
        /// The trace, 32 hex digits.
        trace_id: String,
        /// The daemon's admin URL.
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        server: String,
        /// Where to write the test's folder.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// PEM CA certificate(s) to trust for an `https://` server.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// File holding the admin bearer token (`admin.auth`).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Model files.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Tracetest-style tests and transactions.
    #[command(subcommand)]
    Test(TestCommand),
    /// Load generator and counting OTLP sink, for benchmarks and tests.
    #[command(subcommand)]
    Bench(tracecheck::bench::BenchCommand),
    /// The scale-out tier (`tier.peers`).
    #[command(subcommand)]
    Tier(TierCommand),
    /// Exit 0 if a daemon's /healthz answers 200: a container HEALTHCHECK
    /// for images without a shell or curl.
    Health {
        /// Plain-HTTP URL to GET.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
    },
}

#[derive(Subcommand)]
enum TierCommand {
    /// Tell a running daemon it is leaving its tier: it turns not ready and
    /// announces the change to its peers, then this waits `--wait` so that
    /// the balancers take it out of their rings before SIGTERM. Meant for
    /// a Kubernetes `preStop` hook (the image has no shell).
    Leave {
        /// The daemon's admin URL (`https://` when it has `admin.tls`).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        server: String,
        /// PEM CA certificate(s) to trust for an `https://` server, instead
        /// of the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// File holding the admin bearer token (`admin.auth`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How long to wait once the daemon has announced.
        #[arg(long, value_parser = tracecheck::bench::parse_duration, default_value = "5s")]
        wait: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Parse and type-check model files; print every error as file:line:col.
    Lint {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TestCommand {
    /// Run `type: Test` / `type: Transaction` (`TestSuite`) files: send each
    /// trigger, wait for its trace, check the specs. Exit 0 pass, 1 fail,
    /// 2 bad input or setup.
    Run(TestRunArgs),
}

#[derive(clap::Args)]
struct TestRunArgs {
    /// Test or transaction file (repeatable). With a transaction among
    /// them, the transactions run and the tests are their steps.
    #[arg(long, short, required = true)]
    file: Vec<PathBuf>,
    /// `type: VariableSet` (or `Environment`) file.
    #[arg(long)]
    vars: Option<PathBuf>,
    /// A running tracecheck's admin URL to take traces from. Without it an
    /// embedded receiver listens on the OTLP ports for the run.
    #[arg(long)]
    server: Option<String>,
    /// PEM CA certificate(s) to trust for an `https://` `--server`, instead
    /// of the system's (which honour SSL_CERT_FILE).
    #[arg(long, requires = "server")]
    ca_file: Option<PathBuf>,
    /// File holding the admin bearer token of `--server` (`admin.auth`).
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    /// Write JUnit XML here (one testcase per step).
    #[arg(long)]
    junit: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TestFormat::Text)]
    format: TestFormat,
    /// Per test: from the trigger to the last span a spec waits for.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    timeout: std::time::Duration,
    /// Trace context formats the http and grpc triggers send, comma-separated:
    /// w3c (traceparent), b3 (single header), b3multi (X-B3-*), jaeger
    /// (uber-trace-id), xray (X-Amzn-Trace-Id), or all. Every header names
    /// the same trace, the one the run waits for.
    #[arg(long, default_value = "w3c")]
    propagation: tracecheck::testrun::Propagation,
    /// Trace URL template with {trace_id}, shown with each step.
    #[arg(long)]
    trace_url: Option<String>,
    /// Embedded receiver: OTLP gRPC address.
    #[arg(long, default_value = "127.0.0.1:4317")]
    otlp_grpc: std::net::SocketAddr,
    /// Embedded receiver: OTLP HTTP address.
    #[arg(long, default_value = "127.0.0.1:4318")]
    otlp_http: std::net::SocketAddr,
    /// Embedded receiver: a trace is complete this long after its last span.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    idle_timeout: std::time::Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TestFormat {
    Text,
    Json,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    tracecheck::model::parse::parse_duration(s)
        .ok_or_else(|| format!("{s:?}: expected a duration such as 30s or 500ms"))
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

/// Transparent huge pages off for the daemon (what `MIMALLOC_ALLOW_THP=0`
/// does), where the kernel gives them to every large enough anonymous
/// mapping (`enabled: always`, common): the kernel zeroed a fresh 2 MiB
/// page for every region mimalloc touched again after giving part of it
/// back, 14–17 % of the daemon's samples on split traffic (BENCHMARKS.md,
/// "Profile", item 6), and resident memory sat ~10 % higher.
#[cfg(target_os = "linux")]
fn no_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::info!("could not turn transparent huge pages off ({e}); going on with them");
    }
}

fn main() -> ExitCode {
    // Every client of ours gets its TLS config from src/net/client.rs;
    // this is for any a library makes, which reqwest would make panic
    // without a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // `serve` logs as its config says, so it starts logging once that is read.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(&LogsConfig::default());
    }
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Demo { rate } => demo::run(rate),
        Command::Check {
            models,
            traces,
            format,
            trace_url,
        } => check(&models, &traces, format, trace_url.as_deref()),
        Command::Models(ModelsCommand::Lint { paths }) => Ok(lint(&paths)),
        Command::Watch {
            server,
            ca_file,
            token_file,
            models,
            verdicts,
            format,
        } => token_from(token_file.as_deref())
            .and_then(|token| watch::run(server, ca_file, token, models, verdicts, format)),
        Command::Bench(cmd) => bench(cmd),
        Command::Promote {
            trace_id,
            server,
            out,
            ca_file,
            token_file,
        } => promote(
            &trace_id,
            &server,
            &out,
            ca_file.as_deref(),
            token_file.as_deref(),
        ),
        Command::Health { url } => health(&url),
        Command::Tier(TierCommand::Leave {
            server,
            ca_file,
            token_file,
            wait,
        }) => tier_leave(&server, ca_file.as_deref(), token_file.as_deref(), wait),
        Command::Test(TestCommand::Run(args)) => test_run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracecheck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(logs: &LogsConfig) {
    use tracing_subscriber::EnvFilter;
    // Quiet by default: tracecheck's own start/stop lines and every warning.
    let level = logs.level.map_or("info", |l| l.as_str());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,tracecheck={level}")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logs.encoding {
        // One JSON object a line, for a log pipeline.
        LogEncoding::Json => fmt.json().flatten_event(true).init(),
        LogEncoding::Console => {
            // Colours only on a terminal: escape codes in a file or a log
            // collector's input make the lines hard to read and to grep.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            fmt.with_ansi(ansi).init()
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        init_logging(&LogsConfig::default());
        return Ok(Config::default());
    };
    match Config::load(path) {
        Ok(loaded) => {
            init_logging(&loaded.config.service.telemetry.logs);
            for name in &loaded.unset_env {
                tracing::warn!(variable = %name, "Config references an unset environment variable; it expands to an empty string.");
            }
            for note in &loaded.notes {
                tracing::info!("{note}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("tracecheck: config error: {e}");
            Err(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

/// The configured model paths; the default `./models` may be absent.
pub(crate) fn model_sources(config: &Config) -> Vec<ModelSource> {
    config
        .models
        .paths
        .iter()
        .map(|p| ModelSource::Path {
            optional: p == &PathBuf::from(DEFAULT_MODELS_DIR),
            path: p.clone(),
        })
        .collect()
}

fn serve(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match load_config(config_path.as_ref()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    #[cfg(target_os = "linux")]
    no_transparent_huge_pages();
    let sources = model_sources(&config);
    runtime()?.block_on(run_daemon(config, sources, None))
}

/// Work started once the daemon listens (the demo's traffic).
pub(crate) type OnStart =
    Box<dyn FnOnce(&Daemon<tracecheck::evaluator::EvaluatorPool>, Arc<ModelsStage>) + Send>;

/// Runs the daemon until SIGTERM/SIGINT; SIGHUP reloads the models.
/// `on_start` runs once the daemon listens (the demo's traffic).
pub(crate) async fn run_daemon(
    config: Config,
    sources: Vec<ModelSource>,
    on_start: Option<OnStart>,
) -> anyhow::Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    let shutdown_timeout = config.service.shutdown_timeout;
    let (daemon, models) = tracecheck::daemon::start_daemon(config, sources).await?;
    tracing::info!(
        grpc = ?daemon.grpc_addr,
        http = ?daemon.http_addr,
        admin = %daemon.admin_addr,
        models = models.initial_load.models.len(),
        refused_model_files = models.initial_load.errors.len(),
        "tracecheck is running."
    );
    if let Some(f) = on_start {
        f(&daemon, Arc::clone(&models));
    }
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading models.");
                let registry = Arc::clone(&models.registry);
                let _ = tokio::task::spawn_blocking(move || registry.reload()).await;
            }
        }
    }
    tracing::info!(
        timeout = ?shutdown_timeout,
        "Shutting down: completing buffered traces and draining the forwarding queue (a second signal exits at once)."
    );
    let metrics = Arc::clone(&daemon.metrics);
    let shutdown = daemon.shutdown();
    tokio::pin!(shutdown);
    let forced = tokio::select! {
        stopped = &mut shutdown => Ok(stopped),
        _ = tokio::time::sleep(shutdown_timeout) => Err("service.shutdown_timeout passed"),
        _ = term.recv() => Err("a second signal came"),
        _ = int.recv() => Err("a second signal came"),
    };
    let stopped = match forced {
        Ok(stopped) => stopped,
        Err(why) => {
            let (traces, spans) = (metrics.buffer_traces.get(), metrics.buffer_spans.get());
            tracing::error!(
                why,
                buffered_traces = traces,
                buffered_spans = spans,
                "Exiting before shutdown finished: traces still buffered get no verdict, spans still queued are not forwarded."
            );
            return Ok(ExitCode::from(1));
        }
    };
    tracing::info!(
        flushed_traces = stopped.flushed_traces,
        undelivered_spans = stopped.undelivered_spans,
        "tracecheck stopped."
    );
    Ok(ExitCode::SUCCESS)
}

fn print_diagnostics(diags: &[tracecheck::model::Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// `Authorization: Bearer …` from `--token-file`, if given.
fn token_from(
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<reqwest::header::HeaderValue>> {
    let Some(path) = token_file else {
        return Ok(None);
    };
    let auth = tracecheck::net::auth::AuthConfig {
        bearer_token: None,
        bearer_token_file: Some(path.to_path_buf()),
    };
    Ok(Some(
        tracecheck::net::auth::BearerToken::load(&auth, "--token-file")?.header_value(),
    ))
}

fn promote(
    trace_id: &str,
    server: &str,
    out: &std::path::Path,
    ca_file: Option<&std::path::Path>,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let id = tracecheck::ids::TraceId::parse_hex(trace_id)
        .map_err(|e| anyhow::anyhow!("trace id {trace_id:?}: {e}"))?;
    let tls = ca_file.map(|ca| tracecheck::net::tls::ClientTlsConfig {
        ca_file: Some(ca.to_owned()),
        ..Default::default()
    });
    let client = tracecheck::net::client::builder(tls.as_ref(), "--ca-file")?
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let token = token_from(token_file)?;
    let url = format!(
        "{}/api/v1/traces/{}/test.tar.gz",
        server.trim_end_matches('/'),
        id.to_hex()
    );
    let bytes = runtime()?.block_on(async {
        let mut request = client.get(&url);
        if let Some(t) = token {
            request = request.header(reqwest::header::AUTHORIZATION, t);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {}", tracecheck::net::client::error_chain(&e)))?;
        let status = resp.status();
        let limit = tracecheck::admin::promote::MAX_UNPACKED;
        if resp.content_length().is_some_and(|n| n > limit) {
            anyhow::bail!(
                "{url}: the answer is over {} MiB; not a promoted test",
                limit >> 20
            );
        }
        let body = resp.bytes().await?;
        if !status.is_success() {
            // The API's errors are {"error": "..."}.
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{url}: {status}: {why}");
        }
        Ok(body)
    })?;
    let written = tracecheck::admin::promote::unpack(&bytes, out, &id)?;
    for f in &written {
        println!("wrote {}", f.display());
    }
    let dir = out.join(tracecheck::admin::promote::folder(&id));
    println!(
        "reproduce: tracecheck check --models {} --traces {}",
        dir.join("models").display(),
        dir.join("trace.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(
    models: &[PathBuf],
    traces: &[PathBuf],
    format: Format,
    trace_url: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let models = match tracecheck::check::load_models(models) {
        Ok(m) => m,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let engine = match Engine::compile(models) {
        Ok(e) => e,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let mut spans = Vec::new();
    for t in traces {
        match tracecheck::check::read_trace_file(t) {
            Ok(rs) => spans.extend(rs),
            Err(e) => {
                eprintln!("tracecheck: {e}");
                return Ok(ExitCode::from(EXIT_BAD_INPUT));
            }
        }
    }
    let results = tracecheck::check::check(&engine, &spans, trace_url);
    match format {
        Format::Text => print!("{}", tracecheck::check::render_text(&results)),
        Format::Json => {
            for r in &results {
                println!(
                    "{}",
                    serde_json::to_string(r).context("cannot encode a result")?
                );
            }
        }
        Format::Junit => print!("{}", tracecheck::check::render_junit(&results)),
    }
    Ok(if results.iter().any(|r| r.verdict == Verdict::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn lint(paths: &[PathBuf]) -> ExitCode {
    let mut diags = Vec::new();
    let mut warnings = Vec::new();
    let mut docs = 0;
    for p in paths {
        match tracecheck::model::load_path_warning(p, &mut warnings) {
            Ok(d) => {
                if let Err(e) = Engine::compile(tracecheck::model::models(&d)) {
                    diags.extend(e);
                }
                docs += d.len();
            }
            Err(d) => diags.extend(d),
        }
    }
    for w in &warnings {
        eprintln!("{w}");
    }
    if diags.is_empty() {
        println!("ok: {docs} documents");
        ExitCode::SUCCESS
    } else {
        for d in &diags {
            println!("{d}");
        }
        eprintln!(
            "{} error{}",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        );
        ExitCode::from(EXIT_BAD_INPUT)
    }
}

fn bench(cmd: tracecheck::bench::BenchCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(tracecheck::bench::run(cmd))?;
    Ok(ExitCode::SUCCESS)
}

/// One HTTP/1.0 GET with std only, bounded by timeouts: a health probe must
/// neither hang nor need a runtime, TLS or a resolver cache.
fn tier_leave(
    server: &str,
    ca_file: Option<&std::path::Path>,
    token_file: Option<&std::path::Path>,
    wait: std::time::Duration,
) -> anyhow::Result<ExitCode> {
    let token = token_from(token_file)?;
    runtime()?.block_on(async {
        // The daemon's own announce_timeout bounds the call; this one only
        // guards against a daemon that does not answer at all.
        let asked = tracecheck::tier::request_leave(
            server,
            ca_file,
            token,
            std::time::Duration::from_secs(10),
        )
        .await;
        // Waits whatever happened: the hook's other job is to hold SIGTERM
        // back until the balancers have stopped sending here, and a failed
        // announcement must not make the receivers close under traffic.
        tokio::time::sleep(wait).await;
        match asked {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!(
                    "tracecheck tier leave: {server}: cannot ask the daemon to leave its tier: {e}"
                );
                Ok(ExitCode::from(1))
            }
        }
    })
}

fn health(url: &str) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let timeout = Duration::from_secs(3);
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url}: {authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("{url}: cannot connect"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    // The status line may arrive in pieces; read until its end or EOF.
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    // "HTTP/1.x 200 ..."
    let healthy = status_line.split_whitespace().nth(1) == Some("200");
    if !healthy {
        eprintln!(
            "tracecheck: {url}: {}",
            status_line.lines().next().unwrap_or("no answer")
        );
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn test_run(args: TestRunArgs) -> anyhow::Result<ExitCode> {
    use std::io::{IsTerminal, Write};
    use tracecheck::testrun;

    let suite = match testrun::load_files(&args.file, args.vars.as_deref()) {
        Ok(s) => s,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let progress: Option<testrun::runner::Progress> =
        (std::io::stderr().is_terminal() && args.format == TestFormat::Text).then(|| {
            let p: testrun::runner::Progress = Arc::new(|line: Option<&str>| {
                let mut e = std::io::stderr();
                match line {
                    Some(l) => {
                        let _ = write!(e, "\r\x1b[2K{l}");
                    }
                    None => {
                        let _ = write!(e, "\r\x1b[2K");
                    }
                }
                let _ = e.flush();
            });
            p
        });
    let opts = testrun::RunOptions {
        timeout: args.timeout,
        progress,
        propagation: args.propagation.clone(),
    };
    let links = tracecheck::results::config::LinksConfig {
        trace_url: args.trace_url.clone(),
        ..Default::default()
    };
    let base = testrun::RunContext::new(suite.variables.as_ref());
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        match &args.server {
            Some(server) => {
                let token = token_from(args.token_file.as_deref()).map_err(|e| format!("{e:#}"))?;
                let source = testrun::remote(server, args.ca_file.as_deref(), token)
                    .map_err(|e| e.to_string())?;
                testrun::run_suite(&suite, &base, &source, &opts)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => {
                let embedded = tracecheck::daemon::Embedded::start(tracecheck::daemon::EmbeddedConfig {
                    grpc: args.otlp_grpc,
                    http: args.otlp_http,
                    idle_timeout: args.idle_timeout,
                    links: links.clone(),
                })
                .await
                .map_err(|e| {
                    format!("cannot start the embedded OTLP receiver ({e}); is a collector or tracecheck already listening? Use --server URL to take traces from a running tracecheck, or --otlp-grpc/--otlp-http")
                })?;
                let r = testrun::run_suite(&suite, &base, &embedded.source, &opts)
                    .await
                    .map_err(|e| e.to_string());
                embedded.stop().await;
                r
            }
        }
    });
    let mut report = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tracecheck: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    // --trace-url overrides what the daemon links to.
    if let Some(t) = &args.trace_url {
        for step in report.runs.iter_mut().flat_map(|r| r.steps.iter_mut()) {
            if let Some(id) = &step.trace_id {
                step.trace_url = Some(t.replace("{trace_id}", &id.to_hex()));
            }
        }
    }
    let text = match args.format {
        TestFormat::Text => testrun::render_text(&report),
        TestFormat::Json => {
            serde_json::to_string_pretty(&report).context("cannot encode the report")? + "\n"
        }
    };
    // A closed pipe (`| head`) is not worth a panic; the exit code still counts.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, testrun::render_junit(&report)) {
            eprintln!("tracecheck: cannot write {}: {e}", path.display());
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

//! `tracecheck watch`: a live tail of verdicts from a running daemon's gRPC
//! API (on its admin port). Reconnects when the daemon restarts.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use tracecheck::admin::grpc_api::pb;
use tracecheck::admin::grpc_api::pb::verdict_service_client::VerdictServiceClient;
use tracecheck::net::tls::ClientTlsConfig;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum WatchVerdict {
    Pass,
    Fail,
    Inconclusive,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum WatchFormat {
    Text,
    Json,
}

pub fn run(
    server: String,
    ca_file: Option<std::path::PathBuf>,
    token: Option<reqwest::header::HeaderValue>,
    models: Vec<String>,
    verdicts: Vec<WatchVerdict>,
    format: WatchFormat,
) -> anyhow::Result<ExitCode> {
    let request = pb::WatchRequest {
        models,
        verdicts: verdicts
            .iter()
            .map(|v| match v {
                WatchVerdict::Pass => pb::VerdictKind::Pass as i32,
                WatchVerdict::Fail => pb::VerdictKind::Fail as i32,
                WatchVerdict::Inconclusive => pb::VerdictKind::Inconclusive as i32,
            })
            .collect(),
        labels: Default::default(),
    };
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let tls = ca_file.map(|ca| ClientTlsConfig {
        ca_file: Some(ca),
        ..ClientTlsConfig::default()
    });
    super::runtime()?.block_on(async move {
        // Made once (its files read once); it reconnects by itself.
        let channel =
            tracecheck::net::client::grpc_channel(&server, tls.as_ref(), "--ca-file", |e| e)?;
        let mut backoff = Duration::from_millis(200);
        loop {
            match stream(
                channel.clone(),
                token.clone(),
                request.clone(),
                format,
                colour,
            )
            .await
            {
                Ok(()) => eprintln!("tracecheck watch: stream ended; reconnecting"),
                Err(e) => eprintln!("tracecheck watch: {e}; reconnecting in {:?}", backoff),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn stream(
    channel: tonic::transport::Channel,
    token: Option<reqwest::header::HeaderValue>,
    request: pb::WatchRequest,
    format: WatchFormat,
    colour: bool,
) -> anyhow::Result<()> {
    let mut client = VerdictServiceClient::new(channel);
    let mut request = tonic::Request::new(request);
    if let Some(t) = token {
        let value = tonic::metadata::MetadataValue::try_from(t.as_bytes())?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut stream = client.watch(request).await?.into_inner();
    let stdout = std::io::stdout();
    loop {
        let next = tokio::select! {
            m = stream.message() => m?,
            _ = tokio::signal::ctrl_c() => std::process::exit(0),
        };
        let Some(v) = next else { return Ok(()) };
        let mut out = stdout.lock();
        if v.missed_before > 0 {
            eprintln!(
                "tracecheck watch: missed {} verdicts (too slow to read)",
                v.missed_before
            );
        }
        let line = match format {
            WatchFormat::Json => json_line(&v),
            WatchFormat::Text => text_line(&v, colour),
        };
        // A closed stdout (piped into `head`) ends the watch.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    }
}

fn verdict_name(v: i32) -> &'static str {
    match pb::VerdictKind::try_from(v) {
        Ok(pb::VerdictKind::Pass) => "pass",
        Ok(pb::VerdictKind::Fail) => "fail",
        Ok(pb::VerdictKind::Skip) => "skip",
        Ok(pb::VerdictKind::Inconclusive) => "inconclusive",
        _ => "unknown",
    }
}

fn json_line(v: &pb::Verdict) -> String {
    let failures: Vec<serde_json::Value> = v
        .failures
        .iter()
        .map(|f| {
            serde_json::json!({
                "spec": f.spec, "kind": f.kind, "assertion": f.assertion, "span_id": f.span_id,
                "span_name": f.span_name, "service": f.service, "observed": f.observed,
                "expected": f.expected, "message": f.message,
            })
        })
        .collect();
    serde_json::json!({
        "trace_id": v.trace_id,
        "model": v.model,
        "verdict": verdict_name(v.verdict),
        "failures": failures,
        "trace_url": v.trace_url,
        "evaluated_at_unix_ms": v.evaluated_at_unix_ms,
        "incomplete": v.incomplete,
        "inconclusive_reason": v.inconclusive_reason,
        "missed_before": v.missed_before,
    })
    .to_string()
}

fn text_line(v: &pb::Verdict, colour: bool) -> String {
    let name = verdict_name(v.verdict);
    let tag = match (colour, name) {
        (true, "fail") => format!("\x1b[31;1m{:<4}\x1b[0m", "FAIL"),
        (true, "pass") => format!("\x1b[32m{:<4}\x1b[0m", "PASS"),
        _ => format!("{:<4}", name.to_uppercase()),
    };
    let mut line = format!("{tag} {} {}", v.model, v.trace_id);
    if !v.inconclusive_reason.is_empty() {
        line.push_str(&format!("  (cut short: {})", v.inconclusive_reason));
    }
    if let Some(f) = v.failures.first() {
        line.push_str(&format!("  {}: {}", f.spec, f.message));
    }
    if !v.trace_url.is_empty() {
        line.push_str(&format!("  {}", v.trace_url));
    }
    line
}

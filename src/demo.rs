//! `tracecheck demo`: the daemon on embedded defaults, the example models
//! compiled into the binary, and synthetic bank-withdrawal traffic sent
//! through its own OTLP receiver, so a newcomer sees pass and fail verdicts
//! within seconds.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tracecheck::bench::traffic::{Rng, TrafficGenerator, TrafficMix};
use tracecheck::config::Config;
use tracecheck::engine::Verdict;
use tracecheck::evaluator::registry::ModelSource;

/// The example models of `config/models/`, so `demo` runs from anywhere.
const EXAMPLE_MODELS: &[(&str, &str)] = &[
    (
        "config/models/bank.yaml",
        include_str!("../config/models/bank.yaml"),
    ),
    (
        "config/models/http-errors.yaml",
        include_str!("../config/models/http-errors.yaml"),
    ),
    (
        "config/models/database.yaml",
        include_str!("../config/models/database.yaml"),
    ),
];

pub fn run(rate: u32) -> anyhow::Result<ExitCode> {
    let config = Config::default();
    let sources = EXAMPLE_MODELS
        .iter()
        .map(|(name, text)| ModelSource::Embedded {
            name: (*name).to_owned(),
            text: (*text).to_owned(),
        })
        .collect();
    super::runtime()?.block_on(super::run_daemon(
        config,
        sources,
        Some(Box::new(move |daemon, models| {
            let Some(grpc) = daemon.grpc_addr else { return };
            let admin = daemon.admin_addr;
            eprintln!();
            eprintln!("tracecheck demo: bank-withdrawal traffic at {rate} traces/s, some of it violating the model 'overdraft-rolls-back'.");
            eprintln!("  metrics:   curl -s http://{admin}/metrics | grep tracecheck_model_verdicts");
            eprintln!("  failures:  curl -s 'http://{admin}/api/v1/results?verdict=fail&limit=5'");
            eprintln!("  models:    curl -s http://{admin}/api/v1/models");
            eprintln!("  stop:      Ctrl-C");
            eprintln!();
            tokio::spawn(send_traffic(grpc, rate));
            tokio::spawn(summarise(models));
        })),
    ))
}

async fn send_traffic(addr: std::net::SocketAddr, rate: u32) {
    let mix = TrafficMix {
        web: 40,
        bank_commit: 30,
        bank_rollback: 20,
        bank_violation: 10,
    };
    let mut generator = TrafficGenerator::new(mix, Rng::from_time(0));
    let mut client = match TraceServiceClient::connect(format!("http://{addr}")).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Demo traffic cannot reach the receiver.");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    loop {
        tick.tick().await;
        let request = generator.next_trace().to_request();
        if let Err(e) = client.export(request).await {
            tracing::warn!(error = %e, "Demo export refused.");
        }
    }
}

async fn summarise(models: Arc<tracecheck::daemon::ModelsStage>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let loaded = models.registry.current();
        let (mut pass, mut fail, mut skip) = (0, 0, 0);
        for c in &loaded.counters {
            pass += c.count(Verdict::Pass);
            fail += c.count(Verdict::Fail);
            skip += c.count(Verdict::Skip);
        }
        eprintln!(
            "verdicts so far: {pass} pass, {fail} fail, {skip} skip ({} models)",
            loaded.engine.len()
        );
    }
}

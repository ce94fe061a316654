use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml("t.yaml", text, |n| (n == "TOKEN").then(|| "abc".to_owned()))
        .map(|l| l.config)
}

#[test]
fn empty_file_is_the_embedded_defaults() {
    let c = parse("# nothing\n").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.admin.endpoint.to_string(), "127.0.0.1:9464");
    let otlp = &c.receivers.otlp;
    assert_eq!(
        otlp.grpc.as_ref().unwrap().endpoint.to_string(),
        "127.0.0.1:4317"
    );
    assert_eq!(
        otlp.http.as_ref().unwrap().endpoint.to_string(),
        "127.0.0.1:4318"
    );
    assert!(c.exporters.is_empty());
}

#[test]
fn durations_and_env() {
    let c = parse(
        "assembler:\n  idle_timeout: 250ms\n  max_trace_age: 2m\nexporters:\n  otlp:\n    endpoint: http://x:4317\n    headers: { api-key: \"${env:TOKEN}\" }\n    retry: { max_elapsed_time: 1h }\n",
    )
    .unwrap();
    assert_eq!(c.assembler.idle_timeout, Duration::from_millis(250));
    assert_eq!(c.assembler.max_trace_age, Duration::from_secs(120));
    assert_eq!(c.assembler.root_settle, Duration::from_millis(500));
    let e = c.exporters.get("otlp").unwrap();
    assert_eq!(e.headers["api-key"], "abc");
    assert_eq!(e.retry.max_elapsed_time, Some(Duration::from_secs(3600)));
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let err = parse("assembler:\n  idle_timeout: 2s\n  idle_timout: 3s\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("t.yaml:3:3: "), "{msg}");
    assert!(msg.contains("unknown field `idle_timout`"), "{msg}");
}

#[test]
fn bad_value_names_key_line_and_column() {
    let msg = parse("assembler:\n  idle_timeout: 5\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("t.yaml:2:"), "{msg}");
    assert!(msg.contains("idle_timeout"), "{msg}");
    assert!(msg.contains("has no unit"), "{msg}");
    let msg = parse("receivers:\n  otlp:\n    grpc: { endpoint: nowhere }\n")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("t.yaml:3:"), "{msg}");
    assert!(msg.contains("endpoint"), "{msg}");
}

#[test]
fn listed_protocols_only() {
    let c = parse("receivers:\n  otlp:\n    http: { endpoint: 0.0.0.0:4318 }\n").unwrap();
    assert!(c.receivers.otlp.grpc.is_none());
    assert_eq!(
        c.receivers.otlp.http.unwrap().endpoint.to_string(),
        "0.0.0.0:4318"
    );
}

/// A Collector's receiver section, pasted in.
#[test]
fn the_collectors_receiver_section() {
    let c = parse(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: localhost:4317\n        auth: { bearer_token: \"${env:TOKEN}\" }\n      http:\n        endpoint: \"[::]:4318\"\n",
    )
    .unwrap();
    let otlp = &c.receivers.otlp;
    let grpc = otlp.grpc.as_ref().unwrap();
    assert!(grpc.endpoint.ip().is_loopback());
    assert_eq!(grpc.endpoint.port(), 4317);
    assert!(grpc.auth.is_some());
    assert_eq!(
        otlp.http.as_ref().unwrap().endpoint.to_string(),
        "[::]:4318"
    );
    assert!(otlp.protocols.is_none(), "moved into place");

    // Listed without settings: on, on the defaults.
    let c = parse("receivers:\n  otlp:\n    protocols:\n      grpc:\n").unwrap();
    assert_eq!(
        c.receivers.otlp.grpc.unwrap().endpoint.to_string(),
        "127.0.0.1:4317"
    );
    assert!(c.receivers.otlp.http.is_none(), "not listed: off");

    let msg = parse(
        "receivers:\n  otlp:\n    protocols: { grpc: }\n    http: { endpoint: 0.0.0.0:4318 }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("not both"), "{msg}");
    let msg = parse(
        "receivers:\n  otlp:\n    protocols: { http: { cors: { allowed_origins: [\"*\"], allowed_headers: [\"X Bad\"] } } }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("\"X Bad\" is not a header name"), "{msg}");
    let msg = parse("receivers:\n  otlp:\n    protocols: { grpc: { auth: {} } }\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("receivers.otlp.protocols.grpc.auth: set exactly one"),
        "{msg}"
    );
}

/// A Collector's exporter section, pasted in: named exporters, an
/// endpoint without a scheme (TLS unless `tls.insecure`), its retry and
/// queue keys; a pipeline choosing among them.
#[test]
fn the_collectors_exporter_section() {
    let c = parse(
        "exporters:\n  otlp/jaeger:\n    endpoint: jaeger-collector:4317\n    tls: { insecure: true }\n    compression: gzip\n    headers: { X-Scope-OrgID: team-a }\n    timeout: 5s\n    retry_on_failure: { enabled: true, initial_interval: 1s, max_interval: 30s, max_elapsed_time: 5m }\n    sending_queue: { enabled: true, num_consumers: 2, queue_size: 10000, storage: /var/lib/tracecheck/queue }\n  otlphttp/tempo:\n    endpoint: https://tempo.example.com:4318\n  otlp/secure:\n    endpoint: collector:4317\n",
    )
    .unwrap();
    let names: Vec<&str> = c.exporters.list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["otlp/jaeger", "otlphttp/tempo", "otlp/secure"]);
    let j = c.exporters.get("otlp/jaeger").unwrap();
    assert_eq!(j.endpoint, "http://jaeger-collector:4317");
    assert!(j.tls.is_none(), "insecure: plain text");
    assert_eq!(j.protocol, crate::exporter::config::Protocol::Grpc);
    assert_eq!(j.headers["X-Scope-OrgID"], "team-a");
    assert_eq!(j.retry.max_elapsed_time, Some(Duration::from_secs(300)));
    assert_eq!(j.max_in_flight, 2);
    assert_eq!(j.queue_size, 10000);
    assert_eq!(
        j.queue.as_ref().unwrap().directory,
        Path::new("/var/lib/tracecheck/queue")
    );
    let t = c.exporters.get("otlphttp/tempo").unwrap();
    assert_eq!(t.protocol, crate::exporter::config::Protocol::HttpProtobuf);
    assert_eq!(t.endpoint, "https://tempo.example.com:4318/v1/traces");
    assert_eq!(
        c.exporters.get("otlp/secure").unwrap().endpoint,
        "https://collector:4317",
        "no scheme, no insecure: TLS, as in the Collector"
    );

    let c = parse(
        "exporters:\n  otlp/a: { endpoint: \"a:4317\", tls: { insecure: true } }\n  otlp/b: { endpoint: \"b:4317\", tls: { insecure: true } }\nprocessors:\n  batch: { send_batch_size: 1000, timeout: 1s }\n  memory_limiter: { check_interval: 1s, limit_mib: 512 }\nextensions:\n  health_check: {}\nservice:\n  extensions: [health_check]\n  pipelines:\n    traces: { receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlp/b] }\n  telemetry:\n    logs: { level: debug, encoding: json }\n",
    )
    .unwrap();
    let names: Vec<&str> = c.exporters.list.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["otlp/b"], "the pipeline's exporters only");
    let b = c.exporters.get("otlp/b").unwrap();
    assert_eq!(b.batch.max_spans, 1000);
    assert_eq!(b.batch.timeout, Duration::from_secs(1));
    assert_eq!(c.assembler.max_memory_mib, 512);
    assert_eq!(c.service.telemetry.logs.encoding, LogEncoding::Json);
    assert_eq!(c.service.telemetry.logs.level, Some(LogLevel::Debug));

    // otlphttp's endpoint is a base URL (a gateway's path kept), or
    // traces_endpoint exact; retry_on_failure.enabled: false wins over its
    // other keys.
    let c = parse(
        "exporters:\n  otlphttp/cloud: { endpoint: \"https://otlp.example.net/otlp/\", retry_on_failure: { enabled: false, max_elapsed_time: 300s } }\n  otlphttp/exact: { endpoint: \"https://x\", traces_endpoint: \"https://y/custom/traces\" }\n",
    )
    .unwrap();
    // sending_queue.storage naming a file_storage extension, as the
    // Collector writes it: that directory, a folder per exporter.
    let c2 = parse(
        "extensions:\n  file_storage: { directory: /var/lib/otelcol/fs }\nexporters:\n  otlp/a: { endpoint: \"http://a:4317\", sending_queue: { storage: file_storage } }\n  otlp/b: { endpoint: \"http://b:4317\", sending_queue: { storage: file_storage } }\n",
    )
    .unwrap();
    for (name, dir) in [
        ("otlp/a", "/var/lib/otelcol/fs/otlp_a"),
        ("otlp/b", "/var/lib/otelcol/fs/otlp_b"),
    ] {
        assert_eq!(
            c2.exporters
                .get(name)
                .unwrap()
                .queue
                .as_ref()
                .unwrap()
                .directory,
            Path::new(dir)
        );
    }
    let msg = parse("exporters:\n  otlp: { endpoint: \"http://a:4317\", sending_queue: { storage: file_storage/x } }\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("does not define"), "{msg}");
    let cloud = c.exporters.get("otlphttp/cloud").unwrap();
    assert_eq!(cloud.endpoint, "https://otlp.example.net/otlp/v1/traces");
    assert_eq!(cloud.retry.max_elapsed_time, Some(Duration::from_nanos(1)));
    assert_eq!(
        c.exporters.get("otlphttp/exact").unwrap().endpoint,
        "https://y/custom/traces"
    );

    for (text, says) in [
        ("exporters:\n  jaeger: { endpoint: x:14250 }\n", "use otlp"),
        ("exporters:\n  debug: {}\n", "no debug exporter"),
        ("exporters:\n  otlphttp: { endpoint: tempo:4318 }\n", "needs its scheme"),
        (
            "exporters:\n  otlp: { endpoint: \"https://x:4317\", tls: { insecure: true } }\n",
            "is https://",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"x:4317\", sending_queue: { enabled: false } }\n",
            "always queues",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:4317\" }\nservice:\n  pipelines:\n    traces: { exporters: [otlp/nope] }\n",
            "does not define",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:4317\" }\nservice:\n  pipelines:\n    traces: { processors: [tail_sampling] }\n",
            "traces: failing",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:4317\", verdict_attributes: true }\n",
            "verdict_attributes needs traces: failing",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:4317\", traces: failed }\n",
            "failing_or_inconclusive",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:4317\", compression_params: { level: 12 } }\n",
            "gzip takes 1 (fastest) to 9",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:4317\" }\nservice:\n  pipelines:\n    traces: { receivers: [kafka] }\n",
            "kafka",
        ),
    ] {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains(says), "{text}: {msg}");
    }
}

#[test]
fn alert_receivers_several_alertmanagers_and_https() {
    let c = parse(
        "alerts:\n  alertmanager:\n    urls: [http://am-0:9093, http://am-1:9093]\n  webhooks: [{ url: https://hooks.example/t }]\n",
    )
    .unwrap();
    let am = c.alerts.alertmanager.unwrap();
    let urls: Vec<&String> = am.all_urls().collect();
    assert_eq!(urls, ["http://am-0:9093", "http://am-1:9093"]);
    for (text, says) in [
        ("alerts: { alertmanager: {} }\n", "set url or urls"),
        ("alerts: { webhooks: [{ url: hooks.example/t }] }\n", "must start with http"),
        (
            "alerts: { webhooks: [{ url: \"http://h/t\", tls: { ca_file: /x.pem } }] }\n",
            "webhooks[0].tls",
        ),
        (
            "alerts: { alertmanager: { url: \"https://am:9093\", tls: { ca_file: /no/such/ca.pem } } }\n",
            "/no/such/ca.pem",
        ),
    ] {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains(says), "{text}: {msg}");
    }
}

#[test]
fn relations_are_checked() {
    assert!(parse("assembler: { max_spans: 0 }\n").is_err());
    assert!(parse("links: { trace_url: http://jaeger/trace }\n").is_err());
    assert!(parse("exporters: { otlphttp: { endpoint: jaeger:4318 } }\n").is_err());
}

#[test]
fn shipped_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tracecheck.yaml");
    let loaded = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = loaded.config;
    assert!(!c.exporters.is_empty(), "the example shows forwarding");
    assert!(c.links.trace_url.is_some());
    assert!(c.alerts.alertmanager.is_some());
}

/// Two exporters cannot share a persistent queue's directory, however the
/// path is written: a trailing slash, `./`, or a symbolic link to it.
#[test]
fn two_exporters_naming_one_queue_directory_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("q");
    std::fs::create_dir(&real).expect("mkdir");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let text = |a: String, b: String| {
        format!(
            "exporters:\n  otlp/a: {{ endpoint: \"http://x:4317\", queue: {{ directory: \"{a}\" }} }}\n  otlp/b: {{ endpoint: \"http://y:4317\", queue: {{ directory: \"{b}\" }} }}\n"
        )
    };
    let r = real.display().to_string();
    for other in [
        format!("{r}/"),
        format!("{}/./q", dir.path().display()),
        link.display().to_string(),
    ] {
        let err = parse(&text(r.clone(), other.clone()))
            .expect_err(&other)
            .to_string();
        assert!(err.contains("each needs its own"), "{other}: {err}");
    }
    let apart = dir.path().join("other");
    parse(&text(r, apart.display().to_string())).expect("two directories");
}

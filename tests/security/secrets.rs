//! Secrets given to the config never come back out of it.

use tracecheck::config::Config;

const TOKEN: &str = "tok-5f2e9c1d-never-print-me";

/// A config whose tokens and header values come from `${env:…}`: its Debug
/// rendering, its serialization and its errors hold none of them.
#[test]
fn tokens_do_not_appear_in_debug_or_serialized_config() {
    let yaml = "\
receivers:
  otlp:
    grpc: { endpoint: 127.0.0.1:0 }
    auth: { bearer_token: \"${env:RECV_TOKEN}\" }
exporters:
  otlp:
    endpoint: https://downstream:4317
    headers: { x-api-key: \"${env:RECV_TOKEN}\" }
    auth: { bearer_token: \"${env:RECV_TOKEN}\" }
admin:
  auth: { bearer_token: \"${env:RECV_TOKEN}\" }
";
    let loaded = Config::from_yaml("t.yaml", yaml, |name| {
        (name == "RECV_TOKEN").then(|| TOKEN.to_string())
    })
    .expect("config loads");
    let config = loaded.config;
    // The token is really there, for the places that send or compare it.
    let recv = config.receivers.otlp.auth.as_ref().expect("receiver auth");
    assert_eq!(recv.bearer_token.as_ref().map(|t| t.expose()), Some(TOKEN));

    let debug = format!("{config:?}");
    assert!(!debug.contains(TOKEN), "Debug leaks the token: {debug}");
    assert!(debug.contains("redacted"));
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains(TOKEN));
    let json = serde_json::to_string(&config).expect("serialize");
    assert!(
        !json.contains(TOKEN),
        "serialization leaks the token: {json}"
    );
    let yaml_out = serde_yaml_ng::to_string(&config).expect("serialize");
    assert!(!yaml_out.contains(TOKEN));

    // A config error next to a secret does not repeat it.
    let bad = "admin:\n  auth: { bearer_token: \"${env:RECV_TOKEN}\", bearer_token_file: /x }\n";
    let err = Config::from_yaml("t.yaml", bad, |_| Some(TOKEN.to_string()))
        .expect_err("both sources is an error")
        .to_string();
    assert!(err.contains("admin.auth"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
}

/// A token-guarded daemon's answers to wrong credentials do not echo the
/// right one (nor the one sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_do_not_echo_tokens() {
    let mut config = crate::util::config();
    config.receivers.otlp.auth = Some(tracecheck::net::auth::AuthConfig {
        bearer_token: Some(tracecheck::net::secret::Secret::new(TOKEN)),
        bearer_token_file: None,
    });
    let daemon = crate::util::start_daemon(config).await;
    let resp = crate::util::http_client()
        .post(crate::util::http_url(&daemon))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sent-by-client-xyz")
        .body("{}")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    let body = resp.text().await.expect("body");
    assert!(
        !body.contains(TOKEN) && !body.contains("sent-by-client-xyz"),
        "{body}"
    );
    daemon.shutdown().await;
}

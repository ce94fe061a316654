//! What ships under `deploy/` and `config/` must work with this daemon:
//!
//! - every config file (and every `config.yaml` inside the Kubernetes
//!   ConfigMaps, as `kubectl kustomize` renders them when kubectl is
//!   installed) loads with tracecheck's own config loader, with no
//!   `${env:…}` left without a default;
//! - the models in the ConfigMap compile, and are the example models;
//! - the pod specs agree with the configs they mount: `--config` and
//!   `models.paths` point into mounted ConfigMaps, the admin port is the
//!   probed one, and the grace period outlasts the exporter's drain deadline;
//! - the PrometheusRule carries exactly `deploy/prometheus/rules.yml`;
//! - `tracecheck health` (the images' HEALTHCHECK) tells a live daemon from
//!   a dead one.
//!
//! Run with `cargo test --test deploy`.

mod models_util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use models_util::{config, repo_path, tool_missing, Live};
use serde_yaml_ng::Value;
use tracecheck::config::Config;
use tracecheck::engine::Engine;

/// Every tracecheck config file shipped in the repository.
const SHIPPED_CONFIGS: &[&str] = &[
    "config/tracecheck.yaml",
    "deploy/container/config.yaml",
    "deploy/kubernetes/sidecar/config.yaml",
    "deploy/kubernetes/gateway/config.yaml",
];

const OVERLAYS: &[&str] = &["deploy/kubernetes/sidecar", "deploy/kubernetes/gateway"];

fn load_config(origin: &str, text: &str) -> Config {
    let loaded = Config::from_yaml(origin, text, |_| None)
        .unwrap_or_else(|e| panic!("tracecheck refuses {origin}: {e}"));
    assert!(
        loaded.unset_env.is_empty(),
        "{origin}: ${{env:…}} without a default: {:?}",
        loaded.unset_env
    );
    loaded.config
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_shipped_config_file_loads() {
    for rel in SHIPPED_CONFIGS {
        if *rel == "config/tracecheck.yaml" {
            // The documenting example: its comments spell out `${env:…}`
            // references, and expansion runs on comments too, so those
            // count as unset (the daemon warns). It must still load.
            Config::from_yaml(rel, &read(rel), |_| None)
                .unwrap_or_else(|e| panic!("tracecheck refuses {rel}: {e}"));
            continue;
        }
        load_config(rel, &read(rel));
    }
    // And through the path the binary uses (file reading included).
    for rel in SHIPPED_CONFIGS {
        Config::load(&repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    }
}

/// The overlay as Kubernetes objects: rendered by kubectl when present,
/// otherwise `None` (the file-level tests still run).
fn render(overlay: &str) -> Option<Vec<Value>> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", &repo_path(overlay).display().to_string()])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("rendered YAML is UTF-8");
    let docs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect();
    Some(docs)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn seq_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn config_maps(docs: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    docs.iter()
        .filter(|d| str_at(d, &["kind"]) == Some("ConfigMap"))
        .map(|d| {
            let name = str_at(d, &["metadata", "name"]).expect("name").to_owned();
            let data = d
                .get("data")
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().expect("key").to_owned(),
                                v.as_str().expect("value").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name, data)
        })
        .collect()
}

fn kubectl_missing(overlay: &str) {
    tool_missing(
        &format!("deploy ({overlay})"),
        "kubectl (to render the kustomize overlay)",
        "apt-get install kubectl",
    );
}

#[test]
fn configs_inside_the_rendered_config_maps_load_and_models_compile() {
    for overlay in OVERLAYS {
        let Some(docs) = render(overlay) else {
            kubectl_missing(overlay);
            continue;
        };
        let maps = config_maps(&docs);
        let mut configs = 0;
        for (name, data) in &maps {
            for (key, text) in data {
                let origin = format!("{overlay}: ConfigMap {name}, {key}");
                if key == "config.yaml" && name.starts_with("tracecheck-") {
                    load_config(&origin, text);
                    configs += 1;
                }
            }
        }
        assert_eq!(configs, 1, "{overlay}: expected one tracecheck config");

        let models = maps
            .get("tracecheck-models")
            .unwrap_or_else(|| panic!("{overlay}: no ConfigMap tracecheck-models (its name must stay unhashed so edits reload)"));
        let mut all = Vec::new();
        for (key, text) in models {
            let docs = tracecheck::model::load_str(key, text)
                .unwrap_or_else(|d| panic!("{overlay}: models {key}: {d:?}"));
            all.extend(tracecheck::model::models(&docs));
        }
        let engine = Engine::compile(all)
            .unwrap_or_else(|d| panic!("{overlay}: models do not compile together: {d:?}"));
        let mut ids: Vec<_> = engine.models().iter().map(|m| m.id.clone()).collect();
        ids.sort();
        assert!(
            ids.contains(&"overdraft-rolls-back".to_owned()),
            "{overlay}: {ids:?}"
        );
    }
}

#[test]
fn configmap_models_are_the_example_models() {
    let shipped = repo_path("config/models");
    let copy = repo_path("deploy/kubernetes/base/models");
    let names = |dir: &Path| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| PathBuf::from(e.expect("dir entry").file_name()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&shipped),
        names(&copy),
        "deploy/kubernetes/base/models must hold the files of config/models (and base/kustomization.yaml list them)"
    );
    let kustomization = read("deploy/kubernetes/base/kustomization.yaml");
    for name in names(&shipped) {
        let a = std::fs::read(shipped.join(&name)).expect("read");
        let b = std::fs::read(copy.join(&name)).expect("read");
        assert!(
            a == b,
            "deploy/kubernetes/base/models/{} differs from config/models: copy it over",
            name.display()
        );
        assert!(
            kustomization.contains(&format!("models/{}", name.display())),
            "base/kustomization.yaml does not list models/{}",
            name.display()
        );
    }
}

/// The `serve` container(s) of the rendered overlay, with their pod spec.
fn tracecheck_containers(docs: &[Value]) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for d in docs {
        let Some(pod) = d
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
        else {
            continue;
        };
        for list in ["containers", "initContainers"] {
            for c in seq_at(pod, &[list]) {
                if seq_at(c, &["args"]).first().and_then(Value::as_str) == Some("serve") {
                    out.push((pod, c));
                }
            }
        }
    }
    out
}

/// The ConfigMap mounted at `dir` in this container, if any.
fn config_map_mounted_at<'a>(pod: &'a Value, container: &Value, dir: &Path) -> Option<&'a str> {
    let mount = seq_at(container, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["mountPath"]).map(Path::new) == Some(dir))?;
    assert!(
        mount.get("subPath").is_none(),
        "{}: a subPath mount never sees ConfigMap updates",
        dir.display()
    );
    let volume = str_at(mount, &["name"])?;
    let v = seq_at(pod, &["volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == Some(volume))?;
    str_at(v, &["configMap", "name"])
}

#[test]
fn pod_specs_agree_with_the_configs_they_mount() {
    for overlay in OVERLAYS {
        let Some(docs) = render(overlay) else {
            kubectl_missing(overlay);
            continue;
        };
        let maps = config_maps(&docs);
        let containers = tracecheck_containers(&docs);
        assert_eq!(containers.len(), 1, "{overlay}: one tracecheck container");
        let (pod, c) = containers[0];
        let args: Vec<&str> = seq_at(c, &["args"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let config_path = args
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| Path::new(w[1]))
            .unwrap_or_else(|| panic!("{overlay}: serve without --config: {args:?}"));
        let dir = config_path.parent().expect("config dir");
        let cm = config_map_mounted_at(pod, c, dir)
            .unwrap_or_else(|| panic!("{overlay}: nothing mounted at {}", dir.display()));
        let file = config_path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("file name");
        let text = maps
            .get(cm)
            .and_then(|d| d.get(file))
            .unwrap_or_else(|| panic!("{overlay}: ConfigMap {cm} has no key {file}"));
        let config = load_config(&format!("{overlay}: {cm}/{file}"), text);

        for models in &config.models.paths {
            assert_eq!(
                config_map_mounted_at(pod, c, models),
                Some("tracecheck-models"),
                "{overlay}: models.paths {} is not the mounted models ConfigMap",
                models.display()
            );
        }

        // Probes and Prometheus reach the admin endpoint the config binds.
        let admin_port = config.admin.endpoint.port();
        let named_admin = seq_at(c, &["ports"])
            .iter()
            .find(|p| str_at(p, &["name"]) == Some("admin"))
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64);
        assert_eq!(
            named_admin,
            Some(u64::from(admin_port)),
            "{overlay}: admin port"
        );
        assert!(
            !config.admin.endpoint.ip().is_loopback(),
            "{overlay}: admin on loopback cannot be probed or scraped"
        );
        assert_eq!(
            str_at(c, &["readinessProbe", "httpGet", "path"]),
            Some("/readyz")
        );
        assert_eq!(
            str_at(c, &["livenessProbe", "httpGet", "path"]),
            Some("/healthz")
        );

        // SIGTERM → preStop → stop receivers → evaluate → drain the queue:
        // the kubelet must not SIGKILL before the drain deadline.
        let grace = pod
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        let hook = c.get("lifecycle").and_then(|l| l.get("preStop"));
        // The kubelet's sleep, or `tracecheck tier leave --wait Ns` plus
        // its announcement (tier.announce_timeout) and the daemon's answer.
        let slept = hook
            .and_then(|p| p.get("sleep"))
            .and_then(|s| s.get("seconds"))
            .and_then(Value::as_u64);
        let left = hook
            .and_then(|p| p.get("exec"))
            .and_then(|e| e.get("command"))
            .and_then(Value::as_sequence)
            .map(|cmd| {
                let words: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
                assert!(
                    words.windows(2).any(|w| w == ["tier", "leave"]),
                    "{overlay}: preStop runs {words:?}"
                );
                let wait = words
                    .windows(2)
                    .find(|w| w[0] == "--wait")
                    .and_then(|w| w[1].strip_suffix('s'))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(5);
                wait + config.tier.announce_timeout.as_secs() + 1
            });
        let pre_stop = slept.or(left).unwrap_or(0);
        // Exporters drain side by side: the longest deadline counts.
        let drain = config
            .exporters
            .list
            .iter()
            .map(|e| e.config.drain_timeout)
            .max()
            .unwrap_or_default();
        assert!(
            Duration::from_secs(grace) > Duration::from_secs(pre_stop) + drain + Duration::from_secs(5),
            "{overlay}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + drain_timeout {drain:?} + 5s to evaluate"
        );
    }
}

/// The transformation `deploy/kubernetes/sync-rules.sh` applies.
fn rules_as_prometheus_rule_spec(rules: &str) -> String {
    let mut out = String::new();
    let mut found = false;
    for line in rules.lines() {
        found = found || line.starts_with("groups:");
        if found {
            if !line.is_empty() {
                out.push_str("  ");
                out.push_str(line);
            }
            out.push('\n');
        }
    }
    out
}

#[test]
fn prometheus_rule_carries_the_rules_of_deploy_prometheus() {
    let rules = read("deploy/prometheus/rules.yml");
    let rule = read("deploy/kubernetes/components/monitoring/prometheusrule.yaml");
    let (_, spec) = rule
        .split_once("\nspec:\n")
        .expect("prometheusrule.yaml has a spec");
    assert!(
        spec == rules_as_prometheus_rule_spec(&rules),
        "deploy/kubernetes/components/monitoring/prometheusrule.yaml is stale: run bash deploy/kubernetes/sync-rules.sh"
    );
    // And as data, not only as text.
    let a: Value = serde_yaml_ng::from_str(&rules).expect("rules.yml");
    let b: Value = serde_yaml_ng::from_str(&rule).expect("prometheusrule.yaml");
    assert_eq!(Some(&a), b.get("spec"));
    assert_eq!(str_at(&b, &["kind"]), Some("PrometheusRule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_subcommand_tells_a_live_daemon_from_a_dead_one() {
    let live = Live::start(
        config("  settle: 1s\n  idle_timeout: 1s\n", None),
        Vec::new(),
    )
    .await;
    let health = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tracecheck"))
                .args(["health", "--url", &url])
                .output()
                .expect("run tracecheck health")
        })
        .await
        .expect("join")
    };
    let ok = health(format!("http://{}/healthz", live.admin)).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let not_found = health(format!("http://{}/no-such-path", live.admin)).await;
    assert_eq!(not_found.status.code(), Some(1), "a 404 is not healthy");
    let admin = live.admin;
    live.stop().await;
    let dead = health(format!("http://{admin}/healthz")).await;
    assert_eq!(
        dead.status.code(),
        Some(1),
        "a stopped daemon is not healthy"
    );
}

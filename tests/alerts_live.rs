//! Alerts and metrics end to end, against the real consumers: a daemon
//! wired as `run_daemon` wires it, scraped by a real Prometheus (exemplar
//! storage on) and alerting a real Alertmanager; a counting webhook for
//! deduplication; and an unreachable Alertmanager plus a flaky webhook, or
//! a hanging one, for outages, where healthy receivers must not be
//! flooded.
//!
//! Loopback only, bounded in time, every child process killed on drop. The
//! first test needs `prometheus` and `alertmanager` (Debian:
//! `prometheus`, `prometheus-alertmanager`); without them it is skipped
//! with a message, unless `CI` is set, where it fails.

mod alerts_util;
#[path = "security/pki.rs"]
#[allow(dead_code)]
mod pki;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use alerts_util::*;
use serde_json::Value;
use tracecheck::bench::traffic::{GeneratedTrace, Rng, TraceShape, TrafficGenerator, TrafficMix};

const BANK_MODEL: &str = "overdraft-rolls-back";
const FAIL_QUERY: &str = r#"tracecheck_model_verdicts_total{verdict="fail"}"#;

fn generator(seed: u64) -> TrafficGenerator {
    TrafficGenerator::new(TrafficMix::default(), Rng::new(seed))
}

fn ids(traces: &[GeneratedTrace]) -> BTreeSet<String> {
    traces.iter().map(|t| hex(&t.trace_id)).collect()
}

fn trace_url(id: &str) -> String {
    TRACE_URL.replace("{trace_id}", id)
}

/// Clean bank and web traffic: nothing in it fails the bank model.
fn clean_trace(g: &mut TrafficGenerator, i: usize) -> GeneratedTrace {
    let shape = [
        TraceShape::BankCommit,
        TraceShape::BankRollback,
        TraceShape::Web,
    ][i % 3];
    g.trace_of(shape)
}

/// Waits for the daemon's verdict counters of the bank model to reach
/// `total` verdicts, then checks that no more arrive.
async fn settled_verdicts(live: &Live, total: u64, limit: Duration) -> (u64, u64, u64) {
    let c = poll_until(limit, "every trace's verdict", || async {
        let c = live.metrics().await.verdicts(BANK_MODEL);
        (c.0 + c.1 + c.2 >= total).then_some(c)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = live.metrics().await.verdicts(BANK_MODEL);
    assert_eq!(c, again, "verdicts kept coming after all were in");
    again
}

/// `TraceModelFailed` alerts of the bank model in Alertmanager.
fn bank_alerts(alerts: &[Value]) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| {
            a["labels"]["alertname"] == "TraceModelFailed" && a["labels"]["model"] == BANK_MODEL
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Real Prometheus and Alertmanager.

/// Violating bank traces reach Alertmanager as one firing
/// `TraceModelFailed` alert whose `trace_id`/`trace_url` annotations name a
/// violating trace (which the daemon's trace API shows failed by the
/// model), and Prometheus as an exact fail count with a `trace_id` exemplar
/// of a violating trace. Clean traffic afterwards resolves the alert after
/// `resolve_after` (5s), well within 20s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_alertmanager_see_failures_exemplars_and_resolution() {
    let Some((prom_bin, am_bin)) = binaries("prometheus_and_alertmanager") else {
        return;
    };
    bounded(Duration::from_secs(75), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let am = Alertmanager::start(&am_bin, dir.path()).await;
        let live = Live::start(config(&AlertSettings {
            alertmanager: Some(format!("http://{}", am.addr)),
            webhooks: Vec::new(),
            group_interval: "1s",
            resend_interval: "5s",
            resolve_after: "5s",
        }))
        .await;
        let prom = Prometheus::start(&prom_bin, dir.path(), live.admin).await;
        let t0 = unix_now();

        // Violations mixed with clean traffic, each trace its own request.
        let n = 5;
        let mut g = generator(7);
        let mut traces = Vec::new();
        for i in 0..n {
            traces.push(g.trace_of(TraceShape::BankViolation));
            traces.push(clean_trace(&mut g, i));
        }
        let violating = ids(&traces
            .iter()
            .filter(|t| t.shape.is_violating())
            .cloned()
            .collect::<Vec<_>>());
        assert_eq!(violating.len(), n);
        for t in &traces {
            live.export(t.to_request()).await;
        }
        // No failure can be evaluated before its spans were all sent.
        let violations_sent = Instant::now();
        let (_, fail, _) =
            settled_verdicts(&live, traces.len() as u64, Duration::from_secs(10)).await;
        assert_eq!(fail, n as u64, "fail verdicts in the daemon's /metrics");

        // From now on only clean traffic, in the background, until resolved.
        let stop_clean = tokio_util::sync::CancellationToken::new();
        let clean = tokio::spawn({
            let stop = stop_clean.clone();
            let grpc = live.grpc;
            async move {
                let mut g = generator(8);
                let mut sent = 0u64;
                while !stop.is_cancelled() {
                    export_to(grpc, clean_trace(&mut g, sent as usize).to_request()).await;
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                sent
            }
        });

        // Alertmanager: one firing alert for the model, naming a violation.
        // (Checked first: it resolves 5s after the last failure.)
        let waiting = Instant::now();
        let alert = loop {
            let a = bank_alerts(&am.alerts().await);
            if let Some(a) = a.iter().find(|a| a["status"]["state"] == "active") {
                break a.clone();
            }
            if waiting.elapsed() > Duration::from_secs(4) {
                let m = live.metrics().await;
                panic!(
                    "no active TraceModelFailed alert in Alertmanager: {:?}; \
                     alertmanager posts ok {} failed {}",
                    am.alerts().await,
                    m.alerts_sent("alertmanager", "success"),
                    m.alerts_sent("alertmanager", "failure"),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            bank_alerts(&am.alerts().await).len(),
            1,
            "one alert per model"
        );
        assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
        assert_eq!(alert["labels"]["team"], "payments", "{alert}");
        let id = alert["annotations"]["trace_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no trace_id annotation: {alert}"))
            .to_owned();
        assert!(violating.contains(&id), "alert trace_id {id} not violating");
        let url = alert["annotations"]["trace_url"]
            .as_str()
            .unwrap_or_else(|| panic!("no trace_url annotation: {alert}"));
        assert!(url.contains(&id), "trace_url {url} lacks {id}");
        assert_eq!(url, trace_url(&id));
        assert!(
            alert["generatorURL"]
                .as_str()
                .is_some_and(|u| u.ends_with(&format!("/ui/trace/{id}"))),
            "{alert}"
        );

        // The daemon's trace API: that trace, failed by the model.
        let (status, trace) = live.get_json(&format!("/api/v1/traces/{id}")).await;
        assert_eq!(status, 200, "{trace}");
        assert_eq!(trace["trace_id"], id.as_str());
        assert_eq!(trace["trace_url"], trace_url(&id).as_str());
        assert!(trace["span_count"].as_u64().unwrap_or(0) >= 4, "{trace}");
        let verdicts = trace["verdicts"].as_array().cloned().unwrap_or_default();
        assert!(
            verdicts
                .iter()
                .any(|v| v["model"] == BANK_MODEL && v["verdict"] == "fail"),
            "no failed {BANK_MODEL} verdict on the trace: {trace}"
        );

        // Prometheus: scraped (OpenMetrics), exact count.
        let up = poll_until(
            Duration::from_secs(10),
            "a scrape of the daemon",
            || async {
                let r = prom.query(r#"up{job="tracecheck"}"#).await;
                r.first().map(sample_value)
            },
        )
        .await;
        assert_eq!(
            up,
            1.0,
            "Prometheus could not scrape the daemon:\n{}",
            prom.guard.log_tail(20)
        );
        let series = poll_until(
            Duration::from_secs(10),
            "Prometheus to hold the fail count",
            || async {
                let r = prom.query(FAIL_QUERY).await;
                r.iter().any(|s| sample_value(s) >= n as f64).then_some(r)
            },
        )
        .await;
        assert_eq!(series.len(), 1, "one fail series (one model): {series:?}");
        assert_eq!(series[0]["metric"]["model"], BANK_MODEL);
        assert_eq!(series[0]["metric"]["job"], "tracecheck");
        assert_eq!(sample_value(&series[0]), n as f64, "{series:?}");

        // Prometheus: exemplars, each naming a violating trace.
        let exemplars = poll_until(
            Duration::from_secs(10),
            "an exemplar on the fail series",
            || async {
                let data = prom
                    .exemplars(FAIL_QUERY, t0 - 60.0, unix_now() + 60.0)
                    .await;
                let ex: Vec<Value> = data
                    .iter()
                    .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
                    .collect();
                (!ex.is_empty()).then_some(ex)
            },
        )
        .await;
        for e in &exemplars {
            let id = e["labels"]["trace_id"]
                .as_str()
                .unwrap_or_else(|| panic!("exemplar without trace_id: {e}"));
            assert!(
                violating.contains(id),
                "exemplar trace_id {id} is not a violating trace {violating:?}"
            );
        }

        // Resolution: gone from Alertmanager's active alerts (it lists no
        // resolved alert) within 20s of the last violation, not before
        // resolve_after.
        let resolved_after = loop {
            let active: Vec<Value> = bank_alerts(&am.alerts().await)
                .into_iter()
                .filter(|a| a["status"]["state"] == "active")
                .collect();
            if active.is_empty() {
                break violations_sent.elapsed();
            }
            assert!(
                violations_sent.elapsed() < Duration::from_secs(20),
                "alert still active 20s after the last violation: {active:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let m = live.metrics().await;
        assert!(
            m.alerts_sent("alertmanager", "success") >= 2.0,
            "fire and resolve"
        );
        assert_eq!(m.alerts_sent("alertmanager", "failure"), 0.0);
        stop_clean.cancel();
        let clean_sent = clean.await.expect("clean traffic task");
        eprintln!(
            "alert resolved {resolved_after:?} after the last violation was sent \
             ({clean_sent} clean traces meanwhile)"
        );
        assert!(
            resolved_after >= Duration::from_millis(4500),
            "resolved before resolve_after (5s): {resolved_after:?}"
        );
        assert!(clean_sent > 0, "no clean traffic during resolution");
        // Resolved, not re-fired: still absent a moment later.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(bank_alerts(&am.alerts().await).is_empty());
        let total = traces.len() as u64 + clean_sent;
        let (_, fail, _) = settled_verdicts(&live, total, Duration::from_secs(10)).await;
        assert_eq!(fail, n as u64, "clean traffic failed the model");

        live.stop().await;
        drop(prom);
        drop(am);
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Deduplication.

/// 100 violating traces within about a second are one alert for the model:
/// a handful of posts (first failure, then at most one update per
/// `group_interval`), each carrying that one alert, firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failures_is_one_alert_posted_a_few_times() {
    bounded(Duration::from_secs(30), async {
        let hook = Webhook::start(0).await;
        let live = Live::start(config(&AlertSettings {
            alertmanager: None,
            webhooks: vec![hook.url()],
            group_interval: "1s",
            resend_interval: "30s",
            resolve_after: "60s",
        }))
        .await;
        let mut g = generator(11);
        let traces: Vec<GeneratedTrace> = (0..100)
            .map(|_| g.trace_of(TraceShape::BankViolation))
            .collect();
        let violating = ids(&traces);
        let started = Instant::now();
        for t in &traces {
            live.export(t.to_request()).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let burst = started.elapsed();
        let (_, fail, _) = settled_verdicts(&live, 100, Duration::from_secs(10)).await;
        assert_eq!(fail, 100);
        // Long enough for a pending group update (1s + a 500ms tick).
        tokio::time::sleep(Duration::from_millis(2500)).await;

        let posts = hook.posts();
        eprintln!(
            "100 violations sent in {burst:?} -> {} webhook posts",
            posts.len()
        );
        assert!(!posts.is_empty(), "no alert posted");
        assert!(
            posts.len() <= 3,
            "{} posts for 100 failures of one model: {:#?}",
            posts.len(),
            posts.iter().map(|p| &p.body).collect::<Vec<_>>()
        );
        let starts: BTreeSet<String> = posts
            .iter()
            .map(|p| {
                let alerts = p.body.as_array().unwrap_or_else(|| panic!("{:?}", p.body));
                assert_eq!(alerts.len(), 1, "one alert per post: {:?}", p.body);
                let a = &alerts[0];
                assert_eq!(a["labels"]["alertname"], "TraceModelFailed");
                assert_eq!(a["labels"]["model"], BANK_MODEL);
                assert!(a.get("endsAt").is_none(), "firing, not resolved: {a}");
                let id = a["annotations"]["trace_id"].as_str().unwrap_or_default();
                assert!(violating.contains(id), "trace_id {id} not violating");
                a["startsAt"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(starts.len(), 1, "the same alert each time: {starts:?}");
        for w in posts.windows(2) {
            let gap = w[1].at.duration_since(w[0].at);
            assert!(
                gap >= Duration::from_millis(900),
                "posts {gap:?} apart, group_interval is 1s"
            );
        }
        let m = live.metrics().await;
        assert_eq!(m.alerts_sent("webhook", "success"), posts.len() as f64);
        assert_eq!(m.alerts_sent("queue", "dropped"), 0.0);
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. Receivers down.

/// With Alertmanager unreachable (a closed port) and a webhook that answers
/// 503 at first, violating traffic still gets exact verdicts in the usual
/// time; failed posts are counted; once the webhook answers, the alert
/// reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_down_do_not_slow_verdicts_and_alerts_arrive_once_back() {
    bounded(Duration::from_secs(30), async {
        let closed = free_port();
        let refuse = 3;
        let hook = Webhook::start(refuse).await;
        let live = Live::start(config(&AlertSettings {
            alertmanager: Some(format!("http://127.0.0.1:{closed}")),
            webhooks: vec![hook.url()],
            group_interval: "1s",
            resend_interval: "5s",
            resolve_after: "60s",
        }))
        .await;
        let mut g = generator(23);
        let mut traces = Vec::new();
        for i in 0..20 {
            traces.push(g.trace_of(TraceShape::BankViolation));
            traces.push(clean_trace(&mut g, i));
        }
        let violating = ids(&traces
            .iter()
            .filter(|t| t.shape.is_violating())
            .cloned()
            .collect::<Vec<_>>());
        let sent = Instant::now();
        for t in &traces {
            live.export(t.to_request()).await;
        }
        let send_time = sent.elapsed();
        // idle_timeout 1s / root_settle 200ms: verdicts are due within about
        // a second of the last span; 4s is the normal bound, not an outage's.
        let (pass, fail, skip) = settled_verdicts(&live, 40, Duration::from_secs(4)).await;
        let verdict_time = sent.elapsed();
        assert_eq!(
            (pass, fail, skip),
            (7, 20, 13),
            "(pass, fail, skip) with receivers down"
        );
        eprintln!("40 traces sent in {send_time:?}, all verdicts after {verdict_time:?}");

        let m = poll_until(
            Duration::from_secs(10),
            "a failed Alertmanager post and the webhook back",
            || async {
                let m = live.metrics().await;
                (m.alerts_sent("alertmanager", "failure") > 0.0
                    && m.alerts_sent("webhook", "success") > 0.0)
                    .then_some(m)
            },
        )
        .await;
        assert!(m.alerts_sent("webhook", "failure") >= refuse as f64);
        assert_eq!(m.alerts_sent("queue", "dropped"), 0.0);
        let posts = hook.posts();
        let ok: Vec<_> = posts.iter().filter(|p| p.status == 200).collect();
        assert!(!ok.is_empty(), "the webhook never took the alert");
        let a = &ok[0].body[0];
        assert_eq!(a["labels"]["alertname"], "TraceModelFailed", "{a}");
        assert_eq!(a["labels"]["model"], BANK_MODEL, "{a}");
        let id = a["annotations"]["trace_id"].as_str().unwrap_or_default();
        assert!(violating.contains(id), "trace_id {id} not violating");
        assert_eq!(a["annotations"]["trace_url"], trace_url(id).as_str());
        eprintln!(
            "webhook posts: {} refused, {} taken",
            posts.iter().filter(|p| p.status != 200).count(),
            ok.len()
        );
        live.stop().await;
    })
    .await;
}

/// An Alertmanager that accepts connections and never answers (each post
/// hangs until the daemon's 5s client timeout) does not hold verdicts up
/// either: the evaluator only hands failures to a bounded queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_alertmanager_does_not_slow_verdicts() {
    bounded(Duration::from_secs(30), async {
        let (hole_addr, held) = black_hole().await;
        let live = Live::start(config(&AlertSettings {
            alertmanager: Some(format!("http://{hole_addr}")),
            webhooks: Vec::new(),
            group_interval: "1s",
            resend_interval: "5s",
            resolve_after: "60s",
        }))
        .await;
        let mut g = generator(31);
        // Two rounds: the second arrives while the first post hangs.
        for round in 1..=2u64 {
            let sent = Instant::now();
            for i in 0..20 {
                let shape = if i % 2 == 0 {
                    TraceShape::BankViolation
                } else {
                    TraceShape::BankRollback
                };
                live.export(g.trace_of(shape).to_request()).await;
            }
            let (pass, fail, skip) =
                settled_verdicts(&live, 20 * round, Duration::from_secs(4)).await;
            assert_eq!((pass, fail, skip), (10 * round, 10 * round, 0));
            eprintln!("round {round}: verdicts {:?} after sending", sent.elapsed());
        }
        let m = live.metrics().await;
        assert_eq!(m.alerts_sent("queue", "dropped"), 0.0);
        assert_eq!(
            m.alerts_sent("alertmanager", "success"),
            0.0,
            "a black hole took an alert"
        );
        live.stop().await;
        held.abort();
    })
    .await;
}

/// Delivery is tracked per receiver: while Alertmanager is down (retried
/// every tick), a healthy webhook gets the alert once plus at most a group
/// update, not on every 500ms tick. (Regression: state used to be per
/// alert, so one failing receiver made every receiver get the alert twice
/// a second — 9 posts in 5s here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_receiver_does_not_flood_the_healthy_one() {
    bounded(Duration::from_secs(30), async {
        let hook = Webhook::start(0).await;
        let live = Live::start(config(&AlertSettings {
            alertmanager: Some(format!("http://127.0.0.1:{}", free_port())),
            webhooks: vec![hook.url()],
            group_interval: "1s",
            resend_interval: "30s",
            resolve_after: "60s",
        }))
        .await;
        let mut g = generator(47);
        for _ in 0..10 {
            live.export(g.trace_of(TraceShape::BankViolation).to_request())
                .await;
        }
        let (_, fail, _) = settled_verdicts(&live, 10, Duration::from_secs(4)).await;
        assert_eq!(fail, 10);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let posts = hook.posts();
        eprintln!("healthy webhook got {} posts in ~5s", posts.len());
        // No new failure since the burst: one post, perhaps one group update.
        assert!(!posts.is_empty(), "the healthy webhook got nothing");
        assert!(
            posts.len() <= 3,
            "healthy webhook re-posted {} times while Alertmanager was down",
            posts.len()
        );
        let m = live.metrics().await;
        assert!(
            m.alerts_sent("alertmanager", "failure") >= 6.0,
            "the down receiver is retried every tick"
        );
        assert_eq!(m.alerts_sent("webhook", "success"), posts.len() as f64);
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Failures undone by late spans.

const CHECKOUT_MODEL: &str = "checkout-charges";

/// A model whose failure a late span can undo: no `within`, so a checkout
/// without its charge fails once the trace settles.
fn checkout_model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("checkout.yaml");
    std::fs::write(
        &path,
        format!(
            "type: Model\nspec:\n  id: {CHECKOUT_MODEL}\n  name: Every checkout charges the card\n  \
             match: span[name = \"POST /checkout\" kind = \"server\"]\n  specs:\n    \
             - name: card charged\n      selector: span[name = \"charge-card\"]\n"
        ),
    )
    .expect("write the model");
    path
}

fn firing_trace(post: &Post) -> (String, bool) {
    let alerts = post
        .body
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", post.body));
    assert_eq!(alerts.len(), 1, "one alert per post: {:?}", post.body);
    let a = &alerts[0];
    assert_eq!(a["labels"]["model"], CHECKOUT_MODEL);
    let id = a["annotations"]["trace_id"].as_str().unwrap_or_default();
    (id.to_owned(), a.get("endsAt").is_none())
}

/// Two checkouts fail when their traces settle without a charge; the alert
/// fires. The charge of one comes late: its failure flips to a pass and the
/// alert names the other, still firing. The other's charge comes: the
/// alert resolves at once, not after `resolve_after` (60s), since nothing
/// it paged for stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_undone_by_late_spans_are_withdrawn_from_the_alert() {
    bounded(Duration::from_secs(40), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let hook = Webhook::start(0).await;
        let live = Live::start_with_model(
            config(&AlertSettings {
                alertmanager: None,
                webhooks: vec![hook.url()],
                group_interval: "1s",
                resend_interval: "60s",
                resolve_after: "60s",
            }),
            checkout_model(dir.path()),
        )
        .await;
        let (a, b) = ([0xa1; 16], [0xb2; 16]);
        let root = [1; 8];
        for t in [a, b] {
            live.export(request(
                "shop",
                vec![span(t, root, None, "POST /checkout", 2)],
            ))
            .await;
        }
        poll_until(Duration::from_secs(10), "both checkouts failed", || async {
            (live.metrics().await.verdicts(CHECKOUT_MODEL).1 == 2).then_some(())
        })
        .await;
        let fired = poll_until(Duration::from_secs(5), "the alert fired", || async {
            hook.posts().last().map(firing_trace)
        })
        .await;
        assert!(fired.1, "firing: {fired:?}");

        // The late charge of the trace the alert names.
        let (first, other) = if fired.0 == hex(&a) { (a, b) } else { (b, a) };
        assert_eq!(fired.0, hex(&first), "names one of the two failures");
        live.export(request(
            "payments",
            vec![span(first, [2; 8], Some(root), "charge-card", 3)],
        ))
        .await;
        let renamed = poll_until(
            Duration::from_secs(5),
            "the alert names the other trace",
            || async {
                let last = hook.posts().last().map(firing_trace)?;
                (last.0 == hex(&other)).then_some(last)
            },
        )
        .await;
        assert!(
            renamed.1,
            "still firing while the other failure stands: {renamed:?}"
        );

        let before = hook.posts().len();
        let sent = Instant::now();
        live.export(request(
            "payments",
            vec![span(other, [2; 8], Some(root), "charge-card", 3)],
        ))
        .await;
        poll_until(Duration::from_secs(5), "the alert resolved", || async {
            hook.posts()[before..]
                .iter()
                .any(|p| !firing_trace(p).1)
                .then_some(())
        })
        .await;
        eprintln!("resolved {:?} after the last late charge", sent.elapsed());
        let m = live.metrics().await;
        assert_eq!(
            m.get(
                "tracecheck_verdicts_flipped_total",
                &[("model", CHECKOUT_MODEL), ("from", "fail"), ("to", "pass")]
            ),
            2.0
        );
        // One verdict per trace and model: the flips do not count again.
        assert_eq!(m.verdicts(CHECKOUT_MODEL), (0, 2, 0));
        live.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 5. HTTPS receivers.

/// A webhook at an `https://` URL whose certificate the given `ca_file`
/// signed gets the alert (before, the alert client had no TLS: every post
/// failed and the config was taken without a word); one at an https URL
/// with a certificate nobody trusts gets nothing, and its failures are
/// counted; one with `insecure_skip_verify` gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_https_webhooks_trusting_their_ca_file() {
    bounded(Duration::from_secs(30), async {
        let pki = pki::Pki::new("webhook");
        let trusted = Webhook::start_with(0, Some(pki.server_tls(false))).await;
        let untrusted = Webhook::start_with(0, Some(pki.server_tls(false))).await;
        let unchecked = Webhook::start_with(0, Some(pki.server_tls(false))).await;
        let mut config = config(&AlertSettings {
            alertmanager: None,
            webhooks: vec![trusted.url(), untrusted.url(), unchecked.url()],
            group_interval: "1s",
            resend_interval: "30s",
            resolve_after: "60s",
        });
        config.alerts.webhooks[0].tls = Some(tracecheck::net::tls::ClientTlsConfig {
            ca_file: Some(pki.path("ca.pem")),
            ..tracecheck::net::tls::ClientTlsConfig::default()
        });
        // The Collector's insecure_skip_verify: taken, whatever signed it.
        config.alerts.webhooks[2].tls = Some(tracecheck::net::tls::ClientTlsConfig {
            insecure_skip_verify: true,
            ..tracecheck::net::tls::ClientTlsConfig::default()
        });
        let live = Live::start(config).await;
        let mut g = generator(61);
        let violation = g.trace_of(TraceShape::BankViolation);
        live.export(violation.to_request()).await;
        let post = poll_until(Duration::from_secs(10), "the alert over https", || async {
            trusted.posts().first().cloned()
        })
        .await;
        let alerts = post.body.as_array().cloned().unwrap_or_default();
        assert_eq!(alerts.len(), 1, "{:?}", post.body);
        assert_eq!(alerts[0]["labels"]["model"], BANK_MODEL);
        assert_eq!(
            alerts[0]["annotations"]["trace_id"],
            hex(&violation.trace_id)
        );
        poll_until(
            Duration::from_secs(5),
            "the untrusted one's failures counted",
            || async {
                (live.metrics().await.alerts_sent("webhook", "failure") >= 1.0).then_some(())
            },
        )
        .await;
        assert!(
            untrusted.posts().is_empty(),
            "no post past an untrusted certificate"
        );
        poll_until(
            Duration::from_secs(5),
            "the alert past an unchecked certificate",
            || async { unchecked.posts().first().cloned() },
        )
        .await;
        live.stop().await;
    })
    .await;
}

/// Two Alertmanagers (`urls`), each behind basic auth and a tenant header
/// (a hosted or proxied Alertmanager): each gets the alert, with the
/// credentials and the header, at Alertmanager's v2 path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alertmanager_gets_the_alert_with_its_credentials_and_headers() {
    bounded(Duration::from_secs(30), async {
        let (am0, am1) = (Webhook::start(0).await, Webhook::start(0).await);
        let mut config = config(&AlertSettings {
            alertmanager: Some(format!("http://{}", am0.addr)),
            webhooks: Vec::new(),
            group_interval: "1s",
            resend_interval: "30s",
            resolve_after: "60s",
        });
        let am = config.alerts.alertmanager.as_mut().expect("alertmanager");
        am.urls.push(format!("http://{}", am1.addr));
        am.auth = Some(tracecheck::results::config::AlertAuth {
            bearer_token: None,
            basic: Some(tracecheck::results::config::BasicAuth {
                username: "tc".into(),
                password: tracecheck::net::secret::Secret::new("s3cret"),
            }),
        });
        am.headers.insert(
            "X-Scope-OrgID".into(),
            tracecheck::net::secret::Secret::new("team-a"),
        );
        let live = Live::start(config).await;
        let mut g = generator(71);
        live.export(g.trace_of(TraceShape::BankViolation).to_request())
            .await;
        for am in [&am0, &am1] {
            let post = poll_until(Duration::from_secs(10), "the alert", || async {
                am.posts().first().cloned()
            })
            .await;
            assert_eq!(post.path, "/api/v2/alerts");
            let header = |name: &str| {
                post.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            // base64("tc:s3cret")
            assert_eq!(
                header("authorization").as_deref(),
                Some("Basic dGM6czNjcmV0")
            );
            assert_eq!(header("x-scope-orgid").as_deref(), Some("team-a"));
            assert_eq!(post.body[0]["labels"]["model"], BANK_MODEL);
        }
        live.stop().await;
    })
    .await;
}

/// Two real Alertmanagers (Debian's), as hosted ones are set up: one
/// serving HTTPS with a certificate of a private CA, one requiring basic
/// auth. With `urls`, `tls.ca_file` and `auth.basic`, each has the alert
/// in its own API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanagers_behind_tls_and_basic_auth_get_the_alert() {
    let Some((_, am_bin)) = binaries("real_alertmanagers_behind_tls_and_basic_auth") else {
        return;
    };
    bounded(Duration::from_secs(60), async {
        let pki = pki::Pki::new("alertmanager");
        let (tls_dir, auth_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let secured = Alertmanager::start_secured(
            &am_bin,
            tls_dir.path(),
            WebSecurity {
                tls: Some((
                    pki.path("server.pem"),
                    pki.path("server.key"),
                    pki.path("ca.pem"),
                )),
                basic: None,
            },
        )
        .await;
        let guarded = Alertmanager::start_secured(
            &am_bin,
            auth_dir.path(),
            WebSecurity {
                tls: None,
                basic: Some(("tc".into(), "s3cret".into())),
            },
        )
        .await;
        let mut config = config(&AlertSettings {
            alertmanager: Some(secured.url.clone()),
            webhooks: Vec::new(),
            group_interval: "1s",
            resend_interval: "30s",
            resolve_after: "60s",
        });
        let am = config.alerts.alertmanager.as_mut().expect("alertmanager");
        am.urls.push(guarded.url.clone());
        am.tls = Some(tracecheck::net::tls::ClientTlsConfig {
            ca_file: Some(pki.path("ca.pem")),
            ..Default::default()
        });
        am.auth = Some(tracecheck::results::config::AlertAuth {
            bearer_token: None,
            basic: Some(tracecheck::results::config::BasicAuth {
                username: "tc".into(),
                password: tracecheck::net::secret::Secret::new("s3cret"),
            }),
        });
        let live = Live::start(config).await;
        let mut g = generator(73);
        let bad = g.trace_of(TraceShape::BankViolation);
        let id = hex(&bad.trace_id);
        live.export(bad.to_request()).await;
        for am in [&secured, &guarded] {
            let alert = poll_until(
                Duration::from_secs(20),
                "the alert in Alertmanager",
                || async { bank_alerts(&am.alerts().await).into_iter().next() },
            )
            .await;
            assert_eq!(alert["labels"]["model"], BANK_MODEL, "{}: {alert}", am.url);
            assert!(
                alert["generatorURL"]
                    .as_str()
                    .is_some_and(|u| u.contains(&id))
                    || alert["annotations"].to_string().contains(&id),
                "{}: the alert names the failing trace {id}: {alert}",
                am.url
            );
        }
        live.stop().await;
    })
    .await;
}

/// An Alertmanager of a pair that hangs (accepts, never answers) does not
/// hold the alert back from the other receivers: posts go to every target
/// at once, so the healthy webhook has the alert well before the hanging
/// post's 5 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_delay_the_others() {
    bounded(Duration::from_secs(30), async {
        let (hole_addr, held) = black_hole().await;
        let hook = Webhook::start(0).await;
        let live = Live::start(config(&AlertSettings {
            alertmanager: Some(format!("http://{hole_addr}")),
            webhooks: vec![hook.url()],
            group_interval: "1s",
            resend_interval: "30s",
            resolve_after: "60s",
        }))
        .await;
        let mut g = generator(83);
        live.export(g.trace_of(TraceShape::BankViolation).to_request())
            .await;
        let (_, fail, _) = settled_verdicts(&live, 1, Duration::from_secs(4)).await;
        assert_eq!(fail, 1);
        let failed_at = Instant::now();
        poll_until(Duration::from_secs(10), "the webhook's alert", || async {
            hook.posts().first().cloned()
        })
        .await;
        let waited = failed_at.elapsed();
        eprintln!("webhook had the alert {waited:?} after the failure was counted");
        assert!(
            waited < Duration::from_secs(3),
            "the webhook waited {waited:?} behind the hanging Alertmanager"
        );
        live.stop().await;
        held.abort();
    })
    .await;
}

//! Alerts: failing models reach Alertmanager (v2 API) and webhooks.
//!
//! The evaluator only hands failures to a bounded channel (`try_send`: a
//! full channel drops the *notification*, counted, never the verdict), so an
//! unreachable Alertmanager cannot block or slow evaluation. A task keeps one
//! alert per model: the first failure fires it, later failures update it at
//! most every `group_interval`, it is re-sent every `resend_interval` while
//! failures go on, and it resolves (`endsAt`) after `resolve_after` without
//! failures. Posts that fail are retried on the next tick.
//!
//! A failure that late spans turned into another verdict is *retracted*:
//! the alert no longer names its trace, and an alert whose every failure
//! was retracted resolves at once, not after `resolve_after` (the page
//! was false; it should not stay up for minutes).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::AlertsConfig;
use super::store::VerdictRecord;
use crate::ids::TraceId;
use crate::metrics::{AlertLabels, Metrics};

/// Failures waiting for the alert task; beyond it notifications are dropped.
const QUEUE: usize = 1024;
const TICK: Duration = Duration::from_millis(500);
/// The latest failures an alert keeps, to name another trace when the one
/// it names is retracted.
const RECENT: usize = 16;
/// Failures of one alert remembered by trace ID for retraction. Beyond it
/// (a long incident) the alert can no longer know that every failure was
/// retracted and resolves only after `resolve_after`, as before.
const STANDING: usize = 4096;

/// One failing verdict, with what the alert needs from its model.
#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub record: Arc<VerdictRecord>,
    pub severity: String,
    pub model_labels: BTreeMap<String, String>,
}

/// What the alert task is told.
#[derive(Debug)]
enum Note {
    Failed(AlertEvent),
    /// Late spans changed this failure into another verdict.
    Retracted {
        model: Arc<str>,
        trace_id: TraceId,
    },
}

/// The evaluator's end.
#[derive(Clone)]
pub struct AlertSender {
    tx: mpsc::Sender<Note>,
    metrics: Arc<Metrics>,
}

impl AlertSender {
    pub fn send(&self, event: AlertEvent) {
        self.tell(Note::Failed(event));
    }

    /// The failure of `model` on `trace_id` no longer stands.
    pub fn retract(&self, model: Arc<str>, trace_id: TraceId) {
        self.tell(Note::Retracted { model, trace_id });
    }

    fn tell(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            self.metrics
                .alerts_sent
                .get_or_create(&AlertLabels {
                    receiver: "queue".into(),
                    outcome: "dropped".into(),
                })
                .inc();
        }
    }
}

/// An alert in Alertmanager's v2 shape; webhooks get the same JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

struct ModelAlert {
    labels: BTreeMap<String, String>,
    starts_at: SystemTime,
    /// The failure the alert names: the latest one not retracted.
    latest: Arc<VerdictRecord>,
    /// The latest failures, oldest first, `latest` among them while any is.
    recent: VecDeque<Arc<VerdictRecord>>,
    /// Traces of this alert's failures not retracted, up to [`STANDING`].
    standing: HashSet<TraceId>,
    /// More failures came than `standing` holds.
    untracked: bool,
    /// Every failure was retracted: resolve now.
    withdrawn: bool,
    last_failure: Instant,
    last_sent: Option<Instant>,
    /// A failure arrived since the last successful post.
    dirty: bool,
    /// Targets (indices) whose last post failed: retried every tick alone,
    /// so one receiver being down does not re-post to the others.
    retry: Vec<usize>,
    /// The resolution went out to every target but those in `retry`.
    resolve_sent: bool,
}

impl ModelAlert {
    fn remember(&mut self, record: &Arc<VerdictRecord>) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Arc::clone(record));
        if self.standing.len() < STANDING {
            self.standing.insert(record.trace_id);
        } else if !self.standing.contains(&record.trace_id) {
            self.untracked = true;
        }
    }
}

/// Starts the alert task when a receiver is configured.
pub fn start(
    config: AlertsConfig,
    external_url: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Option<AlertSender> {
    let mut targets = Vec::new();
    if let Some(am) = &config.alertmanager {
        for url in am.all_urls() {
            let mut t = Target::new(
                "alertmanager",
                format!("{}/api/v2/alerts", url.trim_end_matches('/')),
                am.tls.as_ref(),
            );
            t.auth = am.auth.clone();
            t.headers = am.headers.clone();
            targets.push(t);
        }
    }
    for w in &config.webhooks {
        targets.push(Target::new("webhook", w.url.clone(), w.tls.as_ref()));
    }
    if targets.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = AlertTask {
        config,
        external_url,
        metrics: Arc::clone(&metrics),
        targets,
        alerts: HashMap::new(),
    };
    tokio::spawn(task.run(rx, stop));
    Some(AlertSender { tx, metrics })
}

/// Where alerts are posted, each with its own client (its own TLS).
struct Target {
    receiver: &'static str,
    url: String,
    client: reqwest::Client,
    auth: Option<super::config::AlertAuth>,
    headers: BTreeMap<String, crate::net::secret::Secret>,
}

/// A post that does not answer in this time failed, and is retried.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

impl Target {
    fn new(
        receiver: &'static str,
        url: String,
        tls: Option<&crate::net::tls::ClientTlsConfig>,
    ) -> Self {
        // The files were read when the config was (`Config::validate`);
        // gone since, the target trusts the system's CA certificates and
        // its posts fail visibly (counted, logged).
        let client = match crate::net::client::builder(tls, "alerts tls") {
            Ok(b) => b.timeout(POST_TIMEOUT).build().ok(),
            Err(e) => {
                tracing::error!(receiver, url = %origin_of(&url), error = %e, "Alert receiver's TLS files cannot be used; its posts will fail.");
                None
            }
        }
        .unwrap_or_else(|| crate::net::client::plain(POST_TIMEOUT));
        Self {
            receiver,
            url,
            client,
            auth: None,
            headers: BTreeMap::new(),
        }
    }

    fn post(&self, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.expose());
        }
        match &self.auth {
            Some(super::config::AlertAuth {
                bearer_token: Some(t),
                ..
            }) => request.bearer_auth(t.expose()),
            Some(super::config::AlertAuth { basic: Some(b), .. }) => {
                request.basic_auth(&b.username, Some(b.password.expose()))
            }
            _ => request,
        }
    }
}

struct AlertTask {
    config: AlertsConfig,
    external_url: String,
    metrics: Arc<Metrics>,
    targets: Vec<Target>,
    alerts: HashMap<String, ModelAlert>,
}

impl AlertTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Note>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                note = rx.recv() => match note {
                    Some(Note::Failed(ev)) => self.note(ev),
                    Some(Note::Retracted { model, trace_id }) => self.retract(&model, trace_id),
                    None => return,
                },
                _ = tick.tick() => self.flush(Instant::now()).await,
            }
        }
    }

    fn note(&mut self, ev: AlertEvent) {
        let now = Instant::now();
        let model = ev.record.model.to_string();
        match self.alerts.get_mut(&model) {
            Some(a) => {
                a.remember(&ev.record);
                a.latest = ev.record;
                a.last_failure = now;
                a.dirty = true;
                a.resolve_sent = false;
                a.withdrawn = false;
            }
            None => {
                let mut labels = ev.model_labels;
                labels.insert("alertname".into(), "TraceModelFailed".into());
                labels.insert("model".into(), model.clone());
                labels.insert("severity".into(), ev.severity);
                // Fixed for the alert's life: a label that changed with
                // every failure would make every failure a new alert.
                if let Some(service) = ev.record.failures.iter().find_map(|f| f.service.clone()) {
                    labels.insert("service".into(), service);
                }
                let mut alert = ModelAlert {
                    labels,
                    starts_at: SystemTime::now(),
                    latest: Arc::clone(&ev.record),
                    recent: VecDeque::new(),
                    standing: HashSet::new(),
                    untracked: false,
                    withdrawn: false,
                    last_failure: now,
                    last_sent: None,
                    dirty: true,
                    retry: Vec::new(),
                    resolve_sent: false,
                };
                alert.remember(&ev.record);
                self.alerts.insert(model, alert);
            }
        }
    }

    fn retract(&mut self, model: &str, trace_id: TraceId) {
        let Some(a) = self.alerts.get_mut(model) else {
            return;
        };
        let counted = a.standing.remove(&trace_id);
        a.recent.retain(|r| r.trace_id != trace_id);
        // Not among the failures it counts by ID (dropped on a full queue,
        // of an alert already resolved, or past `STANDING`): the alert
        // stands, but must not go on naming a trace that now passes.
        if !counted {
            if a.latest.trace_id == trace_id {
                if let Some(r) = a.recent.back() {
                    a.latest = Arc::clone(r);
                    a.dirty = true;
                }
            }
            return;
        }
        if a.standing.is_empty() && !a.untracked {
            if a.last_sent.is_none() && a.retry.is_empty() {
                // Never posted: nobody was paged, so nothing to resolve.
                self.alerts.remove(model);
            } else {
                a.withdrawn = true;
            }
            return;
        }
        if a.latest.trace_id == trace_id {
            // With none of the recent ones left standing, the alert keeps
            // naming the retracted trace: older failures stand, and which
            // is not known any more.
            if let Some(r) = a.recent.back() {
                a.latest = Arc::clone(r);
                a.dirty = true;
            }
        }
    }

    async fn flush(&mut self, now: Instant) {
        let mut due: Vec<(String, Alert, bool, Vec<usize>)> = Vec::new();
        for (model, a) in &self.alerts {
            let quiet =
                a.withdrawn || now.duration_since(a.last_failure) >= self.config.resolve_after;
            let since_sent = a.last_sent.map(|t| now.duration_since(t));
            // A round goes to every target; between rounds only the targets
            // whose post failed are retried.
            let round = if quiet {
                !a.resolve_sent
            } else {
                (a.dirty && since_sent.is_none_or(|d| d >= self.config.group_interval))
                    || since_sent.is_some_and(|d| d >= self.config.resend_interval)
            };
            let targets: Vec<usize> = if round {
                (0..self.targets.len()).collect()
            } else {
                a.retry.clone()
            };
            if !targets.is_empty() {
                let alert = self.render(a, quiet.then(SystemTime::now));
                due.push((model.clone(), alert, round, targets));
            }
        }
        for (model, alert, round, targets) in due {
            let resolved = alert.ends_at.is_some();
            let failed = self.post(&[alert], &targets).await;
            if resolved && failed.is_empty() {
                self.alerts.remove(&model);
            } else if let Some(a) = self.alerts.get_mut(&model) {
                if round {
                    a.last_sent = Some(now);
                    a.dirty = false;
                    a.resolve_sent = resolved;
                }
                a.retry = failed;
            }
        }
    }

    fn render(&self, a: &ModelAlert, ends_at: Option<SystemTime>) -> Alert {
        let r = &a.latest;
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "summary".into(),
            r.summary
                .clone()
                .unwrap_or_else(|| format!("Model {} failed: {}", r.model, r.model_name)),
        );
        let description: Vec<String> = r
            .failures
            .iter()
            .map(|f| {
                let mut line = format!("{}: {}", f.spec, f.message);
                if let (Some(o), Some(e)) = (&f.observed, &f.expected) {
                    line.push_str(&format!(" (observed {o}, expected {e})"));
                }
                line
            })
            .collect();
        annotations.insert("description".into(), description.join("\n"));
        annotations.insert("trace_id".into(), r.trace_id.to_hex());
        if let Some(u) = &r.trace_url {
            annotations.insert("trace_url".into(), u.to_string());
        }
        Alert {
            labels: a.labels.clone(),
            annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: ends_at.map(rfc3339),
            // The daemon's page of the trace: what failed, on which span.
            generator_url: format!(
                "{}/ui/trace/{}",
                self.external_url.trim_end_matches('/'),
                r.trace_id
            ),
        }
    }

    /// Posts to the given targets; returns those that did not take it.
    async fn post(&self, alerts: &[Alert], targets: &[usize]) -> Vec<usize> {
        let body = match serde_json::to_vec(alerts) {
            Ok(b) => b,
            Err(_) => return targets.to_vec(),
        };
        // To every target at once: a receiver that does not answer holds
        // the others (and the failures queued meanwhile) up for one post
        // timeout, not one per target.
        let sends: Vec<_> = targets
            .iter()
            .filter_map(|&i| {
                let target = self.targets.get(i)?;
                Some((i, tokio::spawn(target.post(body.clone()).send())))
            })
            .collect();
        let mut failed = Vec::new();
        for (i, send) in sends {
            let Some(target) = self.targets.get(i) else {
                continue;
            };
            let (receiver, url) = (&target.receiver, &target.url);
            let result = match send.await {
                Ok(r) => r.map_err(|e| e.without_url().to_string()),
                Err(e) => Err(format!("post task ended: {e}")),
            };
            let ok = matches!(&result, Ok(r) if r.status().is_success());
            if !ok {
                failed.push(i);
                let why = match result {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e,
                };
                // Webhook URLs often carry their secret (Slack's path,
                // a token in the query): only the origin is logged.
                tracing::warn!(receiver = %receiver, url = %origin_of(url), error = %why, "Alert post failed; will retry.");
            }
            self.metrics
                .alerts_sent
                .get_or_create(&AlertLabels {
                    receiver: (*receiver).to_owned(),
                    outcome: if ok { "success" } else { "failure" }.into(),
                })
                .inc();
        }
        failed
    }
}

/// `scheme://host[:port]` of a URL, without credentials, path or query.
fn origin_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "(unparsable URL)".into(),
        },
        Err(_) => "(unparsable URL)".into(),
    }
}

/// `2026-11-23T10:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let utc = crate::civil::Utc::from_unix_nanos(nanos);
    format!("{}.{:03}Z", utc.date_time(), d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(id: u8) -> AlertEvent {
        AlertEvent {
            record: Arc::new(VerdictRecord {
                seq: u64::from(id),
                trace_id: TraceId([id; 16]),
                model: "m".into(),
                model_name: "M".into(),
                verdict: crate::engine::Verdict::Fail,
                failures: Vec::new(),
                trace_url: None,
                summary: None,
                evaluated_at_unix_ms: 0,
                incomplete: false,
                completion_reason: crate::metrics::CompletionReason::idle,
                waited_for_late_spans: false,
                early: false,
                flipped_from: None,
                inconclusive: None,
                service: None,
                service_version: None,
            }),
            severity: "warning".into(),
            model_labels: BTreeMap::new(),
        }
    }

    fn task() -> AlertTask {
        AlertTask {
            config: AlertsConfig::default(),
            external_url: String::new(),
            metrics: Arc::new(Metrics::new(
                &mut prometheus_client::registry::Registry::default(),
            )),
            targets: Vec::new(),
            alerts: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn a_retraction_past_the_counted_failures_still_renames_the_alert() {
        let mut t = task();
        t.note(failure(1));
        // More failures than the alert counts by ID: the last ones untracked.
        if let Some(a) = t.alerts.get_mut("m") {
            for i in 0..STANDING as u32 {
                let mut id = [9u8; 16];
                id[..4].copy_from_slice(&i.to_le_bytes());
                a.standing.insert(TraceId(id));
            }
        }
        t.note(failure(2));
        t.note(failure(3));
        t.retract("m", TraceId([3; 16]));
        let a = t.alerts.get("m").expect("the alert stands");
        assert!(!a.withdrawn, "other failures stand");
        assert_eq!(
            a.latest.trace_id,
            TraceId([2; 16]),
            "no longer names the passing trace"
        );
    }

    #[tokio::test]
    async fn an_alert_retracted_before_it_was_posted_is_dropped_not_resolved() {
        let mut t = task();
        t.note(failure(1));
        t.retract("m", TraceId([1; 16]));
        assert!(t.alerts.is_empty(), "nobody was paged: nothing to resolve");
        t.note(failure(2));
        t.alerts.get_mut("m").expect("alert").last_sent = Some(Instant::now());
        t.retract("m", TraceId([2; 16]));
        assert!(
            t.alerts
                .get("m")
                .expect("posted: kept to resolve")
                .withdrawn
        );
    }

    #[test]
    fn logged_urls_keep_only_their_origin() {
        assert_eq!(
            origin_of("https://user:pw@hooks.example:8443/services/T0/B0/SECRET?token=x"),
            "https://hooks.example:8443"
        );
        assert_eq!(origin_of("http://am:9093/api/v2/alerts"), "http://am:9093");
        assert_eq!(origin_of("not a url"), "(unparsable URL)");
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_432_481_095);
        assert_eq!(rfc3339(t), "2026-11-23T11:14:41.095Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}

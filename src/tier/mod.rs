//! The scale-out tier: instances behind a load balancer that routes spans by
//! trace ID (the Collector's `loadbalancing` exporter) tell each other when
//! one of them leaves or joins, so that none judges half a trace as whole.
//!
//! When the balancer's ring changes, every trace in flight whose owner
//! changed is split: the spans sent before the change went to one instance,
//! the rest to another. Each side's fragment misses spans, and judged as a
//! whole trace it gives false failures. The sides are told apart like this:
//!
//! - the instance leaving judges every trace it holds when it begins to
//!   leave as cut short (`tier_change` until SIGTERM, `shutdown` after);
//! - the instance joining judges a trace that began before it started as
//!   cut short (`restart`);
//! - the instances that stay learn the moment of the change from an
//!   announcement ([`ChangeKind`]) and judge their fragments as cut short
//!   (`tier_change`): after a `leaving`, a trace first seen here after the
//!   change (or up to [`LEAVE_GRACE`] before it: the balancers may move
//!   first) although it began before it, or root-less and first seen around
//!   the change (its first spans, or its root, went to the instance
//!   leaving); after a `joined`, a trace seen here before the
//!   change, judged after it, no span of which came once every balancer had
//!   the new ring ([`JOIN_GRACE`]): its rest may have gone to the new one.
//!   (Not only root-less ones: with services exporting on their own
//!   schedules, the root is often not the last span to arrive.)
//!
//! A trace whose spans kept coming here after a change was not moved by it
//! and is judged as usual, violations included. The rules also take some
//! traces that were not split (one that began just before a `leaving` and
//! whose spans all arrived after it; one whose spans had all arrived before
//! a `joined`): their `fail` becomes `inconclusive`, never the reverse. That
//! is the price of knowing only the moment of the change, not the
//! balancer's ring.
//!
//! Announcements go to every address of every `tier.peers` entry over the
//! admin API (`POST /api/v1/tier/changes`, under `admin.auth`). `joined` is
//! sent when the first spans arrive, since that is when a balancer has put
//! the instance in its ring; `leaving` when `POST /api/v1/tier/leave` is
//! called (the manifests' `preStop` runs `tracecheck tier leave`, before the
//! endpoint is taken out of the ring) or, failing that, at shutdown.

pub mod config;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub use config::TierConfig;

use crate::health::AdminState;
use crate::metrics::{Metrics, TierLabels};

/// Where peers announce changes.
pub const CHANGES_PATH: &str = "/api/v1/tier/changes";
/// Where this instance is told it is leaving (the `preStop` hook).
pub const LEAVE_PATH: &str = "/api/v1/tier/leave";

/// How long after a `joined` announcement a trace first seen here is still
/// taken to have begun before the change: the balancers in front (one per
/// Collector replica) do not all update their rings at the same instant.
pub const JOIN_GRACE: Duration = Duration::from_secs(2);

/// How long before an announced `leaving` the balancers may already have
/// moved traces: Kubernetes takes a terminating pod out of the Service's
/// endpoints as its `preStop` hook starts, so the ring can change a moment
/// before the announcement arrives.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// Changes remembered at most; older ones are forgotten first.
const MAX_CHANGES: usize = 256;

/// A change of the tier's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// An instance entered the ring: traces in flight here may have their
    /// later spans sent there.
    Joined,
    /// An instance is leaving the ring: traces in flight there have their
    /// later spans sent here.
    Leaving,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Joined => "joined",
            ChangeKind::Leaving => "leaving",
        }
    }
}

/// The body of an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    pub change: ChangeKind,
    /// The instance that joined or is leaving.
    pub instance: String,
}

/// A change as this instance keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Another instance, as announced.
    Peer(ChangeKind),
    /// This instance began leaving: every trace it still holds may lose
    /// its later spans to the others.
    Left,
}

#[derive(Debug, Clone, Copy)]
struct Change {
    kind: Kind,
    at: Instant,
    /// `at` on the wall clock, to compare with span start times.
    unix_nanos: u64,
}

/// What the evaluator knows of a completed trace, for
/// [`Changes::may_be_split`].
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub first_seen: Instant,
    pub completed: Instant,
    /// The earliest span start (the senders' clocks), if any span has one.
    pub first_start_unix_nanos: Option<u64>,
    /// When its last span arrived.
    pub last_seen: Instant,
    /// No span without a parent came.
    pub rootless: bool,
}

/// The tier changes announced to this instance recently.
#[derive(Debug)]
pub struct Changes {
    recent: Mutex<VecDeque<Change>>,
    /// Whether any change was ever recorded: the common case (no tier, or a
    /// quiet one) then costs one atomic load per trace.
    any: AtomicBool,
    /// How long a change can matter: the longest a trace stays buffered
    /// (`assembler.max_trace_age` plus `settle`).
    horizon: Duration,
}

impl Changes {
    pub fn new(horizon: Duration) -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            any: AtomicBool::new(false),
            horizon,
        }
    }

    pub fn record(&self, kind: ChangeKind, at: Instant, wall: SystemTime) {
        self.push(Kind::Peer(kind), at, wall);
    }

    /// This instance began leaving the tier at `at`.
    pub fn record_left(&self, at: Instant) {
        self.push(Kind::Left, at, SystemTime::now());
    }

    fn push(&self, kind: Kind, at: Instant, wall: SystemTime) {
        let unix_nanos = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        while recent
            .front()
            .is_some_and(|c| c.at + self.horizon < at || recent.len() >= MAX_CHANGES)
        {
            recent.pop_front();
        }
        recent.push_back(Change {
            kind,
            at,
            unix_nanos,
        });
        self.any.store(true, Ordering::Release);
    }

    /// Whether `trace` may be a fragment of a trace split by a change (see
    /// the module's rules).
    pub fn may_be_split(&self, trace: &Seen) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().any(|c| {
            if trace.first_seen > c.at + self.horizon {
                return false;
            }
            match c.kind {
                Kind::Peer(ChangeKind::Leaving) => {
                    let since = c.at.checked_sub(LEAVE_GRACE).unwrap_or(c.at);
                    trace.first_seen >= since
                        && (trace
                            .first_start_unix_nanos
                            .is_some_and(|s| s < c.unix_nanos)
                            // Its root, started before, went there.
                            || (trace.rootless && trace.first_seen < c.at + LEAVE_GRACE))
                }
                Kind::Left => trace.first_seen < c.at && trace.completed >= c.at,
                Kind::Peer(ChangeKind::Joined) => {
                    trace.first_seen < c.at + JOIN_GRACE
                        && trace.completed >= c.at
                        && trace.last_seen < c.at + JOIN_GRACE
                }
            }
        })
    }
}

/// This instance's part in the tier: what it was told, what it tells.
pub struct Tier {
    pub changes: Arc<Changes>,
    config: TierConfig,
    instance: String,
    admin: Arc<AdminState>,
    metrics: Arc<Metrics>,
    token: Option<Arc<crate::net::auth::BearerToken>>,
    client: reqwest::Client,
    /// The peers' admin endpoints are on TLS (`admin.tls`): announcements
    /// go over HTTPS with `tier.tls`, a client per address.
    https: bool,
    joined: AtomicBool,
    left: AtomicBool,
    /// When this instance first got spans.
    serving_since: std::sync::OnceLock<Instant>,
}

impl Tier {
    /// With `https` (the admin endpoints are on TLS), `config.tls` must
    /// load: a file it names that cannot be read is an error at start, not
    /// at the first announcement.
    pub fn new(
        config: TierConfig,
        horizon: Duration,
        admin: Arc<AdminState>,
        metrics: Arc<Metrics>,
        token: Option<Arc<crate::net::auth::BearerToken>>,
        https: bool,
    ) -> Result<Self, crate::net::tls::TlsError> {
        let instance = config.instance_name();
        if https {
            let _ = crate::net::client::builder(config.tls.as_ref(), "tier.tls")?;
        }
        Ok(Self {
            changes: Arc::new(Changes::new(horizon)),
            client: crate::net::client::plain(config.announce_timeout),
            https,
            config,
            instance,
            admin,
            metrics,
            token,
            joined: AtomicBool::new(false),
            left: AtomicBool::new(false),
            serving_since: std::sync::OnceLock::new(),
        })
    }

    pub fn is_configured(&self) -> bool {
        !self.config.peers.is_empty()
    }

    /// Announces `joined`, once; called when the first spans arrive.
    pub async fn join(&self) {
        let _ = self.serving_since.set(Instant::now());
        if self.is_configured() && !self.joined.swap(true, Ordering::AcqRel) {
            self.announce(ChangeKind::Joined).await;
        }
    }

    /// Turns not ready (so that the balancers drop this instance) and
    /// announces `leaving`, once.
    pub async fn leave(&self) {
        self.admin.ready.store(false, Ordering::Release);
        if self.is_configured() && !self.left.load(Ordering::Acquire) {
            self.changes.record_left(Instant::now());
        }
        if self.is_configured() && !self.left.swap(true, Ordering::AcqRel) {
            self.announce(ChangeKind::Leaving).await;
        }
    }

    /// Tells every address of every peer, within `announce_timeout` in all.
    /// Returns how many were told. An instance that cannot be told judges
    /// its fragments as whole traces: logged and counted, nothing else to do.
    pub async fn announce(&self, change: ChangeKind) -> usize {
        let notice = Notice {
            change,
            instance: self.instance.clone(),
        };
        let auth = self.token.as_ref().map(|t| t.header_value());
        let body = bytes::Bytes::from(serde_json::to_vec(&notice).unwrap_or_default());
        let told = tokio::time::timeout(self.config.announce_timeout, async {
            let mut calls = tokio::task::JoinSet::new();
            for peer in &self.config.peers {
                let addrs = match tokio::net::lookup_host(peer.as_str()).await {
                    Ok(a) => a.collect::<Vec<_>>(),
                    Err(e) => {
                        tracing::warn!(peer, error = %e, "Cannot resolve a tier peer; it is not told of this change.");
                        self.count(change, "failed");
                        continue;
                    }
                };
                for addr in addrs {
                    let Some((client, url)) = self.target(peer, addr) else {
                        self.count(change, "failed");
                        continue;
                    };
                    let request = client
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                    let request = match &auth {
                        Some(v) => request.header(reqwest::header::AUTHORIZATION, v.clone()),
                        None => request,
                    };
                    calls.spawn(async move { (addr, request.send().await) });
                }
            }
            let mut told = 0;
            while let Some(done) = calls.join_next().await {
                match done {
                    Ok((_, Ok(r))) if r.status().is_success() => {
                        told += 1;
                        self.count(change, "sent");
                    }
                    Ok((addr, Ok(r))) => {
                        tracing::warn!(%addr, status = %r.status(), "A tier peer refused the announcement.");
                        self.count(change, "failed");
                    }
                    Ok((addr, Err(e))) => {
                        tracing::warn!(%addr, error = %e, "Cannot reach a tier peer.");
                        self.count(change, "failed");
                    }
                    Err(_) => self.count(change, "failed"),
                }
            }
            told
        })
        .await;
        match told {
            Ok(n) => {
                tracing::info!(
                    change = change.as_str(),
                    peers_told = n,
                    "Announced to the tier."
                );
                n
            }
            Err(_) => {
                tracing::warn!(
                    change = change.as_str(),
                    timeout = ?self.config.announce_timeout,
                    "Announcing to the tier took too long; peers not reached judge their fragments as whole traces."
                );
                0
            }
        }
    }

    /// The client and URL for one address of `peer`: plain HTTP to the
    /// address, or HTTPS to the peer's host name pinned to the address, so
    /// that its certificate is checked against the name it has.
    fn target(&self, peer: &str, addr: std::net::SocketAddr) -> Option<(reqwest::Client, String)> {
        if !self.https {
            return Some((self.client.clone(), format!("http://{addr}{CHANGES_PATH}")));
        }
        let host = match peer.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => peer,
        };
        let url = format!("https://{peer}{CHANGES_PATH}");
        let client = crate::net::client::builder(self.config.tls.as_ref(), "tier.tls")
            .map_err(|e| tracing::warn!(error = %e, "Cannot load tier.tls; peers are not told."))
            .ok()?
            .resolve(host, addr)
            .timeout(self.config.announce_timeout)
            .build()
            .map_err(|e| tracing::warn!(error = %e, "Cannot make a client for a tier peer."))
            .ok()?;
        Some((client, url))
    }

    fn count(&self, change: ChangeKind, outcome: &'static str) {
        self.metrics
            .tier_notices
            .get_or_create(&TierLabels {
                change: change.as_str(),
                outcome,
            })
            .inc();
    }
}

/// `POST /api/v1/tier/changes` (from peers) and `POST /api/v1/tier/leave`
/// (from this instance's `preStop`).
pub fn router(tier: Arc<Tier>) -> Router {
    Router::new()
        .route(CHANGES_PATH, post(changed))
        .route(LEAVE_PATH, post(leave))
        .with_state(tier)
}

async fn changed(State(tier): State<Arc<Tier>>, Json(notice): Json<Notice>) -> Response {
    let now = Instant::now();
    // A tier starting together: every instance joins as the first spans
    // come, and none had traces to lose to the others.
    let fresh = tier
        .serving_since
        .get()
        .is_none_or(|since| now < *since + JOIN_GRACE);
    if notice.change == ChangeKind::Joined && fresh {
        tier.count(notice.change, "ignored");
        tracing::info!(
            instance = notice.instance,
            "A tier instance joined as this one began serving: nothing here was in flight."
        );
        return StatusCode::NO_CONTENT.into_response();
    }
    tier.changes.record(notice.change, now, SystemTime::now());
    tier.count(notice.change, "received");
    tracing::info!(
        change = notice.change.as_str(),
        instance = notice.instance,
        "A tier instance changed: traces in flight here that it split are judged inconclusive (tier_change), not failed."
    );
    StatusCode::NO_CONTENT.into_response()
}

async fn leave(State(tier): State<Arc<Tier>>) -> Response {
    tier.leave().await;
    StatusCode::NO_CONTENT.into_response()
}

/// `tracecheck tier leave`: asks the daemon at `server` (its admin URL) to
/// leave the tier.
pub async fn request_leave(
    server: &str,
    ca_file: Option<&std::path::Path>,
    token: Option<HeaderValue>,
    timeout: Duration,
) -> Result<(), LeaveError> {
    let client = match ca_file {
        None => crate::net::client::plain(timeout),
        Some(ca) => {
            let tls = crate::net::tls::ClientTlsConfig {
                ca_file: Some(ca.to_owned()),
                ..Default::default()
            };
            crate::net::client::builder(Some(&tls), "--ca-file")?
                .timeout(timeout)
                .build()?
        }
    };
    let request = client.post(format!("{}{LEAVE_PATH}", server.trim_end_matches('/')));
    let request = match token {
        Some(v) => request.header(reqwest::header::AUTHORIZATION, v),
        None => request,
    };
    request.send().await?.error_for_status()?;
    Ok(())
}

/// `tracecheck tier leave` could not ask.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    #[error("{}", crate::net::client::error_chain(.0))]
    Http(#[from] reqwest::Error),
}

#[cfg(test)]
mod tests;

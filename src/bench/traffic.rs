//! Synthetic trace traffic for load tests: a fast seeded RNG, realistic web
//! traces (HTTP server roots, database and internal children, a downstream
//! call into a second service) and the bank-withdrawal scenario, including
//! the violating "overdraft that commits" traces, packed into export
//! requests of an exact span count.
//!
//! A trace may be split across two or more consecutive batches so that
//! every batch carries exactly the requested number of spans; each [`Batch`]
//! says which traces it completes and whether it continues or leaves open a
//! split trace, so a sender can count traces that arrived whole.
//!
//! [`SplitSchedule`] shapes traffic as production SDKs send it instead:
//! each trace cut into fragments sent by different senders over a spread
//! of time, the fragment holding the root last, every request carrying
//! fragments of many traces. When traces are begun (how many spans' worth
//! a request) is the sender's pacing, not the schedule's.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// xorshift64* generator: fast, small, and good enough for ids and choices.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads nearby seeds apart; `| 1` keeps the state non-zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self {
            state: (z ^ (z >> 31)) | 1,
        }
    }

    /// A generator seeded from the clock, distinct for each `stream` (e.g. a
    /// sender index) even when started in the same nanosecond.
    pub fn from_time(stream: u64) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::new(nanos ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    /// Never zero.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `percent / 100`.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        id
    }

    pub fn span_id(&mut self) -> [u8; 8] {
        self.next_u64().to_be_bytes()
    }
}

/// The services synthetic spans come from; each becomes one `Resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Frontend,
    Checkout,
    Catalog,
    Accounts,
    Shipping,
    BankApi,
    BankDb,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Frontend,
        Service::Checkout,
        Service::Catalog,
        Service::Accounts,
        Service::Shipping,
        Service::BankApi,
        Service::BankDb,
    ];

    const WEB: [Service; 5] = [
        Service::Frontend,
        Service::Checkout,
        Service::Catalog,
        Service::Accounts,
        Service::Shipping,
    ];

    /// The `service.name` resource attribute.
    pub fn name(self) -> &'static str {
        match self {
            Service::Frontend => "frontend",
            Service::Checkout => "checkout",
            Service::Catalog => "catalog",
            Service::Accounts => "accounts",
            Service::Shipping => "shipping",
            Service::BankApi => "bank-api",
            Service::BankDb => "bank-db",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn resource(self) -> Resource {
        Resource {
            attributes: vec![
                string_attr("service.name", self.name()),
                string_attr("service.namespace", "tracecheck-bench"),
                string_attr("service.version", "1.4.2"),
                string_attr("deployment.environment.name", "load-test"),
                string_attr("telemetry.sdk.language", "rust"),
            ],
            ..Resource::default()
        }
    }
}

/// What kind of trace was generated, and so what a checker must say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceShape {
    /// An ordinary web request: HTTP server root, database and internal spans.
    Web,
    /// Withdrawal within the balance: `commit`, HTTP 200. Correct.
    BankCommit,
    /// Withdrawal beyond the balance: `rollback`, HTTP 500. Correct.
    BankRollback,
    /// Withdrawal beyond the balance that still commits with HTTP 200: the bug.
    BankViolation,
}

impl TraceShape {
    /// True for the traces the bank model must fail.
    pub fn is_violating(self) -> bool {
        self == TraceShape::BankViolation
    }
}

/// Relative weights of the trace shapes a generator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficMix {
    pub web: u32,
    pub bank_commit: u32,
    pub bank_rollback: u32,
    pub bank_violation: u32,
}

impl Default for TrafficMix {
    fn default() -> Self {
        Self {
            web: 90,
            bank_commit: 6,
            bank_rollback: 3,
            bank_violation: 1,
        }
    }
}

/// Why a `--mix` string is not a traffic mix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("expected NAME=WEIGHT, found {0:?}")]
    Syntax(String),
    #[error("unknown trace shape {0:?} (expected web, commit, rollback or violation)")]
    UnknownShape(String),
    #[error("weight {0:?} is not a whole number")]
    Weight(String),
    #[error("all weights are zero")]
    Empty,
}

impl TrafficMix {
    fn total(&self) -> u64 {
        [
            self.web,
            self.bank_commit,
            self.bank_rollback,
            self.bank_violation,
        ]
        .iter()
        .map(|w| u64::from(*w))
        .sum()
    }

    pub fn validate(&self) -> Result<(), MixError> {
        if self.total() == 0 {
            Err(MixError::Empty)
        } else {
            Ok(())
        }
    }

    fn pick(&self, rng: &mut Rng) -> TraceShape {
        let total = self.total();
        if total == 0 {
            return TraceShape::Web;
        }
        let mut roll = rng.below(total);
        for (weight, shape) in [
            (self.web, TraceShape::Web),
            (self.bank_commit, TraceShape::BankCommit),
            (self.bank_rollback, TraceShape::BankRollback),
        ] {
            let weight = u64::from(weight);
            if roll < weight {
                return shape;
            }
            roll -= weight;
        }
        TraceShape::BankViolation
    }
}

/// Parses `web=90,commit=6,rollback=3,violation=1`; omitted shapes weigh 0.
impl FromStr for TrafficMix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, MixError> {
        let mut mix = TrafficMix {
            web: 0,
            bank_commit: 0,
            bank_rollback: 0,
            bank_violation: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| MixError::Syntax(part.to_owned()))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| MixError::Weight(weight.to_owned()))?;
            let slot = match name.trim() {
                "web" => &mut mix.web,
                "commit" => &mut mix.bank_commit,
                "rollback" => &mut mix.bank_rollback,
                "violation" => &mut mix.bank_violation,
                other => return Err(MixError::UnknownShape(other.to_owned())),
            };
            *slot = weight;
        }
        mix.validate()?;
        Ok(mix)
    }
}

impl fmt::Display for TrafficMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "web={},commit={},rollback={},violation={}",
            self.web, self.bank_commit, self.bank_rollback, self.bank_violation
        )
    }
}

/// One whole synthetic trace, root span first.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedTrace {
    pub shape: TraceShape,
    pub trace_id: [u8; 16],
    pub spans: Vec<(Service, Span)>,
}

impl GeneratedTrace {
    /// The trace alone as an export request, one `ResourceSpans` per service.
    pub fn to_request(&self) -> ExportTraceServiceRequest {
        let mut packer = Packer::default();
        for (service, span) in &self.spans {
            packer.push(*service, span.clone());
        }
        packer.finish()
    }
}

/// An export request of exactly the asked-for span count, with the trace
/// bookkeeping a sender needs to count whole traces.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub request: ExportTraceServiceRequest,
    pub span_count: usize,
    /// Shapes of the traces whose last span is in this batch, in order.
    pub completed: Vec<TraceShape>,
    /// The first spans belong to a trace begun in an earlier batch (the
    /// first of `completed`, or still open if `completed` is empty).
    pub continues_open_trace: bool,
    /// The last trace in this batch goes on in the next batch.
    pub leaves_open_trace: bool,
}

/// Produces traces and batches for one sender.
#[derive(Debug, Clone)]
pub struct TrafficGenerator {
    rng: Rng,
    mix: TrafficMix,
    open: Option<(TraceShape, VecDeque<(Service, Span)>)>,
}

impl TrafficGenerator {
    pub fn new(mix: TrafficMix, rng: Rng) -> Self {
        Self {
            rng,
            mix,
            open: None,
        }
    }

    /// The next whole trace, of a shape drawn from the mix.
    pub fn next_trace(&mut self) -> GeneratedTrace {
        let shape = self.mix.pick(&mut self.rng);
        self.trace_of(shape)
    }

    /// A whole trace of the given shape.
    pub fn trace_of(&mut self, shape: TraceShape) -> GeneratedTrace {
        let trace_id = self.rng.trace_id();
        let start = now_unix_nanos();
        let mut builder = TraceBuilder {
            rng: &mut self.rng,
            trace_id,
            spans: Vec::with_capacity(10),
        };
        match shape {
            TraceShape::Web => builder.web(start),
            TraceShape::BankCommit | TraceShape::BankRollback | TraceShape::BankViolation => {
                builder.bank(start, shape)
            }
        }
        builder.cover_children_with_root();
        GeneratedTrace {
            shape,
            trace_id,
            spans: builder.spans,
        }
    }

    /// The next `span_count` spans (at least one), continuing a trace left
    /// open by the previous batch first.
    pub fn next_batch(&mut self, span_count: usize) -> Batch {
        let span_count = span_count.max(1);
        let continues_open_trace = self.open.is_some();
        let mut completed = Vec::new();
        let mut packer = Packer::default();
        let mut taken = 0;
        while taken < span_count {
            let (shape, pending) = match &mut self.open {
                Some(open) => open,
                None => {
                    let trace = self.next_trace();
                    self.open.insert((trace.shape, trace.spans.into()))
                }
            };
            while taken < span_count {
                let Some((service, span)) = pending.pop_front() else {
                    break;
                };
                packer.push(service, span);
                taken += 1;
            }
            if pending.is_empty() {
                completed.push(*shape);
                self.open = None;
            }
        }
        Batch {
            request: packer.finish(),
            span_count: taken,
            completed,
            continues_open_trace,
            leaves_open_trace: self.open.is_some(),
        }
    }
}

/// Groups spans by service into `ResourceSpans`.
#[derive(Default)]
struct Packer {
    by_service: [Vec<Span>; Service::ALL.len()],
}

impl Packer {
    fn push(&mut self, service: Service, span: Span) {
        self.by_service[service.index()].push(span);
    }

    fn finish(self) -> ExportTraceServiceRequest {
        let resource_spans = Service::ALL
            .iter()
            .zip(self.by_service)
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(service, spans)| ResourceSpans {
                resource: Some(service.resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tracecheck-bench".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.30.0".to_owned(),
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        key_strindex: 0,
    }
}

fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        key_strindex: 0,
    }
}

struct Route {
    method: &'static str,
    route: &'static str,
    path_prefix: &'static str,
    path_suffix: &'static str,
    queries: &'static [Query],
}

struct Query {
    operation: &'static str,
    collection: &'static str,
    text: &'static str,
}

const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        route: "/api/orders/:id",
        path_prefix: "/api/orders/",
        path_suffix: "",
        queries: &[
            Query {
                operation: "SELECT",
                collection: "orders",
                text: "SELECT id, status, total_cents, created_at FROM orders WHERE id = $1",
            },
            Query {
                operation: "SELECT",
                collection: "order_items",
                text: "SELECT sku, quantity, price_cents FROM order_items WHERE order_id = $1",
            },
        ],
    },
    Route {
        method: "GET",
        route: "/api/products/:id",
        path_prefix: "/api/products/",
        path_suffix: "",
        queries: &[
            Query {
                operation: "SELECT",
                collection: "products",
                text: "SELECT id, name, description, price_cents FROM products WHERE id = $1",
            },
            Query {
                operation: "SELECT",
                collection: "stock",
                text: "SELECT warehouse_id, available FROM stock WHERE product_id = $1",
            },
        ],
    },
    Route {
        method: "POST",
        route: "/api/carts/:id/items",
        path_prefix: "/api/carts/",
        path_suffix: "/items",
        queries: &[
            Query {
                operation: "SELECT",
                collection: "carts",
                text: "SELECT id, user_id, updated_at FROM carts WHERE id = $1 FOR UPDATE",
            },
            Query {
                operation: "INSERT",
                collection: "cart_items",
                text: "INSERT INTO cart_items (cart_id, sku, quantity) VALUES ($1, $2, $3)",
            },
        ],
    },
    Route {
        method: "PUT",
        route: "/api/users/:id/profile",
        path_prefix: "/api/users/",
        path_suffix: "/profile",
        queries: &[
            Query {
                operation: "SELECT",
                collection: "users",
                text: "SELECT id, email, display_name FROM users WHERE id = $1",
            },
            Query {
                operation: "UPDATE",
                collection: "users",
                text: "UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1",
            },
        ],
    },
];

const DB_SYSTEMS: &[&str] = &["postgresql", "postgresql", "mysql"];

/// Appends the spans of one trace, laid out in time inside the root.
struct TraceBuilder<'a> {
    rng: &'a mut Rng,
    trace_id: [u8; 16],
    spans: Vec<(Service, Span)>,
}

struct SpanSpec {
    service: Service,
    parent: Option<[u8; 8]>,
    name: String,
    kind: SpanKind,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
    error: bool,
}

const MS: u64 = 1_000_000;

impl TraceBuilder<'_> {
    fn add(&mut self, spec: SpanSpec) -> [u8; 8] {
        let span_id = self.rng.span_id();
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: spec.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x101,
            name: spec.name,
            kind: spec.kind as i32,
            start_time_unix_nano: spec.start,
            end_time_unix_nano: spec.end,
            attributes: spec.attributes,
            status: Some(Status {
                message: String::new(),
                code: if spec.error {
                    StatusCode::Error as i32
                } else {
                    StatusCode::Unset as i32
                },
            }),
            ..Span::default()
        };
        self.spans.push((spec.service, span));
        span_id
    }

    /// Stretches the root (the first span) to end after its last child.
    fn cover_children_with_root(&mut self) {
        let last_end = self
            .spans
            .iter()
            .map(|(_, span)| span.end_time_unix_nano)
            .max()
            .unwrap_or(0);
        if let Some((_, root)) = self.spans.first_mut() {
            root.end_time_unix_nano = root.end_time_unix_nano.max(last_end + MS / 2);
        }
    }

    fn http_status(&mut self) -> i64 {
        match self.rng.below(100) {
            0..=3 => 500,
            4..=6 => 404,
            _ => 200,
        }
    }

    fn web(&mut self, start: u64) {
        let service = *self.rng.pick(&Service::WEB);
        let route = self.rng.pick(ROUTES);
        let id = self.rng.between(1, 999_999);
        let status = self.http_status();
        let db_system = *self.rng.pick(DB_SYSTEMS);
        let duration = self.rng.between(8, 90) * MS;
        let root = self.add(SpanSpec {
            service,
            parent: None,
            name: format!("{} {}", route.method, route.route),
            kind: SpanKind::Server,
            start,
            end: start + duration,
            attributes: vec![
                string_attr("http.request.method", route.method),
                string_attr("http.route", route.route),
                int_attr("http.response.status_code", status),
                string_attr(
                    "url.path",
                    format!("{}{id}{}", route.path_prefix, route.path_suffix),
                ),
                string_attr("server.address", "shop.example.com"),
            ],
            error: status >= 500,
        });
        let mut cursor = start + MS;
        let auth_end = cursor + self.rng.between(1, 3) * MS;
        let user = self.rng.between(1, 50_000) as i64;
        self.add(SpanSpec {
            service,
            parent: Some(root),
            name: "authenticate".to_owned(),
            kind: SpanKind::Internal,
            start: cursor,
            end: auth_end,
            attributes: vec![
                string_attr("auth.scheme", "bearer"),
                int_attr("enduser.id", user),
            ],
            error: false,
        });
        cursor = auth_end;
        let queries = self.rng.between(2, 4);
        for i in 0..queries {
            let query = &route.queries[(i as usize) % route.queries.len()];
            let end = cursor + self.rng.between(1, 6) * MS;
            self.add(db_span(service, root, db_system, query, cursor, end));
            cursor = end;
        }
        if self.rng.percent(70) {
            self.downstream(service, root, db_system, cursor);
            cursor += 12 * MS;
        }
        let render_end = cursor + MS;
        let body_size = self.rng.between(200, 40_000) as i64;
        self.add(SpanSpec {
            service,
            parent: Some(root),
            name: "render-response".to_owned(),
            kind: SpanKind::Internal,
            start: cursor,
            end: render_end,
            attributes: vec![
                int_attr("response.body.size", body_size),
                string_attr("response.format", "application/json"),
            ],
            error: false,
        });
    }

    fn downstream(&mut self, caller: Service, parent: [u8; 8], db_system: &str, start: u64) {
        let callee = loop {
            let candidate = *self.rng.pick(&Service::WEB);
            if candidate != caller {
                break candidate;
            }
        };
        let route = self.rng.pick(ROUTES);
        let id = self.rng.between(1, 999_999);
        let path = format!("{}{id}{}", route.path_prefix, route.path_suffix);
        let end = start + 11 * MS;
        let host = format!("{}.internal", callee.name());
        let client = self.add(SpanSpec {
            service: caller,
            parent: Some(parent),
            name: route.method.to_owned(),
            kind: SpanKind::Client,
            start,
            end,
            attributes: vec![
                string_attr("http.request.method", route.method),
                string_attr("server.address", host.clone()),
                string_attr("url.full", format!("http://{host}{path}")),
                int_attr("http.response.status_code", 200),
            ],
            error: false,
        });
        let server = self.add(SpanSpec {
            service: callee,
            parent: Some(client),
            name: format!("{} {}", route.method, route.route),
            kind: SpanKind::Server,
            start: start + MS,
            end: end - MS,
            attributes: vec![
                string_attr("http.request.method", route.method),
                string_attr("http.route", route.route),
                int_attr("http.response.status_code", 200),
                string_attr("url.path", path),
                string_attr("server.address", host),
            ],
            error: false,
        });
        let query = self.rng.pick(route.queries);
        let spec = db_span(
            callee,
            server,
            db_system,
            query,
            start + 2 * MS,
            start + 8 * MS,
        );
        self.add(spec);
    }

    fn bank(&mut self, start: u64, shape: TraceShape) {
        let balance = self.rng.between(100, 10_000);
        let amount = match shape {
            TraceShape::BankCommit => self.rng.between(1, balance),
            _ => self.rng.between(balance + 1, balance * 2),
        };
        let (status, finish) = match shape {
            TraceShape::BankRollback => (500, "rollback"),
            _ => (200, "commit"),
        };
        let account = self.rng.between(1_000, 99_999);
        let root = self.add(SpanSpec {
            service: Service::BankApi,
            parent: None,
            name: "POST /:account/withdraw".to_owned(),
            kind: SpanKind::Server,
            start,
            end: start + 40 * MS,
            attributes: vec![
                string_attr("http.request.method", "POST"),
                string_attr("http.route", "/:account/withdraw"),
                int_attr("http.response.status_code", status),
                string_attr("account.id", account.to_string()),
                string_attr("url.path", format!("/{account}/withdraw")),
            ],
            error: status >= 500,
        });
        self.add(SpanSpec {
            service: Service::BankApi,
            parent: Some(root),
            name: "fetch-balance".to_owned(),
            kind: SpanKind::Internal,
            start: start + 2 * MS,
            end: start + 7 * MS,
            attributes: vec![
                int_attr("amount", balance as i64),
                string_attr("account.id", account.to_string()),
            ],
            error: false,
        });
        let withdrawal = self.add(SpanSpec {
            service: Service::BankApi,
            parent: Some(root),
            name: "withdrawal".to_owned(),
            kind: SpanKind::Internal,
            start: start + 8 * MS,
            end: start + 28 * MS,
            attributes: vec![
                int_attr("amount", amount as i64),
                string_attr("account.id", account.to_string()),
            ],
            error: false,
        });
        self.add(SpanSpec {
            service: Service::BankDb,
            parent: Some(withdrawal),
            name: finish.to_owned(),
            kind: SpanKind::Client,
            start: start + 20 * MS,
            end: start + 23 * MS,
            attributes: vec![
                string_attr("db.system.name", "mysql"),
                string_attr("db.query.text", finish.to_ascii_uppercase()),
                string_attr("db.operation.name", finish.to_ascii_uppercase()),
            ],
            error: false,
        });
    }
}

fn db_span(
    service: Service,
    parent: [u8; 8],
    db_system: &str,
    query: &Query,
    start: u64,
    end: u64,
) -> SpanSpec {
    SpanSpec {
        service,
        parent: Some(parent),
        name: format!("{} {}", query.operation, query.collection),
        kind: SpanKind::Client,
        start,
        end,
        attributes: vec![
            string_attr("db.system.name", db_system),
            string_attr("db.query.text", query.text),
            string_attr("db.operation.name", query.operation),
            string_attr("db.collection.name", query.collection),
        ],
        error: false,
    }
}

/// Name of a chain trace's root span.
pub const CHAIN_ROOT: &str = "chain-root";
/// Name of every other span of a chain trace.
pub const CHAIN_LINK: &str = "link";

/// One pathological trace: `spans` spans, each the child of the one
/// before (`chain-root`, then `link` after `link`), as consecutive export
/// requests of at most `spans_per_request` spans. Spans come in the order
/// they end, as an SDK exports them: the deepest link first, the root in
/// the last request. The requests are built as they are asked for, so a
/// long chain is never held in memory whole.
#[derive(Debug, Clone)]
pub struct ChainTrace {
    pub trace_id: [u8; 16],
    spans: usize,
    spans_per_request: usize,
    /// High bits of every span ID; the low 32 bits are depth + 1.
    id_base: u64,
    start: u64,
    /// Spans not yet handed out, deepest first: depths `0..remaining`.
    remaining: usize,
}

impl ChainTrace {
    pub fn new(rng: &mut Rng, spans: usize, spans_per_request: usize) -> Self {
        let spans = spans.max(1);
        Self {
            trace_id: rng.trace_id(),
            spans,
            spans_per_request: spans_per_request.max(1),
            id_base: rng.next_u64() & 0xffff_ffff_0000_0000,
            start: now_unix_nanos(),
            remaining: spans,
        }
    }

    /// Spans in the whole chain.
    pub fn len(&self) -> usize {
        self.spans
    }

    /// Never true: a chain has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Export requests it takes.
    pub fn requests(&self) -> usize {
        self.spans.div_ceil(self.spans_per_request)
    }

    fn span_id(&self, depth: usize) -> [u8; 8] {
        // Low half depth + 1: never zero, unique within the trace.
        (self.id_base | (depth as u64 + 1)).to_be_bytes()
    }

    fn span(&self, depth: usize) -> Span {
        // Each link starts 1 µs after its parent and ends 1 µs before it.
        let start = self.start + depth as u64 * 1_000;
        let end = self.start + (2 * self.spans - depth) as u64 * 1_000;
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id(depth).to_vec(),
            parent_span_id: if depth == 0 {
                Vec::new()
            } else {
                self.span_id(depth - 1).to_vec()
            },
            name: if depth == 0 { CHAIN_ROOT } else { CHAIN_LINK }.to_owned(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![
                int_attr("chain.depth", depth as i64),
                string_attr("code.function", "recurse"),
            ],
            flags: 0x101,
            status: Some(Status::default()),
            ..Span::default()
        }
    }
}

impl Iterator for ChainTrace {
    type Item = ExportTraceServiceRequest;

    /// The next request, deepest spans first; `None` once the root is sent.
    fn next(&mut self) -> Option<ExportTraceServiceRequest> {
        if self.remaining == 0 {
            return None;
        }
        let low = self.remaining.saturating_sub(self.spans_per_request);
        let mut packer = Packer::default();
        for depth in (low..self.remaining).rev() {
            packer.push(Service::Checkout, self.span(depth));
        }
        self.remaining = low;
        Some(packer.finish())
    }
}

/// How `load --split` cuts traffic: every trace's spans in `fragments`
/// parts (as many as it has spans, if fewer), each sent by a different
/// sender, the first at the moment the trace is begun and the one holding
/// the root `spread` later, the others evenly in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitConfig {
    pub fragments: usize,
    pub spread: Duration,
    /// A share of traces that live longer: their fragments over a spread
    /// of their own (a batch job's trace, a long poll), the root last.
    pub long_lived: Option<LongLived>,
}

/// One trace in `every` of those the run begins (of more than one span)
/// is spread over `spread` instead of [`SplitConfig::spread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongLived {
    pub every: u32,
    pub spread: Duration,
}

/// What the senders of one split run share: an inbox per sender, into
/// which the others put the fragments it is to send, and the counts that
/// say when every trace begun has been sent.
///
/// A fragment is *settled* once the request that carried it was answered
/// for good: accepted, or refused and given up. A trace counts as sent
/// whole when its last fragment is accepted; its root's fragment is handed
/// to its sender only once every other fragment is settled (and not before
/// its due time), so the root is always sent last.
#[derive(Debug)]
pub struct SplitSchedule {
    config: SplitConfig,
    inboxes: Vec<Mutex<Vec<Fragment>>>,
    /// Senders still beginning traces.
    starting: AtomicUsize,
    /// Fragments of traces begun that are not settled yet, parked roots included.
    unsettled: AtomicU64,
    traces_started: AtomicU64,
    long_lived_started: AtomicU64,
    /// When the last sender stopped beginning traces.
    stopped_at: Mutex<Option<Instant>>,
}

/// One trace whose fragments are in flight: what its senders need to send
/// its root last and to count it once, when every fragment was accepted.
#[derive(Debug)]
pub struct SplitTrace {
    pub trace_id: [u8; 16],
    pub shape: TraceShape,
    /// Fragments it was cut into.
    pub fragments: usize,
    /// Spans in all of them.
    pub spans: usize,
    /// Fragments not accepted yet: the trace is whole when this reaches 0.
    unaccepted: AtomicUsize,
    /// Fragments other than the root's not settled yet.
    before_root: AtomicUsize,
    /// The root's fragment, until `before_root` reaches 0.
    parked_root: Mutex<Option<ParkedRoot>>,
}

#[derive(Debug)]
struct ParkedRoot {
    sender: usize,
    due: Instant,
    spans: Vec<(Service, Span)>,
}

/// Part of a trace, waiting for its sender and its due time.
#[derive(Debug)]
struct Fragment {
    due: Instant,
    spans: Vec<(Service, Span)>,
    trace: Arc<SplitTrace>,
    holds_root: bool,
}

/// A fragment in a sender's delay queue: earliest due first, then first in.
#[derive(Debug)]
struct Queued {
    seq: u64,
    fragment: Fragment,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// Reversed, so that `BinaryHeap` pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.fragment.due, other.seq).cmp(&(self.fragment.due, self.seq))
    }
}

/// A fragment as sent in a [`SplitBatch`].
#[derive(Debug, Clone)]
pub struct SentFragment {
    pub trace: Arc<SplitTrace>,
    pub spans: usize,
    pub holds_root: bool,
}

/// An export request made of fragments of many traces.
#[derive(Debug)]
pub struct SplitBatch {
    pub request: ExportTraceServiceRequest,
    pub span_count: usize,
    /// The fragments it carries, in the order packed.
    pub fragments: Vec<SentFragment>,
    /// Spans of the traces it began, all their fragments counted.
    pub begun_spans: usize,
}

/// Traces that became whole when a batch was settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WholeTraces {
    pub traces: u64,
    pub violating: u64,
}

impl SplitSchedule {
    /// A schedule for `senders` senders; `config.fragments` must not
    /// exceed it (every fragment of a trace goes to another sender).
    pub fn new(config: SplitConfig, senders: usize) -> Arc<Self> {
        assert!(
            config.fragments >= 1 && config.fragments <= senders,
            "split into {} fragments over {senders} senders",
            config.fragments
        );
        Arc::new(Self {
            config,
            inboxes: (0..senders).map(|_| Mutex::new(Vec::new())).collect(),
            starting: AtomicUsize::new(senders),
            unsettled: AtomicU64::new(0),
            traces_started: AtomicU64::new(0),
            long_lived_started: AtomicU64::new(0),
            stopped_at: Mutex::new(None),
        })
    }

    pub fn config(&self) -> SplitConfig {
        self.config
    }

    /// Sender `index`'s side of the schedule, beginning traces from `generator`.
    pub fn sender(self: &Arc<Self>, index: usize, generator: TrafficGenerator) -> SplitSender {
        assert!(index < self.inboxes.len(), "sender {index} out of range");
        SplitSender {
            index,
            schedule: Arc::clone(self),
            generator,
            queue: BinaryHeap::new(),
            inbox: Vec::new(),
            seq: 0,
            starting: true,
        }
    }

    /// Traces begun so far.
    pub fn traces_started(&self) -> u64 {
        self.traces_started.load(AtomicOrdering::SeqCst)
    }

    /// Of [`Self::traces_started`], those spread as long-lived.
    pub fn long_lived_started(&self) -> u64 {
        self.long_lived_started.load(AtomicOrdering::SeqCst)
    }

    /// Fragments of traces begun not settled yet.
    pub fn unsettled(&self) -> u64 {
        self.unsettled.load(AtomicOrdering::SeqCst)
    }

    /// When the last sender stopped beginning traces, once all have.
    pub fn stopped_at(&self) -> Option<Instant> {
        *self
            .stopped_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn deliver(&self, sender: usize, fragment: Fragment) {
        self.inboxes[sender]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fragment);
    }
}

/// One sender's side of a [`SplitSchedule`]: the traces it begins, and a
/// delay queue of the fragments it is to send.
#[derive(Debug)]
pub struct SplitSender {
    index: usize,
    schedule: Arc<SplitSchedule>,
    generator: TrafficGenerator,
    queue: BinaryHeap<Queued>,
    /// Swapped with the shared inbox, so that neither allocates anew.
    inbox: Vec<Fragment>,
    seq: u64,
    starting: bool,
}

impl SplitSender {
    pub fn index(&self) -> usize {
        self.index
    }

    /// True until [`Self::stop_starting`].
    pub fn is_starting(&self) -> bool {
        self.starting
    }

    /// Begins no more traces; the fragments of those begun are still sent.
    pub fn stop_starting(&mut self) {
        if !std::mem::replace(&mut self.starting, false) {
            return;
        }
        if self.schedule.starting.fetch_sub(1, AtomicOrdering::SeqCst) == 1 {
            *self
                .schedule
                .stopped_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
    }

    /// True once no sender begins traces and every fragment is settled:
    /// nothing is left to send, by this sender or any other.
    pub fn is_done(&self) -> bool {
        !self.starting
            && self.schedule.starting.load(AtomicOrdering::SeqCst) == 0
            && self.schedule.unsettled.load(AtomicOrdering::SeqCst) == 0
    }

    /// When this sender's next queued fragment is due, if it has one.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.take_inbox();
        self.queue.peek().map(|q| q.fragment.due)
    }

    /// The next request: the fragments due by `now`, earliest first, while
    /// they come to less than `max_due` spans (the rest stay queued), then,
    /// while this sender begins traces, the first fragments of new traces
    /// of at least `begin` spans in all (counting every fragment: in a
    /// steady state a request carries about `begin` spans). A fragment is
    /// never cut. `None` if the request would be empty.
    pub fn next_batch(&mut self, now: Instant, max_due: usize, begin: usize) -> Option<SplitBatch> {
        self.take_inbox();
        let mut packer = Packer::default();
        let mut fragments = Vec::new();
        let mut span_count = 0;
        while span_count < max_due && self.queue.peek().is_some_and(|q| q.fragment.due <= now) {
            let Some(Queued { fragment, .. }) = self.queue.pop() else {
                break;
            };
            span_count += fragment.spans.len();
            fragments.push(SentFragment {
                trace: fragment.trace,
                spans: fragment.spans.len(),
                holds_root: fragment.holds_root,
            });
            for (service, span) in fragment.spans {
                packer.push(service, span);
            }
        }
        let mut begun_spans = 0;
        while self.starting && begun_spans < begin {
            let trace = self.generator.next_trace();
            begun_spans += trace.spans.len();
            let (first, sent) = self.begin(trace, now);
            span_count += sent.spans;
            fragments.push(sent);
            for (service, span) in first {
                packer.push(service, span);
            }
        }
        (span_count > 0).then(|| SplitBatch {
            request: packer.finish(),
            span_count,
            fragments,
            begun_spans,
        })
    }

    /// Settles every fragment of a batch once its request was answered for
    /// good: accepted or not. Hands out roots whose other fragments are all
    /// settled, and returns the traces this made whole.
    pub fn settle(&self, fragments: &[SentFragment], accepted: bool) -> WholeTraces {
        let mut whole = WholeTraces::default();
        for sent in fragments {
            let trace = &sent.trace;
            if accepted && trace.unaccepted.fetch_sub(1, AtomicOrdering::SeqCst) == 1 {
                whole.traces += 1;
                if trace.shape.is_violating() {
                    whole.violating += 1;
                }
            }
            if !sent.holds_root && trace.before_root.fetch_sub(1, AtomicOrdering::SeqCst) == 1 {
                let parked = trace
                    .parked_root
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(root) = parked {
                    self.schedule.deliver(
                        root.sender,
                        Fragment {
                            due: root.due,
                            spans: root.spans,
                            trace: Arc::clone(trace),
                            holds_root: true,
                        },
                    );
                }
            }
            self.schedule.unsettled.fetch_sub(1, AtomicOrdering::SeqCst);
        }
        whole
    }

    /// Cuts a new trace into fragments: the first is returned to go out
    /// now, the others are handed to the next senders in turn, due evenly
    /// over the spread, the root's parked until the others are settled.
    fn begin(
        &mut self,
        trace: GeneratedTrace,
        now: Instant,
    ) -> (Vec<(Service, Span)>, SentFragment) {
        let GeneratedTrace {
            shape,
            trace_id,
            mut spans,
        } = trace;
        let total = spans.len();
        let parts = self.schedule.config.fragments.min(total).max(1);
        // The generator puts the root first; it goes in the last fragment.
        spans.rotate_left(1);
        let split = Arc::new(SplitTrace {
            trace_id,
            shape,
            fragments: parts,
            spans: total,
            unaccepted: AtomicUsize::new(parts),
            before_root: AtomicUsize::new(parts - 1),
            parked_root: Mutex::new(None),
        });
        self.schedule
            .unsettled
            .fetch_add(parts as u64, AtomicOrdering::SeqCst);
        let begun = self
            .schedule
            .traces_started
            .fetch_add(1, AtomicOrdering::SeqCst);
        let senders = self.schedule.inboxes.len();
        // Counted over the run, not per sender, so that a small share
        // shows on a short run with many senders.
        let spread = match self.schedule.config.long_lived {
            Some(long) if parts > 1 && (begun + 1) % u64::from(long.every.max(1)) == 0 => {
                self.schedule
                    .long_lived_started
                    .fetch_add(1, AtomicOrdering::SeqCst);
                long.spread
            }
            _ => self.schedule.config.spread,
        };
        // From the last fragment back, so that the root is parked before
        // any other fragment can be sent and settled.
        for k in (1..parts).rev() {
            let fragment = spans.split_off(k * total / parts);
            let due = now + spread.mul_f64(k as f64 / (parts - 1) as f64);
            let sender = (self.index + k) % senders;
            if k == parts - 1 {
                *split
                    .parked_root
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(ParkedRoot {
                    sender,
                    due,
                    spans: fragment,
                });
            } else {
                self.schedule.deliver(
                    sender,
                    Fragment {
                        due,
                        spans: fragment,
                        trace: Arc::clone(&split),
                        holds_root: false,
                    },
                );
            }
        }
        let sent = SentFragment {
            trace: split,
            spans: spans.len(),
            holds_root: parts == 1,
        };
        (spans, sent)
    }

    fn take_inbox(&mut self) {
        {
            let mut shared = self.schedule.inboxes[self.index]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if shared.is_empty() {
                return;
            }
            std::mem::swap(&mut *shared, &mut self.inbox);
        }
        for fragment in self.inbox.drain(..) {
            self.seq += 1;
            self.queue.push(Queued {
                seq: self.seq,
                fragment,
            });
        }
    }
}

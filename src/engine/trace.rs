//! A trace indexed once for evaluation: spans in start-time order, by id, by
//! name, with parent and children links, and attribute keys as ids (the
//! engine's own, for a trace built for an engine; interned per trace
//! otherwise).
//!
//! Building one is on the daemon's per-trace path, so it allocates per
//! trace, not per span where it can help it: attribute values of a trace
//! share one vector, short strings are inline ([`SmolStr`]), and the key
//! table of a trace built for an engine is the engine's, shared.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Maps keyed by span names and ids are looked up for every model on every
/// trace; SipHash's DoS resistance buys nothing for data already inside the
/// process and cost ~12% of evaluation at 1000 models.
pub(crate) type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use smol_str::SmolStr;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, Span};

use super::value::Value;
use super::TriggerResponse;
use crate::ids::{SpanId, TraceId};
use crate::otlp::wire::{expect, Malformed, Reader, FIXED64, LEN, VARINT};

/// Index of a span inside its [`Trace`] (spans are stored by start time).
pub type SpanIndex = u32;

/// A trace-local attribute key id.
pub(crate) type KeyId = u32;

/// The span kind, as attribute `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// The span status code, as attribute `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

/// `tracetest.span.type`, derived from semantic-convention attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanType {
    Http,
    Rpc,
    Database,
    Messaging,
    Faas,
    /// Tracetest's type for a span with `exception.*` attributes.
    Exception,
    Exec,
    General,
}

fn word_values() -> &'static [Value; 17] {
    static TABLE: OnceLock<[Value; 17]> = OnceLock::new();
    TABLE.get_or_init(|| {
        [
            "unspecified",
            "internal",
            "server",
            "client",
            "producer",
            "consumer",
            "unset",
            "ok",
            "error",
            "http",
            "rpc",
            "database",
            "messaging",
            "faas",
            "exec",
            "general",
            "exception",
        ]
        .map(Value::str)
    })
}

impl SpanKind {
    fn from_otlp(k: i32) -> SpanKind {
        match span::SpanKind::try_from(k) {
            Ok(span::SpanKind::Internal) => SpanKind::Internal,
            Ok(span::SpanKind::Server) => SpanKind::Server,
            Ok(span::SpanKind::Client) => SpanKind::Client,
            Ok(span::SpanKind::Producer) => SpanKind::Producer,
            Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
    pub(crate) fn value(self) -> &'static Value {
        let w = word_values();
        match self {
            SpanKind::Unspecified => &w[0],
            SpanKind::Internal => &w[1],
            SpanKind::Server => &w[2],
            SpanKind::Client => &w[3],
            SpanKind::Producer => &w[4],
            SpanKind::Consumer => &w[5],
        }
    }
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        }
    }
    pub(crate) fn value(self) -> &'static Value {
        let w = word_values();
        match self {
            StatusCode::Unset => &w[6],
            StatusCode::Ok => &w[7],
            StatusCode::Error => &w[8],
        }
    }
}

impl SpanType {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanType::Http => "http",
            SpanType::Rpc => "rpc",
            SpanType::Database => "database",
            SpanType::Messaging => "messaging",
            SpanType::Faas => "faas",
            SpanType::Exception => "exception",
            SpanType::Exec => "exec",
            SpanType::General => "general",
        }
    }
    pub(crate) fn value(self) -> &'static Value {
        let w = word_values();
        match self {
            SpanType::Http => &w[9],
            SpanType::Rpc => &w[10],
            SpanType::Database => &w[11],
            SpanType::Messaging => &w[12],
            SpanType::Faas => &w[13],
            SpanType::Exception => &w[16],
            SpanType::Exec => &w[14],
            SpanType::General => &w[15],
        }
    }

    /// The type from what [`type_bits`] found in the span's own
    /// attributes and in its resource's, with its name: Tracetest's rule
    /// (`server/traces`: the first attribute whose key starts with `http.`,
    /// `db.`, `rpc.`, `messaging.`, `faas.` or `exception.`, among span,
    /// scope and resource attributes; browser spans, with `event_type` or
    /// named `documentLoad`, are `general`). Tracetest looks at the keys
    /// in Go's map order, random when a span has two kinds; here the order
    /// of that list decides. `exec` (a `process.command`,
    /// `process.executable.name` or `process.command_line` of the span's
    /// own) is tracecheck's, for spans Tracetest calls `general`.
    pub(crate) fn from_bits(own: u8, resource: u8, name: &str) -> SpanType {
        let all = own | resource;
        if all & TYPE_BROWSER != 0 || name == "documentLoad" {
            return SpanType::General;
        }
        for (bit, ty) in [
            (TYPE_HTTP, SpanType::Http),
            (TYPE_DB, SpanType::Database),
            (TYPE_RPC, SpanType::Rpc),
            (TYPE_MESSAGING, SpanType::Messaging),
            (TYPE_FAAS, SpanType::Faas),
            (TYPE_EXCEPTION, SpanType::Exception),
        ] {
            if all & bit != 0 {
                return ty;
            }
        }
        if own & TYPE_EXEC != 0 {
            SpanType::Exec
        } else {
            SpanType::General
        }
    }
}

const TYPE_HTTP: u8 = 1;
const TYPE_DB: u8 = 1 << 1;
const TYPE_RPC: u8 = 1 << 2;
const TYPE_MESSAGING: u8 = 1 << 3;
const TYPE_FAAS: u8 = 1 << 4;
const TYPE_EXCEPTION: u8 = 1 << 5;
const TYPE_EXEC: u8 = 1 << 6;
const TYPE_BROWSER: u8 = 1 << 7;

/// What an attribute key says about its span's type (see
/// [`SpanType::from_bits`]). On the path of every attribute of every span:
/// most keys are told apart by their first byte.
pub(crate) fn type_bits(key: &[u8]) -> u8 {
    match key.first() {
        Some(b'h') if key.starts_with(b"http.") => TYPE_HTTP,
        Some(b'd') if key.starts_with(b"db.") => TYPE_DB,
        Some(b'r') if key.starts_with(b"rpc.") => TYPE_RPC,
        Some(b'm') if key.starts_with(b"messaging.") => TYPE_MESSAGING,
        Some(b'f') if key.starts_with(b"faas.") => TYPE_FAAS,
        Some(b'e') if key.starts_with(b"exception.") => TYPE_EXCEPTION,
        Some(b'e') if key == b"event_type" => TYPE_BROWSER,
        Some(b'p')
            if matches!(
                key,
                b"process.command" | b"process.executable.name" | b"process.command_line"
            ) =>
        {
            TYPE_EXEC
        }
        _ => 0,
    }
}

/// A span event.
#[derive(Debug, Clone)]
pub(crate) struct EventData {
    name: SmolStr,
    time: u64,
    attrs: Vec<(Arc<str>, Value)>,
}

/// One span with everything evaluation reads from it.
#[derive(Debug, Clone)]
pub(crate) struct SpanData {
    pub id: SpanId,
    pub parent_id: SpanId,
    /// Index of the parent span, when it is in the trace.
    pub parent: Option<SpanIndex>,
    pub name: SmolStr,
    /// `name` as a value, so reading it never allocates.
    pub name_value: Value,
    pub kind: SpanKind,
    pub status: StatusCode,
    pub status_message: Value,
    pub span_type: SpanType,
    pub start: u64,
    pub end: u64,
    /// Where its attributes are in [`Trace::attrs`]: `start..end`, sorted
    /// by key id.
    pub attrs: (u32, u32),
    pub events: Vec<EventData>,
    pub resource: u32,
}

/// The spans of one trace, indexed for selectors.
#[derive(Debug, Clone)]
pub struct Trace {
    trace_id: TraceId,
    pub(crate) spans: Vec<SpanData>,
    /// The span attributes of every span, each span's a run of them
    /// ([`SpanData::attrs`]).
    attrs: Vec<(KeyId, Value)>,
    /// Resource attributes, sorted by key id.
    pub(crate) resources: Vec<Vec<(KeyId, Value)>>,
    pub(crate) keys: KeyTable,
    /// Span ids with their index, sorted by id; of spans with the same id,
    /// the last in start-time order.
    by_id: Vec<(SpanId, SpanIndex)>,
    /// Span indexes grouped by name, the groups in name order, each in
    /// start-time order.
    named: Vec<SpanIndex>,
    /// Each name's run of `named`, in name order: a trace's names are
    /// found by binary search, with nothing hashed or copied to index them.
    name_runs: Vec<(u32, u32)>,
    service_key: Option<KeyId>,
}

/// A trace's attribute key ids by name.
#[derive(Debug, Clone)]
pub(crate) enum KeyTable {
    /// The key ids of the engine the trace was built for (every key the
    /// builder kept is in it): nothing interned per trace.
    Shared(Arc<KeySet>),
    /// Interned per trace, for a trace built with every attribute.
    Own(FastMap<Arc<str>, KeyId>),
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable::Own(FastMap::default())
    }
}

impl KeyTable {
    pub(crate) fn get(&self, name: &str) -> Option<KeyId> {
        match self {
            KeyTable::Shared(set) => set.id(name),
            KeyTable::Own(map) => map.get(name).copied(),
        }
    }

    /// Every key with its id.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> Vec<(Arc<str>, KeyId)> {
        match self {
            KeyTable::Shared(set) => set.to_map().into_iter().collect(),
            KeyTable::Own(map) => map.iter().map(|(k, id)| (Arc::clone(k), *id)).collect(),
        }
    }

    /// The id of `name`, added if new (a shared table is copied first).
    fn intern(&mut self, name: &str) -> KeyId {
        match self {
            KeyTable::Own(map) => intern(map, name),
            KeyTable::Shared(set) => match set.id(name) {
                Some(id) => id,
                None => {
                    let mut map = set.to_map();
                    let id = intern(&mut map, name);
                    *self = KeyTable::Own(map);
                    id
                }
            },
        }
    }
}

/// A span's identity, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanInfo {
    pub span_id: SpanId,
    pub name: String,
    pub service: Option<String>,
}

/// The attribute the synthetic trigger span carries.
pub const TRIGGER_SPAN_NAME: &str = "Tracetest trigger";

impl Trace {
    /// Groups the spans of OTLP resource spans by trace id, one [`Trace`]
    /// per id, in order of first appearance. Spans without a valid 16-byte
    /// trace id are dropped.
    pub fn from_resource_spans(resource_spans: &[ResourceSpans]) -> Vec<Trace> {
        let mut order: Vec<TraceId> = Vec::new();
        let mut builders: HashMap<TraceId, TraceBuilder> = HashMap::new();
        for rs in resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let Some(tid) = TraceId::from_slice(&s.trace_id) else {
                        continue;
                    };
                    let b = builders.entry(tid).or_insert_with(|| {
                        order.push(tid);
                        TraceBuilder::new(tid)
                    });
                    b.add_span(rs.resource.as_ref(), s);
                }
            }
        }
        order
            .into_iter()
            .filter_map(|t| builders.remove(&t))
            .map(TraceBuilder::build)
            .collect()
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Index of the span with this id.
    pub fn span_index(&self, id: SpanId) -> Option<SpanIndex> {
        find_id(&self.by_id, id)
    }

    /// Indexes of the spans with this name, in start-time order.
    pub fn spans_named(&self, name: &str) -> &[SpanIndex] {
        self.name_runs
            .binary_search_by(|run| self.run_name(*run).cmp(name))
            .ok()
            .and_then(|i| self.name_runs.get(i))
            .and_then(|&(start, end)| self.named.get(start as usize..end as usize))
            .unwrap_or(&[])
    }

    /// The name of the spans of a run of `named`.
    fn run_name(&self, (start, _): (u32, u32)) -> &str {
        self.named
            .get(start as usize)
            .and_then(|&i| self.spans.get(i as usize))
            .map_or("", |s| s.name.as_str())
    }

    /// The distinct span names of the trace.
    pub(crate) fn span_names(&self) -> impl Iterator<Item = &str> {
        self.name_runs.iter().map(|run| self.run_name(*run))
    }

    /// The attributes of the span at `index`, sorted by key id.
    pub(crate) fn span_attrs(&self, index: SpanIndex) -> &[(KeyId, Value)] {
        self.spans
            .get(index as usize)
            .and_then(|s| self.attrs.get(s.attrs.0 as usize..s.attrs.1 as usize))
            .unwrap_or(&[])
    }

    /// Whether a span of this name is in the trace.
    pub fn has_span_named(&self, name: &str) -> bool {
        !self.spans_named(name).is_empty()
    }

    /// Identity of the span at `index` (start-time order).
    pub fn span_info(&self, index: SpanIndex) -> Option<SpanInfo> {
        let s = self.spans.get(index as usize)?;
        Some(SpanInfo {
            span_id: s.id,
            name: s.name.to_string(),
            service: self.service_name(index).map(str::to_string),
        })
    }

    /// An attribute of a span, looked up by name (for callers outside the
    /// engine; compiled models use interned keys).
    pub fn attribute(&self, index: SpanIndex, name: &str) -> Option<Value> {
        let key = self.keys.get(name);
        self.lookup(index, key).cloned()
    }

    /// The service of the trace's root span (the first span without a
    /// parent) and its `service.version`, as a verdict is labelled.
    pub fn root_service(&self) -> Option<(&str, Option<&str>)> {
        let root = self
            .spans
            .iter()
            .position(|s| s.parent_id == SpanId([0; 8]))? as SpanIndex;
        let version = match self.lookup(root, self.keys.get("service.version")) {
            Some(Value::Str(v)) => Some(&**v),
            _ => None,
        };
        Some((self.service_name(root)?, version))
    }

    pub(crate) fn service_name(&self, index: SpanIndex) -> Option<&str> {
        match self.lookup(index, self.service_key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A span attribute, else a resource attribute of the same key.
    pub(crate) fn lookup(&self, index: SpanIndex, key: Option<KeyId>) -> Option<&Value> {
        let key = key?;
        let s = self.spans.get(index as usize)?;
        let attrs = self.span_attrs(index);
        if let Ok(i) = attrs.binary_search_by_key(&key, |(k, _)| *k) {
            return attrs.get(i).map(|(_, v)| v);
        }
        let res = self.resources.get(s.resource as usize)?;
        let i = res.binary_search_by_key(&key, |(k, _)| *k).ok()?;
        res.get(i).map(|(_, v)| v)
    }

    pub(crate) fn events_value(&self, index: SpanIndex) -> Value {
        let Some(s) = self.spans.get(index as usize) else {
            return Value::Array(Vec::new());
        };
        Value::Array(
            s.events
                .iter()
                .map(|e| {
                    Value::Map(vec![
                        (Arc::from("name"), Value::Str(e.name.clone())),
                        (Arc::from("time"), Value::Int(e.time as i64)),
                        (Arc::from("attributes"), Value::Map(e.attrs.clone())),
                    ])
                })
                .collect(),
        )
    }

    /// The events as the JSON text Tracetest's `span.events` holds
    /// (`server/traces/span_entitiess.go`): `[{"name":…,"timestamp":…,
    /// "attributes":{…}}]`, `[]` for none. A timestamp is RFC 3339 in UTC
    /// (Go's zero time for an event without one), attribute values are
    /// strings with their keys in order, as a Go map marshals them; a
    /// repeated key keeps its last value, as Tracetest's `Set` does.
    pub(crate) fn span_events_text(&self, index: SpanIndex) -> Value {
        let Some(s) = self.spans.get(index as usize) else {
            return Value::str("[]");
        };
        let mut out = String::from("[");
        for (i, e) in s.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let timestamp = if e.time == 0 {
                "0001-01-01T00:00:00Z".to_string()
            } else {
                crate::civil::Utc::from_unix_nanos(e.time).rfc3339_nano()
            };
            let mut attrs: BTreeMap<&str, String> = BTreeMap::new();
            for (k, v) in &e.attrs {
                attrs.insert(k, v.to_string());
            }
            out.push_str("{\"name\":");
            out.push_str(&json_string(&e.name));
            out.push_str(",\"timestamp\":");
            out.push_str(&json_string(&timestamp));
            out.push_str(",\"attributes\":{");
            for (j, (k, v)) in attrs.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(k));
                out.push(':');
                out.push_str(&json_string(v));
            }
            out.push_str("}}");
        }
        out.push(']');
        Value::Str(out.into())
    }

    pub(crate) fn duration(&self, index: SpanIndex) -> Option<Duration> {
        let s = self.spans.get(index as usize)?;
        Some(Duration::from_nanos(s.end.saturating_sub(s.start)))
    }

    /// Adds the span Tracetest puts above a test's trace: named `Tracetest
    /// trigger`, type `general`, holding the trigger response as
    /// `tracetest.response.status|body|headers`, parent of the root spans.
    pub fn add_trigger_span(&mut self, response: &TriggerResponse) {
        if self.has_span_named(TRIGGER_SPAN_NAME) {
            return;
        }
        let start = self.spans.iter().map(|s| s.start).min().unwrap_or(0);
        let end = match response.duration {
            Some(d) => start.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => self.spans.iter().map(|s| s.end).max().unwrap_or(start),
        };
        let start_attr = self.attrs.len();
        for (k, v) in response.attributes() {
            let id = self.keys.intern(k);
            self.attrs.push((id, v));
        }
        if let Some(a) = self.attrs.get_mut(start_attr..) {
            a.sort_by_key(|(k, _)| *k);
        }
        let attrs = (start_attr as u32, self.attrs.len() as u32);
        let name = SmolStr::new_static(TRIGGER_SPAN_NAME);
        self.resources.push(Vec::new());
        let trigger = SpanData {
            id: SpanId::INVALID,
            parent_id: SpanId::INVALID,
            parent: None,
            name_value: Value::Str(name.clone()),
            name,
            kind: SpanKind::Internal,
            status: StatusCode::Unset,
            status_message: Value::str(""),
            span_type: SpanType::General,
            start,
            end,
            attrs,
            events: Vec::new(),
            resource: (self.resources.len() - 1) as u32,
        };
        // The trigger comes first in start-time order: shift every index.
        self.spans.insert(0, trigger);
        for s in self.spans.iter_mut().skip(1) {
            s.parent = match s.parent {
                Some(p) => Some(p + 1),
                None => Some(0),
            };
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.by_id = index_ids(&self.spans);
        self.index_names();
    }

    /// `named` and `name_runs`: one vector of span indexes grouped by name
    /// (a stable sort keeps each group in start-time order), not one per
    /// name.
    fn index_names(&mut self) {
        let spans = &self.spans;
        self.named.clear();
        self.named.extend(0..spans.len() as SpanIndex);
        let name = |i: &SpanIndex| spans.get(*i as usize).map_or("", |s| s.name.as_str());
        self.named.sort_by(|a, b| name(a).cmp(name(b)));
        self.name_runs.clear();
        let mut start = 0;
        for run in self.named.chunk_by(|a, b| name(a) == name(b)) {
            let end = start + run.len() as u32;
            self.name_runs.push((start, end));
            start = end;
        }
    }
}

/// `(span id, index)` of every span with a valid id, sorted by id; of
/// spans with the same id, only the last in start-time order.
fn index_ids(spans: &[SpanData]) -> Vec<(SpanId, SpanIndex)> {
    let mut ids: Vec<(SpanId, SpanIndex)> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.id.is_valid())
        .map(|(i, s)| (s.id, i as SpanIndex))
        .collect();
    ids.sort_unstable();
    // `dedup_by` hands the later element first: carry its index back.
    ids.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = later.1;
        }
        same
    });
    ids
}

fn find_id(ids: &[(SpanId, SpanIndex)], id: SpanId) -> Option<SpanIndex> {
    let i = ids.binary_search_by_key(&id, |(k, _)| *k).ok()?;
    ids.get(i).map(|(_, index)| *index)
}

fn intern(keys: &mut FastMap<Arc<str>, KeyId>, k: &str) -> KeyId {
    if let Some(id) = keys.get(k) {
        return *id;
    }
    let id = keys.len() as KeyId;
    keys.insert(Arc::from(k), id);
    id
}

/// The attribute keys an evaluation can read, with their ids: those its
/// compiled models name (with the engine's ids, so a trace built for the
/// engine needs no key table of its own), the ones the span type is derived
/// from, and `service.name`. A trace built for that evaluation need not
/// decode any other attribute.
#[derive(Debug, Default)]
pub struct KeySet {
    /// By their bytes, so that a key in a span can be looked up before
    /// (and, if it is not kept, without) checking it is UTF-8.
    by_bytes: FastMap<Box<[u8]>, KeyId>,
    /// Bit `n` set if a key is `n` bytes long (bit 63: 63 or longer): most
    /// keys in a span are in no model, and most of those are told apart by
    /// their length without hashing them.
    lengths: u64,
}

impl KeySet {
    /// `names` in id order: the `i`th gets id `i`.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a Arc<str>>) -> KeySet {
        let mut set: FastMap<Arc<str>, KeyId> = FastMap::default();
        for n in names {
            let next = set.len() as KeyId;
            set.entry(Arc::clone(n)).or_insert(next);
        }
        // The span type is decided from every key's prefix as it is read
        // (`type_bits`), kept or not; `service.name` names spans in results,
        // and `service.version` a verdict's version of its root service.
        for always in ["service.name", "service.version"] {
            if !set.contains_key(always) {
                let next = set.len() as KeyId;
                set.insert(Arc::from(always), next);
            }
        }
        KeySet {
            lengths: set.keys().fold(0, |bits, k| bits | length_bit(k.len())),
            by_bytes: set
                .into_iter()
                .map(|(k, id)| (Box::from(k.as_bytes()), id))
                .collect(),
        }
    }

    fn id(&self, key: &str) -> Option<KeyId> {
        self.id_of_bytes(key.as_bytes())
    }

    /// The keys by name, for a table that adds keys of its own.
    fn to_map(&self) -> FastMap<Arc<str>, KeyId> {
        self.by_bytes
            .iter()
            // Every key came in as a `str`.
            .filter_map(|(k, id)| Some((Arc::from(std::str::from_utf8(k).ok()?), *id)))
            .collect()
    }

    /// The id of a key as it is on the wire.
    fn id_of_bytes(&self, key: &[u8]) -> Option<KeyId> {
        if self.lengths & length_bit(key.len()) == 0 {
            return None;
        }
        self.by_bytes.get(key).copied()
    }

    fn contains(&self, key: &str) -> bool {
        self.id(key).is_some()
    }
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// Builds a [`Trace`] span by span (the daemon's assembler can feed it
/// directly instead of going through `ResourceSpans`).
#[derive(Debug)]
pub struct TraceBuilder {
    trace_id: TraceId,
    spans: Vec<SpanData>,
    attrs: Vec<(KeyId, Value)>,
    resources: Vec<Vec<(KeyId, Value)>>,
    /// [`type_bits`] of each resource's keys, by resource index.
    resource_types: Vec<u8>,
    /// The last resource seen, so that the spans of one `ResourceSpans`
    /// share one copy of its attributes.
    last_resource: Option<(Option<Resource>, u32)>,
    /// The same for [`TraceBuilder::add_encoded`]: where the last resource's
    /// bytes were.
    last_encoded_resource: Option<((usize, usize), u32)>,
    keys: KeyTable,
    /// [`TraceBuilder::add_encoded`] decodes only these attributes.
    keep: Option<Arc<KeySet>>,
}

impl TraceBuilder {
    pub fn new(trace_id: TraceId) -> TraceBuilder {
        TraceBuilder {
            trace_id,
            spans: Vec::new(),
            attrs: Vec::new(),
            resources: Vec::new(),
            resource_types: Vec::new(),
            last_resource: None,
            last_encoded_resource: None,
            keys: KeyTable::default(),
            keep: None,
        }
    }

    /// A builder whose [`TraceBuilder::add_encoded`] leaves out every span
    /// and resource attribute not in `keep` (and the events, unless `keep`
    /// holds `events`, the builtin that reads them): for a trace
    /// that only an engine with that [`KeySet`](crate::engine::Engine::key_set)
    /// will read. Most of a span's attributes are usually in no model.
    pub fn keeping(trace_id: TraceId, keep: Arc<KeySet>) -> TraceBuilder {
        TraceBuilder {
            keys: KeyTable::Shared(Arc::clone(&keep)),
            keep: Some(keep),
            ..TraceBuilder::new(trace_id)
        }
    }

    /// Room for `spans` more spans (and a few kept attributes each), so a
    /// trace of known size is not built by growing vectors.
    pub fn reserve(&mut self, spans: usize) {
        self.spans.reserve(spans);
        self.attrs.reserve(spans.saturating_mul(4));
    }

    /// An encoded `KeyValue` with its key's id, unless the builder keeps
    /// only some keys and this is not one of them (then its value is not
    /// decoded at all).
    fn kept_key_value(
        &mut self,
        buf: &[u8],
        types: &mut u8,
    ) -> Result<Option<(KeyId, Value)>, Malformed> {
        let (key, value) = key_value_parts(buf, 0)?;
        *types |= type_bits(key);
        let id = match &self.keep {
            // A key of the set is UTF-8 (it is a `str` there); one that is
            // not in it is never read, so whether it is does not matter.
            Some(keep) => match keep.id_of_bytes(key) {
                Some(id) => id,
                None => return Ok(None),
            },
            None => self.keys.intern(utf8(key)?),
        };
        Ok(Some((id, encoded_value_or_empty(value, 0)?)))
    }

    /// Adds one span with its resource.
    pub fn add_span(&mut self, resource: Option<&Resource>, span: &Span) {
        let res_idx = self.resource_index(resource);
        let start_attr = self.attrs.len();
        for kv in &span.attributes {
            let id = self.keys.intern(&kv.key);
            self.attrs.push((id, any_to_value(kv.value.as_ref())));
        }
        let attrs = self.seal_attrs(start_attr);
        let own_types = span
            .attributes
            .iter()
            .fold(0, |bits, kv| bits | type_bits(kv.key.as_bytes()));
        let resource_types = self.resource_types.get(res_idx as usize).copied();
        let span_type = SpanType::from_bits(own_types, resource_types.unwrap_or(0), &span.name);
        debug_assert!(self.keep.is_none(), "add_span decodes every attribute");
        let (status, status_message) = match &span.status {
            Some(st) => (
                match status::StatusCode::try_from(st.code) {
                    Ok(status::StatusCode::Ok) => StatusCode::Ok,
                    Ok(status::StatusCode::Error) => StatusCode::Error,
                    _ => StatusCode::Unset,
                },
                Value::str(&st.message),
            ),
            None => (StatusCode::Unset, Value::str("")),
        };
        let name = SmolStr::new(&span.name);
        self.spans.push(SpanData {
            id: SpanId::from_slice(&span.span_id).unwrap_or(SpanId::INVALID),
            parent_id: SpanId::from_slice(&span.parent_span_id).unwrap_or(SpanId::INVALID),
            parent: None,
            name_value: Value::Str(name.clone()),
            name,
            kind: SpanKind::from_otlp(span.kind),
            status,
            status_message,
            span_type,
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano,
            attrs,
            events: span
                .events
                .iter()
                .map(|e| EventData {
                    name: SmolStr::new(&e.name),
                    time: e.time_unix_nano,
                    attrs: kv_list(&e.attributes),
                })
                .collect(),
            resource: res_idx,
        });
    }

    /// Adds one span from its OTLP protobuf encoding (`Span`) and its
    /// resource's (`Resource`; empty for none), reading the wire format
    /// directly: nothing is allocated for keys already seen in this trace,
    /// and each string value is copied once, into its [`Value`]. Gives the
    /// same span as [`TraceBuilder::add_span`] on the prost-decoded messages.
    pub fn add_encoded(&mut self, resource: &[u8], span: &[u8]) -> Result<(), Malformed> {
        let res_idx = self.encoded_resource_index(resource)?;
        let mut r = Reader::new(span);
        let (mut id, mut parent_id) = (SpanId::INVALID, SpanId::INVALID);
        let (mut name, mut kind, mut start, mut end) = ("", 0i32, 0u64, 0u64);
        let (mut status, mut status_message) = (StatusCode::Unset, "");
        let start_attr = self.attrs.len();
        let mut own_types = 0u8;
        let mut events = Vec::new();
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                2 | 4 => {
                    expect(wire, LEN)?;
                    let v = SpanId::from_slice(r.len_delimited()?).unwrap_or(SpanId::INVALID);
                    if field == 2 {
                        id = v;
                    } else {
                        parent_id = v;
                    }
                }
                5 => {
                    expect(wire, LEN)?;
                    name = r.string()?;
                }
                6 => {
                    expect(wire, VARINT)?;
                    kind = r.varint()? as i32;
                }
                7 | 8 => {
                    expect(wire, FIXED64)?;
                    let t = r.fixed64()?;
                    if field == 7 {
                        start = t;
                    } else {
                        end = t;
                    }
                }
                9 => {
                    expect(wire, LEN)?;
                    if let Some(kv) = self.kept_key_value(r.len_delimited()?, &mut own_types)? {
                        self.attrs.push(kv);
                    }
                }
                11 => {
                    expect(wire, LEN)?;
                    let event = r.len_delimited()?;
                    // Only `attr:events` and `attr:span.events` read them.
                    if self
                        .keep
                        .as_ref()
                        .is_none_or(|k| k.contains("events") || k.contains("span.events"))
                    {
                        events.push(encoded_event(event)?);
                    }
                }
                15 => {
                    expect(wire, LEN)?;
                    let mut st = Reader::new(r.len_delimited()?);
                    let (mut code, mut message) = (0u64, "");
                    while !st.is_empty() {
                        let (f, w) = st.key()?;
                        match f {
                            2 => {
                                expect(w, LEN)?;
                                message = st.string()?;
                            }
                            3 => {
                                expect(w, VARINT)?;
                                code = st.varint()?;
                            }
                            _ => st.skip(f, w, 1)?,
                        }
                    }
                    status = match code as i32 {
                        1 => StatusCode::Ok,
                        2 => StatusCode::Error,
                        _ => StatusCode::Unset,
                    };
                    status_message = message;
                }
                _ => r.skip(field, wire, 0)?,
            }
        }
        let attrs = self.seal_attrs(start_attr);
        let resource_types = self.resource_types.get(res_idx as usize).copied();
        let span_type = SpanType::from_bits(own_types, resource_types.unwrap_or(0), name);
        let name = SmolStr::new(name);
        self.spans.push(SpanData {
            id,
            parent_id,
            parent: None,
            name_value: Value::Str(name.clone()),
            name,
            kind: SpanKind::from_otlp(kind),
            status,
            status_message: Value::str(status_message),
            span_type,
            start,
            end,
            attrs,
            events,
            resource: res_idx,
        });
        Ok(())
    }

    fn encoded_resource_index(&mut self, resource: &[u8]) -> Result<u32, Malformed> {
        // The spans of one request share their resource's bytes: compare
        // where they are, not what they say.
        let here = (resource.as_ptr() as usize, resource.len());
        if let Some((at, idx)) = self.last_encoded_resource {
            if at == here {
                return Ok(idx);
            }
        }
        let mut attrs: Vec<(KeyId, Value)> = Vec::new();
        let mut types = 0;
        let mut r = Reader::new(resource);
        while !r.is_empty() {
            let (field, wire) = r.key()?;
            if field == 1 {
                expect(wire, LEN)?;
                if let Some(kv) = self.kept_key_value(r.len_delimited()?, &mut types)? {
                    attrs.push(kv);
                }
            } else {
                r.skip(field, wire, 0)?;
            }
        }
        attrs.reverse();
        attrs.sort_by_key(|(k, _)| *k);
        attrs.dedup_by_key(|(k, _)| *k);
        self.resources.push(attrs);
        self.resource_types.push(types);
        let idx = (self.resources.len() - 1) as u32;
        self.last_encoded_resource = Some((here, idx));
        Ok(idx)
    }

    fn resource_index(&mut self, resource: Option<&Resource>) -> u32 {
        if let Some((last, idx)) = &self.last_resource {
            if last.as_ref() == resource {
                return *idx;
            }
        }
        let mut attrs: Vec<(KeyId, Value)> = Vec::new();
        let mut types = 0;
        if let Some(r) = resource {
            for kv in &r.attributes {
                types |= type_bits(kv.key.as_bytes());
                let id = self.keys.intern(&kv.key);
                attrs.push((id, any_to_value(kv.value.as_ref())));
            }
        }
        attrs.reverse();
        attrs.sort_by_key(|(k, _)| *k);
        attrs.dedup_by_key(|(k, _)| *k);
        self.resources.push(attrs);
        self.resource_types.push(types);
        let idx = (self.resources.len() - 1) as u32;
        self.last_resource = Some((resource.cloned(), idx));
        idx
    }

    /// Sorts the span attributes pushed since `start` by key id, keeping
    /// the last of duplicate keys as OTLP receivers do; their run in
    /// `attrs`.
    fn seal_attrs(&mut self, start: usize) -> (u32, u32) {
        if let Some(new) = self.attrs.get_mut(start..) {
            new.reverse();
            // Stable: the first of equal keys is now the last sent.
            new.sort_by_key(|(k, _)| *k);
        }
        let mut keep = start;
        for i in start..self.attrs.len() {
            let dup = keep > start
                && self.attrs.get(keep - 1).map(|(k, _)| *k) == self.attrs.get(i).map(|(k, _)| *k);
            if !dup {
                self.attrs.swap(keep, i);
                keep += 1;
            }
        }
        self.attrs.truncate(keep);
        (start as u32, keep as u32)
    }

    /// Indexes the spans. Spans with the same id are kept once (the last).
    pub fn build(mut self) -> Trace {
        // Stable order: start time, then span id, so `:first` is deterministic.
        self.spans
            .sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
        let by_id = index_ids(&self.spans);
        for s in &mut self.spans {
            s.parent = if s.parent_id.is_valid() && s.parent_id != s.id {
                find_id(&by_id, s.parent_id)
            } else {
                None
            };
        }
        break_cycles(&mut self.spans);
        let service_key = self.keys.get("service.name");
        let mut t = Trace {
            trace_id: self.trace_id,
            spans: self.spans,
            attrs: self.attrs,
            resources: self.resources,
            keys: self.keys,
            by_id,
            named: Vec::new(),
            name_runs: Vec::new(),
            service_key,
        };
        t.index_names();
        t
    }
}

/// Parent links come from the sender; a cycle would make ancestor walks
/// loop forever, so the link that closes one is cut.
fn break_cycles(spans: &mut [SpanData]) {
    let n = spans.len();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; n];
    let mut path = Vec::new();
    for start in 0..n {
        path.clear();
        let mut cur = Some(start);
        while let Some(i) = cur {
            match state.get_mut(i) {
                Some(st @ 0) => {
                    *st = 1;
                    path.push(i);
                    cur = spans.get(i).and_then(|s| s.parent).map(|p| p as usize);
                }
                Some(1) => {
                    // `i` is on the path: the last span of the path points back.
                    if let Some(s) = path.last().and_then(|&last| spans.get_mut(last)) {
                        s.parent = None;
                    }
                    break;
                }
                _ => break,
            }
        }
        for &i in &path {
            if let Some(st) = state.get_mut(i) {
                *st = 2;
            }
        }
    }
}

/// prost's bound on nested messages; AnyValue nesting uses three per level.
const MAX_VALUE_DEPTH: usize = 100 / 3;

/// An encoded `KeyValue`: its key, borrowed, and its value.
fn encoded_key_value(buf: &[u8], depth: usize) -> Result<(&str, Value), Malformed> {
    let (key, value) = key_value_parts(buf, depth)?;
    Ok((utf8(key)?, encoded_value_or_empty(value, depth)?))
}

/// A `string` field's bytes as the `str` prost would make of them.
fn utf8(bytes: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(bytes)
        .map_err(|_| Malformed("invalid string value: data is not UTF-8 encoded"))
}

/// An encoded `KeyValue` split into its key, not yet checked to be UTF-8,
/// and its still encoded value.
fn key_value_parts(buf: &[u8], depth: usize) -> Result<(&[u8], Option<&[u8]>), Malformed> {
    let mut r = Reader::new(buf);
    let (mut key, mut value): (&[u8], _) = (&[], None);
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                expect(wire, LEN)?;
                key = r.len_delimited()?;
            }
            2 => {
                expect(wire, LEN)?;
                value = Some(r.len_delimited()?);
            }
            _ => r.skip(field, wire, depth)?,
        }
    }
    Ok((key, value))
}

/// A `KeyValue` without a value reads as the empty string, as
/// [`any_to_value`] has it.
fn encoded_value_or_empty(value: Option<&[u8]>, depth: usize) -> Result<Value, Malformed> {
    match value {
        Some(v) => encoded_any_value(v, depth),
        None => Ok(Value::str("")),
    }
}

/// An encoded `AnyValue`, as [`any_to_value`] converts the decoded one.
fn encoded_any_value(buf: &[u8], depth: usize) -> Result<Value, Malformed> {
    if depth > MAX_VALUE_DEPTH {
        return Err(Malformed("recursion limit reached"));
    }
    let mut r = Reader::new(buf);
    let mut value = None;
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        value = Some(match field {
            1 => {
                expect(wire, LEN)?;
                Value::str(r.string()?)
            }
            2 => {
                expect(wire, VARINT)?;
                Value::Bool(r.varint()? != 0)
            }
            3 => {
                expect(wire, VARINT)?;
                Value::Int(r.varint()? as i64)
            }
            4 => {
                expect(wire, FIXED64)?;
                Value::Float(f64::from_bits(r.fixed64()?))
            }
            5 | 6 => {
                expect(wire, LEN)?;
                let mut list = Reader::new(r.len_delimited()?);
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                while !list.is_empty() {
                    let (f, w) = list.key()?;
                    if f != 1 {
                        list.skip(f, w, depth + 1)?;
                        continue;
                    }
                    expect(w, LEN)?;
                    let item = list.len_delimited()?;
                    if field == 5 {
                        items.push(encoded_any_value(item, depth + 1)?);
                    } else {
                        let (k, v) = encoded_key_value(item, depth + 1)?;
                        pairs.push((Arc::from(k), v));
                    }
                }
                if field == 5 {
                    Value::Array(items)
                } else {
                    Value::Map(pairs)
                }
            }
            7 => {
                expect(wire, LEN)?;
                let b = r.len_delimited()?;
                let mut s = String::with_capacity(b.len() * 2);
                for byte in b {
                    use std::fmt::Write as _;
                    let _ = write!(s, "{byte:02x}");
                }
                Value::Str(SmolStr::from(s))
            }
            _ => {
                r.skip(field, wire, depth)?;
                continue;
            }
        });
    }
    Ok(value.unwrap_or_else(|| Value::str("")))
}

/// An encoded span `Event`.
fn encoded_event(buf: &[u8]) -> Result<EventData, Malformed> {
    let mut r = Reader::new(buf);
    let (mut name, mut time, mut attrs) = ("", 0u64, Vec::new());
    while !r.is_empty() {
        let (field, wire) = r.key()?;
        match field {
            1 => {
                expect(wire, FIXED64)?;
                time = r.fixed64()?;
            }
            2 => {
                expect(wire, LEN)?;
                name = r.string()?;
            }
            3 => {
                expect(wire, LEN)?;
                let (k, v) = encoded_key_value(r.len_delimited()?, 0)?;
                attrs.push((Arc::from(k), v));
            }
            _ => r.skip(field, wire, 0)?,
        }
    }
    Ok(EventData {
        name: SmolStr::new(name),
        time,
        attrs,
    })
}

fn json_string(s: &str) -> String {
    // Serialising a `str` cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

fn kv_list(kvs: &[KeyValue]) -> Vec<(Arc<str>, Value)> {
    kvs.iter()
        .map(|kv| (Arc::from(kv.key.as_str()), any_to_value(kv.value.as_ref())))
        .collect()
}

/// OTLP `AnyValue` to a [`Value`]; bytes become lowercase hex.
pub fn any_to_value(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::str(""),
        Some(any_value::Value::StringValue(s)) => Value::str(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(x)) => Value::Float(*x),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any_to_value(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Map(kv_list(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            let mut s = String::with_capacity(b.len() * 2);
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            Value::Str(SmolStr::from(s))
        }
        #[allow(unreachable_patterns)]
        Some(_) => Value::str(""),
    }
}

/// A borrowed-or-computed value.
pub(crate) type ValueRef<'a> = Cow<'a, Value>;

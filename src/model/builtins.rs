//! The attributes every span has besides its own (spec §1), by name. The
//! engine computes them; the checker knows their types.

/// An attribute computed from the span rather than read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Name,
    Kind,
    Status,
    StatusMessage,
    SpanType,
    Duration,
    StartTime,
    EndTime,
    SpanId,
    ParentId,
    TraceId,
    Events,
    /// Tracetest's `span.events`: the events as the JSON text Tracetest
    /// stores in that attribute, which its files test with `contains`.
    SpanEvents,
    SelectedSpansCount,
    ResponseStatus,
    ResponseBody,
    ResponseHeaders,
}

/// The static type of a value, as far as it is known before a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Float,
    Bool,
    Duration,
    Array,
    Unknown,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "name" | "tracetest.span.name" => Builtin::Name,
            "kind" | "tracetest.span.kind" => Builtin::Kind,
            "status" | "tracetest.span.status" | "tracetest.span.status_code" => Builtin::Status,
            "status.message"
            | "tracetest.span.status_description"
            | "tracetest.span.status_message" => Builtin::StatusMessage,
            "tracetest.span.type" => Builtin::SpanType,
            "tracetest.span.duration" => Builtin::Duration,
            "tracetest.span.start_time" => Builtin::StartTime,
            "tracetest.span.end_time" => Builtin::EndTime,
            "span_id" | "tracetest.span.id" => Builtin::SpanId,
            "parent_id" | "tracetest.span.parent_id" => Builtin::ParentId,
            "trace_id" | "tracetest.trace.id" => Builtin::TraceId,
            "events" => Builtin::Events,
            "span.events" => Builtin::SpanEvents,
            "tracetest.selected_spans.count" => Builtin::SelectedSpansCount,
            "tracetest.response.status" => Builtin::ResponseStatus,
            "tracetest.response.body" => Builtin::ResponseBody,
            "tracetest.response.headers" => Builtin::ResponseHeaders,
            _ => return None,
        })
    }

    pub fn ty(self) -> Ty {
        match self {
            Builtin::Duration => Ty::Duration,
            Builtin::StartTime
            | Builtin::EndTime
            | Builtin::SelectedSpansCount
            | Builtin::ResponseStatus => Ty::Int,
            Builtin::Events => Ty::Array,
            Builtin::ResponseHeaders => Ty::Unknown,
            _ => Ty::Str,
        }
    }

    /// The closed set of values of an enumerated attribute, if it is one.
    pub fn allowed_values(self) -> Option<&'static [&'static str]> {
        match self {
            Builtin::Kind => Some(&[
                "server",
                "client",
                "producer",
                "consumer",
                "internal",
                "unspecified",
            ]),
            Builtin::Status => Some(&["ok", "error", "unset"]),
            Builtin::SpanType => Some(&[
                "http",
                "rpc",
                "database",
                "messaging",
                "faas",
                "exception",
                "exec",
                "general",
            ]),
            _ => None,
        }
    }

    /// The value an enumerated attribute has for `written`, when it is
    /// another spelling of one: Tracetest writes span statuses as OTLP's
    /// enum names (`STATUS_CODE_OK`, `STATUS_CODE_ERROR`,
    /// `STATUS_CODE_UNSET`), tracecheck as `ok`, `error`, `unset`.
    pub fn canonical_value(self, written: &str) -> Option<&'static str> {
        match self {
            Builtin::Status => match written {
                "STATUS_CODE_OK" => Some("ok"),
                "STATUS_CODE_ERROR" => Some("error"),
                "STATUS_CODE_UNSET" => Some("unset"),
                _ => None,
            },
            _ => None,
        }
    }

    /// What the allowed values are, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Builtin::Kind => "a span kind",
            Builtin::Status => "a span status",
            Builtin::SpanType => "a span type",
            _ => "a value",
        }
    }
}

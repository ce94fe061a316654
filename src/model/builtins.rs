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

/// Tracetest's generator functions (`server/expression/functions`), which
/// expressions call as `uuid()`, `date("DD/MM/YYYY")`, `randomInt(1, 10)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Uuid,
    FirstName,
    LastName,
    FullName,
    Email,
    Phone,
    Date,
    DateTime,
    CreditCard,
    CreditCardCvv,
    CreditCardExpDate,
    RandomInt,
}

/// For messages: every function, as called.
pub const FUNCTION_NAMES: &str = "uuid(), firstName(), lastName(), fullName(), email(), phone(), \
     date([format]), dateTime([format]), creditCard(), creditCardCvv(), creditCardExpDate(), \
     randomInt(min, max)";

impl Function {
    pub fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "uuid" => Function::Uuid,
            "firstName" => Function::FirstName,
            "lastName" => Function::LastName,
            "fullName" => Function::FullName,
            "email" => Function::Email,
            "phone" => Function::Phone,
            "date" => Function::Date,
            "dateTime" => Function::DateTime,
            "creditCard" => Function::CreditCard,
            "creditCardCvv" => Function::CreditCardCvv,
            "creditCardExpDate" => Function::CreditCardExpDate,
            "randomInt" => Function::RandomInt,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Uuid => "uuid",
            Function::FirstName => "firstName",
            Function::LastName => "lastName",
            Function::FullName => "fullName",
            Function::Email => "email",
            Function::Phone => "phone",
            Function::Date => "date",
            Function::DateTime => "dateTime",
            Function::CreditCard => "creditCard",
            Function::CreditCardCvv => "creditCardCvv",
            Function::CreditCardExpDate => "creditCardExpDate",
            Function::RandomInt => "randomInt",
        }
    }

    /// The parameters' types; the optional ones are last (Tracetest's
    /// registry refuses any other order).
    pub fn params(self) -> &'static [(Ty, bool)] {
        const OPTIONAL_FORMAT: &[(Ty, bool)] = &[(Ty::Str, true)];
        match self {
            Function::Date | Function::DateTime => OPTIONAL_FORMAT,
            Function::RandomInt => &[(Ty::Int, false), (Ty::Int, false)],
            _ => &[],
        }
    }

    /// How many arguments a call may have: (required, at most).
    pub fn arity(self) -> (usize, usize) {
        let params = self.params();
        let required = params.iter().filter(|(_, optional)| !optional).count();
        (required, params.len())
    }

    /// What the call gives: Tracetest types a function's text by what it
    /// holds, so a random integer is a number and the rest are strings.
    pub fn ty(self) -> Ty {
        match self {
            Function::RandomInt => Ty::Int,
            _ => Ty::Str,
        }
    }
}

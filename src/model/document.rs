//! The documents a model file holds (spec §4–§6) and the parsed pieces they
//! are made of: selectors, expressions, assertions and templates, each
//! remembering where it was written.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ast::{AssertionAst, CmpOp, Expr, InterpPart, Literal, SelectorAst};
use super::builtins::Builtin;
use super::parse;
use super::source::{Diagnostic, Position, SourceLoc};

/// A selector as written, with its syntax tree.
#[derive(Debug, Clone)]
pub struct Selector {
    pub text: String,
    pub ast: SelectorAst,
    pub loc: SourceLoc,
}

impl Selector {
    /// Parses `text` written at `loc`.
    pub fn parse(text: &str, loc: SourceLoc) -> Result<Selector, Diagnostic> {
        match parse::parse_selector(text) {
            Ok(mut ast) => Ok(Selector {
                ast: {
                    for st in ast.paths.iter_mut().flat_map(|p| p.steps.iter_mut()) {
                        for f in &mut st.filters {
                            if matches!(f.op, CmpOp::Eq | CmpOp::Ne) {
                                canonical_literal(&f.attr, &mut f.value);
                            }
                        }
                    }
                    ast
                },
                text: text.to_string(),
                loc,
            }),
            Err(e) => Err(loc.diagnostic(text, e.offset, e.message(text, "selector"))),
        }
    }

    /// The diagnostic position of byte `offset` of the text.
    pub fn position(&self, offset: usize) -> Position {
        self.loc.position(&self.text, offset)
    }
}

/// An expression as written (an output's value).
#[derive(Debug, Clone)]
pub struct Expression {
    pub text: String,
    pub ast: Expr,
    pub loc: SourceLoc,
}

impl Expression {
    pub fn parse(text: &str, loc: SourceLoc) -> Result<Expression, Diagnostic> {
        match parse::parse_expression(text) {
            Ok(ast) => Ok(Expression {
                text: text.to_string(),
                ast,
                loc,
            }),
            Err(e) => Err(loc.diagnostic(text, e.offset, e.message(text, "expression"))),
        }
    }
}

/// An assertion as written (`attr:x = 1`).
#[derive(Debug, Clone)]
pub struct Assertion {
    pub text: String,
    pub ast: AssertionAst,
    pub loc: SourceLoc,
}

impl Assertion {
    pub fn parse(text: &str, loc: SourceLoc) -> Result<Assertion, Diagnostic> {
        match parse::parse_assertion(text) {
            Ok(mut ast) => Ok(Assertion {
                ast: {
                    if matches!(ast.op, CmpOp::Eq | CmpOp::Ne) {
                        if let Expr::Attr { name, .. } = &ast.left {
                            canonical_literal(name, &mut ast.right);
                        }
                        if let Expr::Attr { name, .. } = &ast.right {
                            canonical_literal(name, &mut ast.left);
                        }
                    }
                    ast
                },
                text: text.to_string(),
                loc,
            }),
            Err(e) => Err(loc.diagnostic(text, e.offset, e.message(text, "assertion"))),
        }
    }
}

/// A string literal compared with an enumerated attribute, written in
/// Tracetest's spelling (`STATUS_CODE_OK`), becomes the value the engine
/// has (`ok`), so that lint accepts it and it compares equal.
fn canonical_literal(attr: &str, value: &mut Expr) {
    let Some(b) = Builtin::from_name(attr) else {
        return;
    };
    if let Expr::Lit {
        value: Literal::Str(s),
        ..
    } = value
    {
        if let Some(c) = b.canonical_value(s) {
            *s = c.to_string();
        }
    }
}

/// Text with `${expr}` interpolations (URLs, headers, alert summaries).
#[derive(Debug, Clone)]
pub struct Template {
    pub text: String,
    pub parts: Vec<InterpPart>,
    pub loc: SourceLoc,
}

impl Template {
    pub fn parse(text: &str, loc: SourceLoc) -> Result<Template, Diagnostic> {
        match parse::parse_template(text) {
            Ok(parts) => Ok(Template {
                text: text.to_string(),
                parts,
                loc,
            }),
            Err(e) => Err(loc.diagnostic(text, e.offset, e.message(text, "template"))),
        }
    }

    /// The expressions inside `${...}`.
    pub fn expressions(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            InterpPart::Expr(e) => Some(e),
            InterpPart::Text(_) => None,
        })
    }
}

/// One document of a model file.
// Documents are few and loaded once; boxing them would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Document {
    Model(Model),
    Test(Test),
    /// `type: Transaction` or `type: TestSuite`.
    Transaction(Transaction),
    /// `type: VariableSet` or `type: Environment`.
    VariableSet(VariableSet),
}

impl Document {
    pub fn id(&self) -> &str {
        match self {
            Document::Model(m) => &m.id,
            Document::Test(t) => &t.id,
            Document::Transaction(t) => &t.id,
            Document::VariableSet(v) => &v.id,
        }
    }

    /// Whether the id was made up (no `spec.id` in the file).
    pub fn id_derived(&self) -> bool {
        match self {
            Document::Model(_) => false,
            Document::Test(t) => t.id_derived,
            Document::Transaction(t) => t.id_derived,
            Document::VariableSet(v) => v.id_derived,
        }
    }

    /// The file the document was read from.
    pub fn file(&self) -> &str {
        match self {
            Document::Model(m) => &m.file,
            Document::Test(t) => &t.file,
            Document::Transaction(t) => &t.file,
            Document::VariableSet(v) => &v.file,
        }
    }

    /// Every `env:`/`var:` the document reads, with its position, so a
    /// runner can report undefined variables as `file:line:col`.
    pub fn variable_refs(&self) -> Vec<VarRef> {
        let mut out = Vec::new();
        match self {
            Document::Model(m) => {
                let mut c = RefCollector { out: &mut out };
                if let Some(s) = &m.match_selector {
                    c.selector(s);
                }
                c.outputs(&m.outputs);
                for a in &m.when {
                    c.assertion(a);
                }
                c.specs(&m.specs);
                for n in &m.not_expect {
                    c.selector(&n.selector);
                }
                if let Some(t) = m.alert.as_ref().and_then(|a| a.summary.as_ref()) {
                    c.template(t);
                }
            }
            Document::Test(t) => {
                let mut c = RefCollector { out: &mut out };
                if let Some(s) = &t.match_selector {
                    c.selector(s);
                }
                if let Some(tr) = &t.trigger {
                    for tpl in tr.templates() {
                        c.template(tpl);
                    }
                }
                c.specs(&t.specs);
                c.outputs(&t.outputs);
            }
            Document::Transaction(_) | Document::VariableSet(_) => {}
        }
        out
    }
}

/// Whether a reference was written `env:` or `var:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VarKind {
    Env,
    Var,
}

/// A variable read by a document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VarRef {
    pub kind: VarKind,
    pub name: String,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

struct RefCollector<'a> {
    out: &'a mut Vec<VarRef>,
}

impl RefCollector<'_> {
    fn expr(&mut self, e: &Expr, text: &str, loc: &SourceLoc) {
        e.walk(&mut |x| {
            let (kind, name, span) = match x {
                Expr::Env { name, span } => (VarKind::Env, name, span),
                Expr::Var { name, span } => (VarKind::Var, name, span),
                _ => return,
            };
            let p = loc.position(text, span.start);
            self.out.push(VarRef {
                kind,
                name: name.clone(),
                file: loc.file().to_string(),
                line: p.line,
                column: p.column,
            });
        });
    }
    fn selector(&mut self, s: &Selector) {
        for p in &s.ast.paths {
            for st in &p.steps {
                for f in &st.filters {
                    self.expr(&f.value, &s.text, &s.loc);
                }
            }
        }
    }
    fn assertion(&mut self, a: &Assertion) {
        self.expr(&a.ast.left, &a.text, &a.loc);
        self.expr(&a.ast.right, &a.text, &a.loc);
    }
    fn template(&mut self, t: &Template) {
        for e in t.expressions() {
            self.expr(e, &t.text, &t.loc);
        }
    }
    fn specs(&mut self, specs: &[Spec]) {
        for s in specs {
            self.selector(&s.selector);
            for a in &s.assertions {
                self.assertion(a);
            }
        }
    }
    fn outputs(&mut self, outputs: &[Output]) {
        for o in outputs {
            if let Some(s) = &o.selector {
                self.selector(s);
            }
            self.expr(&o.value.ast, &o.value.text, &o.value.loc);
        }
    }
}

/// `type: Model`: a continuous assertion checked on every completed trace.
#[derive(Debug, Clone)]
pub struct Model {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Which traces the model is about; `None` means every trace.
    pub match_selector: Option<Selector>,
    pub outputs: Vec<Output>,
    /// Preconditions; all must hold for the model to apply.
    pub when: Vec<Assertion>,
    pub specs: Vec<Spec>,
    pub not_expect: Vec<NotExpect>,
    /// How long a missing expected span may still arrive.
    pub within: Option<Duration>,
    pub alert: Option<Alert>,
    /// The file the model was read from.
    pub file: String,
    /// Where its `id` is written.
    pub position: Position,
}

/// A value read from the trace, usable as `var:NAME`.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    /// Spans to read the value from (the first selected span, by start
    /// time); `None` evaluates the value without a span.
    pub selector: Option<Selector>,
    pub value: Expression,
    pub position: Position,
}

/// A selector that must select at least one span, and assertions that must
/// hold on every selected span.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: Option<String>,
    pub selector: Selector,
    pub assertions: Vec<Assertion>,
}

impl Spec {
    /// The spec's name, or its selector text when it has none.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.selector.text)
    }
}

/// A selector that must select nothing.
#[derive(Debug, Clone)]
pub struct NotExpect {
    pub name: Option<String>,
    pub selector: Selector,
}

impl NotExpect {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.selector.text)
    }
}

/// What to do when the model fails.
#[derive(Debug, Clone)]
pub struct Alert {
    pub severity: Option<String>,
    pub summary: Option<Template>,
}

/// `type: Test` (Tracetest).
#[derive(Debug, Clone)]
pub struct Test {
    pub id: String,
    /// The file has no `spec.id`: `id` was made from the name (or the
    /// file name).
    pub id_derived: bool,
    pub name: String,
    pub description: Option<String>,
    pub trigger: Option<Trigger>,
    pub specs: Vec<Spec>,
    pub outputs: Vec<Output>,
    /// Which live traces the test applies to when run as a model.
    pub match_selector: Option<Selector>,
    /// `skipTraceCollection: true`: the specs see only the trigger's
    /// response (the `Tracetest trigger` span); no trace is waited for.
    pub skip_trace_collection: bool,
    pub file: String,
    pub position: Position,
}

impl Test {
    /// The test as a continuous model: the trigger is ignored and `match`,
    /// or else the first spec's selector, decides which traces it is about.
    pub fn as_model(&self) -> Model {
        let match_selector = self
            .match_selector
            .clone()
            .or_else(|| self.specs.first().map(|s| s.selector.clone()));
        Model {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            labels: BTreeMap::new(),
            match_selector,
            outputs: self.outputs.clone(),
            when: Vec::new(),
            specs: self.specs.clone(),
            not_expect: Vec::new(),
            within: None,
            alert: None,
            file: self.file.clone(),
            position: self.position,
        }
    }
}

/// How a test starts its trace.
#[derive(Debug, Clone)]
pub enum Trigger {
    Http(HttpRequest),
    Grpc(GrpcRequest),
    /// Wait for a trace started elsewhere.
    TraceId {
        id: Template,
    },
    /// A trigger type Tracetest knows that tracecheck does not send
    /// (`kafka`, `playwrightengine`, and the trace-ID integrations `k6`,
    /// `cypress`, `playwright`, `artillery`): the file lints and its specs
    /// serve as a model; `test run` refuses it with what to do instead.
    NotSent {
        kind: String,
        position: Position,
    },
}

impl Trigger {
    /// Every template of the trigger, for variable checks.
    pub fn templates(&self) -> Vec<&Template> {
        let mut v = Vec::new();
        match self {
            Trigger::Http(h) => {
                v.push(&h.url);
                v.extend(h.headers.iter().map(|h| &h.value));
                v.extend(h.body.iter());
                if let Some(a) = &h.auth {
                    v.extend(a.templates());
                }
            }
            Trigger::Grpc(g) => {
                v.push(&g.address);
                v.extend(g.request.iter());
                v.extend(g.metadata.iter().map(|h| &h.value));
                if let Some(a) = &g.auth {
                    v.extend(a.templates());
                }
            }
            Trigger::TraceId { id } => v.push(id),
            Trigger::NotSent { .. } => {}
        }
        v
    }

    /// Why `test run` cannot send a trigger of this type, and what to do
    /// instead; `None` for the types it sends.
    pub fn not_sent_advice(&self) -> Option<String> {
        let Trigger::NotSent { kind, .. } = self else {
            return None;
        };
        let instead = "use `type: traceid` with `traceid: { id: ${var:TRACE_ID} }` and pass the trace ID (e.g. TRACE_ID in --vars)";
        Some(match kind.as_str() {
            "kafka" => format!(
                "tracecheck cannot send trigger type 'kafka': publish the message yourself with a W3C traceparent header and {instead}"
            ),
            "playwrightengine" => format!(
                "tracecheck cannot send trigger type 'playwrightengine' (it does not run Playwright scripts): run the script yourself and {instead}"
            ),
            other => format!(
                "tracecheck cannot send trigger type '{other}' (Tracetest's {other} integration starts that trace): {instead} of the request your {other} script made"
            ),
        })
    }
}

/// `trigger.httpRequest`.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: Template,
    pub headers: Vec<Header>,
    pub body: Option<Template>,
    pub auth: Option<Auth>,
    pub ssl_verification: Option<bool>,
}

/// A header or gRPC metadata entry.
#[derive(Debug, Clone)]
pub struct Header {
    pub key: String,
    pub value: Template,
}

/// `trigger.grpc`.
#[derive(Debug, Clone)]
pub struct GrpcRequest {
    /// The `.proto` file: a path or its inline text.
    pub protobuf_file: Option<String>,
    pub address: Template,
    /// `package.Service/Method`.
    pub method: String,
    /// The request message as JSON.
    pub request: Option<Template>,
    pub metadata: Vec<Header>,
    pub auth: Option<Auth>,
}

/// Request authentication (Tracetest's `auth`).
#[derive(Debug, Clone)]
pub enum Auth {
    Basic {
        username: Template,
        password: Template,
    },
    Bearer {
        token: Template,
    },
    ApiKey {
        key: String,
        value: Template,
        location: ApiKeyLocation,
    },
}

impl Auth {
    fn templates(&self) -> Vec<&Template> {
        match self {
            Auth::Basic { username, password } => vec![username, password],
            Auth::Bearer { token } => vec![token],
            Auth::ApiKey { value, .. } => vec![value],
        }
    }
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyLocation {
    Header,
    Query,
}

/// `type: Transaction` / `type: TestSuite`.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub id: String,
    /// The file has no `spec.id`: `id` was made from the name (or the
    /// file name).
    pub id_derived: bool,
    pub name: String,
    pub description: Option<String>,
    pub steps: Vec<TransactionStep>,
    pub file: String,
    pub position: Position,
}

/// A test id or a file path.
#[derive(Debug, Clone)]
pub struct TransactionStep {
    pub reference: String,
    pub position: Position,
}

/// `type: VariableSet` / `type: Environment`.
#[derive(Debug, Clone)]
pub struct VariableSet {
    pub id: String,
    /// The file has no `spec.id`: `id` was made from the name (or the
    /// file name).
    pub id_derived: bool,
    pub name: String,
    pub description: Option<String>,
    pub values: Vec<Variable>,
    pub file: String,
    pub position: Position,
}

#[derive(Debug, Clone)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub position: Position,
}

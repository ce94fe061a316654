//! Turns the positioned YAML tree into documents, collecting every
//! structural error (unknown key, wrong type, missing field) with its
//! position instead of stopping at the first.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::document::*;
use super::parse::parse_duration;
use super::source::{Diagnostic, Position, SourceLoc};
use super::yaml::{Node, NodeKind};

pub(crate) struct Decoder<'a> {
    pub file: &'a Arc<str>,
    pub diags: &'a mut Vec<Diagnostic>,
    /// What is accepted but worth saying (keys Tracetest ignores).
    pub warnings: &'a mut Vec<Diagnostic>,
    /// The last document decoded with errors (parts of it are missing).
    pub partial: bool,
    /// Decoding a Tracetest document (Test, Transaction, VariableSet):
    /// unknown keys are ignored with a warning, as Tracetest ignores them,
    /// unless they look like a misspelt key of the list.
    pub lenient: bool,
}

/// Every trigger type Tracetest knows (its `TriggerType`s).
pub(crate) const TRIGGER_TYPES: &[&str] = &[
    "http",
    "grpc",
    "graphql",
    "traceid",
    "kafka",
    "playwrightengine",
    "k6",
    "cypress",
    "playwright",
    "artillery",
];

/// Keys of Tracetest's own resources that only its server reads (or that
/// its exports carry): accepted without a word wherever they appear in a
/// Tracetest document.
const TRACETEST_IGNORED_KEYS: &[&str] = &[
    "version",
    "createdAt",
    "summary",
    "selectorParsed",
    "fullSteps",
    "resources",
    "agentConfiguration",
];

/// The key of `allowed` that `key` is most likely a misspelling of: at most
/// two edits away (one for short keys), ignoring case.
fn near_key<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let k = key.to_ascii_lowercase();
    let limit = if k.chars().count() <= 4 { 1 } else { 2 };
    let len = k.chars().count();
    allowed
        .iter()
        // Lengths further apart than the limit cannot be near: a long key
        // from the outside costs nothing to compare.
        .filter(|a| a.len().abs_diff(len) <= limit)
        .map(|a| (edit_distance(&k, &a.to_ascii_lowercase()), *a))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance, with adjacent transpositions counting one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    let at = |i: usize, j: usize| i * w + j;
    for i in 0..=a.len() {
        if let Some(x) = d.get_mut(at(i, 0)) {
            *x = i;
        }
    }
    for j in 0..=b.len() {
        if let Some(x) = d.get_mut(at(0, j)) {
            *x = j;
        }
    }
    let get = |d: &[usize], i: usize, j: usize| d.get(at(i, j)).copied().unwrap_or(usize::MAX / 2);
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let (ca, cb) = (a.get(i - 1), b.get(j - 1));
            let cost = usize::from(ca != cb);
            let mut v = (get(&d, i - 1, j) + 1)
                .min(get(&d, i, j - 1) + 1)
                .min(get(&d, i - 1, j - 1) + cost);
            if i > 1 && j > 1 && ca == b.get(j - 2) && a.get(i - 2) == cb {
                v = v.min(get(&d, i - 2, j - 2) + 1);
            }
            if let Some(x) = d.get_mut(at(i, j)) {
                *x = v;
            }
        }
    }
    get(&d, a.len(), b.len())
}

/// An id made from a name (or a file name): lowercase letters and digits,
/// every other run of characters one `-`.
pub(crate) fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.extend(c.to_lowercase());
        } else {
            dash = true;
        }
    }
    out
}

/// The entries of a mapping whose keys were checked against a list.
pub(crate) struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
    pub pos: Position,
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_null())
    }
}

impl<'a> Decoder<'a> {
    pub fn error(&mut self, pos: Position, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        });
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Checks that `node` is a mapping with only `allowed` keys.
    pub fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!("expected a mapping for {what}, found {}", node.describe()),
            );
            return None;
        };
        let mut out: Vec<(&'n str, &'n Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = k.as_scalar() else {
                self.error(
                    k.pos,
                    format!("expected a string key in {what}, found {}", k.describe()),
                );
                continue;
            };
            if !allowed.contains(&key) {
                if self.lenient && TRACETEST_IGNORED_KEYS.contains(&key) {
                    continue;
                }
                let near = near_key(key, allowed);
                if self.lenient && near.is_none() {
                    self.warnings.push(Diagnostic {
                        file: self.file.to_string(),
                        line: k.pos.line,
                        column: k.pos.column,
                        message: format!(
                            "warning: unknown key '{key}' in {what} is ignored, as Tracetest ignores it (known keys: {})",
                            allowed.join(", ")
                        ),
                    });
                    continue;
                }
                let hint = near.map_or(String::new(), |n| format!(" (did you mean '{n}'?)"));
                self.error(
                    k.pos,
                    format!(
                        "unknown key '{key}' in {what}, expected one of: {}{hint}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            if out.iter().any(|(seen, _)| *seen == key) {
                self.error(k.pos, format!("duplicate key '{key}' in {what}"));
                continue;
            }
            out.push((key, v));
        }
        Some(Fields {
            entries: out,
            pos: node.pos,
        })
    }

    /// A scalar as a string; maps and lists are errors.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            NodeKind::Scalar { value, .. } => Some(value.clone()),
            _ => {
                self.error(
                    node.pos,
                    format!("expected a string for {what}, found {}", node.describe()),
                );
                None
            }
        }
    }

    pub fn required_string(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<String> {
        match f.get(key) {
            Some(n) => {
                let s = self.string(n, &format!("'{key}' of {what}"))?;
                if s.trim().is_empty() {
                    self.error(n.pos, format!("'{key}' of {what} must not be empty"));
                    return None;
                }
                Some(s)
            }
            None => {
                self.error(f.pos, format!("missing '{key}' in {what}"));
                None
            }
        }
    }

    pub fn optional_string(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<String> {
        let n = f.get(key)?;
        self.string(n, &format!("'{key}' of {what}"))
    }

    pub fn list<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.kind {
            NodeKind::Seq(items) => items,
            _ if node.is_null() => &[],
            _ => {
                self.error(
                    node.pos,
                    format!("expected a list for {what}, found {}", node.describe()),
                );
                &[]
            }
        }
    }

    fn loc(node: &Node) -> SourceLoc {
        node.loc.clone().unwrap_or_else(|| SourceLoc::detached(""))
    }

    pub fn selector(&mut self, node: &Node, what: &str) -> Option<Selector> {
        // An empty selector is legal: it selects every span.
        let text = if node.is_null() {
            String::new()
        } else {
            self.string(node, what)?
        };
        match Selector::parse(&text, Self::loc(node)) {
            Ok(s) => Some(s),
            Err(d) => {
                self.push(d);
                None
            }
        }
    }

    pub fn expression(&mut self, node: &Node, what: &str) -> Option<Expression> {
        let text = self.string(node, what)?;
        match Expression::parse(&text, Self::loc(node)) {
            Ok(e) => Some(e),
            Err(d) => {
                self.push(d);
                None
            }
        }
    }

    pub fn assertion(&mut self, node: &Node, what: &str) -> Option<Assertion> {
        let text = self.string(node, what)?;
        match Assertion::parse(&text, Self::loc(node)) {
            Ok(a) => Some(a),
            Err(d) => {
                self.push(d);
                None
            }
        }
    }

    pub fn template(&mut self, node: &Node, what: &str) -> Option<Template> {
        let text = self.string(node, what)?;
        match Template::parse(&text, Self::loc(node)) {
            Ok(t) => Some(t),
            Err(d) => {
                self.push(d);
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.as_scalar() {
            Some("true" | "True" | "TRUE") => Some(true),
            Some("false" | "False" | "FALSE") => Some(false),
            _ => {
                self.error(node.pos, format!("expected true or false for {what}"));
                None
            }
        }
    }

    // === documents ===

    /// Decodes one YAML document (`type:` + `spec:`).
    pub fn document(&mut self, root: &Node) -> Option<Document> {
        self.partial = false;
        if root.is_null() {
            return None;
        }
        // Tracetest's documents get Tracetest's tolerance of keys it does
        // not know; tracecheck's own `Model` stays strict.
        self.lenient = match &root.kind {
            NodeKind::Map(entries) => entries.iter().any(|(k, v)| {
                k.as_scalar() == Some("type") && v.as_scalar().is_some_and(|t| t != "Model")
            }),
            _ => false,
        };
        let f = self.fields(root, "document", &["type", "spec"])?;
        let ty = self.required_string(&f, "type", "document");
        let spec = f.get("spec");
        let ty = ty?;
        let Some(spec) = spec else {
            self.error(f.pos, "missing 'spec' in document");
            return None;
        };
        match ty.as_str() {
            "Model" => self.model(spec).map(Document::Model),
            "Test" => self.test(spec).map(Document::Test),
            "Transaction" | "TestSuite" => self.transaction(spec, &ty).map(Document::Transaction),
            "VariableSet" | "Environment" => {
                self.variable_set(spec, &ty).map(Document::VariableSet)
            }
            other => {
                let pos = f.get("type").map_or(f.pos, |n| n.pos);
                self.error(
                    pos,
                    format!("unknown document type '{other}', expected Model, Test, Transaction, TestSuite, VariableSet or Environment"),
                );
                None
            }
        }
    }

    fn id_and_position(&mut self, f: &Fields<'_>, what: &str) -> (Option<String>, Position) {
        let pos = f.get("id").map_or(f.pos, |n| n.pos);
        (self.required_string(f, "id", what), pos)
    }

    /// `spec.id`, or, as Tracetest's CLI makes one up when it is absent, an
    /// id derived from the name (`Import a Pokemon` → `import-a-pokemon`),
    /// or from the file's name without a name: the same file gives the same
    /// id on every run, so results, metric labels and reruns stay stable.
    fn id_or_derived(&mut self, f: &Fields<'_>, what: &str) -> (Option<String>, Position, bool) {
        if f.get("id")
            .is_some_and(|n| n.as_scalar().is_none_or(|s| !s.trim().is_empty()))
        {
            let (id, pos) = self.id_and_position(f, what);
            return (id, pos, false);
        }
        let from_name = f
            .get("name")
            .and_then(Node::as_scalar)
            .map(slug)
            .filter(|s| !s.is_empty());
        let id = from_name.unwrap_or_else(|| {
            let file: &str = self.file;
            let stem = std::path::Path::new(file)
                .file_stem()
                .and_then(|s| s.to_str())
                .map(slug)
                .unwrap_or_default();
            if stem.is_empty() {
                what.replace(' ', "-")
            } else {
                stem
            }
        });
        (Some(id), f.pos, true)
    }

    fn model(&mut self, node: &Node) -> Option<Model> {
        const KEYS: &[&str] = &[
            "id",
            "name",
            "description",
            "labels",
            "match",
            "outputs",
            "when",
            "specs",
            "not_expect",
            "within",
            "alert",
        ];
        let f = self.fields(node, "model", KEYS)?;
        let before = self.diags.len();
        let (id, position) = self.id_and_position(&f, "model");
        let name = self.optional_string(&f, "name", "model");
        let description = self.optional_string(&f, "description", "model");
        let labels = match f.get("labels") {
            Some(n) => self.labels(n),
            None => BTreeMap::new(),
        };
        let match_selector = f.get("match").and_then(|n| self.selector(n, "'match'"));
        let outputs = f
            .get("outputs")
            .map(|n| self.outputs(n))
            .unwrap_or_default();
        let when = match f.get("when") {
            Some(n) => {
                let items = self.list(n, "'when'");
                items
                    .iter()
                    .filter_map(|c| self.assertion(c, "a 'when' condition"))
                    .collect()
            }
            None => Vec::new(),
        };
        let specs = f.get("specs").map(|n| self.specs(n)).unwrap_or_default();
        let not_expect = f
            .get("not_expect")
            .map(|n| self.not_expect(n))
            .unwrap_or_default();
        let within = f.get("within").and_then(|n| {
            let s = self.string(n, "'within'")?;
            match parse_duration(&s) {
                Some(d) => Some(d),
                None => {
                    self.error(n.pos, format!("invalid duration '{s}' for 'within', expected a number and a unit (ns, us, ms, s, m, h) such as 30s"));
                    None
                }
            }
        });
        let alert = f.get("alert").and_then(|n| self.alert(n));
        let id = id?;
        if self.diags.len() > before {
            // Kept so the checker still runs; the load fails anyway.
            self.partial = true;
        }
        Some(Model {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            description,
            labels,
            match_selector,
            outputs,
            when,
            specs,
            not_expect,
            within,
            alert,
            file: self.file.to_string(),
            position,
        })
    }

    fn labels(&mut self, node: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let NodeKind::Map(entries) = &node.kind else {
            self.error(
                node.pos,
                format!("expected a mapping for 'labels', found {}", node.describe()),
            );
            return out;
        };
        for (k, v) in entries {
            let (Some(k), Some(v)) = (
                self.string(k, "a label name"),
                self.string(v, "a label value"),
            ) else {
                continue;
            };
            out.insert(k, v);
        }
        out
    }

    fn outputs(&mut self, node: &Node) -> Vec<Output> {
        let mut out = Vec::new();
        for item in self.list(node, "'outputs'") {
            let Some(f) = self.fields(item, "an output", &["name", "selector", "value"]) else {
                continue;
            };
            let name = self.required_string(&f, "name", "output");
            let selector = f
                .get("selector")
                .and_then(|n| self.selector(n, "'selector' of an output"));
            let value = match f.get("value") {
                Some(n) => self.expression(n, "'value' of an output"),
                None => {
                    self.error(f.pos, "missing 'value' in output");
                    None
                }
            };
            if let (Some(name), Some(value)) = (name, value) {
                out.push(Output {
                    name,
                    selector,
                    value,
                    position: f.pos,
                });
            }
        }
        out
    }

    fn specs(&mut self, node: &Node) -> Vec<Spec> {
        let mut out = Vec::new();
        for item in self.list(node, "'specs'") {
            let Some(f) = self.fields(item, "a spec", &["name", "selector", "assertions"]) else {
                continue;
            };
            let name = self.optional_string(&f, "name", "spec");
            let selector = match f.entries.iter().find(|(k, _)| *k == "selector") {
                Some((_, n)) => self.selector(n, "'selector' of a spec"),
                None => {
                    self.error(f.pos, "missing 'selector' in spec");
                    None
                }
            };
            let assertions = match f.get("assertions") {
                Some(n) => {
                    let items = self.list(n, "'assertions'");
                    items
                        .iter()
                        .filter_map(|a| self.assertion(a, "an assertion"))
                        .collect()
                }
                None => Vec::new(),
            };
            if let Some(selector) = selector {
                out.push(Spec {
                    name,
                    selector,
                    assertions,
                });
            }
        }
        out
    }

    fn not_expect(&mut self, node: &Node) -> Vec<NotExpect> {
        let mut out = Vec::new();
        for item in self.list(node, "'not_expect'") {
            // A bare selector string is accepted as a shorthand.
            if let NodeKind::Scalar { .. } = item.kind {
                if let Some(selector) = self.selector(item, "a 'not_expect' entry") {
                    out.push(NotExpect {
                        name: None,
                        selector,
                    });
                }
                continue;
            }
            let Some(f) = self.fields(item, "a 'not_expect' entry", &["name", "selector"]) else {
                continue;
            };
            let name = self.optional_string(&f, "name", "'not_expect' entry");
            let selector = match f.entries.iter().find(|(k, _)| *k == "selector") {
                Some((_, n)) => self.selector(n, "'selector' of a 'not_expect' entry"),
                None => {
                    self.error(f.pos, "missing 'selector' in 'not_expect' entry");
                    None
                }
            };
            if let Some(selector) = selector {
                out.push(NotExpect { name, selector });
            }
        }
        out
    }

    fn alert(&mut self, node: &Node) -> Option<Alert> {
        let f = self.fields(node, "'alert'", &["severity", "summary"])?;
        let severity = self.optional_string(&f, "severity", "'alert'");
        let summary = f
            .get("summary")
            .and_then(|n| self.template(n, "'summary' of 'alert'"));
        Some(Alert { severity, summary })
    }

    fn test(&mut self, node: &Node) -> Option<Test> {
        const KEYS: &[&str] = &[
            "id",
            "name",
            "description",
            "trigger",
            "specs",
            "outputs",
            "match",
            "skipTraceCollection",
            "pollingProfile",
        ];
        let f = self.fields(node, "test", KEYS)?;
        let before = self.diags.len();
        let (id, position, id_derived) = self.id_or_derived(&f, "test");
        let name = self.optional_string(&f, "name", "test");
        let description = self.optional_string(&f, "description", "test");
        let trigger = f.get("trigger").and_then(|n| self.trigger(n));
        let specs = f.get("specs").map(|n| self.specs(n)).unwrap_or_default();
        let outputs = f
            .get("outputs")
            .map(|n| self.outputs(n))
            .unwrap_or_default();
        let match_selector = f.get("match").and_then(|n| self.selector(n, "'match'"));
        // pollingProfile names a resource of a Tracetest server; here the
        // wait is `--timeout` and the trace's idle completion, so it is
        // accepted and has no effect.
        let skip_trace_collection = f
            .get("skipTraceCollection")
            .and_then(|n| self.bool(n, "'skipTraceCollection'"))
            .unwrap_or(false);
        let id = id?;
        if self.diags.len() > before {
            // Kept so the checker still runs; the load fails anyway.
            self.partial = true;
        }
        Some(Test {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            id_derived,
            description,
            trigger,
            specs,
            outputs,
            match_selector,
            skip_trace_collection,
            file: self.file.to_string(),
            position,
        })
    }

    fn trigger(&mut self, node: &Node) -> Option<Trigger> {
        let f = self.fields(
            node,
            "'trigger'",
            &[
                "type",
                "httpRequest",
                "grpc",
                "graphql",
                "traceid",
                "kafka",
                "playwrightEngine",
            ],
        )?;
        let ty = self.required_string(&f, "type", "'trigger'")?;
        let ty_pos = f.get("type").map_or(f.pos, |n| n.pos);
        let section = |key: &str| f.get(key);
        match ty.as_str() {
            "http" => {
                let Some(n) = section("httpRequest") else {
                    self.error(f.pos, "missing 'httpRequest' in an http trigger");
                    return None;
                };
                self.http_request(n).map(Trigger::Http)
            }
            "grpc" => {
                let Some(n) = section("grpc") else {
                    self.error(f.pos, "missing 'grpc' in a grpc trigger");
                    return None;
                };
                self.grpc_request(n).map(Trigger::Grpc)
            }
            "graphql" => {
                let Some(n) = section("graphql") else {
                    self.error(f.pos, "missing 'graphql' in a graphql trigger");
                    return None;
                };
                self.graphql_request(n).map(Trigger::Http)
            }
            "traceid" => {
                let Some(n) = section("traceid") else {
                    self.error(f.pos, "missing 'traceid' in a traceid trigger");
                    return None;
                };
                let g = self.fields(n, "'traceid'", &["id"])?;
                let id = match g.get("id") {
                    Some(n) => self.template(n, "'id' of 'traceid'")?,
                    None => {
                        self.error(g.pos, "missing 'id' in 'traceid'");
                        return None;
                    }
                };
                Some(Trigger::TraceId { id })
            }
            "kafka" => {
                if let Some(n) = section("kafka") {
                    self.fields(
                        n,
                        "'kafka'",
                        &[
                            "brokerUrls",
                            "topic",
                            "headers",
                            "authentication",
                            // Tracetest's agent reads this spelling.
                            "authetication",
                            "sslVerification",
                            "messageKey",
                            "messageValue",
                        ],
                    )?;
                }
                Some(Trigger::NotSent {
                    kind: ty.clone(),
                    position: ty_pos,
                })
            }
            "playwrightengine" => {
                if let Some(n) = section("playwrightEngine") {
                    self.fields(n, "'playwrightEngine'", &["target", "method", "script"])?;
                }
                Some(Trigger::NotSent {
                    kind: ty.clone(),
                    position: ty_pos,
                })
            }
            // Started by Tracetest's integrations (a k6 extension, Cypress
            // and Playwright plugins, an Artillery engine), which hand over
            // the trace ID of a request they made: no request to describe.
            "k6" | "cypress" | "playwright" | "artillery" => Some(Trigger::NotSent {
                kind: ty.clone(),
                position: ty_pos,
            }),
            other => {
                self.error(
                    ty_pos,
                    format!(
                        "unknown trigger type '{other}', expected one of: {}",
                        TRIGGER_TYPES.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn required_template(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<Template> {
        match f.get(key) {
            Some(n) => self.template(n, &format!("'{key}' of {what}")),
            None => {
                self.error(f.pos, format!("missing '{key}' in {what}"));
                None
            }
        }
    }

    fn headers(&mut self, node: &Node, what: &str) -> Vec<Header> {
        let mut out = Vec::new();
        for item in self.list(node, what) {
            let Some(f) = self.fields(item, "a header", &["key", "value"]) else {
                continue;
            };
            let key = self.required_string(&f, "key", "header");
            let value = match f.get("value") {
                Some(n) => self.template(n, "'value' of a header"),
                None => Template::parse("", SourceLoc::detached(self.file)).ok(),
            };
            if let (Some(key), Some(value)) = (key, value) {
                out.push(Header { key, value });
            }
        }
        out
    }

    /// A Tracetest `graphql` trigger is an HTTP POST of `{query, variables,
    /// operationName}` as JSON; `query` may name a file beside the test
    /// file, as Tracetest's CLI reads it; `schema` only serves Tracetest's
    /// editor and is accepted without use.
    fn graphql_request(&mut self, node: &Node) -> Option<HttpRequest> {
        let f = self.fields(
            node,
            "'graphql'",
            &[
                "url",
                "headers",
                "body",
                "auth",
                "sslVerification",
                "schema",
            ],
        )?;
        let before = self.diags.len();
        let url = self.required_template(&f, "url", "'graphql'");
        let mut headers = f
            .get("headers")
            .map(|n| self.headers(n, "'headers'"))
            .unwrap_or_default();
        if !headers
            .iter()
            .any(|h| h.key.eq_ignore_ascii_case("content-type"))
        {
            headers.push(Header {
                key: "Content-Type".into(),
                value: Template::parse("application/json", SourceLoc::detached(self.file)).ok()?,
            });
        }
        let auth = f.get("auth").and_then(|n| self.auth(n));
        let ssl_verification = f
            .get("sslVerification")
            .and_then(|n| self.bool(n, "'sslVerification'"));
        let Some(body_node) = f.get("body") else {
            self.error(f.pos, "missing 'body' in 'graphql'");
            return None;
        };
        let b = self.fields(
            body_node,
            "'body' of 'graphql'",
            &["query", "variables", "operationName"],
        )?;
        let Some(query_node) = b.get("query") else {
            self.error(b.pos, "missing 'query' in the 'body' of 'graphql'");
            return None;
        };
        let Some(query) = query_node.as_scalar() else {
            self.error(
                query_node.pos,
                "'query' of 'graphql' must be text or a file name",
            );
            return None;
        };
        let file: &str = self.file;
        let beside = std::path::Path::new(file)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(query.trim());
        let query = match std::fs::read_to_string(&beside) {
            Ok(text) if !query.contains('{') => text,
            _ => query.to_string(),
        };
        let mut body = serde_json::Map::new();
        body.insert("query".into(), serde_json::Value::String(query));
        if let Some(v) = b.get("variables") {
            body.insert("variables".into(), node_json(v));
        }
        if let Some(op) = b.get("operationName").and_then(Node::as_scalar) {
            if !op.is_empty() {
                body.insert("operationName".into(), serde_json::Value::String(op.into()));
            }
        }
        let json = serde_json::Value::Object(body).to_string();
        let body = match Template::parse(&json, SourceLoc::detached(self.file)) {
            Ok(t) => Some(t),
            Err(d) => {
                self.error(body_node.pos, format!("'body' of 'graphql': {}", d.message));
                return None;
            }
        };
        let url = url?;
        if self.diags.len() > before {
            return None;
        }
        Some(HttpRequest {
            method: "POST".into(),
            url,
            headers,
            body,
            auth,
            ssl_verification,
        })
    }

    fn http_request(&mut self, node: &Node) -> Option<HttpRequest> {
        let f = self.fields(
            node,
            "'httpRequest'",
            &[
                "method",
                "url",
                "headers",
                "body",
                "auth",
                "sslVerification",
            ],
        )?;
        let before = self.diags.len();
        let method = self
            .optional_string(&f, "method", "'httpRequest'")
            .unwrap_or_else(|| "GET".to_string())
            .to_ascii_uppercase();
        let url = self.required_template(&f, "url", "'httpRequest'");
        let headers = f
            .get("headers")
            .map(|n| self.headers(n, "'headers'"))
            .unwrap_or_default();
        let body = f.get("body").and_then(|n| self.template(n, "'body'"));
        let auth = f.get("auth").and_then(|n| self.auth(n));
        let ssl_verification = f
            .get("sslVerification")
            .and_then(|n| self.bool(n, "'sslVerification'"));
        let url = url?;
        if self.diags.len() > before {
            return None;
        }
        Some(HttpRequest {
            method,
            url,
            headers,
            body,
            auth,
            ssl_verification,
        })
    }

    fn grpc_request(&mut self, node: &Node) -> Option<GrpcRequest> {
        let f = self.fields(
            node,
            "'grpc'",
            &[
                "protobufFile",
                "address",
                "method",
                "request",
                "metadata",
                "auth",
            ],
        )?;
        let before = self.diags.len();
        let protobuf_file = self.optional_string(&f, "protobufFile", "'grpc'");
        let address = self.required_template(&f, "address", "'grpc'");
        let method = self.required_string(&f, "method", "'grpc'");
        let request = f.get("request").and_then(|n| self.template(n, "'request'"));
        let metadata = f
            .get("metadata")
            .map(|n| self.headers(n, "'metadata'"))
            .unwrap_or_default();
        let auth = f.get("auth").and_then(|n| self.auth(n));
        let (address, method) = (address?, method?);
        if self.diags.len() > before {
            return None;
        }
        Some(GrpcRequest {
            protobuf_file,
            address,
            method,
            request,
            metadata,
            auth,
        })
    }

    fn auth(&mut self, node: &Node) -> Option<Auth> {
        let f = self.fields(node, "'auth'", &["type", "apiKey", "basic", "bearer"])?;
        // Tracetest writes `auth:` without a type (or with an empty one) for
        // a request without authentication, and ignores what else is there.
        let ty = match f.get("type") {
            None => return None,
            Some(n) if n.as_scalar().is_some_and(|t| t.trim().is_empty()) => return None,
            Some(_) => self.required_string(&f, "type", "'auth'")?,
        };
        match ty.as_str() {
            "basic" => {
                let Some(n) = f.get("basic") else {
                    self.error(f.pos, "missing 'basic' in basic auth");
                    return None;
                };
                let g = self.fields(n, "'basic'", &["username", "password"])?;
                let username = self.required_template(&g, "username", "'basic'");
                let password = self.required_template(&g, "password", "'basic'");
                Some(Auth::Basic {
                    username: username?,
                    password: password?,
                })
            }
            "bearer" => {
                let Some(n) = f.get("bearer") else {
                    self.error(f.pos, "missing 'bearer' in bearer auth");
                    return None;
                };
                let g = self.fields(n, "'bearer'", &["token"])?;
                let token = self.required_template(&g, "token", "'bearer'")?;
                Some(Auth::Bearer { token })
            }
            "apiKey" => {
                let Some(n) = f.get("apiKey") else {
                    self.error(f.pos, "missing 'apiKey' in apiKey auth");
                    return None;
                };
                let g = self.fields(n, "'apiKey'", &["key", "value", "in"])?;
                let key = self.required_string(&g, "key", "'apiKey'");
                let value = self.required_template(&g, "value", "'apiKey'");
                let location = match g.get("in").and_then(|n| n.as_scalar().map(|s| (s, n.pos))) {
                    None | Some(("header", _)) => ApiKeyLocation::Header,
                    Some(("query", _)) => ApiKeyLocation::Query,
                    Some((other, pos)) => {
                        self.error(
                            pos,
                            format!("unknown apiKey location '{other}', expected header or query"),
                        );
                        return None;
                    }
                };
                Some(Auth::ApiKey {
                    key: key?,
                    value: value?,
                    location,
                })
            }
            other => {
                let pos = f.get("type").map_or(f.pos, |n| n.pos);
                self.error(
                    pos,
                    format!("unknown auth type '{other}', expected basic, bearer or apiKey"),
                );
                None
            }
        }
    }

    fn transaction(&mut self, node: &Node, ty: &str) -> Option<Transaction> {
        let what = if ty == "TestSuite" {
            "test suite"
        } else {
            "transaction"
        };
        let f = self.fields(node, what, &["id", "name", "description", "steps"])?;
        let before = self.diags.len();
        let (id, position, id_derived) = self.id_or_derived(&f, what);
        let name = self.optional_string(&f, "name", what);
        let description = self.optional_string(&f, "description", what);
        let mut steps = Vec::new();
        if let Some(n) = f.get("steps") {
            for item in self.list(n, "'steps'") {
                if let Some(s) = self.string(item, "a step") {
                    steps.push(TransactionStep {
                        reference: s,
                        position: item.pos,
                    });
                }
            }
        }
        let id = id?;
        if self.diags.len() > before {
            return None;
        }
        Some(Transaction {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            id_derived,
            description,
            steps,
            file: self.file.to_string(),
            position,
        })
    }

    fn variable_set(&mut self, node: &Node, ty: &str) -> Option<VariableSet> {
        let what = if ty == "Environment" {
            "environment"
        } else {
            "variable set"
        };
        let f = self.fields(node, what, &["id", "name", "description", "values"])?;
        let before = self.diags.len();
        let (id, position, id_derived) = self.id_or_derived(&f, what);
        let name = self.optional_string(&f, "name", what);
        let description = self.optional_string(&f, "description", what);
        let mut values = Vec::new();
        if let Some(n) = f.get("values") {
            for item in self.list(n, "'values'") {
                let Some(g) = self.fields(item, "a variable", &["key", "value", "type"]) else {
                    continue;
                };
                let key = self.required_string(&g, "key", "variable");
                let value = self
                    .optional_string(&g, "value", "variable")
                    .unwrap_or_default();
                if let Some(key) = key {
                    values.push(Variable {
                        key,
                        value,
                        position: g.pos,
                    });
                }
            }
        }
        let id = id?;
        if self.diags.len() > before {
            return None;
        }
        Some(VariableSet {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            id_derived,
            description,
            values,
            file: self.file.to_string(),
            position,
        })
    }
}

/// A YAML value as JSON (GraphQL variables): plain scalars that read as
/// numbers, booleans or null become those; everything else is text.
fn node_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.kind {
        NodeKind::Scalar { value, plain } => {
            if !plain {
                return J::String(value.clone());
            }
            if node.is_null() {
                return J::Null;
            }
            match value.as_str() {
                "true" => J::Bool(true),
                "false" => J::Bool(false),
                v => v
                    .parse::<i64>()
                    .map(J::from)
                    .or_else(|_| v.parse::<f64>().map(J::from))
                    .unwrap_or_else(|_| J::String(v.into())),
            }
        }
        NodeKind::Seq(items) => J::Array(items.iter().map(node_json).collect()),
        NodeKind::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_string(), node_json(v)))
                .collect(),
        ),
    }
}

//! Loading what a run needs: the `--file` documents (tests, transactions,
//! variable sets), transaction steps resolved to tests (by id, or by a path
//! relative to the transaction file), and every check that can be made
//! before anything is sent (trigger present, variables defined), each
//! reported as `file:line:col`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::CompiledTest;
use crate::model::{self, Diagnostic, Document, Position, Test, Transaction, VariableSet};

/// Whether a run is one test or a transaction of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Test,
    Transaction,
}

/// A test ready to run as a step.
#[derive(Debug)]
pub struct Step {
    pub compiled: CompiledTest,
}

impl Step {
    pub fn test(&self) -> &Test {
        self.compiled.test()
    }

    /// The folder relative paths in the test (a `protobufFile`) start from.
    pub fn base_dir(&self) -> PathBuf {
        Path::new(&self.test().file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// One thing to run: a test, or a transaction's steps in order.
#[derive(Debug, Clone)]
pub struct Runnable {
    pub kind: RunKind,
    pub id: String,
    pub name: String,
    pub file: String,
    pub steps: Vec<Arc<Step>>,
}

/// Everything `test run` was given.
#[derive(Debug, Clone)]
pub struct Suite {
    pub runs: Vec<Runnable>,
    pub variables: Option<VariableSet>,
}

fn diag(file: &str, pos: Position, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        message: message.into(),
    }
}

/// Loads `files` (several `--file`) and `vars` (`--vars`). When any
/// transaction is among the files, the transactions run and the tests are
/// their steps; otherwise every test runs, in order.
pub fn load_files(files: &[PathBuf], vars: Option<&Path>) -> Result<Suite, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut docs = Vec::new();
    for f in files {
        match model::load_path(f) {
            Ok(d) => docs.extend(d),
            Err(d) => diags.extend(d),
        }
    }
    let mut variables = None;
    if let Some(v) = vars {
        match model::load_path(v) {
            Ok(d) => {
                let sets: Vec<VariableSet> = d
                    .into_iter()
                    .filter_map(|d| match d {
                        Document::VariableSet(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                match sets.len() {
                    1 => variables = sets.into_iter().next(),
                    n => diags.push(diag(
                        &v.display().to_string(),
                        Position { line: 1, column: 1 },
                        format!("--vars needs exactly one document of type VariableSet (or Environment), found {n}"),
                    )),
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    build(docs, variables, true)
}

/// Loads documents posted as text (the runs API): steps may name only
/// tests of the same text, never files of the daemon's host.
pub fn load_text(
    origin: &str,
    text: &str,
    variables: Option<VariableSet>,
) -> Result<Suite, Vec<Diagnostic>> {
    let docs = model::load_str(origin, text)?;
    build(docs, variables, false)
}

fn build(
    docs: Vec<Document>,
    mut variables: Option<VariableSet>,
    allow_paths: bool,
) -> Result<Suite, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut tests: Vec<Test> = Vec::new();
    let mut transactions: Vec<Transaction> = Vec::new();
    for d in docs {
        match d {
            Document::Test(t) => tests.push(t),
            Document::Transaction(t) => transactions.push(t),
            Document::VariableSet(s) => {
                // A variable set among the files counts unless --vars gave one.
                if variables.is_none() {
                    variables = Some(s);
                }
            }
            Document::Model(m) => diags.push(diag(
                &m.file,
                m.position,
                format!(
                    "'{}' is a Model, which runs on live traces (tracecheck serve / check), not a test to run",
                    m.id
                ),
            )),
        }
    }
    if tests.is_empty() && transactions.is_empty() && diags.is_empty() {
        diags.push(Diagnostic {
            file: String::new(),
            line: 1,
            column: 1,
            message: "no document of type Test, Transaction or TestSuite to run".into(),
        });
    }
    let mut steps = StepCache::default();
    let mut runs = Vec::new();
    if transactions.is_empty() {
        for t in &tests {
            if let Some(step) = steps.get_or_compile(t, &mut diags) {
                runs.push(Runnable {
                    kind: RunKind::Test,
                    id: t.id.clone(),
                    name: t.name.clone(),
                    file: t.file.clone(),
                    steps: vec![step],
                });
            }
        }
    } else {
        for tx in &transactions {
            let mut tx_steps = Vec::new();
            for s in &tx.steps {
                let test = match tests.iter().find(|t| t.id == s.reference) {
                    Some(t) => Some(t.clone()),
                    None if allow_paths => step_file(tx, &s.reference, s.position, &mut diags),
                    None => {
                        diags.push(diag(
                            &tx.file,
                            s.position,
                            format!("step '{}' names no test of this request", s.reference),
                        ));
                        None
                    }
                };
                if let Some(step) = test.and_then(|t| steps.get_or_compile(&t, &mut diags)) {
                    tx_steps.push(step);
                }
            }
            if tx.steps.is_empty() {
                diags.push(diag(&tx.file, tx.position, "transaction has no steps"));
            }
            runs.push(Runnable {
                kind: RunKind::Transaction,
                id: tx.id.clone(),
                name: tx.name.clone(),
                file: tx.file.clone(),
                steps: tx_steps,
            });
        }
    }
    if diags.is_empty() {
        for r in &runs {
            check_variables(r, variables.as_ref(), &mut diags);
        }
    }
    if diags.is_empty() {
        Ok(Suite { runs, variables })
    } else {
        Err(diags)
    }
}

/// A step named by path: the file's (first) test.
fn step_file(
    tx: &Transaction,
    reference: &str,
    pos: Position,
    diags: &mut Vec<Diagnostic>,
) -> Option<Test> {
    let dir = Path::new(&tx.file).parent().unwrap_or(Path::new(""));
    // `./x.yaml` and `x.yaml` name the same file; reports show it once.
    let path: PathBuf = dir
        .join(reference)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if !path.is_file() {
        diags.push(diag(
            &tx.file,
            pos,
            format!(
                "step '{reference}' is neither the id of a loaded test nor a file ({} does not exist)",
                path.display()
            ),
        ));
        return None;
    }
    match model::load_path(&path) {
        Ok(docs) => {
            let test = docs.into_iter().find_map(|d| match d {
                Document::Test(t) => Some(t),
                _ => None,
            });
            if test.is_none() {
                diags.push(diag(
                    &tx.file,
                    pos,
                    format!(
                        "step file {} holds no document of type Test",
                        path.display()
                    ),
                ));
            }
            test
        }
        Err(d) => {
            diags.extend(d);
            None
        }
    }
}

/// Compiles each test once, however many steps name it.
#[derive(Default)]
struct StepCache {
    by_key: HashMap<(String, String), Arc<Step>>,
}

impl StepCache {
    fn get_or_compile(&mut self, t: &Test, diags: &mut Vec<Diagnostic>) -> Option<Arc<Step>> {
        let key = (t.file.clone(), t.id.clone());
        if let Some(s) = self.by_key.get(&key) {
            return Some(Arc::clone(s));
        }
        if t.trigger.is_none() {
            diags.push(diag(
                &t.file,
                t.position,
                format!(
                    "test '{}' has no 'trigger': tracecheck cannot start its trace",
                    t.id
                ),
            ));
            return None;
        }
        if let Some((advice, position)) = t.trigger.as_ref().and_then(|tr| match tr {
            model::Trigger::NotSent { position, .. } => Some((tr.not_sent_advice()?, *position)),
            _ => None,
        }) {
            diags.push(diag(&t.file, position, advice));
            return None;
        }
        match CompiledTest::compile(t) {
            Ok(compiled) => {
                let step = Arc::new(Step { compiled });
                self.by_key.insert(key, Arc::clone(&step));
                Some(step)
            }
            Err(d) => {
                diags.extend(d);
                None
            }
        }
    }
}

/// Every `env:`/`var:` a step reads must be in the variable set, be one of
/// its own outputs, or an output of an earlier step of the run.
fn check_variables(run: &Runnable, set: Option<&VariableSet>, diags: &mut Vec<Diagnostic>) {
    let mut defined: BTreeSet<String> = set
        .map(|s| s.values.iter().map(|v| v.key.clone()).collect())
        .unwrap_or_default();
    for step in &run.steps {
        let t = step.test();
        let mut own = defined.clone();
        own.extend(t.outputs.iter().map(|o| o.name.clone()));
        for r in Document::Test(t.clone()).variable_refs() {
            if !own.contains(&r.name) {
                let whence = match (set, run.kind) {
                    (None, RunKind::Test) => {
                        "no variable set was given (--vars) and the test has no such output"
                            .to_string()
                    }
                    (Some(s), RunKind::Test) => {
                        format!("not in variable set '{}' nor an output of the test", s.id)
                    }
                    (None, RunKind::Transaction) => {
                        "no variable set was given (--vars) and no earlier step outputs it"
                            .to_string()
                    }
                    (Some(s), RunKind::Transaction) => format!(
                        "not in variable set '{}' nor an output of this or an earlier step",
                        s.id
                    ),
                };
                let prefix = match r.kind {
                    model::VarKind::Env => "env",
                    model::VarKind::Var => "var",
                };
                diags.push(Diagnostic {
                    file: r.file.clone(),
                    line: r.line,
                    column: r.column,
                    message: format!("undefined variable {prefix}:{}: {whence}", r.name),
                });
            }
        }
        defined.extend(t.outputs.iter().map(|o| o.name.clone()));
    }
}

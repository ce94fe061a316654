//! The models in force: loaded from files, folders or embedded text,
//! compiled once, swapped whole on reload.
//!
//! At start every good file is loaded and every bad one reported (file,
//! line, column), so one broken file does not take the others down. A
//! reload is all or nothing: if any file is bad, the whole previous set
//! stays in force and the answer says which file and why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::engine::{Engine, Verdict};
use crate::metrics::{Metrics, TraceExemplar, VerdictCounter, VerdictLabels};
use crate::model::{self, Diagnostic, Document, Model};

/// Where models come from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A file or a folder of `*.yaml`/`*.yml`. A missing path is an error
    /// unless `optional` (the default `./models`).
    Path { path: PathBuf, optional: bool },
    /// Text compiled into the binary (the demo's example models).
    Embedded { name: String, text: String },
}

/// Per-model verdict counters, resolved once per load so that recording a
/// verdict is one atomic add, not a label lookup.
pub struct ModelCounters {
    pass: Counter,
    fail: Counter,
    skip: Counter,
    inconclusive: Counter,
    /// `tracecheck_verdict_delay_seconds{model}`.
    pub delay: prometheus_client::metrics::histogram::Histogram,
}

type Counter = VerdictCounter;

impl ModelCounters {
    /// Counts a verdict; failures carry the trace as the series' exemplar,
    /// so a dashboard links the failure count to a failing trace.
    pub fn record(&self, v: Verdict, trace_id: &crate::ids::TraceId) {
        match v {
            Verdict::Pass => self.pass.inc(),
            Verdict::Skip => self.skip.inc(),
            Verdict::Inconclusive => self.inconclusive.inc(),
            Verdict::Fail => self.fail.inc_with_exemplar(
                TraceExemplar {
                    trace_id: trace_id.to_hex(),
                },
                SystemTime::now(),
            ),
        }
    }

    /// Counts `n` skips at once (see the evaluator's skip backlog).
    pub fn add_skips(&self, n: u64) {
        if n > 0 {
            self.skip.inc_by(n);
        }
    }

    pub fn count(&self, v: Verdict) -> u64 {
        match v {
            Verdict::Pass => self.pass.get(),
            Verdict::Fail => self.fail.get(),
            Verdict::Skip => self.skip.get(),
            Verdict::Inconclusive => self.inconclusive.get(),
        }
    }
}

/// One compiled set of models.
pub struct LoadedModels {
    pub engine: Engine,
    pub counters: Vec<ModelCounters>,
    /// Each model's id and name, shared by every verdict record of it.
    pub names: Vec<(Arc<str>, Arc<str>)>,
    /// Each model's YAML document as it was loaded (`---` to `---` of its
    /// file), for a failure promoted to a test.
    pub sources: Vec<Arc<str>>,
    /// Each source file's text as loaded, by the name its models carry.
    pub files: HashMap<String, Arc<str>>,
    pub loaded_at_unix_ms: u64,
}

impl LoadedModels {
    /// The index of the model `id`.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.names.iter().position(|(m, _)| &**m == id)
    }
}

/// What a load or reload did; the answer of `POST /api/v1/models/reload`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Ids of the models in force after this load.
    pub models: Vec<String>,
    /// Every problem met, as `file:line:col: message` parts.
    pub errors: Vec<Diagnostic>,
    /// A reload met errors and kept the previous set.
    pub kept_previous: bool,
}

impl ReloadReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

pub struct ModelRegistry {
    sources: Vec<ModelSource>,
    current: RwLock<Arc<LoadedModels>>,
    last_report: RwLock<ReloadReport>,
    fingerprint: Mutex<Vec<FileStamp>>,
    metrics: Arc<Metrics>,
    /// Told whether the models in force can pass a trace early
    /// ([`crate::assembler::Assembler::early_gate`]).
    early_gate: Mutex<Option<Arc<AtomicBool>>>,
}

impl ModelRegistry {
    /// Loads what can be loaded; bad files are reported and left out.
    pub fn load(sources: Vec<ModelSource>, metrics: Arc<Metrics>) -> (Self, ReloadReport) {
        let files = read_sources(&sources);
        let mut errors = files.errors;
        let mut good: Vec<Model> = Vec::new();
        for (_, result) in files.files {
            match result {
                Ok(models) => good.extend(models),
                Err(diags) => errors.extend(diags),
            }
        }
        let engine = match Engine::compile(good.clone()) {
            Ok(e) => e,
            Err(diags) => {
                // Cross-file problems (duplicate ids): leave out the files
                // named, keep the rest.
                let bad: Vec<String> = diags.iter().map(|d| d.file.clone()).collect();
                errors.extend(diags);
                good.retain(|m| !bad.contains(&m.file));
                Engine::compile(good).unwrap_or_else(|_| empty_engine())
            }
        };
        let loaded = Arc::new(counters_for(engine, &files.texts, &metrics));
        let report = ReloadReport {
            models: ids(&loaded),
            errors,
            kept_previous: false,
        };
        note(&metrics, &loaded, &report);
        let registry = Self {
            fingerprint: Mutex::new(fingerprint(&sources)),
            sources,
            current: RwLock::new(loaded),
            last_report: RwLock::new(report.clone()),
            metrics,
            early_gate: Mutex::new(None),
        };
        (registry, report)
    }

    /// Reloads every source; any error keeps the whole previous set.
    pub fn reload(&self) -> ReloadReport {
        *self.fingerprint.lock() = fingerprint(&self.sources);
        let files = read_sources(&self.sources);
        let mut errors = files.errors;
        let mut models = Vec::new();
        for (_, result) in files.files {
            match result {
                Ok(m) => models.extend(m),
                Err(diags) => errors.extend(diags),
            }
        }
        let compiled = if errors.is_empty() {
            Engine::compile(models).map_err(|d| errors.extend(d)).ok()
        } else {
            None
        };
        let report = match compiled {
            Some(engine) => {
                let loaded = Arc::new(counters_for(engine, &files.texts, &self.metrics));
                let report = ReloadReport {
                    models: ids(&loaded),
                    errors: Vec::new(),
                    kept_previous: false,
                };
                *self.current.write() = loaded;
                self.open_early_gate();
                report
            }
            None => ReloadReport {
                models: ids(&self.current()),
                errors,
                kept_previous: true,
            },
        };
        note(&self.metrics, &self.current(), &report);
        *self.last_report.write() = report.clone();
        report
    }

    /// Keeps `gate` set to whether any model in force can pass a trace
    /// early, now and at every reload.
    pub fn set_early_gate(&self, gate: Arc<AtomicBool>) {
        *self.early_gate.lock() = Some(gate);
        self.open_early_gate();
    }

    fn open_early_gate(&self) {
        if let Some(gate) = &*self.early_gate.lock() {
            gate.store(self.current().engine.has_early(), Ordering::Relaxed);
        }
    }

    pub fn current(&self) -> Arc<LoadedModels> {
        Arc::clone(&self.current.read())
    }

    pub fn last_report(&self) -> ReloadReport {
        self.last_report.read().clone()
    }

    /// The text of `file` as the models in force were loaded from it (one
    /// of the sources' files, embedded ones included): for showing a model
    /// as written. Nothing is read from disk, so a name taken from a
    /// request reads nothing, and the text is the one the model came from.
    pub fn source_text(&self, file: &str) -> Option<String> {
        self.current().files.get(file).map(|t| t.to_string())
    }

    /// Whether any model file was added, removed or changed since the last
    /// (re)load. Cheap enough to poll every few seconds.
    pub fn changed_on_disk(&self) -> bool {
        *self.fingerprint.lock() != fingerprint(&self.sources)
    }
}

fn note(metrics: &Metrics, loaded: &LoadedModels, report: &ReloadReport) {
    metrics.models_loaded.set(loaded.engine.len() as i64);
    if report.is_ok() {
        tracing::info!(models = report.models.len(), "Models loaded.");
        return;
    }
    metrics.model_reload_failures.inc();
    for e in &report.errors {
        tracing::error!(file = %e.file, line = e.line, column = e.column, message = %e.message, "Model file refused.");
    }
    if report.kept_previous {
        tracing::warn!(
            models = report.models.len(),
            "Model reload refused; the previous set stays in force."
        );
    }
}

fn ids(loaded: &LoadedModels) -> Vec<String> {
    loaded
        .engine
        .models()
        .iter()
        .map(|m| m.id.clone())
        .collect()
}

fn empty_engine() -> Engine {
    // An empty set has nothing to reject.
    match Engine::compile(Vec::new()) {
        Ok(e) => e,
        Err(_) => unreachable!("compiling no models cannot fail"),
    }
}

fn counters_for(
    engine: Engine,
    texts: &HashMap<String, Arc<str>>,
    metrics: &Metrics,
) -> LoadedModels {
    let counters = engine
        .models()
        .iter()
        .map(|m| {
            let c = |v: &str| {
                metrics
                    .model_verdicts
                    .get_or_create(&VerdictLabels {
                        model: m.id.clone(),
                        verdict: v.to_owned(),
                    })
                    .clone()
            };
            ModelCounters {
                pass: c("pass"),
                fail: c("fail"),
                skip: c("skip"),
                inconclusive: c("inconclusive"),
                delay: metrics
                    .verdict_delay
                    .get_or_create(&crate::metrics::ModelLabels {
                        model: m.id.clone(),
                    })
                    .clone(),
            }
        })
        .collect();
    let names = engine
        .models()
        .iter()
        .map(|m| (Arc::from(m.id.as_str()), Arc::from(m.name.as_str())))
        .collect();
    let sources = engine
        .models()
        .iter()
        .map(|m| {
            texts
                .get(&m.file)
                .map(|t| Arc::from(document_at(t, m.position.line)))
                .unwrap_or_else(|| Arc::from(""))
        })
        .collect();
    LoadedModels {
        engine,
        counters,
        names,
        sources,
        files: texts.clone(),
        loaded_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

/// A file's models (tests count as models), or why it was refused.
type FileModels = Result<Vec<Model>, Vec<Diagnostic>>;

struct SourceFiles {
    files: Vec<(String, FileModels)>,
    /// Each file's text, by the name its models carry.
    texts: HashMap<String, Arc<str>>,
    /// Problems with the sources themselves (a configured path missing).
    errors: Vec<Diagnostic>,
}

fn read_sources(sources: &[ModelSource]) -> SourceFiles {
    let mut out = SourceFiles {
        files: Vec::new(),
        texts: HashMap::new(),
        errors: Vec::new(),
    };
    for s in sources {
        match s {
            ModelSource::Embedded { name, text } => {
                out.files.push((
                    name.clone(),
                    model::load_str(name, text).map(|d| as_models(&d)),
                ));
                out.texts.insert(name.clone(), Arc::from(text.as_str()));
            }
            ModelSource::Path { path, optional } => {
                if !path.exists() {
                    if !optional {
                        out.errors.push(Diagnostic {
                            file: path.display().to_string(),
                            line: 1,
                            column: 1,
                            message: "no such file or directory".into(),
                        });
                    }
                    continue;
                }
                for f in model_files(path) {
                    let name = f.display().to_string();
                    // Read once, parsed from the same text that is kept.
                    let loaded = match std::fs::read_to_string(&f) {
                        Ok(text) => {
                            let models = model::load_str(&name, &text).map(|d| as_models(&d));
                            out.texts.insert(name.clone(), Arc::from(text));
                            models
                        }
                        // Its diagnostic, as the loader words it.
                        Err(_) => model::load_path(&f).map(|d| as_models(&d)),
                    };
                    out.files.push((name, loaded));
                }
            }
        }
    }
    out
}

/// The YAML document of `text` that holds line `line` (1-based): from the
/// `---` before it (or the start) to the next `---` or `...` (or the end).
fn document_at(text: &str, line: usize) -> &str {
    let mut start = 0;
    let mut end = text.len();
    let mut offset = 0;
    for (number, l) in (1..).zip(text.split_inclusive('\n')) {
        let marker = l.trim_end();
        let separator = marker == "---" || marker.starts_with("--- ");
        if number <= line && separator {
            start = offset + l.len();
        } else if number > line && (separator || marker == "...") {
            end = offset;
            break;
        }
        offset += l.len();
    }
    &text[start.min(end)..end]
}

/// Models, and tests registered as models (their trigger ignored).
fn as_models(docs: &[Document]) -> Vec<Model> {
    docs.iter()
        .filter_map(|d| match d {
            Document::Model(m) => Some(m.clone()),
            Document::Test(t) => Some(t.as_model()),
            _ => None,
        })
        .collect()
}

fn model_files(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            // Hidden entries are skipped. A Kubernetes ConfigMap volume holds
            // each file three times: `bank.yaml -> ..data/bank.yaml`, the
            // `..data` symlink and the timestamped `..2026_…` directory it
            // points to; walking the dot-entries would load every model three
            // times and refuse them all as duplicate ids. Editors' hidden
            // files (`.bank.yaml.swp`, `.#bank.yaml`) are not models either.
            if e.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One model file as seen on disk: its path, where its symlinks lead, its
/// modification time and size.
type FileStamp = (PathBuf, Option<PathBuf>, Option<SystemTime>, u64);

fn fingerprint(sources: &[ModelSource]) -> Vec<FileStamp> {
    let mut out = Vec::new();
    for s in sources {
        if let ModelSource::Path { path, .. } = s {
            for f in model_files(path) {
                let meta = std::fs::metadata(&f).ok();
                // The resolved path changes on every ConfigMap update (the
                // `..data` symlink is swapped to a new directory) even when
                // the new file has the old size and a coarse mtime.
                let target = std::fs::canonicalize(&f).ok();
                out.push((
                    f,
                    target,
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map(|m| m.len()).unwrap_or(0),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn model(id: &str) -> String {
        format!("type: Model\nspec:\n  id: {id}\n  match: span[name = \"x\"]\n  specs:\n    - name: s\n      selector: span[name = \"x\"]\n")
    }

    /// Writes `..<version>/bank.yaml` and points `..data` at it the way the
    /// kubelet does: a new symlink renamed over the old one.
    fn publish(dir: &Path, version: &str, text: &str, mtime: SystemTime) {
        let data = dir.join(format!("..{version}"));
        std::fs::create_dir(&data).unwrap();
        let file = data.join("bank.yaml");
        std::fs::write(&file, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    }

    /// The models of `dir`, with metrics of their own.
    fn load_dir(dir: &Path) -> (ModelRegistry, ReloadReport) {
        let metrics = Arc::new(Metrics::new(
            &mut prometheus_client::registry::Registry::default(),
        ));
        let sources = vec![ModelSource::Path {
            path: dir.to_path_buf(),
            optional: false,
        }];
        ModelRegistry::load(sources, metrics)
    }

    /// Each model keeps the YAML document it was written in, alone: the
    /// other documents of its file are not part of it, and a comment above
    /// its `type:` stays with it.
    #[test]
    fn each_model_keeps_its_own_document() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# first\ntype: Model\nspec:\n  id: a\n  specs:\n    - selector: span[name = \"x\"]\n---\n# second\ntype: Model\nspec:\n  id: b\n  specs:\n    - selector: span[name = \"y\"]\n...\n";
        std::fs::write(dir.path().join("two.yaml"), text).unwrap();
        let (registry, report) = load_dir(dir.path());
        assert!(report.is_ok(), "{report:?}");
        let loaded = registry.current();
        let source = |id: &str| loaded.sources[loaded.index(id).unwrap()].to_string();
        assert_eq!(
            source("a"),
            "# first\ntype: Model\nspec:\n  id: a\n  specs:\n    - selector: span[name = \"x\"]\n"
        );
        assert_eq!(
            source("b"),
            "# second\ntype: Model\nspec:\n  id: b\n  specs:\n    - selector: span[name = \"y\"]\n"
        );
    }

    /// The assembler hands on early copies only while a model in force can
    /// use one: the gate follows every reload.
    #[test]
    fn the_early_gate_follows_the_models_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.yaml");
        let forbids = "type: Model\nspec:\n  id: never-x\n  match: span[name = \"x\"]\n  not_expect:\n    - name: no y\n      selector: span[name = \"y\"]\n";
        std::fs::write(&file, forbids).unwrap();
        let (registry, report) = load_dir(dir.path());
        assert!(report.is_ok(), "{:?}", report.errors);
        let gate = Arc::new(AtomicBool::new(true));
        registry.set_early_gate(Arc::clone(&gate));
        assert!(
            !gate.load(Ordering::Relaxed),
            "a not_expect cannot pass early"
        );

        // An existence-only model can.
        std::fs::write(&file, format!("{forbids}---\n{}", model("x-exists"))).unwrap();
        assert!(registry.reload().is_ok());
        assert!(gate.load(Ordering::Relaxed));
        std::fs::write(&file, forbids).unwrap();
        assert!(registry.reload().is_ok());
        assert!(!gate.load(Ordering::Relaxed));
    }

    #[test]
    fn configmap_volume_loads_once_and_reloads_on_symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let mtime = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        publish(dir.path(), "2026_11_23_14_00_00.1", &model("cm-one"), mtime);
        symlink("..data/bank.yaml", dir.path().join("bank.yaml")).unwrap();

        let (registry, report) = load_dir(dir.path());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.models, vec!["cm-one".to_owned()]);
        assert!(!registry.changed_on_disk());

        // Same size, same mtime: only the symlink target tells them apart.
        publish(dir.path(), "2026_11_23_14_05_00.2", &model("cm-two"), mtime);
        std::fs::remove_dir_all(dir.path().join("..2026_11_23_14_00_00.1")).unwrap();
        assert!(registry.changed_on_disk());
        let report = registry.reload();
        assert!(report.is_ok(), "{:?}", report.errors);
        assert_eq!(report.models, vec!["cm-two".to_owned()]);
        assert!(!registry.changed_on_disk());
    }
}

//! The model language: reading model files (YAML documents of type Model,
//! Test, Transaction/TestSuite and VariableSet/Environment), parsing their
//! selectors and expressions, and type-checking them before any trace.
//!
//! Every error is a [`Diagnostic`] that points into the YAML file
//! (`file:line:col: message`); loading reports all errors of a load, never
//! only the first.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod ast;
pub mod builtins;
pub mod check;
mod decode;
pub mod document;
pub mod parse;
pub mod source;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use document::*;
pub use source::{Diagnostic, Position, SourceLoc};

/// Reads every document of `text`, which came from `origin` (a file name
/// used in diagnostics).
pub fn load_str(origin: &str, text: &str) -> Result<Vec<Document>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let docs = load_one(origin, text, &mut diags, &mut Vec::new());
    check_duplicates(&docs, &mut diags);
    if diags.is_empty() {
        Ok(docs)
    } else {
        Err(diags)
    }
}

/// Reads a file, or every `*.yaml`/`*.yml` file under a directory
/// (recursively, in sorted order).
pub fn load_path(path: &Path) -> Result<Vec<Document>, Vec<Diagnostic>> {
    load_path_warning(path, &mut Vec::new())
}

/// [`load_path`], also collecting what is accepted but worth saying (keys a
/// Tracetest document carries that Tracetest and tracecheck ignore), each
/// message starting with `warning:`.
pub fn load_path_warning(
    path: &Path,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Vec<Document>, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut files = Vec::new();
    if path.is_dir() {
        collect_files(path, &mut files, &mut diags);
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut docs = Vec::new();
    for f in &files {
        let origin = f.display().to_string();
        match std::fs::read_to_string(f) {
            Ok(text) => docs.extend(load_one(&origin, &text, &mut diags, warnings)),
            Err(e) => diags.push(file_error(&origin, format!("cannot read file: {e}"))),
        }
    }
    check_duplicates(&docs, &mut diags);
    if diags.is_empty() {
        Ok(docs)
    } else {
        Err(diags)
    }
}

fn file_error(origin: &str, message: String) -> Diagnostic {
    Diagnostic {
        file: origin.to_string(),
        line: 1,
        column: 1,
        message,
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(file_error(
                &dir.display().to_string(),
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files(&p, out, diags);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

fn load_one(
    origin: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<Document> {
    let file: Arc<str> = Arc::from(origin);
    let (yaml_docs, syntax_error) = yaml::parse_documents(&file, text);
    let mut out = Vec::new();
    for d in &yaml_docs {
        let mut dec = decode::Decoder {
            file: &file,
            diags: &mut *diags,
            warnings: &mut *warnings,
            partial: false,
            lenient: false,
        };
        let doc = dec.document(&d.root);
        let partial = dec.partial;
        if let Some(doc) = doc {
            let mut checker = check::Checker {
                diags: &mut *diags,
                defined_vars: None,
            };
            match &doc {
                // With parts missing (an output that did not parse), `var:`
                // checks would only repeat that error.
                Document::Model(m) => checker.model(m, !partial),
                Document::Test(t) => checker.test(t),
                Document::Transaction(_) | Document::VariableSet(_) => {}
            }
            out.push(doc);
        }
    }
    diags.extend(syntax_error);
    out
}

/// Two documents of the same kind may not share an id within one load.
fn check_duplicates(docs: &[Document], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<(u8, &str), (&str, Position, bool)> = HashMap::new();
    for d in docs {
        let (kind, what, pos) = match d {
            Document::Model(m) => (0, "model", m.position),
            Document::Test(t) => (1, "test", t.position),
            Document::Transaction(t) => (2, "transaction", t.position),
            Document::VariableSet(v) => (3, "variable set", v.position),
        };
        match seen.get(&(kind, d.id())) {
            Some((file, first, first_derived)) => diags.push(Diagnostic {
                file: d.file().to_string(),
                line: pos.line,
                column: pos.column,
                message: format!(
                    "duplicate {what} id '{}', first defined at {file}:{}:{}{}",
                    d.id(),
                    first.line,
                    first.column,
                    if *first_derived || d.id_derived() {
                        " (a document without 'id' gets one made from its name, or else its file name: give one of them an 'id')"
                    } else {
                        ""
                    }
                ),
            }),
            None => {
                seen.insert((kind, d.id()), (d.file(), pos, d.id_derived()));
            }
        }
    }
}

/// The models among `docs`, in order.
pub fn models(docs: &[Document]) -> Vec<Model> {
    docs.iter()
        .filter_map(|d| match d {
            Document::Model(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Formats a duration the way it is written in models (`30s`, `1.5ms`).
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    const UNITS: [(u128, &str); 6] = [
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if ns == 0 {
        return "0s".to_string();
    }
    for (size, unit) in UNITS {
        if ns >= size {
            if ns % size == 0 {
                return format!("{}{unit}", ns / size);
            }
            if size > 1 {
                let x = ns as f64 / size as f64;
                let s = format!("{x:.3}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                return format!("{s}{unit}");
            }
        }
    }
    format!("{ns}ns")
}

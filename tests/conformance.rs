//! Runs every case of the shared conformance suite (models.yaml,
//! traces.jsonl, expected.json) through the loader and the engine.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tracecheck::engine::{Engine, EvalContext, Trace};
use tracecheck::model;

fn cases_dir() -> PathBuf {
    std::env::var_os("TRACECHECK_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/cases")
        })
}

fn run_case(dir: &Path) -> Result<usize, String> {
    let docs = model::load_path(&dir.join("models.yaml")).map_err(|d| {
        d.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let engine = Engine::compile(model::models(&docs)).map_err(|d| format!("{d:?}"))?;
    let traces_text =
        std::fs::read_to_string(dir.join("traces.jsonl")).map_err(|e| e.to_string())?;
    let mut got: HashMap<(String, String), String> = HashMap::new();
    for line in traces_text.lines().filter(|l| !l.trim().is_empty()) {
        for trace in Trace::from_resource_spans(&support::decode(line)) {
            for v in engine.evaluate(&trace, &EvalContext::default()) {
                let id = engine.models()[v.model].id.clone();
                got.insert(
                    (trace.trace_id().to_string(), id),
                    v.verdict.as_str().to_string(),
                );
            }
        }
    }
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let list = expected.as_array().cloned().unwrap_or_default();
    for e in &list {
        let tid = e["trace_id"].as_str().unwrap_or_default().to_string();
        let m = e["model"].as_str().unwrap_or_default().to_string();
        let want = e["verdict"].as_str().unwrap_or_default();
        let have = got.get(&(tid.clone(), m.clone())).map(String::as_str);
        if have != Some(want) {
            problems.push(format!(
                "trace {tid} model {m}: expected {want}, got {have:?}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(list.len())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn all_conformance_cases_pass() {
    let dir = cases_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("conformance cases not found at {}; skipped", dir.display());
        return;
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    let mut failed = Vec::new();
    let mut passed = 0;
    for case in &names {
        match run_case(case) {
            Ok(_) => passed += 1,
            Err(e) => failed.push(format!("{}: {e}", case.display())),
        }
    }
    eprintln!("conformance: {passed} passed, {} failed", failed.len());
    assert!(failed.is_empty(), "failing cases:\n{}", failed.join("\n"));
    assert_eq!(passed, names.len());
}

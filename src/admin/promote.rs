//! A failing trace promoted to a regression test: the trace as OTLP JSON
//! beside the YAML of each model that failed on it, in a `.tar.gz` that
//! `GET /api/v1/traces/{id}/test.tar.gz` serves and `tracecheck promote`
//! unpacks. `tracecheck check --models DIR/models --traces DIR/trace.json`
//! then gives the same failure offline (exit 1, the same specs and
//! values), and passes once the service is fixed and a new trace of it is
//! promoted in its place.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::ids::TraceId;
use crate::otlp::RawSpan;

/// One model that failed on the trace.
pub struct FailedModel<'a> {
    pub id: &'a str,
    /// Its YAML document as loaded.
    pub source: &'a str,
    /// The specs it failed, for the bundle's README.
    pub specs: Vec<&'a str>,
}

/// A bundle cannot be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("a stored span cannot be decoded: {0}")]
    Span(#[from] prost::DecodeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the archive holds {0:?}, which is not a file of this trace's promoted test")]
    Unexpected(PathBuf),
    #[error("the archive unpacks to more than {} MiB; not a promoted test", MAX_UNPACKED >> 20)]
    TooLarge,
}

/// The folder a trace's test is unpacked into, under the chosen directory.
pub fn folder(trace_id: &TraceId) -> String {
    format!("trace-{}", trace_id.to_hex())
}

/// The `.tar.gz`: `trace-ID/trace.json`, `trace-ID/models/MODEL.yaml` for
/// each failed model, and `trace-ID/README.md` saying how to run it.
pub fn bundle(
    trace_id: &TraceId,
    spans: &[RawSpan],
    failed: &[FailedModel<'_>],
) -> Result<Vec<u8>, PromoteError> {
    let resource_spans = crate::otlp::to_resource_spans(spans)?;
    let trace = crate::otlp::json::encode_export_request(
        &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
            resource_spans,
        },
    );
    let dir = folder(trace_id);
    let mut readme = format!(
        "# Trace {id}, promoted to a regression test\n\n\
         Reproduce the failure (exit 1 while it stands, 0 once fixed):\n\n\
         ```sh\ntracecheck check --models {dir}/models --traces {dir}/trace.json\n```\n\n\
         Failed when promoted:\n\n",
        id = trace_id.to_hex(),
    );
    for m in failed {
        readme.push_str(&format!("- `{}`: {}\n", m.id, m.specs.join(", ")));
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: String, data: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
    };
    add(format!("{dir}/trace.json"), trace.as_bytes())?;
    // Ids that map to one file name (`a/b`, `a b`) each keep a file.
    let mut names: Vec<String> = Vec::with_capacity(failed.len());
    for m in failed {
        let base = file_name(m.id);
        let mut name = base.clone();
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        add(format!("{dir}/models/{name}.yaml"), m.source.as_bytes())?;
        names.push(name);
    }
    add(format!("{dir}/README.md"), readme.as_bytes())?;
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    Ok(gz.finish()?)
}

/// A model id as a file name: ids are free text in Tracetest files.
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Bytes a bundle may unpack to: a trace and a few models are far less.
pub const MAX_UNPACKED: u64 = 256 << 20;

/// Unpacks the bundle of `trace_id` into `out`; the files written. Only
/// what that bundle holds is taken: a path leaving `out`, a link, anything
/// but `trace-ID/…` files, or more than [`MAX_UNPACKED`] bytes is refused
/// before anything is written. The models of an earlier promote of the
/// same trace are replaced, not mixed with these.
pub fn unpack(
    archive: &[u8],
    out: &Path,
    trace_id: &TraceId,
) -> Result<Vec<PathBuf>, PromoteError> {
    let dir = folder(trace_id);
    let mut total = 0u64;
    let mut files = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        let ours = path
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .is_some_and(|c| c == dir);
        if !plain || !ours || !entry.header().entry_type().is_file() {
            return Err(PromoteError::Unexpected(path));
        }
        let mut data = Vec::new();
        let left = MAX_UNPACKED.saturating_sub(total);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut entry, left + 1), &mut data)?;
        total += data.len() as u64;
        if total > MAX_UNPACKED {
            return Err(PromoteError::TooLarge);
        }
        files.push((path, data));
    }
    let models = out.join(&dir).join("models");
    if models.is_dir() {
        std::fs::remove_dir_all(&models)?;
    }
    let mut written = Vec::with_capacity(files.len());
    for (path, data) in files {
        let to = out.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&to, data)?;
        written.push(to);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            // Written raw: the builder itself refuses `..`.
            let name = path.as_bytes();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_cksum();
            tar.append(&header, *data).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gzip")
    }

    #[test]
    fn a_bundle_unpacks_to_its_trace_and_models() {
        let id = TraceId([0xab; 16]);
        let failed = [FailedModel {
            id: "checkout/paid",
            source: "type: Model\nspec:\n  id: checkout/paid\n",
            specs: vec!["charged"],
        }];
        let bytes = bundle(&id, &[], &failed).expect("bundle");
        let dir = tempfile::tempdir().expect("tempdir");
        let written = unpack(&bytes, dir.path(), &id).expect("unpack");
        let root = dir.path().join(folder(&id));
        assert_eq!(
            written,
            [
                root.join("trace.json"),
                root.join("models/checkout_paid.yaml"),
                root.join("README.md"),
            ]
        );
        let readme = std::fs::read_to_string(root.join("README.md")).expect("readme");
        assert!(readme.contains("`checkout/paid`: charged"), "{readme}");
    }

    /// Model ids that make one file name each keep a file; a second
    /// promote of the trace replaces the models of the first.
    #[test]
    fn models_never_overwrite_each_other() {
        let id = TraceId([0xcd; 16]);
        let model = |id: &'static str| FailedModel {
            id,
            source: id,
            specs: vec!["s"],
        };
        let bytes = bundle(&id, &[], &[model("a/b"), model("a b")]).expect("bundle");
        let dir = tempfile::tempdir().expect("tempdir");
        unpack(&bytes, dir.path(), &id).expect("unpack");
        let models = dir.path().join(folder(&id)).join("models");
        let read = |f: &str| std::fs::read_to_string(models.join(f)).expect(f);
        assert_eq!(
            (read("a_b.yaml"), read("a_b-2.yaml")),
            ("a/b".into(), "a b".into())
        );
        let again = bundle(&id, &[], &[model("c")]).expect("bundle");
        unpack(&again, dir.path(), &id).expect("unpack");
        let mut left: Vec<String> = std::fs::read_dir(&models)
            .expect("models")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["c.yaml"]);
    }

    #[test]
    fn an_archive_that_leaves_its_folder_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = format!("{}/trace.json", folder(&TraceId([1; 16])));
        let escape = format!("{}/../../escape.txt", folder(&TraceId([1; 16])));
        let another = format!("{}/trace.json", folder(&TraceId([2; 16])));
        for path in [
            escape.as_str(),
            "/etc/x",
            "other/trace.json",
            another.as_str(),
        ] {
            let bytes = archive(&[(ours.as_str(), b"{}"), (path, b"x")]);
            let err = unpack(&bytes, dir.path(), &TraceId([1; 16])).expect_err(path);
            assert!(matches!(err, PromoteError::Unexpected(_)), "{path}: {err}");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "nothing written"
        );
    }
}

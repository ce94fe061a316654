//! Compiles `proto/` with a pure-Rust protobuf compiler (protox), so building
//! tracecheck never needs a system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    revision();
    let protos = collect_protos(PathBuf::from("proto"))?;
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile(&protos, ["proto"])?;
    // Reflection describes the public API only, not the internal OTLP view.
    let public = prost_types::FileDescriptorSet {
        file: fds
            .file
            .iter()
            .filter(|f| f.package().starts_with("tracecheck.v1"))
            .cloned()
            .collect(),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tracecheck_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;
    tonic_prost_build::configure()
        // Lazy OTLP: nested messages stay as reference-counted slices of the
        // request buffer instead of being copied.
        .bytes(".opentelemetry.proto.collector.trace.v1")
        .compile_fds(fds)?;
    Ok(())
}

/// `TRACECHECK_REVISION` for `tracecheck_build_info`: the environment's
/// (an image build without `.git`), else `git describe`, else `unknown`.
fn revision() {
    println!("cargo:rerun-if-env-changed=TRACECHECK_REVISION");
    // Where git keeps HEAD and the branches: `.git/` in a clone, elsewhere
    // in a worktree (where `.git` is a file). Only paths that exist: cargo
    // reruns a build script on every build for one that does not.
    let git = |arg: &str| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--path-format=absolute", arg])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let watched = [
        git("--git-dir").map(|d| d.join("HEAD")),
        git("--git-common-dir").map(|d| d.join("refs/heads")),
        git("--git-common-dir").map(|d| d.join("packed-refs")),
    ];
    for path in watched.into_iter().flatten().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let rev = std::env::var("TRACECHECK_REVISION").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|r| !r.is_empty())
    });
    println!(
        "cargo:rustc-env=TRACECHECK_REVISION={}",
        rev.unwrap_or_else(|| "unknown".into())
    );
}

fn collect_protos(dir: PathBuf) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

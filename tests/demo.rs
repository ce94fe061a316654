//! `tracecheck demo` from the outside: on its fixed default ports it shows
//! pass and fail series on /metrics within 15 seconds, reloads on SIGHUP and
//! exits 0 on SIGTERM.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn metrics() -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", "http://127.0.0.1:9464/metrics"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()
}

fn value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn demo_shows_pass_and_fail_within_15s_reloads_on_sighup_and_stops_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracecheck"))
        .arg("demo")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tracecheck demo");
    let pid = child.id().to_string();
    let started = Instant::now();
    let mut seen = (0.0, 0.0);
    while started.elapsed() < Duration::from_secs(15) {
        if let Some(m) = metrics() {
            let pass = value(
                &m,
                "tracecheck_model_verdicts_total{model=\"overdraft-rolls-back\",verdict=\"pass\"}",
            );
            let fail = value(
                &m,
                "tracecheck_model_verdicts_total{model=\"overdraft-rolls-back\",verdict=\"fail\"}",
            );
            seen = (pass, fail);
            if pass > 0.0 && fail > 0.0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let ok = seen.0 > 0.0 && seen.1 > 0.0;
    if ok {
        let _ = Command::new("kill").args(["-HUP", &pid]).status();
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            child.try_wait().expect("poll demo").is_none(),
            "SIGHUP must not stop the daemon"
        );
    }
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().expect("wait for demo");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        ok,
        "no pass and fail series within 15 s (saw {seen:?}); stderr:\n{stderr}"
    );
    assert!(stderr.contains("SIGHUP: reloading models."), "{stderr}");
    assert!(stderr.contains("Models loaded."), "{stderr}");
    assert!(status.success(), "demo exit {status:?}; stderr:\n{stderr}");
}

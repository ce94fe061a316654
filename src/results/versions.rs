//! Verdicts per version of a service: the canary question, "does the new
//! version fail models the old one passes?". Each counted verdict is
//! tallied under its trace's root service and that span's (or resource's)
//! `service.version`; the API (`GET /api/v1/versions`) puts the versions
//! of a service side by side per model. A Prometheus family with the
//! version as a label is opt-in (`metrics.version_label`), so that the
//! series stay bounded by default.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::engine::Verdict;

/// (model, service, version) tallies kept; past it new ones are not.
const MAX_KEYS: usize = 4096;

/// Tallies of one model on one version of one service.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    pub pass: u64,
    pub fail: u64,
    pub inconclusive: u64,
}

impl Tally {
    fn slot(&mut self, v: Verdict) -> Option<&mut u64> {
        match v {
            Verdict::Pass => Some(&mut self.pass),
            Verdict::Fail => Some(&mut self.fail),
            Verdict::Inconclusive => Some(&mut self.inconclusive),
            Verdict::Skip => None,
        }
    }

    /// Failures among the verdicts that judged (pass + fail).
    pub fn fail_rate(&self) -> Option<f64> {
        let judged = self.pass + self.fail;
        (judged > 0).then(|| self.fail as f64 / judged as f64)
    }
}

/// Tallies by service, model and version: looked up by `&str`, so that
/// counting allocates only for a combination not seen before.
type Tallies = HashMap<Arc<str>, HashMap<Arc<str>, HashMap<Arc<str>, Tally>>>;

/// Every tally, by service, model and version.
#[derive(Default)]
pub struct Versions {
    tallies: Mutex<(Tallies, usize)>,
}

/// One counted verdict of a trace: its model, what it is, and what it
/// replaces (a flip).
pub struct Counted<'a> {
    pub model: &'a str,
    pub verdict: Verdict,
    pub undo: Option<Verdict>,
}

impl Versions {
    /// Counts a trace's verdicts under `service`@`version`, in one go.
    pub fn count(&self, service: &str, version: &str, verdicts: &[Counted<'_>]) {
        let mut guard = self.tallies.lock();
        let (tallies, keys) = &mut *guard;
        for c in verdicts {
            let slot = tallies
                .get_mut(service)
                .and_then(|m| m.get_mut(c.model))
                .and_then(|v| v.get_mut(version));
            let tally = match slot {
                Some(t) => t,
                None if *keys < MAX_KEYS => {
                    *keys += 1;
                    tallies
                        .entry(Arc::from(service))
                        .or_default()
                        .entry(Arc::from(c.model))
                        .or_default()
                        .entry(Arc::from(version))
                        .or_default()
                }
                None => continue,
            };
            if let Some(n) = c.undo.and_then(|u| tally.slot(u)) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = tally.slot(c.verdict) {
                *n += 1;
            }
        }
    }

    /// The tallies of `service` (every service if `None`), of `model` if
    /// given, ordered by service, model and version.
    pub fn table(&self, service: Option<&str>, model: Option<&str>) -> Vec<Row> {
        let guard = self.tallies.lock();
        let mut rows: Vec<Row> = guard
            .0
            .iter()
            .filter(|(s, _)| service.is_none_or(|x| &***s == x))
            .flat_map(|(s, models)| {
                models
                    .iter()
                    .filter(|(m, _)| model.is_none_or(|x| &***m == x))
                    .flat_map(move |(m, versions)| {
                        versions.iter().map(move |(v, t)| Row {
                            service: Arc::clone(s),
                            model: Arc::clone(m),
                            version: Arc::clone(v),
                            tally: *t,
                            fail_rate: t.fail_rate(),
                        })
                    })
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.service, &a.model, &a.version).cmp(&(&b.service, &b.model, &b.version))
        });
        rows
    }
}

/// One line of [`Versions::table`].
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub service: Arc<str>,
    pub model: Arc<str>,
    pub version: Arc<str>,
    #[serde(flatten)]
    pub tally: Tally,
    pub fail_rate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_a_service_side_by_side_flips_moved() {
        let v = Versions::default();
        let one = |verdict, undo| Counted {
            model: "paid",
            verdict,
            undo,
        };
        for _ in 0..9 {
            v.count("checkout", "1.4.0", &[one(Verdict::Pass, None)]);
        }
        v.count("checkout", "1.4.0", &[one(Verdict::Fail, None)]);
        for _ in 0..3 {
            v.count("checkout", "1.5.0-rc1", &[one(Verdict::Fail, None)]);
        }
        v.count("checkout", "1.5.0-rc1", &[one(Verdict::Pass, None)]);
        // Late spans undid one canary failure; a skip is not tallied.
        v.count(
            "checkout",
            "1.5.0-rc1",
            &[
                one(Verdict::Pass, Some(Verdict::Fail)),
                one(Verdict::Skip, None),
            ],
        );
        let rows = v.table(Some("checkout"), None);
        let got: Vec<(&str, Tally)> = rows.iter().map(|r| (&*r.version, r.tally)).collect();
        assert_eq!(
            got,
            [
                (
                    "1.4.0",
                    Tally {
                        pass: 9,
                        fail: 1,
                        inconclusive: 0
                    }
                ),
                (
                    "1.5.0-rc1",
                    Tally {
                        pass: 2,
                        fail: 2,
                        inconclusive: 0
                    }
                ),
            ]
        );
        assert_eq!(rows[0].fail_rate, Some(0.1));
        assert_eq!(rows[1].fail_rate, Some(0.5));
        assert!(v.table(Some("other"), None).is_empty());
    }
}

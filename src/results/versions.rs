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

/// (model, service, version) tallies kept; past it the one updated least
/// recently gives way, so that a new release is always counted (and
/// versions sent by an outside sender cannot pin the table).
const MAX_KEYS: usize = 4096;

/// Tallies of one model on one version of one service.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    pub pass: u64,
    pub fail: u64,
    pub inconclusive: u64,
    /// When it last counted (the table's own clock), for giving way.
    #[serde(skip)]
    last: u64,
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

    /// Counts `c` at `clock`, undoing the verdict it replaces.
    fn count(&mut self, clock: u64, c: &Counted<'_>) {
        self.last = clock;
        if let Some(n) = c.undo.and_then(|u| self.slot(u)) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = self.slot(c.verdict) {
            *n += 1;
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
type Tallies = Map<Map<Map<Tally>>>;

type Map<V> = HashMap<Arc<str>, V, ahash::RandomState>;

/// Every tally, by service, model and version.
#[derive(Default)]
pub struct Versions {
    tallies: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    tallies: Tallies,
    keys: usize,
    /// Counts so far: the clock tallies' `last` is read on.
    clock: u64,
}

impl Table {
    /// Drops the tally updated least recently (a scan: only when full).
    fn give_way(&mut self) {
        let oldest = self
            .tallies
            .iter()
            .flat_map(|(s, models)| {
                models.iter().flat_map(move |(m, versions)| {
                    versions.iter().map(move |(v, t)| (t.last, s, m, v))
                })
            })
            .min_by_key(|(last, ..)| *last)
            .map(|(_, s, m, v)| (Arc::clone(s), Arc::clone(m), Arc::clone(v)));
        let Some((s, m, v)) = oldest else { return };
        if let Some(models) = self.tallies.get_mut(&s) {
            if let Some(versions) = models.get_mut(&m) {
                versions.remove(&v);
                if versions.is_empty() {
                    models.remove(&m);
                }
            }
            if models.is_empty() {
                self.tallies.remove(&s);
            }
        }
        self.keys -= 1;
    }
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
        let mut table = self.tallies.lock();
        for c in verdicts {
            table.clock += 1;
            let clock = table.clock;
            // Every trace of a known combination takes this way: three
            // lookups by `&str`, no key allocated.
            if let Some(tally) = table
                .tallies
                .get_mut(service)
                .and_then(|m| m.get_mut(c.model))
                .and_then(|v| v.get_mut(version))
            {
                tally.count(clock, c);
                continue;
            }
            if table.keys >= MAX_KEYS {
                table.give_way();
            }
            table.keys += 1;
            table
                .tallies
                .entry(Arc::from(service))
                .or_default()
                .entry(Arc::from(c.model))
                .or_default()
                .entry(Arc::from(version))
                .or_default()
                .count(clock, c);
        }
    }

    /// The tallies of `service` (every service if `None`), of `model` if
    /// given, ordered by service, model and version.
    pub fn table(&self, service: Option<&str>, model: Option<&str>) -> Vec<Row> {
        let table = self.tallies.lock();
        let mut rows: Vec<Row> = table
            .tallies
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
        // Sorted after the lock is let go: evaluators count under it.
        drop(table);
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
        let got: Vec<(&str, [u64; 3])> = rows
            .iter()
            .map(|r| {
                (
                    &*r.version,
                    [r.tally.pass, r.tally.fail, r.tally.inconclusive],
                )
            })
            .collect();
        assert_eq!(got, [("1.4.0", [9, 1, 0]), ("1.5.0-rc1", [2, 2, 0])]);
        assert_eq!(rows[0].fail_rate, Some(0.1));
        assert_eq!(rows[1].fail_rate, Some(0.5));
        assert!(v.table(Some("other"), None).is_empty());
    }

    /// A full table makes room for a new version by dropping the one
    /// counted least recently: the next release is always counted.
    #[test]
    fn a_new_version_is_counted_when_the_table_is_full() {
        let v = Versions::default();
        let pass = [Counted {
            model: "m",
            verdict: Verdict::Pass,
            undo: None,
        }];
        for i in 0..MAX_KEYS {
            v.count("svc", &format!("0.{i}"), &pass);
        }
        v.count("svc", "0.0", &pass);
        v.count("svc", "2.0", &pass);
        let versions: Vec<String> = v
            .table(None, None)
            .into_iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(versions.len(), MAX_KEYS);
        assert!(versions.contains(&"2.0".to_owned()), "the new release");
        assert!(versions.contains(&"0.0".to_owned()), "counted again lately");
        assert!(
            !versions.contains(&"0.1".to_owned()),
            "the stalest gave way"
        );
    }
}

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{ChangeKind, Changes, Seen, JOIN_GRACE};

const HORIZON: Duration = Duration::from_secs(66);

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// One change, and traces seen around it.
struct Scene {
    changes: Changes,
    at: Instant,
    wall: SystemTime,
}

/// A trace as offsets from the change, in milliseconds.
struct At {
    began: i64,
    first_seen: i64,
    last_seen: i64,
    completed: i64,
}

impl Scene {
    fn new(kind: ChangeKind) -> Self {
        let changes = Changes::new(HORIZON);
        let at = Instant::now() + Duration::from_secs(100);
        let wall = SystemTime::now();
        changes.record(kind, at, wall);
        Self { changes, at, wall }
    }

    fn split(&self, t: At) -> bool {
        let off = |ms: i64| {
            if ms >= 0 {
                self.at + Duration::from_millis(ms as u64)
            } else {
                self.at - Duration::from_millis((-ms) as u64)
            }
        };
        let start = if t.began >= 0 {
            nanos(self.wall) + t.began as u64 * 1_000_000
        } else {
            nanos(self.wall) - (-t.began) as u64 * 1_000_000
        };
        self.changes.may_be_split(&Seen {
            first_seen: off(t.first_seen),
            last_seen: off(t.last_seen),
            completed: off(t.completed),
            first_start_unix_nanos: Some(start),
        })
    }
}

#[test]
fn no_change_no_split() {
    let changes = Changes::new(HORIZON);
    let now = Instant::now();
    assert!(!changes.may_be_split(&Seen {
        first_seen: now,
        last_seen: now,
        completed: now,
        first_start_unix_nanos: Some(0),
    }));
}

#[test]
fn after_a_leaving_the_rest_of_a_trace_begun_there_is_a_fragment() {
    let s = Scene::new(ChangeKind::Leaving);
    // Began 3 s before the change, first seen here 1 s after: its first
    // spans went to the instance leaving.
    assert!(s.split(At {
        began: -3_000,
        first_seen: 1_000,
        last_seen: 2_000,
        completed: 8_000
    }));
    // Began after the change: routed here whole.
    assert!(!s.split(At {
        began: 500,
        first_seen: 1_000,
        last_seen: 2_000,
        completed: 8_000
    }));
    // Seen here before the change: it was this instance's all along (a
    // leaving moves traces here, never away).
    assert!(!s.split(At {
        began: -3_000,
        first_seen: -2_000,
        last_seen: -1_500,
        completed: 5_000
    }));
}

#[test]
fn after_a_joined_a_trace_no_span_of_which_came_since_is_a_fragment() {
    let s = Scene::new(ChangeKind::Joined);
    let grace = JOIN_GRACE.as_millis() as i64;
    // In flight at the change, nothing since: its rest may be on the new
    // instance.
    assert!(s.split(At {
        began: -1_500,
        first_seen: -1_000,
        last_seen: -500,
        completed: 6_000
    }));
    // Spans still came after every balancer had the new ring: not moved.
    assert!(!s.split(At {
        began: -1_500,
        first_seen: -1_000,
        last_seen: grace + 500,
        completed: 8_000
    }));
    // Judged before the change: nothing had moved yet.
    assert!(!s.split(At {
        began: -9_000,
        first_seen: -8_000,
        last_seen: -7_000,
        completed: -1_000
    }));
    // First seen after every balancer had the new ring.
    assert!(!s.split(At {
        began: grace + 100,
        first_seen: grace + 200,
        last_seen: grace + 300,
        completed: 9_000
    }));
}

#[test]
fn changes_past_the_horizon_no_longer_count() {
    let s = Scene::new(ChangeKind::Leaving);
    assert!(!s.split(At {
        began: -3_000,
        first_seen: 70_000,
        last_seen: 70_000,
        completed: 75_000
    }));
}

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
    rootless: bool,
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
            rootless: t.rootless,
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
        rootless: true,
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
        completed: 8_000,
        rootless: false,
    }));
    // Began after the change: routed here whole.
    assert!(!s.split(At {
        began: 500,
        first_seen: 1_000,
        last_seen: 2_000,
        completed: 8_000,
        rootless: false,
    }));
    // Seen here before the change: it was this instance's all along (a
    // leaving moves traces here, never away).
    assert!(!s.split(At {
        began: -5_000,
        first_seen: -4_000,
        last_seen: -1_500,
        completed: 5_000,
        rootless: false,
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
        completed: 6_000,
        rootless: false,
    }));
    // Spans still came after every balancer had the new ring: not moved.
    assert!(!s.split(At {
        began: -1_500,
        first_seen: -1_000,
        last_seen: grace + 500,
        completed: 8_000,
        rootless: false,
    }));
    // Judged before the change: nothing had moved yet.
    assert!(!s.split(At {
        began: -9_000,
        first_seen: -8_000,
        last_seen: -7_000,
        completed: -1_000,
        rootless: false,
    }));
    // First seen after every balancer had the new ring.
    assert!(!s.split(At {
        began: grace + 100,
        first_seen: grace + 200,
        last_seen: grace + 300,
        completed: 9_000,
        rootless: false,
    }));
}

#[test]
fn changes_past_the_horizon_no_longer_count() {
    let s = Scene::new(ChangeKind::Leaving);
    assert!(!s.split(At {
        began: -3_000,
        first_seen: 70_000,
        last_seen: 70_000,
        completed: 75_000,
        rootless: false,
    }));
}

#[test]
fn a_leaving_covers_the_moment_before_its_announcement() {
    let s = Scene::new(ChangeKind::Leaving);
    // The balancer moved it a second before the announcement came.
    assert!(s.split(At {
        began: -3_000,
        first_seen: -1_000,
        last_seen: 500,
        completed: 6_000,
        rootless: false
    }));
    // Seen here long before: this instance's all along.
    assert!(!s.split(At {
        began: -9_000,
        first_seen: -5_000,
        last_seen: -4_000,
        completed: 1_000,
        rootless: false
    }));
    // Root-less, its spans all started after the change: the root, begun
    // before, went to the instance leaving.
    assert!(s.split(At {
        began: 300,
        first_seen: 500,
        last_seen: 800,
        completed: 6_000,
        rootless: true
    }));
    // The same long after the change: a trace of its own.
    assert!(!s.split(At {
        began: 9_000,
        first_seen: 9_500,
        last_seen: 9_800,
        completed: 15_000,
        rootless: true
    }));
}

#[test]
fn once_this_instance_leaves_every_trace_it_still_holds_is_a_fragment() {
    let changes = Changes::new(HORIZON);
    let at = Instant::now() + Duration::from_secs(100);
    changes.record_left(at);
    let seen = |first: Instant, completed: Instant| Seen {
        first_seen: first,
        last_seen: first,
        completed,
        first_start_unix_nanos: None,
        rootless: false,
    };
    let s = Duration::from_secs(1);
    assert!(changes.may_be_split(&seen(at - s, at + s)));
    assert!(
        !changes.may_be_split(&seen(at - 3 * s, at - s)),
        "judged before"
    );
}

//! A shard's completion deadlines: a timing wheel for the near ones, a heap
//! for the rest.
//!
//! Almost every deadline is a few seconds out (`idle_timeout`,
//! `root_settle`) and is checked once, when it comes. A binary heap paid
//! O(log n) cache misses for each (4 % of the daemon's CPU at 200 000
//! spans/s with ~100 000 deadlines pending); the wheel puts a deadline in
//! the slot of its time and takes whole slots as they pass. Deadlines past
//! the wheel's horizon (`max_trace_age`, long timeouts) go to the heap.
//!
//! Entries are never updated in place: a deadline that moved is pushed
//! again, and the shard checks each one it is handed against the trace.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::TraceId;

/// Width of a slot. Any width keeps deadlines exact (the slot `now` is in
/// is checked entry by entry). A wide one keeps the slot being filled in
/// cache: the deadlines pushed in one slot's time land together, where at
/// 4 ms each push went to a slot (and an allocation) last touched a turn
/// earlier, and `Deadlines::push` was 3-4 % of the daemon on split traffic
/// (BENCHMARKS.md, "Profile", item 8). Each tick rescans the current slot:
/// at 16 ms, 1.6 ticks' worth of entries.
const SLOT: Duration = Duration::from_millis(16);
/// Slots in the wheel: a horizon of 16.4 s, past the default `settle` (6 s)
/// and `idle_timeout` (2 s) even after a stall.
const SLOTS: u64 = 1024;

/// Entries an emptied slot keeps room for. A burst (one request of 9 000
/// new traces puts 140 deadlines in one slot of each shard) would otherwise
/// leave every slot holding the room of its largest burst ever: measured
/// 50 MB over 64 shards' 2 048 slots under bursty traffic
/// (`benches/pinning.py`, heaptrack), memory the buffer's account did not
/// see. Even kept room adds up: 64 shards × [`SLOTS`] slots × this many
/// 32-byte entries, and split traffic (each trace due at its early point,
/// then again at `settle`) fills most slots to it: heaptrack on the split
/// soak saw a wheel of 2 048 slots kept at 16 grow 9 → 27 MB in two
/// minutes. At 8 (a 16 ms slot's share of 100 000 spans/s) it is at most
/// 16 MiB.
const KEPT_CAPACITY: usize = 8;

fn release(slot: &mut Vec<(Instant, TraceId)>) {
    if slot.capacity() > KEPT_CAPACITY {
        *slot = Vec::new();
    }
}

pub(super) struct Deadlines {
    base: Instant,
    /// Number (counted from `base`) of the slot the last [`Deadlines::take_due`]
    /// ended in: every slot before it has been emptied.
    cursor: u64,
    /// Slot `n` is `slots[n % SLOTS]`; entries of a slot are unordered.
    slots: Vec<Vec<(Instant, TraceId)>>,
    /// Deadlines at least [`SLOTS`] slots past the cursor when pushed.
    far: BinaryHeap<Reverse<(Instant, TraceId)>>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            base: Instant::now(),
            cursor: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
        }
    }
}

impl Deadlines {
    fn slot_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since / SLOT.as_nanos()).unwrap_or(u64::MAX)
    }

    fn slot_mut(&mut self, n: u64) -> Option<&mut Vec<(Instant, TraceId)>> {
        self.slots.get_mut(usize::try_from(n % SLOTS).ok()?)
    }

    pub fn push(&mut self, at: Instant, id: TraceId) {
        // A deadline already past goes in the current slot: taken next time.
        let n = self.slot_of(at).max(self.cursor);
        if n < self.cursor.saturating_add(SLOTS) {
            if let Some(slot) = self.slot_mut(n) {
                slot.push((at, id));
                return;
            }
        }
        self.far.push(Reverse((at, id)));
    }

    /// Moves every deadline at or before `now` into `due`, in slot order
    /// (within a slot, in the order pushed).
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<(Instant, TraceId)>) {
        let last = self.slot_of(now);
        if last >= self.cursor {
            // After a pause longer than the wheel, every slot once.
            let first = self.cursor.max(last.saturating_sub(SLOTS - 1));
            for n in first..last {
                // A slot before `now`'s holds only deadlines before it: an
                // entry is pushed at most SLOTS - 1 slots past the cursor,
                // so none is from a later turn of the wheel.
                if let Some(slot) = self.slot_mut(n) {
                    due.append(slot);
                    release(slot);
                }
            }
            if let Some(slot) = self.slot_mut(last) {
                slot.retain(|&(at, id)| {
                    let past = at <= now;
                    if past {
                        due.push((at, id));
                    }
                    !past
                });
                if slot.is_empty() {
                    release(slot);
                }
            }
            self.cursor = last;
        }
        while let Some(Reverse((at, id))) = self.far.peek().copied() {
            if at > now {
                break;
            }
            self.far.pop();
            due.push((at, id));
        }
        if self.far.capacity() > KEPT_CAPACITY && self.far.len() < self.far.capacity() / 4 {
            self.far.shrink_to(self.far.len() * 2);
        }
    }

    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(Vec::clear);
        self.far.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TraceId {
        TraceId([n; 16])
    }

    fn taken(d: &mut Deadlines, now: Instant) -> Vec<u8> {
        let mut due = Vec::new();
        d.take_due(now, &mut due);
        due.into_iter().map(|(_, t)| t.0[0]).collect()
    }

    /// Every deadline comes out once, not before its time and at the first
    /// take at or after it: near ones, far ones past the wheel, past ones,
    /// and across a pause longer than the wheel.
    #[test]
    fn each_deadline_is_taken_once_when_it_is_due() {
        let mut d = Deadlines::default();
        let t0 = d.base;
        let ms = Duration::from_millis;
        let horizon = SLOT * u32::try_from(SLOTS).unwrap();
        let last = 10 * horizon;
        d.push(t0 + ms(10), id(1));
        d.push(t0 + ms(11), id(2));
        d.push(t0 + ms(25), id(3));
        d.push(t0 + last, id(4));
        d.push(t0, id(5));
        assert_eq!(taken(&mut d, t0 + ms(1)), vec![5]);
        assert_eq!(taken(&mut d, t0 + ms(10)), vec![1]);
        assert_eq!(taken(&mut d, t0 + ms(10)), Vec::<u8>::new());
        assert_eq!(taken(&mut d, t0 + ms(24)), vec![2]);
        assert_eq!(taken(&mut d, t0 + ms(30)), vec![3]);
        // Pushed while the cursor is at 30 ms: past the wheel.
        let far = ms(30) + horizon + ms(1000);
        d.push(t0 + far, id(6));
        // Within the wheel, from the cursor.
        d.push(t0 + ms(4000), id(7));
        assert_eq!(taken(&mut d, t0 + ms(3999)), Vec::<u8>::new());
        assert_eq!(taken(&mut d, t0 + ms(4000)), vec![7]);
        assert_eq!(taken(&mut d, t0 + far - ms(1)), Vec::<u8>::new());
        // In the wheel now that the cursor has come near it.
        d.push(t0 + far + ms(70), id(8));
        // A pause of several turns of the wheel: the wheel's, then the heap's.
        assert_eq!(taken(&mut d, t0 + 4 * horizon), vec![8, 6]);
        assert_eq!(taken(&mut d, t0 + last - ms(1)), Vec::<u8>::new());
        assert_eq!(taken(&mut d, t0 + last), vec![4]);
        d.clear();
        d.push(t0 + last + ms(1000), id(9));
        assert_eq!(taken(&mut d, t0 + last + horizon), vec![9]);
    }
}

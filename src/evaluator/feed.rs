//! The live verdict feed: verdicts as they are given, to whoever listens
//! (the gRPC `Watch` stream, tests).
//!
//! The evaluator gives one verdict per matching model per trace; most are
//! passes. Building a record for each and waking every listener for it costs
//! more than evaluating the models did, so the feed knows what its listeners
//! want: failures are published while anyone listens, passes only while a
//! listener asked for them. A `tracecheck watch --verdict fail` tail then
//! costs the daemon only its failures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;
pub use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::engine::Verdict;
use crate::results::store::VerdictRecord;

/// The sending side; cheap to clone (every clone is the same feed).
#[derive(Clone)]
pub struct VerdictFeed {
    tx: broadcast::Sender<Arc<VerdictRecord>>,
    pass_listeners: Arc<AtomicUsize>,
}

impl VerdictFeed {
    /// A feed that queues up to `capacity` records per listener before that
    /// listener is told it lagged (and by how many).
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity).0,
            pass_listeners: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A listener from now on. `passes`: whether it wants passing verdicts
    /// too, not only failures. It may still see passes (another listener
    /// asked for them) and filters what it does not want.
    pub fn subscribe(&self, passes: bool) -> Listener {
        // Counted before subscribing, so no pass given after this returns
        // is withheld from it.
        let passes = passes.then(|| {
            self.pass_listeners.fetch_add(1, Ordering::SeqCst);
            Arc::clone(&self.pass_listeners)
        });
        Listener {
            rx: self.tx.subscribe(),
            passes,
        }
    }

    /// Whether a verdict of this kind has someone to go to. Skips never
    /// go out: they say only that a model did not apply.
    pub fn wants(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Fail | Verdict::Inconclusive => self.tx.receiver_count() > 0,
            Verdict::Pass => self.pass_listeners.load(Ordering::Relaxed) > 0,
            Verdict::Skip => false,
        }
    }

    /// Publishes a record; nobody listening is fine, and a lagging listener
    /// is told by its channel how much it missed.
    pub fn send(&self, record: Arc<VerdictRecord>) {
        let _ = self.tx.send(record);
    }
}

/// The receiving side of one listener; dropping it unsubscribes.
pub struct Listener {
    rx: broadcast::Receiver<Arc<VerdictRecord>>,
    passes: Option<Arc<AtomicUsize>>,
}

impl Listener {
    pub async fn recv(&mut self) -> Result<Arc<VerdictRecord>, RecvError> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Result<Arc<VerdictRecord>, TryRecvError> {
        self.rx.try_recv()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(count) = &self.passes {
            count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_go_out_only_while_someone_asked_for_them() {
        let feed = VerdictFeed::new(4);
        assert!(!feed.wants(Verdict::Fail));
        assert!(!feed.wants(Verdict::Pass));

        let failures_only = feed.subscribe(false);
        assert!(feed.wants(Verdict::Fail));
        assert!(!feed.wants(Verdict::Pass));

        let everything = feed.subscribe(true);
        assert!(feed.wants(Verdict::Pass));
        assert!(!feed.wants(Verdict::Skip));

        drop(everything);
        assert!(!feed.wants(Verdict::Pass));
        assert!(feed.wants(Verdict::Fail));

        drop(failures_only);
        assert!(!feed.wants(Verdict::Fail));
    }
}

//! The persistent forwarding queue (`exporters.otlp.queue.directory`):
//! accepted requests wait for the downstream on disk instead of in memory,
//! so an outage longer than memory allows, a restart or a `kill -9` loses
//! nothing that was acknowledged to a sender.
//!
//! Layout of the directory:
//!
//! - `NNNNNNNNNNNNNNNN.seg`: append-only segments (hex sequence numbers),
//!   each a run of records `magic u32 | len u32 | spans u32 | crc32 u32 |
//!   payload`, all little-endian; the CRC-32 covers `spans` and the payload,
//!   which is the encoded `ExportTraceServiceRequest` to send. A segment is
//!   closed at `segment_size_mib` and deleted once every record in it has
//!   been delivered (or refused for good by the downstream).
//! - `ack`: where delivery stands — the end of the longest delivered prefix
//!   (the *frontier*) and how far the exporter had read — rewritten in
//!   place as both move. After a restart, sending resumes at the frontier;
//!   records between it and the read position were in flight and are sent
//!   again (counted in `tracecheck_exporter_queue_replayed_spans_total`:
//!   the only duplicates the queue can make).
//! - `lock`: held with `flock` while a process uses the directory.
//!
//! Durability: a record is written (`write(2)`) before the sender is
//! answered, so a crash of the process (`kill -9`, OOM kill, panic) loses
//! nothing acknowledged. What reaches the *device* before the answer is the
//! `fsync` policy's choice: `always` (default) syncs before answering — one
//! `fdatasync` per group of concurrent requests — so a power loss loses
//! nothing acknowledged either; a duration (`1s`) syncs at most that often
//! and may lose that much on power loss; `never` leaves it to the kernel.
//! The `ack` file is never synced: losing it costs duplicates, not data.
//!
//! Damage never stops the daemon: a torn record at the end of the newest
//! segment (power loss mid-write) is cut off at start-up; a record that
//! fails its checksum is skipped, reading going on at the next whole record
//! (its marker, length and checksum holding). Both are logged and counted
//! in `tracecheck_exporter_queue_corrupt_segments_total`. An I/O error is
//! not damage: the read is retried, with backoff, and nothing is skipped.
//!
//! Writes go through one thread that owns the newest segment and batches
//! whatever arrived meanwhile (group commit); the exporter reads records
//! back in order on the blocking pool, straight after they are written (so
//! from the page cache, in the steady state).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{oneshot, watch};

use super::config::{DiskQueueConfig, FsyncPolicy};
use super::ForwardItem;
use crate::metrics::{ExporterLabels, Metrics};
use crate::otlp::LazyExportRequest;

const MAGIC: u32 = 0x3151_4354; // "TCQ1"
const HEADER: u64 = 16;
const ACK_FILE: &str = "ack";
const ACK_MAGIC: u64 = 0x4b43_4151_4354_0001;
const MIB: u64 = 1024 * 1024;

/// The queue directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskQueueError {
    #[error("exporters.otlp.queue.directory {dir}: {what}: {source}")]
    Io {
        dir: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "exporters.otlp.queue.directory {0}: in use by another tracecheck process (its `lock` file is held)"
    )]
    Locked(PathBuf),
    #[error(
        "exporters.otlp.queue.max_size_mib is {1} for {0}: at least 8 MiB (the segment being written is only freed once full, and must stay a small part of the bound)"
    )]
    TooSmall(PathBuf, u64),
}

/// The smallest bound that leaves room beside the segment being written.
const MIN_SIZE_MIB: u64 = 8;

/// A position in the queue: segment sequence number and byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    seq: u64,
    off: u64,
}

/// Identifies one record read by the exporter, to acknowledge it once its
/// batch is delivered or refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt(u64);

/// The receivers' end: reserves room and appends records.
#[derive(Clone)]
pub struct DiskQueue {
    shared: Arc<Shared>,
    tx: std_mpsc::Sender<WriterMsg>,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in live segments plus room reserved by requests being admitted.
    used: AtomicU64,
    /// End of the last record written: what the reader may read up to.
    written: watch::Sender<Pos>,
    acks: Mutex<Acks>,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
    labels: ExporterLabels,
    /// Held for the queue's lifetime: `flock` on the `lock` file.
    _lock: File,
    /// Tests: the writer's next `fdatasync` fails.
    #[cfg(test)]
    fail_next_sync: AtomicBool,
    /// Tests: the writer panics on its next record.
    #[cfg(test)]
    panic_next_append: AtomicBool,
}

impl Shared {
    /// `fdatasync` of the segment written to (failing once on demand in
    /// tests: a real failure needs a failing disk).
    fn sync_segment(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::AcqRel) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }
}

enum WriterMsg {
    Append {
        record: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// Room reserved for one request; released if dropped without an append.
pub struct Reservation {
    queue: DiskQueue,
    bytes: u64,
}

impl DiskQueue {
    /// Opens (or creates) the directory, recovers what a previous process
    /// left, and starts the writer thread.
    /// `alive` goes with the writer thread: should it die, the daemon
    /// reports itself not live, for every append after it is refused.
    pub fn open(
        config: &DiskQueueConfig,
        metrics: Arc<Metrics>,
        labels: ExporterLabels,
        alive: Option<crate::health::Alive>,
    ) -> Result<(DiskQueue, Reader), DiskQueueError> {
        let dir = config.directory.clone();
        if config.max_size_mib < MIN_SIZE_MIB {
            return Err(DiskQueueError::TooSmall(dir, config.max_size_mib));
        }
        let io_err = |what: &'static str| {
            let dir = dir.clone();
            move |source| DiskQueueError::Io { dir, what, source }
        };
        fs::create_dir_all(&dir).map_err(io_err("cannot create it"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io_err("cannot open its lock file"))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(DiskQueueError::Locked(dir));
        }

        let recovered = recover(&dir, &metrics, &labels).map_err(io_err("cannot recover it"))?;
        // Past every number in use or remembered: a stale `ack` file must
        // never point into segments written after it.
        let write_seq = recovered
            .segments
            .last()
            .copied()
            .unwrap_or(0)
            .max(recovered.highest_acked_seq)
            + 1;
        let segment = SegmentWriter::create(&dir, write_seq, config.fsync)
            .map_err(io_err("cannot create a segment"))?;
        let start = Pos {
            seq: write_seq,
            off: 0,
        };
        let read_from = recovered.resume.unwrap_or(start);
        let (written, written_rx) = watch::channel(start);
        let ack_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(ACK_FILE))
            .map_err(io_err("cannot open its ack file"))?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            max_bytes: config.max_size_mib.saturating_mul(MIB),
            used: AtomicU64::new(recovered.bytes),
            written,
            acks: Mutex::new(Acks {
                inflight: VecDeque::new(),
                first_id: 0,
                next_id: 0,
                frontier: read_from,
                read: read_from,
                file: ack_file,
            }),
            closed: AtomicBool::new(false),
            metrics,
            labels,
            _lock: lock,
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
            #[cfg(test)]
            panic_next_append: AtomicBool::new(false),
        });
        shared.acks.lock().persist();
        shared.set_bytes_gauge();
        shared
            .metrics
            .exporter_queue_max_bytes
            .get_or_create(&shared.labels)
            .set(shared.max_bytes as i64);
        shared
            .metrics
            .exporter_queue_size
            .get_or_create(&shared.labels)
            .set(recovered.records as i64);

        let (tx, rx) = std_mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let policy = config.fsync;
        // The segment being written is only deleted once it is full and
        // delivered, so it must be small against the bound or a quiet queue
        // could hold the bound in delivered bytes.
        let segment_max = config
            .segment_size_mib
            .min(config.max_size_mib / 4)
            .max(1)
            .saturating_mul(MIB);
        std::thread::Builder::new()
            .name("tracecheck-queue-writer".into())
            .spawn(move || {
                let _alive = alive;
                writer_loop(writer_shared, rx, segment, segment_max, policy)
            })
            .map_err(io_err("cannot start its writer thread"))?;

        let reader = Reader {
            shared: Arc::clone(&shared),
            pos: read_from,
            file: None,
            written: written_rx,
            backlog_spans: recovered.spans,
            retry_wait: RETRY_MIN,
        };
        Ok((DiskQueue { shared, tx }, reader))
    }

    /// Reserves room for a request of `bytes` encoded bytes, or says the
    /// queue is full (`max_size_mib`).
    pub fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let need = HEADER + bytes as u64 + 16;
        let before = self.shared.used.fetch_add(need, Ordering::AcqRel);
        if before + need > self.shared.max_bytes && before > 0 {
            self.shared.used.fetch_sub(need, Ordering::AcqRel);
            return None;
        }
        Some(Reservation {
            queue: self.clone(),
            bytes: need,
        })
    }

    /// Writes what is buffered, syncs it and stops the writer; appends after
    /// this fail, and the reader ends once it has read what was written.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(WriterMsg::Close { done }).is_ok() {
            let _ = wait.await;
        }
    }

    /// Marks records delivered (or refused for good); deletes the segments
    /// whose records all are.
    pub fn ack(&self, receipts: &[Receipt]) {
        let deletable = self.shared.acks.lock().ack(receipts);
        for seq in deletable {
            let path = segment_path(&self.shared.dir, seq);
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.shared.used.fetch_sub(len, Ordering::AcqRel);
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "Cannot delete a delivered queue segment; it will be deleted at the next start."
                ),
            }
        }
        self.shared.set_bytes_gauge();
    }
}

impl Reservation {
    /// Writes the request; resolves once it is on disk as the fsync policy
    /// promises. After `Ok` the sender may be told the request is taken.
    pub async fn append(self, item: &ForwardItem) -> io::Result<()> {
        let payload = LazyExportRequest {
            resource_spans: item.resource_spans.clone(),
        }
        .encode_to_vec();
        let mut record = Vec::with_capacity(HEADER as usize + payload.len());
        let spans = item.spans as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&spans.to_le_bytes());
        crc.update(&payload);
        record.extend_from_slice(&MAGIC.to_le_bytes());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&spans.to_le_bytes());
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.extend_from_slice(&payload);
        let (done, wait) = oneshot::channel();
        let sent = self.queue.tx.send(WriterMsg::Append { record, done });
        // The reservation is given back when `self` drops, after the write:
        // by then the writer has counted the record in its segment's bytes.
        match sent {
            Ok(()) => wait
                .await
                .unwrap_or_else(|_| Err(io::Error::other("queue writer stopped"))),
            Err(_) => Err(io::Error::other("queue closed")),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.queue
            .shared
            .used
            .fetch_sub(self.bytes, Ordering::AcqRel);
        self.queue.shared.set_bytes_gauge();
    }
}

impl Shared {
    fn set_bytes_gauge(&self) {
        self.metrics
            .exporter_queue_bytes
            .get_or_create(&self.labels)
            .set(self.used.load(Ordering::Acquire) as i64);
    }

    fn corrupt(&self, seq: u64, off: u64, skipped: u64, why: &str) {
        tracing::error!(
            segment = %segment_path(&self.dir, seq).display(),
            offset = off,
            skipped_bytes = skipped,
            reason = why,
            "Forwarding queue segment damaged; skipping the rest of it."
        );
        self.metrics
            .exporter_queue_corrupt_segments
            .get_or_create(&self.labels)
            .inc();
    }
}

// ------------------------------------------------------------------ writer

struct SegmentWriter {
    dir: PathBuf,
    seq: u64,
    file: File,
    off: u64,
    policy: FsyncPolicy,
    /// A sync of this segment failed since the group began.
    sync_failed: bool,
}

impl SegmentWriter {
    fn create(dir: &Path, seq: u64, policy: FsyncPolicy) -> io::Result<Self> {
        let path = segment_path(dir, seq);
        let file = match OpenOptions::new().create_new(true).write(true).open(&path) {
            Ok(f) => f,
            // Left empty by a rollover whose directory sync failed: reuse it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let f = OpenOptions::new().write(true).open(&path)?;
                if f.metadata()?.len() != 0 {
                    return Err(e);
                }
                f
            }
            Err(e) => return Err(e),
        };
        if policy == FsyncPolicy::Always {
            // The new name must survive a power loss with the data synced into it.
            File::open(dir)?.sync_all()?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            seq,
            file,
            off: 0,
            policy,
            sync_failed: false,
        })
    }

    fn append(&mut self, record: &[u8], segment_max: u64, used: &AtomicU64) -> io::Result<()> {
        if self.off > 0 && self.off + record.len() as u64 > segment_max {
            if self.policy != FsyncPolicy::Never {
                if let Err(e) = self.file.sync_data() {
                    // Its records are not known to be on disk, and a later
                    // sync of this file may report success all the same.
                    self.sync_failed = true;
                    return Err(e);
                }
            }
            *self = SegmentWriter::create(&self.dir, self.seq + 1, self.policy)?;
        }
        // At the offset, not the file's cursor: after a failed write the
        // cursor is past the partial record, and writing there would leave
        // a gap that the reader takes for damage.
        if let Err(e) = self.file.write_all_at(record, self.off) {
            // Leave no half record behind: cut the segment back to its last
            // whole record (and if even that fails, start a new segment so
            // the reader never meets the half record).
            if self.file.set_len(self.off).is_err() {
                if let Ok(next) = SegmentWriter::create(&self.dir, self.seq + 1, self.policy) {
                    *self = next;
                }
            }
            return Err(e);
        }
        self.off += record.len() as u64;
        used.fetch_add(record.len() as u64, Ordering::AcqRel);
        Ok(())
    }

    fn pos(&self) -> Pos {
        Pos {
            seq: self.seq,
            off: self.off,
        }
    }

    /// Cuts this segment back to `off`, taking what was after it off the
    /// queue's bytes.
    fn cut_back(&mut self, off: u64, used: &AtomicU64) -> io::Result<()> {
        if off >= self.off {
            return Ok(());
        }
        self.file.set_len(off)?;
        // Best effort: a cut lost to a power loss brings the record back,
        // forwarded beside its sender's retry.
        let _ = self.file.sync_data();
        used.fetch_sub(self.off - off, Ordering::AcqRel);
        self.off = off;
        Ok(())
    }
}

fn writer_loop(
    shared: Arc<Shared>,
    rx: std_mpsc::Receiver<WriterMsg>,
    mut segment: SegmentWriter,
    segment_max: u64,
    policy: FsyncPolicy,
) {
    let mut dirty = false;
    let mut last_sync = Instant::now();
    let sync = |segment: &SegmentWriter, dirty: &mut bool, last_sync: &mut Instant| {
        if let Err(e) = segment.file.sync_data() {
            tracing::error!(error = %e, "Cannot sync the forwarding queue segment.");
        }
        *dirty = false;
        *last_sync = Instant::now();
    };
    loop {
        let first = match (policy, dirty) {
            (FsyncPolicy::Every(every), true) => {
                match rx.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                    Ok(m) => m,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        sync(&segment, &mut dirty, &mut last_sync);
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut close = None;
        let start = segment.pos();
        for msg in batch {
            match msg {
                WriterMsg::Append { record, done } => {
                    #[cfg(test)]
                    if shared.panic_next_append.swap(false, Ordering::AcqRel) {
                        panic!("injected queue writer panic");
                    }
                    let r = segment.append(&record, segment_max, &shared.used);
                    if r.is_ok() {
                        dirty = true;
                    }
                    // Where it went: a record in a segment since closed was
                    // synced when that segment was.
                    answers.push((done, r, segment.seq));
                }
                WriterMsg::Close { done } => close = Some(done),
            }
        }
        let synced = match policy {
            FsyncPolicy::Always if dirty => {
                let mut r = shared.sync_segment(&segment.file);
                if std::mem::take(&mut segment.sync_failed) && r.is_ok() {
                    r = Err(io::Error::other(
                        "an earlier fdatasync of this segment failed",
                    ));
                }
                dirty = false;
                last_sync = Instant::now();
                if r.is_err() {
                    // Its senders are told the write failed and will send
                    // again: the records must not be forwarded as well, or
                    // each would arrive twice. Cut them off; if even that
                    // fails they stay, and are forwarded, so their senders
                    // are told they were taken (in the page cache, not
                    // known to be on disk).
                    let from = if segment.seq == start.seq {
                        start.off
                    } else {
                        0
                    };
                    if let Err(e) = segment.cut_back(from, &shared.used) {
                        tracing::error!(error = %e, "Cannot cut unsynced records off the forwarding queue; they will be forwarded, and their senders are told they were taken.");
                        r = Ok(());
                    }
                }
                r
            }
            FsyncPolicy::Every(every) if dirty && last_sync.elapsed() >= every => {
                sync(&segment, &mut dirty, &mut last_sync);
                Ok(())
            }
            _ => Ok(()),
        };
        let answers: Vec<_> = answers
            .into_iter()
            .map(|(done, r, seq)| {
                let r = match (&r, &synced) {
                    (Ok(()), Err(e)) if seq == segment.seq => {
                        Err(io::Error::new(e.kind(), format!("fdatasync: {e}")))
                    }
                    _ => r,
                };
                (done, r)
            })
            .collect();
        // Counted before they can be read: a reader that delivered and
        // acknowledged one first took the gauge below zero.
        let records = answers.iter().filter(|(_, r)| r.is_ok()).count() as i64;
        shared
            .metrics
            .exporter_queue_size
            .get_or_create(&shared.labels)
            .inc_by(records);
        // Readable as soon as written: sending before the sync is harmless
        // (with `always`, records whose sync failed were cut off above).
        shared.written.send_replace(segment.pos());
        for (done, r) in answers {
            let _ = done.send(r);
        }
        shared.set_bytes_gauge();
        if let Some(done) = close {
            if dirty && policy != FsyncPolicy::Never {
                sync(&segment, &mut dirty, &mut last_sync);
            }
            // After every append before the close is written: the reader
            // may stop once it has read up to here.
            shared.closed.store(true, Ordering::Release);
            shared.written.send_replace(segment.pos());
            // Let go of the directory lock before saying so: a process (or
            // test) that closes and reopens must not find it held.
            drop(shared);
            let _ = done.send(());
            return;
        }
    }
    if dirty && policy != FsyncPolicy::Never {
        sync(&segment, &mut dirty, &mut last_sync);
    }
}

// ------------------------------------------------------------------ reader

/// The exporter's end: records in the order they were written.
pub struct Reader {
    shared: Arc<Shared>,
    pos: Pos,
    file: Option<(u64, Arc<File>)>,
    written: watch::Receiver<Pos>,
    backlog_spans: u64,
    /// Pause before reading again after an I/O error.
    retry_wait: std::time::Duration,
}

const RETRY_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

enum Read {
    Record {
        item: ForwardItem,
        end: Pos,
    },
    /// The segment ends here (or is damaged from here on).
    SegmentEnd,
    /// Nothing more written yet.
    CaughtUp,
    /// The file could not be read now (too many open files, an I/O
    /// error): try again later, skip nothing.
    Retry,
    /// A damaged record: reading goes on at `to` in the same segment.
    Skip {
        to: u64,
    },
}

/// Why a record could not be read.
enum ReadError {
    /// The bytes are there and wrong.
    Damaged(String),
    /// Reading failed; the bytes may be fine.
    Io(io::Error),
}

impl Reader {
    /// Spans already queued when the process started.
    pub fn backlog_spans(&self) -> u64 {
        self.backlog_spans
    }

    /// The next record, or `None` once the queue is closed and read to its
    /// end.
    pub async fn next(&mut self) -> Option<(ForwardItem, Receipt)> {
        loop {
            let written = *self.written.borrow_and_update();
            if self.pos >= written {
                // `closed` is set after the last write is published, so a
                // second look at `written` cannot miss a record.
                if self.shared.closed.load(Ordering::Acquire) {
                    if self.pos >= *self.written.borrow() {
                        return None;
                    }
                    continue;
                }
                if self.written.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            let live = self.pos.seq == written.seq;
            let limit = live.then_some(written.off);
            match self.read_one(limit).await {
                Read::Record { item, end } => {
                    self.retry_wait = RETRY_MIN;
                    self.pos = end;
                    let receipt = self.shared.acks.lock().read(end);
                    self.shared
                        .metrics
                        .exporter_queue_size
                        .get_or_create(&self.shared.labels)
                        .dec();
                    return Some((item, receipt));
                }
                Read::Skip { to } => {
                    self.pos.off = to;
                }
                // The segment being written never ends (nor is it marked
                // done and deleted) before the writer moves on; its file
                // missing is an outside hand at work: wait for it.
                Read::SegmentEnd if live => {
                    tokio::time::sleep(self.retry_wait).await;
                    self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                }
                Read::SegmentEnd => {
                    let done = self.pos.seq;
                    let next = (done + 1..written.seq)
                        .find(|s| segment_path(&self.shared.dir, *s).exists())
                        .unwrap_or(written.seq);
                    self.pos = Pos { seq: next, off: 0 };
                    self.file = None;
                    self.shared.acks.lock().segment_done(done, self.pos);
                }
                Read::CaughtUp => {
                    // Only reachable if the writer moved on to a new
                    // segment between the two reads: look again.
                    tokio::task::yield_now().await;
                }
                Read::Retry => {
                    self.file = None;
                    tokio::time::sleep(self.retry_wait).await;
                    self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn read_one(&mut self, limit: Option<u64>) -> Read {
        let seq = self.pos.seq;
        let file = match &self.file {
            Some((s, f)) if *s == seq => Arc::clone(f),
            _ => match File::open(segment_path(&self.shared.dir, seq)) {
                Ok(f) => {
                    let f = Arc::new(f);
                    self.file = Some((seq, Arc::clone(&f)));
                    f
                }
                // Gone (deleted by hand): nothing to read in it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.shared.corrupt(seq, 0, 0, "segment file missing");
                    return Read::SegmentEnd;
                }
                Err(e) => {
                    self.io_error(seq, &e);
                    return Read::Retry;
                }
            },
        };
        let off = self.pos.off;
        let read = tokio::task::spawn_blocking(move || read_record(&file, off, limit)).await;
        match read {
            Ok(Ok(Some((spans, payload)))) => {
                let end = Pos {
                    seq,
                    off: off + HEADER + payload.len() as u64,
                };
                match LazyExportRequest::decode(payload) {
                    Ok(req) => Read::Record {
                        item: ForwardItem {
                            resource_spans: req.resource_spans,
                            spans: spans as usize,
                            receipt: None,
                        },
                        end,
                    },
                    Err(e) => {
                        self.shared
                            .corrupt(seq, off, 0, &format!("undecodable record: {e}"));
                        Read::SegmentEnd
                    }
                }
            }
            Ok(Ok(None)) if limit.is_some() => Read::CaughtUp,
            Ok(Ok(None)) => Read::SegmentEnd,
            Ok(Err(ReadError::Damaged(why))) => {
                // Records are contiguous: the next whole one (its marker,
                // length and checksum all holding) is where reading goes on.
                let Some((_, file)) = self.file.clone() else {
                    return Read::Retry;
                };
                let found =
                    tokio::task::spawn_blocking(move || next_whole_record(&file, off + 1, limit))
                        .await;
                match found {
                    Ok(Ok((Some(to), _))) => {
                        self.shared.corrupt(seq, off, to - off, &why);
                        Read::Skip { to }
                    }
                    Ok(Ok((None, end))) => {
                        self.shared.corrupt(seq, off, end.saturating_sub(off), &why);
                        match limit {
                            // The segment being written: on from what was
                            // written when the damage was met.
                            Some(_) => Read::Skip { to: end },
                            None => Read::SegmentEnd,
                        }
                    }
                    Ok(Err(e)) => {
                        self.io_error(seq, &e);
                        Read::Retry
                    }
                    Err(e) => {
                        self.io_error(seq, &io::Error::other(e));
                        Read::Retry
                    }
                }
            }
            Ok(Err(ReadError::Io(e))) => {
                self.io_error(seq, &e);
                Read::Retry
            }
            Err(e) => {
                self.io_error(seq, &io::Error::other(e));
                Read::Retry
            }
        }
    }

    fn io_error(&self, seq: u64, e: &io::Error) {
        tracing::warn!(
            segment = %segment_path(&self.shared.dir, seq).display(),
            error = %e,
            retry_in_ms = self.retry_wait.as_millis() as u64,
            "Cannot read the forwarding queue; trying again."
        );
    }
}

/// Reads the record at `off`. `Ok(None)`: no record starts there (end of
/// the segment, or of what is written so far when `limit` is given).
/// `Err`: a damaged record.
fn read_record(
    file: &File,
    off: u64,
    limit: Option<u64>,
) -> Result<Option<(u32, Bytes)>, ReadError> {
    let damaged = ReadError::Damaged;
    let end = match limit {
        Some(l) => l,
        None => file.metadata().map_err(ReadError::Io)?.len(),
    };
    if off >= end {
        return Ok(None);
    }
    if end - off < HEADER {
        return Err(damaged(format!(
            "{} bytes left, less than a record header",
            end - off
        )));
    }
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, off)
        .map_err(ReadError::Io)?;
    let (magic, len, spans, crc) = parse_header(&header);
    if magic != MAGIC {
        return Err(damaged(format!("bad record marker {magic:#010x}")));
    }
    if off + HEADER + len as u64 > end {
        return Err(damaged(format!(
            "record of {len} bytes runs past the segment's end ({end})"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, off + HEADER)
        .map_err(ReadError::Io)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&spans.to_le_bytes());
    h.update(&payload);
    if h.finalize() != crc {
        return Err(damaged("checksum mismatch".to_owned()));
    }
    Ok(Some((spans, Bytes::from(payload))))
}

/// The offset of the first whole record at or after `from` (up to `limit`,
/// else the file's end), and that end.
fn next_whole_record(file: &File, from: u64, limit: Option<u64>) -> io::Result<(Option<u64>, u64)> {
    let end = match limit {
        Some(l) => l,
        None => file.metadata()?.len(),
    };
    if from >= end {
        return Ok((None, end));
    }
    let mut rest = vec![0u8; (end - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    let marker = MAGIC.to_le_bytes();
    let mut at = 0;
    while let Some(i) = rest
        .get(at..)
        .and_then(|r| r.windows(4).position(|w| w == marker))
    {
        let candidate = from + (at + i) as u64;
        if matches!(read_record(file, candidate, Some(end)), Ok(Some(_))) {
            return Ok((Some(candidate), end));
        }
        at += i + 1;
    }
    Ok((None, end))
}

fn parse_header(h: &[u8; HEADER as usize]) -> (u32, u32, u32, u32) {
    let u = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    (u(0), u(4), u(8), u(12))
}

// ------------------------------------------------------------------ acks

struct Entry {
    end: Pos,
    acked: bool,
    /// Set on the marker the reader leaves when it finishes a segment.
    segment_done: Option<u64>,
}

struct Acks {
    inflight: VecDeque<Entry>,
    /// Id of `inflight[0]`.
    first_id: u64,
    next_id: u64,
    frontier: Pos,
    read: Pos,
    file: File,
}

impl Acks {
    fn read(&mut self, end: Pos) -> Receipt {
        let id = self.next_id;
        self.next_id += 1;
        self.inflight.push_back(Entry {
            end,
            acked: false,
            segment_done: None,
        });
        self.read = end;
        self.persist();
        Receipt(id)
    }

    fn segment_done(&mut self, seq: u64, next: Pos) {
        self.next_id += 1;
        self.inflight.push_back(Entry {
            end: next,
            acked: true,
            segment_done: Some(seq),
        });
        self.read = next;
        self.advance();
    }

    /// Returns the segments that may now be deleted.
    fn ack(&mut self, receipts: &[Receipt]) -> Vec<u64> {
        for r in receipts {
            if let Some(i) = r.0.checked_sub(self.first_id) {
                if let Some(e) = self.inflight.get_mut(i as usize) {
                    e.acked = true;
                }
            }
        }
        self.advance()
    }

    fn advance(&mut self) -> Vec<u64> {
        let mut deletable = Vec::new();
        let before = self.frontier;
        while self.inflight.front().is_some_and(|e| e.acked) {
            let Some(e) = self.inflight.pop_front() else {
                break;
            };
            self.first_id += 1;
            self.frontier = e.end;
            deletable.extend(e.segment_done);
        }
        if self.frontier != before {
            self.persist();
        }
        deletable
    }

    fn persist(&mut self) {
        let mut buf = [0u8; 48];
        buf[0..8].copy_from_slice(&ACK_MAGIC.to_le_bytes());
        for (i, v) in [
            self.frontier.seq,
            self.frontier.off,
            self.read.seq,
            self.read.off,
        ]
        .into_iter()
        .enumerate()
        {
            buf[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf[..40]);
        buf[40..44].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.file.write_all_at(&buf, 0) {
            tracing::warn!(error = %e, "Cannot record forwarding progress; a restart may send some spans again.");
        }
    }
}

fn parse_ack(buf: &[u8]) -> Option<(Pos, Pos)> {
    if buf.len() < 44 {
        return None;
    }
    let u = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let crc = u32::from_le_bytes([buf[40], buf[41], buf[42], buf[43]]);
    if u(0) != ACK_MAGIC || crc32fast::hash(&buf[..40]) != crc {
        return None;
    }
    Some((
        Pos {
            seq: u(8),
            off: u(16),
        },
        Pos {
            seq: u(24),
            off: u(32),
        },
    ))
}

// ------------------------------------------------------------------ recovery

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

struct Recovered {
    /// Live segments, oldest first.
    segments: Vec<u64>,
    /// The highest segment number the `ack` file names.
    highest_acked_seq: u64,
    /// Where the reader starts; `None` when nothing is left to send.
    resume: Option<Pos>,
    bytes: u64,
    records: u64,
    spans: u64,
}

/// What the previous process left: drops delivered segments, cuts a torn
/// tail off the newest one, counts the backlog and what will be replayed.
fn recover(dir: &Path, metrics: &Metrics, labels: &ExporterLabels) -> io::Result<Recovered> {
    let mut segments: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let hex = name.strip_suffix(".seg")?;
            (hex.len() == 16)
                .then(|| u64::from_str_radix(hex, 16).ok())
                .flatten()
        })
        .collect();
    segments.sort_unstable();

    let ack = fs::read(dir.join(ACK_FILE))
        .ok()
        .and_then(|b| parse_ack(&b));
    let (frontier, read) = match ack {
        Some(a) => a,
        None => {
            if !segments.is_empty() && dir.join(ACK_FILE).exists() {
                tracing::warn!("Forwarding queue progress file unreadable; sending every queued segment from its start (some spans may arrive twice).");
            }
            let p = Pos {
                seq: segments.first().copied().unwrap_or(0),
                off: 0,
            };
            (p, p)
        }
    };
    // Segments wholly before the frontier were delivered.
    for seq in segments.iter().filter(|s| **s < frontier.seq) {
        let _ = fs::remove_file(segment_path(dir, *seq));
    }
    segments.retain(|s| *s >= frontier.seq);

    // A record cut short by a power loss can only be at the end of the
    // newest segment: keep the whole records before it. Damage with whole
    // records after it is not a torn write: those records were written,
    // and acknowledged, after it; the reader skips the damage alone.
    if let Some(&last) = segments.last() {
        let path = segment_path(dir, last);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        let mut off = 0;
        loop {
            match read_record(&file, off, Some(len)) {
                Ok(Some((_, payload))) => off += HEADER + payload.len() as u64,
                Ok(None) => break,
                Err(ReadError::Damaged(_)) => match next_whole_record(&file, off + 1, Some(len))? {
                    (Some(next), _) => off = next,
                    (None, _) => break,
                },
                // Not a verdict on the bytes: cut nothing, start no further.
                Err(ReadError::Io(e)) => return Err(e),
            }
        }
        if off < len {
            tracing::warn!(
                segment = %path.display(),
                kept_bytes = off,
                cut_bytes = len - off,
                "Forwarding queue segment ends in a partial or damaged record (interrupted write); cutting it off."
            );
            metrics
                .exporter_queue_corrupt_segments
                .get_or_create(labels)
                .inc();
            file.set_len(off)?;
            file.sync_all()?;
        }
    }

    let resume = segments.first().map(|&first| {
        if first == frontier.seq {
            frontier
        } else {
            Pos { seq: first, off: 0 }
        }
    });
    let (mut bytes, mut records, mut spans, mut replayed) = (0, 0, 0, 0);
    for &seq in &segments {
        let file = File::open(segment_path(dir, seq))?;
        let len = file.metadata()?.len();
        bytes += len;
        let mut off = if Some(seq) == resume.map(|p| p.seq) {
            resume.map_or(0, |p| p.off)
        } else {
            0
        };
        // Headers only: checksums are checked when records are read.
        let mut header = [0u8; HEADER as usize];
        while off + HEADER <= len && file.read_exact_at(&mut header, off).is_ok() {
            let (magic, n, s, _) = parse_header(&header);
            if magic != MAGIC {
                // Damage the reader will skip: count on from the next
                // whole record.
                match next_whole_record(&file, off + 1, Some(len)) {
                    Ok((Some(next), _)) => {
                        off = next;
                        continue;
                    }
                    _ => break,
                }
            }
            let here = Pos { seq, off };
            records += 1;
            spans += u64::from(s);
            if here < read {
                replayed += u64::from(s);
            }
            off += HEADER + u64::from(n);
        }
    }
    if spans > 0 {
        tracing::info!(
            spans,
            requests = records,
            bytes,
            replayed_spans = replayed,
            "Forwarding queue holds spans from before the restart; sending them."
        );
    }
    if replayed > 0 {
        tracing::warn!(
            spans = replayed,
            "Spans were in flight to the downstream when the previous process stopped; they are sent again and may arrive twice."
        );
        metrics
            .exporter_queue_replayed_spans
            .get_or_create(labels)
            .inc_by(replayed);
    }
    Ok(Recovered {
        segments,
        highest_acked_seq: frontier.seq.max(read.seq),
        resume,
        bytes,
        records,
        spans,
    })
}

#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::*;

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(&mut Registry::default()))
}

fn labels() -> ExporterLabels {
    ExporterLabels {
        exporter: "otlp".into(),
    }
}

fn config(dir: &Path, max_size_mib: u64, segment_size_mib: u64) -> DiskQueueConfig {
    DiskQueueConfig {
        directory: dir.to_owned(),
        max_size_mib,
        segment_size_mib,
        fsync: FsyncPolicy::Never,
    }
}

/// A request whose `n` resource-spans blobs each carry `tag` so the reader's
/// items can be told apart.
fn item(tag: u32, size: usize) -> ForwardItem {
    let mut blob = tag.to_le_bytes().to_vec();
    blob.resize(size.max(4), 0xab);
    ForwardItem::new(vec![Bytes::from(blob)], (tag % 7 + 1) as usize)
}

fn tag_of(item: &ForwardItem) -> u32 {
    let b = &item.resource_spans[0];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

async fn append(q: &DiskQueue, it: &ForwardItem) {
    let bytes = crate::exporter::split::request_len(&it.resource_spans);
    q.reserve(bytes)
        .expect("room in the queue")
        .append(it)
        .await
        .expect("append");
}

async fn next(r: &mut Reader) -> (ForwardItem, Receipt) {
    tokio::time::timeout(Duration::from_secs(5), r.next())
        .await
        .expect("a record within 5s")
        .expect("queue not closed")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A queue in `cfg`'s directory holding records `tags` of `size` bytes
/// each, closed as a process leaves it.
async fn write_closed(cfg: &DiskQueueConfig, tags: std::ops::Range<u32>, size: usize) {
    let (q, _r) = DiskQueue::open(cfg, metrics(), labels(), None).unwrap();
    for tag in tags {
        append(&q, &item(tag, size)).await;
    }
    q.close().await;
}

/// Flips one byte of `path` at `at`, as a bad disk would.
fn flip_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

fn counter(m: &Family<ExporterLabels, Counter>) -> u64 {
    m.get_or_create(&labels()).get()
}

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[tokio::test]
async fn records_come_back_in_order_and_delivered_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    // 1 MiB segments, ~100 KiB records: several segments.
    let (q, mut r) =
        DiskQueue::open(&config(dir.path(), 64, 1), Arc::clone(&m), labels(), None).unwrap();
    for tag in 0..40 {
        append(&q, &item(tag, 100 * 1024)).await;
    }
    assert!(
        segments(dir.path()).len() >= 4,
        "{:?}",
        segments(dir.path())
    );
    let mut receipts = Vec::new();
    for want in 0..40 {
        let (it, rc) = next(&mut r).await;
        assert_eq!(tag_of(&it), want);
        assert_eq!(it.spans, (want % 7 + 1) as usize);
        assert_eq!(it.resource_spans[0].len(), 100 * 1024);
        receipts.push(rc);
    }
    // Acknowledged out of order (batches finish in any order): nothing is
    // deleted until the prefix is complete.
    q.ack(&receipts[20..]);
    let before = segments(dir.path()).len();
    assert!(before >= 4);
    q.ack(&receipts[..20]);
    // Only the segment being written remains.
    assert_eq!(segments(dir.path()).len(), 1, "{:?}", segments(dir.path()));
    assert!(m.exporter_queue_bytes.get_or_create(&labels()).get() < 1024 * 1024);
    assert_eq!(m.exporter_queue_size.get_or_create(&labels()).get(), 0);
    q.close().await;
    assert!(r.next().await.is_none(), "closed and read to the end");
}

#[tokio::test]
async fn a_restart_resumes_at_the_delivered_prefix_and_counts_what_it_replays() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64, 1);
    let sent_before: u64;
    {
        let m = metrics();
        let (q, mut r) = DiskQueue::open(&cfg, Arc::clone(&m), labels(), None).unwrap();
        for tag in 0..30 {
            append(&q, &item(tag, 64 * 1024)).await;
        }
        // 0..10 delivered, 10..14 read (in flight) when the process dies.
        let mut rc = Vec::new();
        for _ in 0..14 {
            rc.push(next(&mut r).await.1);
        }
        q.ack(&rc[..10]);
        sent_before = (10u32..14).map(|t| u64::from(t % 7 + 1)).sum();
        q.close().await;
    }
    let m = metrics();
    let (q, mut r) = DiskQueue::open(&cfg, Arc::clone(&m), labels(), None).unwrap();
    assert_eq!(counter(&m.exporter_queue_replayed_spans), sent_before);
    let backlog: u64 = (10u32..30).map(|t| u64::from(t % 7 + 1)).sum();
    assert_eq!(r.backlog_spans(), backlog);
    assert_eq!(m.exporter_queue_size.get_or_create(&labels()).get(), 20);
    // New requests queue behind the backlog.
    append(&q, &item(1000, 10)).await;
    let mut tags = Vec::new();
    for _ in 0..21 {
        let (it, rc) = next(&mut r).await;
        tags.push(tag_of(&it));
        q.ack(&[rc]);
    }
    assert_eq!(tags, (10..30).chain([1000]).collect::<Vec<_>>());
    assert_eq!(counter(&m.exporter_queue_corrupt_segments), 0);
    q.close().await;
}

#[tokio::test]
async fn a_torn_record_at_the_end_is_cut_off_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64, 16);
    write_closed(&cfg, 0..5, 1000).await;
    // A write cut short by a power loss: half a record at the end.
    let last = segments(dir.path()).pop().unwrap();
    let whole = fs::metadata(&last).unwrap().len();
    let mut f = OpenOptions::new().append(true).open(&last).unwrap();
    let mut torn = MAGIC.to_le_bytes().to_vec();
    torn.extend_from_slice(&5000u32.to_le_bytes());
    torn.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
    f.write_all(&torn).unwrap();
    drop(f);

    let m = metrics();
    let (q, mut r) = DiskQueue::open(&cfg, Arc::clone(&m), labels(), None).unwrap();
    assert_eq!(counter(&m.exporter_queue_corrupt_segments), 1);
    assert_eq!(fs::metadata(&last).unwrap().len(), whole);
    for want in 0..5 {
        assert_eq!(tag_of(&next(&mut r).await.0), want);
    }
    q.close().await;
    assert!(r.next().await.is_none());
}

/// Damage in the newest segment with whole records after it is not a torn
/// write: those records were acknowledged to their senders after it. A
/// restart keeps them; only the damaged record is skipped (and counted).
#[tokio::test]
async fn a_restart_keeps_the_records_after_damage_in_the_newest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64, 16);
    write_closed(&cfg, 0..5, 1000).await;
    let newest = segments(dir.path()).pop().unwrap();
    let whole = fs::metadata(&newest).unwrap().len();
    // Flip a payload byte of the third record (tag 2).
    let payload = LazyExportRequest {
        resource_spans: item(0, 1000).resource_spans,
    }
    .encoded_len() as u64;
    let third = 2 * (HEADER + payload);
    flip_byte(&newest, third + HEADER + 100);

    let m = metrics();
    let (q, mut r) = DiskQueue::open(&cfg, Arc::clone(&m), labels(), None).unwrap();
    assert_eq!(fs::metadata(&newest).unwrap().len(), whole, "nothing cut");
    let mut tags = Vec::new();
    for _ in 0..4 {
        tags.push(tag_of(&next(&mut r).await.0));
    }
    assert_eq!(tags, [0, 1, 3, 4]);
    assert_eq!(counter(&m.exporter_queue_corrupt_segments), 1);
    q.close().await;
    assert!(r.next().await.is_none());
}

/// With `fsync: always`, a sender whose record could not be synced is
/// refused and will send again: that record must not be forwarded too (it
/// would arrive twice). It is cut off; the records around it are sent.
#[tokio::test]
async fn a_record_whose_fdatasync_failed_is_refused_and_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 64, 16);
    cfg.fsync = FsyncPolicy::Always;
    let m = metrics();
    let (q, mut r) = DiskQueue::open(&cfg, Arc::clone(&m), labels(), None).unwrap();
    append(&q, &item(0, 1000)).await;
    q.shared.fail_next_sync.store(true, Ordering::Release);
    let refused = item(1, 1000);
    let bytes = crate::exporter::split::request_len(&refused.resource_spans);
    let answer = q.reserve(bytes).expect("room").append(&refused).await;
    assert!(answer.is_err(), "the sender is told the write failed");
    append(&q, &item(2, 1000)).await;
    q.close().await;

    let mut tags = Vec::new();
    while let Ok(Some((it, _))) = tokio::time::timeout(Duration::from_secs(5), r.next()).await {
        tags.push(tag_of(&it));
    }
    assert_eq!(tags, [0, 2]);
    assert_eq!(counter(&m.exporter_queue_corrupt_segments), 0);
}

#[tokio::test]
async fn a_damaged_record_is_skipped_counted_and_the_rest_still_sent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64, 1);
    write_closed(&cfg, 0..30, 100 * 1024).await;
    // Flip a payload byte in the second record of the first segment.
    let first = segments(dir.path())[0].clone();
    let record = HEADER + 100 * 1024 + 5;
    flip_byte(&first, record + HEADER + 100);

    let m = metrics();
    let (q, mut r) = DiskQueue::open(&cfg, Arc::clone(&m), labels(), None).unwrap();
    let (it, _) = next(&mut r).await;
    assert_eq!(tag_of(&it), 0);
    // Only the damaged record is lost: reading goes on at the next whole
    // one, through the rest of the segments.
    let mut tags = Vec::new();
    for _ in 0..28 {
        tags.push(tag_of(&next(&mut r).await.0));
    }
    assert_eq!(tags, (2..30).collect::<Vec<_>>());
    assert_eq!(counter(&m.exporter_queue_corrupt_segments), 1);
    q.close().await;
}

#[tokio::test]
async fn a_full_queue_refuses_and_room_comes_back_on_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (q, mut r) = DiskQueue::open(&config(dir.path(), 8, 1), metrics(), labels(), None).unwrap();
    let mut appended = 0;
    while let Some(res) = q.reserve(200 * 1024) {
        res.append(&item(appended, 200 * 1024)).await.unwrap();
        appended += 1;
        assert!(appended < 60, "8 MiB bound not enforced");
    }
    assert!(appended >= 32, "{appended}");
    // A refused reservation took no room.
    assert!(q.reserve(200 * 1024).is_none());
    let mut rc = Vec::new();
    for _ in 0..appended {
        rc.push(next(&mut r).await.1);
    }
    q.ack(&rc);
    // Everything but the segment being written is deleted.
    assert_eq!(segments(dir.path()).len(), 1);
    assert!(q.reserve(200 * 1024).is_some(), "room after delivery");
    q.close().await;
}

#[tokio::test]
async fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64, 1);
    let (q, _r) = DiskQueue::open(&cfg, metrics(), labels(), None).unwrap();
    match DiskQueue::open(&cfg, metrics(), labels(), None) {
        Err(DiskQueueError::Locked(d)) => assert_eq!(d, dir.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second queue opened the same directory"),
    }
    q.close().await;
}

#[test]
fn fsync_policies_parse_and_refuse_nonsense() {
    let p = |s: &str| serde_yaml_ng::from_str::<FsyncPolicy>(s);
    assert_eq!(p("always").unwrap(), FsyncPolicy::Always);
    assert_eq!(p("never").unwrap(), FsyncPolicy::Never);
    assert_eq!(
        p("250ms").unwrap(),
        FsyncPolicy::Every(Duration::from_millis(250))
    );
    let e = p("sometimes").unwrap_err().to_string();
    assert!(e.contains("always, never or a duration"), "{e}");
    assert!(p("0s").is_err());
}

/// Damage in the segment being written (a failing disk) skips that record,
/// counted; the segment is neither treated as finished nor deleted, and
/// records appended afterwards are read.
#[tokio::test]
async fn damage_in_the_segment_being_written_skips_the_record_without_deleting_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let (q, mut r) =
        DiskQueue::open(&config(dir.path(), 64, 16), Arc::clone(&m), labels(), None).unwrap();
    for tag in 0..3 {
        append(&q, &item(tag, 1000)).await;
    }
    let live = segments(dir.path()).pop().unwrap();
    let second = HEADER + 1000 + 5;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&live)
        .unwrap();
    f.write_all_at(&[0xee], second + HEADER + 10).unwrap();
    drop(f);
    let (first, rc) = next(&mut r).await;
    assert_eq!(tag_of(&first), 0);
    q.ack(&[rc]);
    append(&q, &item(7, 1000)).await;
    // The damaged record is skipped; the next whole one and what was
    // appended since are read.
    for want in [2, 7] {
        let (after, rc) = next(&mut r).await;
        assert_eq!(
            tag_of(&after),
            want,
            "reading went on after the damaged record"
        );
        q.ack(&[rc]);
    }
    assert_eq!(counter(&m.exporter_queue_corrupt_segments), 1);
    assert!(live.exists(), "the segment being written was deleted");
    append(&q, &item(8, 1000)).await;
    assert_eq!(tag_of(&next(&mut r).await.0), 8);
    q.close().await;
}

#[test]
fn a_queue_smaller_than_8_mib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    match DiskQueue::open(&config(dir.path(), 2, 1), metrics(), labels(), None) {
        Err(DiskQueueError::TooSmall(_, 2)) => {}
        Err(e) => panic!("expected TooSmall, got {e}"),
        Ok(_) => panic!("a 2 MiB queue was opened"),
    }
}

/// A stale `ack` file (say, a newer one lost to a power cut) names higher
/// segment numbers than the directory holds: new segments are numbered
/// past it, so it can never make recovery delete them.
#[tokio::test]
async fn new_segments_are_numbered_past_a_stale_ack_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 64, 16);
    {
        let (q, mut r) = DiskQueue::open(&cfg, metrics(), labels(), None).unwrap();
        append(&q, &item(1, 100)).await;
        let (_, rc) = next(&mut r).await;
        q.ack(&[rc]);
        q.close().await;
    }
    let ack = fs::read(dir.path().join(ACK_FILE)).unwrap();
    let (frontier, _) = parse_ack(&ack).unwrap();
    // Every segment gone, the ack file kept: as after a crash between the
    // two.
    for s in segments(dir.path()) {
        fs::remove_file(s).unwrap();
    }
    let (q, mut r) = DiskQueue::open(&cfg, metrics(), labels(), None).unwrap();
    let live = segments(dir.path());
    assert_eq!(live.len(), 1);
    assert!(
        live[0] > segment_path(dir.path(), frontier.seq),
        "{live:?} not past {}",
        frontier.seq
    );
    append(&q, &item(2, 100)).await;
    assert_eq!(tag_of(&next(&mut r).await.0), 2);
    q.close().await;
}

/// A writer that dies is not silent: the append waiting on it and every one
/// after it are refused (the sender retries elsewhere or later), and the
/// daemon reports itself not live, so that it is restarted and recovers
/// the queue from disk.
#[tokio::test]
async fn a_dead_writer_refuses_appends_and_marks_the_daemon_not_live() {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let workers = Arc::new(crate::health::Workers::new(Arc::clone(&m)));
    let (q, mut r) = DiskQueue::open(
        &config(dir.path(), 64, 1),
        Arc::clone(&m),
        labels(),
        Some(workers.alive("queue_writer")),
    )
    .unwrap();
    append(&q, &item(1, 100)).await;
    assert_eq!(tag_of(&next(&mut r).await.0), 1);
    assert!(workers.not_live().is_none());

    q.shared.panic_next_append.store(true, Ordering::Release);
    for tag in [2, 3] {
        let it = item(tag, 100);
        let bytes = crate::exporter::split::request_len(&it.resource_spans);
        let answer = q.reserve(bytes).expect("room").append(&it).await;
        assert!(answer.is_err(), "record {tag} taken by a dead writer");
    }
    // The guard drops as the writer's thread unwinds, just after the
    // channels that refused the appends.
    let mut why = None;
    for _ in 0..100 {
        why = workers.not_live();
        if why.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let why = why.expect("not live after the writer died");
    assert!(why.contains("queue_writer"), "{why}");
    assert!(workers.not_ready().is_some());
}

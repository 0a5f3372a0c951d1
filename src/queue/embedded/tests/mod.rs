//! The embedded store: the shared contract, then what is its own (the log,
//! checkpoints, recovery, damage, power cuts).

mod power_cut;
mod sim;

use std::path::Path;
use std::sync::Arc;

use super::EmbeddedStore;
use super::io::Fs;
use super::io::RealFs;
use crate::queue::contract::{abc_claimed, accept, dead, failed, store_contract};
use crate::queue::*;
use sim::SimFs;

fn open(dir: &Path) -> Box<dyn Store> {
    Box::new(EmbeddedStore::open(dir).unwrap())
}

store_contract!(open);

fn open_sim(fs: &SimFs, dir: &Path, segment_bytes: u64) -> EmbeddedStore {
    super::recovery::open(Arc::new(fs.clone()), dir, segment_bytes).unwrap()
}

/// Claims everything of `lane` due by `now` and completes it; returns the
/// dedup ids delivered.
fn deliver_all(s: &dyn Store, lane: &str, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let c = s.claim_due(lane, now, now + 1000, 100).unwrap();
        if c.is_empty() {
            return out;
        }
        let done: Vec<_> = c.iter().map(|c| (c.record.id, c.lease)).collect();
        out.extend(c.iter().map(|c| c.webhook.meta().dedup_id.clone()));
        s.complete_many(lane, &done).unwrap();
    }
}

fn keys(s: &EmbeddedStore, prefix: u8) -> usize {
    s.index.tree.scan_prefix([prefix]).count()
}

#[test]
fn a_delivery_that_succeeds_first_time_writes_nothing_to_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    for i in 0..50 {
        s.accept_batch(&[accept(&format!("w{i}"), &["x", "y"])], 100)
            .unwrap();
    }
    assert_eq!(deliver_all(&s, "x", 100).len(), 50);
    assert_eq!(deliver_all(&s, "y", 100).len(), 50);
    s.flush().unwrap();
    assert_eq!(
        s.index.tree.len(),
        1,
        "no index write per webhook or delivery (only the checkpoint's generation)"
    );
    // The dedup ids went to their own file: 32 bytes each plus a block header.
    let dedup = std::fs::read_dir(dir.path().join("dedup")).unwrap();
    let bytes: u64 = dedup.map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(bytes, 12 + 50 * 32);
}

#[test]
fn dedup_ids_survive_reopen_expire_by_the_hour_and_a_torn_block_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000;
    let at = |d: &str, ms: u64| {
        let mut a = accept(d, &[]);
        let mut meta = a.webhook.meta().clone();
        meta.received_at_ms = ms;
        a.webhook = Webhook::from_store(meta, a.webhook.body().clone());
        a
    };
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.accept_batch(&[at("a", 10)], 10).unwrap();
        s.accept_batch(&[at("b", hour + 10)], hour + 10).unwrap();
        s.flush().unwrap();
        s.accept_batch(&[at("c", hour + 20)], hour + 20).unwrap();
    }
    // A block cut short by a crash at the end of the newest file.
    let newest = dir.path().join("dedup").join(format!("{:020}.dedup", 1));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut f, b"SRD1\x05\x00\x00\x00torn").unwrap();
    drop(f);
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let dup = |s: &EmbeddedStore, d: &str| s.accepted(&[accept(d, &[])]).unwrap()[0].is_some();
    assert!(
        dup(&s, "a") && dup(&s, "b") && dup(&s, "c"),
        "c from the log"
    );
    assert_eq!(
        s.expire_dedup(hour + 15).unwrap(),
        2,
        "a, then b of the second hour"
    );
    assert!(!dup(&s, "a") && !dup(&s, "b") && dup(&s, "c"));
    let files: Vec<_> = std::fs::read_dir(dir.path().join("dedup"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "the first hour's file is gone");
    assert_eq!(keys(&s, b'k'), 0);
}

#[test]
fn segments_go_once_every_lane_has_passed_them_and_nothing_points_into_them() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 512);
    let log = dir.path().join("log");
    for i in 0..20 {
        s.accept_batch(&[accept(&format!("w{i}"), &["x", "y"])], 100)
            .unwrap();
    }
    let made = fs.names(&log).len();
    assert!(made >= 5, "{made} segments");
    // Lane x is done, y not: every segment stays.
    deliver_all(&s, "x", 100);
    s.flush().unwrap();
    assert_eq!(fs.names(&log).len(), made);
    // y fails its first webhook (a retry points into the first segment)
    // and delivers the rest.
    let first = s.claim_due("y", 100, 1000, 1).unwrap().remove(0);
    s.update(&failed(&first, 5000), first.lease).unwrap();
    deliver_all(&s, "y", 100);
    s.flush().unwrap();
    assert_eq!(
        fs.names(&log),
        [format!("{:020}.log", first.record.id.webhook)],
        "only the retry's segment stays"
    );
    // Once the retry is delivered, every segment goes, even the one being
    // appended to (a drained queue frees its disk).
    let r = s.claim_due("y", 5000, 9000, 10).unwrap();
    s.complete_many("y", &[(r[0].record.id, r[0].lease)])
        .unwrap();
    s.flush().unwrap();
    assert_eq!(fs.names(&log).len(), 0, "{:?}", fs.names(&log));
    // And the next webhook starts a new one.
    s.accept_batch(&[accept("next", &["x", "y"])], 100).unwrap();
    assert_eq!(deliver_all(&s, "x", 100), ["next"]);
    assert_eq!(fs.names(&log).len(), 1);
    drop(s);
    let s = open_sim(&fs, dir.path(), 512);
    assert_eq!(deliver_all(&s, "y", 100), ["next"], "after a restart too");
}

#[test]
fn a_failed_commit_leaves_no_dedup_trace_and_the_resend_is_delivered_once() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 1 << 20);
    s.accept_batch(&[accept("before", &["x"])], 100).unwrap();
    fs.fail_syncs(true);
    assert!(s.accept_batch(&[accept("a", &["x"])], 100).is_err());
    assert_eq!(s.accepted(&[accept("a", &[])]).unwrap(), vec![None]);
    fs.fail_syncs(false);
    // The sender retries: stored now, not answered `duplicate`.
    assert!(matches!(
        s.accept_batch(&[accept("a", &["x"])], 100).unwrap()[0],
        AcceptOutcome::Queued(_)
    ));
    assert_eq!(deliver_all(&s, "x", 100), ["before", "a"]);
    // And after a power cut, still once.
    drop(s);
    fs.cut(&mut rand::rng(), true);
    let s = open_sim(&fs, dir.path(), 1 << 20);
    let again = deliver_all(&s, "x", 100);
    assert!(again.iter().filter(|d| *d == "a").count() <= 1, "{again:?}");
}

#[test]
fn a_torn_tail_is_truncated_and_every_acknowledged_webhook_stays() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 1 << 20);
    s.accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    // A batch written but cut short by the power: never acknowledged.
    fs.fail_syncs(true);
    let _ = s.accept_batch(&[accept("c", &["x"])], 100);
    fs.fail_syncs(false);
    drop(s);
    let seg = dir
        .path()
        .join("log")
        .join(&fs.names(&dir.path().join("log"))[0]);
    let len = fs.read(&seg).unwrap().unwrap().len();
    // Unsynced garbage after the last record, as a torn write leaves it.
    let f = fs.open(&seg).unwrap();
    f.append(&[b"SRL1\x40\x00\x00\x00garbage"]).unwrap();
    fs.cut(&mut rand::rng(), true);
    let s = open_sim(&fs, dir.path(), 1 << 20);
    assert_eq!(deliver_all(&s, "x", 100), ["a", "b"]);
    assert_eq!(fs.read(&seg).unwrap().unwrap().len(), len, "truncated");
    assert_eq!(s.damaged_ranges(), 0, "a torn tail is not damage");
    s.accept_batch(&[accept("d", &["x"])], 100).unwrap();
    assert_eq!(deliver_all(&s, "x", 100), ["d"]);
}

#[test]
fn damage_inside_the_log_is_skipped_counted_and_stops_nothing_else() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 1 << 20);
    for d in ["a", "b", "c"] {
        s.accept_batch(&[accept(d, &["x"])], 100).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let log = dir.path().join("log");
    let seg = log.join(&fs.names(&log)[0]);
    let bytes = fs.read(&seg).unwrap().unwrap();
    // The second record's body: find "b" in its meta and flip a byte past it.
    let second = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"SRL1")
        .nth(1)
        .unwrap()
        .0;
    fs.flip(&seg, second + 40);
    let s = open_sim(&fs, dir.path(), 1 << 20);
    assert_eq!(deliver_all(&s, "x", 100), ["a", "c"]);
    assert_eq!(s.damaged_ranges(), 1);
    s.accept_batch(&[accept("d", &["x"])], 100).unwrap();
    assert_eq!(deliver_all(&s, "x", 100), ["d"]);
    assert_eq!(s.damaged_ranges(), 1, "counted once");
}

#[test]
fn an_index_that_cannot_be_opened_is_moved_aside_and_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let c = abc_claimed(&s);
        s.complete_many("x", &[(c[0].record.id, c[0].lease)])
            .unwrap();
        s.update(&failed(&c[1], 5000), c[1].lease).unwrap();
        s.bury(&dead(&c[2].record, 200, "HTTP 400"), c[2].lease)
            .unwrap();
        s.flush().unwrap();
    }
    // Damage sled the way a full disk was seen to ("Read corrupted data").
    for f in ["conf", "db"] {
        std::fs::write(dir.path().join("index").join(f), b"\xffnot sled at all").unwrap();
    }
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("index.broken-"));
    assert!(aside, "the broken index is kept for inspection");
    // The dead letter is rebuilt from the dead-letter log, with its webhook.
    let dl = s.dead_letters(None, 10).unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].webhook.as_ref().unwrap().meta().dedup_id, "c");
    assert_eq!(s.stats().unwrap().1, 1);
    // Every other webhook still in the log is due again (at least once).
    let mut got = deliver_all(&s, "x", u64::MAX / 4);
    got.sort();
    assert_eq!(got, ["a", "b"]);
    assert!(matches!(
        s.accept_batch(&[accept("b", &["x"])], 100).unwrap()[0],
        AcceptOutcome::Duplicate(_)
    ));
}

#[test]
fn a_data_dir_of_the_previous_layout_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db"), b"old sled").unwrap();
    let e = EmbeddedStore::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("written by shoprelay 0.1"), "{e}");
    assert!(
        e.contains("Drain it first with the previous version"),
        "{e}"
    );
}

#[test]
fn after_a_crash_only_what_lanes_finished_since_the_checkpoint_comes_again() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 1 << 20);
    let batch: Vec<Accept> = (0..10).map(|i| accept(&format!("w{i}"), &["x"])).collect();
    s.accept_batch(&batch, 100).unwrap();
    let c = s.claim_due("x", 100, 1000, 5).unwrap();
    let done: Vec<_> = c.iter().map(|c| (c.record.id, c.lease)).collect();
    s.complete_many("x", &done).unwrap();
    s.flush().unwrap();
    let after = deliver_all(&s, "x", 100);
    assert_eq!(after.len(), 5);
    drop(s);
    fs.cut(&mut rand::rng(), false);
    let s = open_sim(&fs, dir.path(), 1 << 20);
    assert_eq!(deliver_all(&s, "x", 100), after, "the same five, no others");
}

#[test]
fn a_dead_letter_keeps_its_body_after_its_segment_is_gone() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 256);
    for i in 0..8 {
        s.accept_batch(&[accept(&format!("w{i}"), &["x"])], 100)
            .unwrap();
    }
    let c = s.claim_due("x", 100, 1000, 1).unwrap().remove(0);
    s.bury(&dead(&c.record, 200, "HTTP 400"), c.lease).unwrap();
    deliver_all(&s, "x", 100);
    s.flush().unwrap();
    assert_eq!(
        fs.names(&dir.path().join("log")).len(),
        0,
        "every log segment went"
    );
    let d = s.dead_letter(c.record.id).unwrap().unwrap();
    assert_eq!(d.webhook.unwrap().body().as_ref(), br#"{"id":1}"#);
    assert_eq!(s.replay(c.record.id, 300).unwrap().as_deref(), Some("x"));
    let r = s.claim_due("x", 300, 1000, 10).unwrap();
    assert_eq!(r[0].webhook.meta().dedup_id, "w0");
}

#[test]
fn real_files_are_what_the_store_opens() {
    // The same store over the operating system's files reopens its own data.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b");
    {
        let s = super::recovery::open(Arc::new(RealFs), &path, 1 << 20).unwrap();
        s.accept_batch(&[accept("a", &["x"])], 100).unwrap();
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(deliver_all(&s, "x", 100), ["a"]);
}

/// Resident memory of this process, from /proc (kB → bytes).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn a_clock_jump_past_the_window_with_300k_ids_due_keeps_ingest_and_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    for b in 0..300 {
        let batch: Vec<Accept> = (0..1000)
            .map(|i| accept(&format!("old-{b}-{i}"), &[]))
            .collect();
        s.accept_batch(&batch, 100).unwrap();
    }
    s.flush().unwrap();
    let before = rss_bytes();
    // The clock jumps four days: every id is due at once.
    let sweeper = {
        let s = s.clone();
        std::thread::spawn(move || s.expire_dedup(4 * 86_400_000).unwrap())
    };
    let mut lat = Vec::new();
    let mut peak = before;
    let mut i = 0;
    while !sweeper.is_finished() || i < 200 {
        let t = std::time::Instant::now();
        s.accept_batch(&[accept(&format!("new-{i}"), &[])], 100)
            .unwrap();
        lat.push(t.elapsed());
        peak = peak.max(rss_bytes());
        i += 1;
    }
    assert!(sweeper.join().unwrap() >= 300_000);
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    // Debug build, shared CI machine: generous, but a sweep under one lock
    // (or one sled batch: 9.6 s and 2.9 GB before) fails it by far.
    assert!(
        p99 < std::time::Duration::from_millis(50),
        "ingest p99 {p99:?} during the sweep"
    );
    assert!(
        peak < before + (64 << 20),
        "RSS {before} → {peak} during the sweep"
    );
    assert!(s.accepted(&[accept("old-0-0", &[])]).unwrap()[0].is_none());
}

/// Found by the full-disk cycle test: a retry delivered from the index after
/// a restart was sent again when the lane re-read the log from a cursor that
/// lagged (a failed or missed checkpoint), since its index record was gone.
#[test]
fn a_retry_delivered_after_a_restart_is_not_sent_again_from_the_log() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 1 << 20);
    s.accept_batch(&[accept("a", &["x"]), accept("b", &["x"])], 100)
        .unwrap();
    let c = s.claim_due("x", 100, 1000, 10).unwrap();
    s.update(&failed(&c[0], 500), c[0].lease).unwrap();
    s.update(&failed(&c[1], 500), c[1].lease).unwrap();
    // No checkpoint since: the lane's durable cursor is before both.
    drop(s);
    let s = open_sim(&fs, dir.path(), 1 << 20);
    let mut got = deliver_all(&s, "x", 500);
    got.sort();
    assert_eq!(got, ["a", "b"], "each once");
    assert!(deliver_all(&s, "x", 10_000).is_empty());
}

#[test]
fn a_lane_with_ten_thousand_retries_reads_no_new_records_until_they_clear() {
    use super::lanes::MAX_RETRYING;
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let n = MAX_RETRYING as usize;
    for b in 0..n / 1000 {
        let batch: Vec<Accept> = (0..1000)
            .map(|i| accept(&format!("r{b}-{i}"), &["x"]))
            .collect();
        s.accept_batch(&batch, 100).unwrap();
    }
    s.accept_batch(&[accept("waits", &["x"])], 100).unwrap();
    // The destination is down: every attempt fails, due again at 5000.
    let mut failed_n = 0;
    while failed_n < n {
        let c = s.claim_due("x", 100, 1000, 500).unwrap();
        assert!(!c.is_empty(), "{failed_n} failed so far");
        for c in &c {
            s.update(&failed(c, 5000), c.lease).unwrap();
        }
        failed_n += c.len();
    }
    // The next record waits in the log: not claimed, not counted as due.
    assert!(s.claim_due("x", 200, 1000, 10).unwrap().is_empty());
    assert_eq!(s.next_due("x").unwrap(), Some(5000));
    assert_eq!(s.stats().unwrap().0["x"].pending, n as u64 + 1);
    // One retry clears: the lane reads on.
    let r = s.claim_due("x", 5000, 9000, 1).unwrap();
    s.complete_many("x", &[(r[0].record.id, r[0].lease)])
        .unwrap();
    let next = s.claim_due("x", 5000, 9000, 10_000).unwrap();
    assert!(
        next.iter().any(|c| c.webhook.meta().dedup_id == "waits"),
        "the waiting record is read once a retry clears"
    );
}

#[test]
fn a_dead_letter_keeps_its_log_segment_while_the_disk_is_short_and_its_own_segment_goes_with_it() {
    let fs = SimFs::default();
    let dir = tempfile::tempdir().unwrap();
    let s = open_sim(&fs, dir.path(), 256);
    let (log, dead_dir) = (dir.path().join("log"), dir.path().join("dead"));
    for i in 0..6 {
        s.accept_batch(&[accept(&format!("w{i}"), &["x"])], 100)
            .unwrap();
    }
    // Free space above half the reserve (index writes go on) but below what
    // moving a body needs: the dead letter points into the log instead.
    let free = s.free_bytes().unwrap();
    s.keep_free(free / 2 * 3);
    let short = s.claim_due("x", 100, 1000, 1).unwrap().remove(0);
    s.bury(&dead(&short.record, 200, "HTTP 400"), short.lease)
        .unwrap();
    s.keep_free(0);
    let c = s.claim_due("x", 100, 1000, 1).unwrap().remove(0);
    s.bury(&dead(&c.record, 200, "HTTP 400"), c.lease).unwrap();
    deliver_all(&s, "x", 100);
    s.flush().unwrap();
    assert_eq!(
        fs.names(&log),
        [format!("{:020}.log", short.record.id.webhook)],
        "the first dead letter's segment stays"
    );
    assert!(
        s.dead_letter(short.record.id)
            .unwrap()
            .unwrap()
            .webhook
            .is_some()
    );
    // Purged, its segment goes too; the other dead letter's body is in dead/.
    assert!(s.purge(short.record.id).unwrap());
    s.flush().unwrap();
    assert!(fs.names(&log).is_empty(), "{:?}", fs.names(&log));
    assert_eq!(fs.names(&dead_dir).len(), 1);
    let d = s.dead_letter(c.record.id).unwrap().unwrap();
    assert_eq!(d.webhook.unwrap().meta().dedup_id, "w1");
    // Dead letters filling more than one dead-letter segment: once every one
    // in a segment is purged, that segment goes.
    let mut buried = Vec::new();
    for i in 0..4 {
        s.accept_batch(&[accept(&format!("d{i}"), &["x"])], 100)
            .unwrap();
        let c = s.claim_due("x", 100, 1000, 1).unwrap().remove(0);
        s.bury(&dead(&c.record, 200, "HTTP 400"), c.lease).unwrap();
        buried.push(c.record.id);
    }
    let made = fs.names(&dead_dir).len();
    assert!(made >= 3, "{made} dead-letter segments");
    assert!(s.purge(c.record.id).unwrap());
    for id in &buried {
        assert!(s.purge(*id).unwrap());
    }
    s.flush().unwrap();
    assert_eq!(
        fs.names(&dead_dir).len(),
        1,
        "only the one being appended to"
    );
}

/// What docs/STORAGE.md says of a rebuilt index: dead letters come back from the
/// dead-letter log, with a reason saying so, and one purged since comes back
/// too (the dead-letter log keeps no record of purges).
#[test]
fn a_rebuilt_index_recreates_dead_letters_even_a_purged_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = EmbeddedStore::open(dir.path()).unwrap();
        s.accept_batch(&[accept("kept", &["x"]), accept("purged", &["x"])], 100)
            .unwrap();
        for c in s.claim_due("x", 100, 1000, 10).unwrap() {
            s.bury(&dead(&c.record, 200, "HTTP 400"), c.lease).unwrap();
        }
        let purged = s.dead_letters(None, 10).unwrap()[1].record.id;
        assert!(s.purge(purged).unwrap());
        s.flush().unwrap();
    }
    std::fs::write(dir.path().join("index").join("db"), b"\xffnot sled").unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let dl = s.dead_letters(None, 10).unwrap();
    let mut names: Vec<String> = dl
        .iter()
        .map(|d| d.webhook.as_ref().unwrap().meta().dedup_id.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "purged"]);
    let DeliveryState::Dead { reason, .. } = &dl[0].record.state else {
        panic!("not dead")
    };
    assert!(
        reason.starts_with("rebuilt from the dead-letter log"),
        "{reason}"
    );
}

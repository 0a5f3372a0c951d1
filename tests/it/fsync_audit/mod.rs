//! fsync audit, from outside the process: the real `shoprelay` binary runs
//! under `strace -f`, takes webhooks on a fresh `data_dir` (one that does not
//! exist yet, so first-start directory creation is audited too), and the trace
//! is replayed to check what each `HTTP/1.1 200` promises: that the webhook it
//! names is on disk, in the write-ahead log, in a file a restart can find.
//!
//! The log (`data_dir/log/{first_seq:020}.log`) holds records, each written
//! as its own iov(s) of a group commit's `writev`: a head iov of `SRL1`, u32
//! LE length, u32 LE crc, then the payload, version byte `0x01` then the
//! webhook id as u64 LE (bytes 13..21 of the head iov); the body follows in
//! other iovs. The answer's body is `{"status":"queued"|"duplicate",
//! "id":"<16 hex digits>"}`, the same id. A 200 naming id X, written at line
//! L (the line its status line starts on; the body may follow in a later
//! write on the same socket), is a violation unless some write W carrying
//! record X to a segment S satisfies, all before L:
//! - W started before L and completed, with every byte of the record (a
//!   short write does not count);
//! - an `fsync`/`fdatasync` of S started after W completed and completed
//!   successfully (a sync does not cover a write that overlaps it);
//! - each name that makes S reachable is durable: S's name in `log/`, `log`
//!   in the `data_dir`, and the `data_dir`'s name in its parent. Each was
//!   created in the trace (the `data_dir` starts empty) before W started, was
//!   not removed since, and an `fsync`/`fdatasync` of its parent directory
//!   started after the create completed: syncing a file does not make its
//!   name durable.
//!
//! A 200 whose id no log write carried is a violation ("acknowledged but
//! never written to the log"), as is a 200 whose body names no id. Writes in
//! flight at L that no 200 before L relies on (group commit writing batch
//! N+1 while batch N's 200s go out) are fine. Nothing else under the
//! `data_dir` is relied on by a 200: not `index/` (sled, rebuilt from the
//! log), not `checkpoint` (written in the background, via a tmp file).
//!
//! `sync_file_range` does not count as a sync: it starts (or waits for)
//! writeback of a range of the page cache, but it does not flush the disk's
//! write cache and does not write the file's metadata (its size, the blocks
//! an append allocated), so after a power cut the range can still be missing.
//! Its man page says so: "None of these operations writes out the file's
//! metadata. Therefore, unless the application is strictly performing
//! overwrites of already-instantiated disk blocks, there are no guarantees
//! that the data will be available after a crash." Only `fsync` and
//! `fdatasync` are barriers here.
//!
//! What the audit cannot see: writes through a shared `mmap` or `io_uring`
//! (the relay is assumed to use neither for its log), `chdir` (relative paths
//! are resolved against the directory the relay is started in), records
//! whose head is not at the start of a buffer or iov, and an `ftruncate` that
//! cuts a record off. A directory on the chain that is renamed loses what the
//! audit knows of the names in it (its records then fail the check).
//!
//! | file | what |
//! |---|---|
//! | `strace.rs` | reading strace's lines: calls, fd paths, strings, iovs, records |
//! | `model.rs` | one pass over the trace, then each 200 judged |
//! | `cases.rs` | the audit on hand-written traces |
//! | this file | the real binary under strace |

#[cfg(test)]
mod cases;
mod model;
mod strace;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use model::audit;

use crate::common::relay::{Dest, Opts, SECRET, toml};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, until, within};

/// Where sled keeps the index, relative to the `data_dir`. Nothing there is
/// relied on by a 200; its syncs do not count for the sanity check that the
/// relay syncs files at all.
pub(super) const SLED: &str = "index";

/// The calls strace records: everything that writes, syncs or changes a name.
pub(super) const TRACED: &str = "write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync,\
                      sync_file_range,openat,mkdir,mkdirat,rename,renameat,renameat2,unlink,\
                      unlinkat,rmdir,link,linkat,ftruncate,fallocate,close";

/// strace's string limit (`-s`): a string prints at most this many bytes and
/// an iov array at most this many iovs; 1024 is `IOV_MAX`, so a `writev`'s
/// array is never cut, and an answer's headers and body fit whole.
pub(super) const STRACE_STRLEN: usize = 1024;

/// How many webhooks are sent one at a time, then how many at once.
pub(super) const SEQUENTIAL: u64 = 40;
pub(super) const BURST: u64 = 40;

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A local port nobody listens on: the destination is down.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The pids whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn webhook(n: u64) -> ShopifyWebhook<'static> {
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("fa-{n}")),
        body: format!(r#"{{"id":{n},"email":"f{n}@example.com"}}"#).into_bytes(),
        secret: SECRET,
    }
}

/// strace running the relay. Dropped while still running (a failed test),
/// it kills both, the relay first: killing only strace would leave the relay
/// running, detached.
struct Traced(Child);

impl Traced {
    /// Sends `signal` (e.g. `-TERM`) to the relay, strace's only child.
    fn signal_relay(&self, signal: &str) {
        let relay = children(self.0.id());
        assert_eq!(relay.len(), 1, "strace's children: {relay:?}");
        let sent = Command::new("kill")
            .arg(signal)
            .arg(relay[0].to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {}", relay[0]);
    }

    fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        for pid in children(self.0.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the relay under strace; returns it and the ingest URL once the
/// relay logs that it listens.
async fn spawn_traced(config: &Path, trace: &Path, cwd: &Path) -> (Traced, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("strace")
        // -x: a string with a non-printable byte (a record head) prints all
        // as \xNN, which `unescape` decodes.
        .args([
            "-f",
            "-q",
            "-yy",
            "-x",
            "-s",
            &STRACE_STRLEN.to_string(),
            "-e",
        ])
        .arg(format!("trace={}", TRACED.replace(' ', "")))
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_shoprelay"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(config)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strace");
    let stderr = child.stderr.take().unwrap();
    let traced = Traced(child);
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<String, String>>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "listening" {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Ok(v["ingest"].as_str().unwrap_or_default().to_string()));
                }
            } else if tx.is_some() {
                seen.push(line);
            }
            // Keep draining so the relay never blocks on a full pipe.
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(seen.join("\n")));
        }
    });
    let ingest = match within("the traced relay to listen", rx).await {
        Ok(Ok(addr)) => addr,
        Ok(Err(out)) => panic!("the traced relay exited before listening:\n{out}"),
        Err(_) => panic!("the stderr reader stopped"),
    };
    (traced, format!("http://{ingest}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_200_before_its_record_is_durable() {
    if !strace_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing and CI is set: .ci/run installs it"
        );
        eprintln!("fsync_audit: skipped, strace is not installed (CI unset)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // strace -yy prints resolved paths: audit the canonical ones.
    let base = tmp.path().canonicalize().unwrap();
    let data = base.join("data");
    let config = base.join("relay.toml");
    let trace = base.join("strace.out");
    let opts = Opts {
        dests: vec![Dest {
            name: "down".into(),
            url: format!("http://127.0.0.1:{}/events", closed_port()),
            extra: String::new(),
        }],
        ..Opts::default()
    };
    std::fs::write(&config, toml(&opts, &data)).unwrap();
    assert!(!data.exists());

    let (mut relay, ingest) = spawn_traced(&config, &trace, &base).await;
    let url = format!("{ingest}/webhooks/shopify/acme");
    let c = client();
    for n in 0..SEQUENTIAL {
        let r = within("a webhook's answer", webhook(n).request(&c, &url).send())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "webhook {n}");
    }
    // At once: group commit writes a batch while the last one's 200s go out.
    let burst: Vec<_> = (SEQUENTIAL..SEQUENTIAL + BURST)
        .map(|n| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { webhook(n).request(&c, &url).send().await })
        })
        .collect();
    for (i, t) in burst.into_iter().enumerate() {
        let r = within("a burst webhook's answer", t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200, "burst webhook {i}");
    }

    // SIGTERM to the relay; strace exits (and has written the whole trace)
    // once the relay has.
    relay.signal_relay("-TERM");
    until("the relay (and strace) to exit", || relay.exited()).await;

    let text = String::from_utf8_lossy(&std::fs::read(&trace).unwrap()).into_owned();
    let report = audit(&text, &data, &base);
    eprintln!(
        "fsync_audit: {} trace lines, {} `HTTP/1.1 200` writes ({} matched to a log record), \
         {} records written, {} file syncs, {} violations",
        report.lines,
        report.oks,
        report.matched,
        report.record_writes,
        report.file_syncs,
        report.violation_count
    );
    let expected = (SEQUENTIAL + BURST) as usize;
    // Sanity: a parser that sees nothing must not pass.
    let sane = report.oks >= expected
        && report.file_syncs >= 1
        && report.matched == report.oks
        && report.unreadable_count == 0;
    if !sane || report.violation_count > 0 {
        // The report names trace lines: keep the trace to read them in.
        let kept = tmp.keep();
        eprintln!(
            "fsync_audit: trace kept in {}",
            kept.join("strace.out").display()
        );
    }
    assert!(
        report.oks >= expected,
        "only {} `HTTP/1.1 200` writes in the trace",
        report.oks
    );
    assert!(
        report.file_syncs >= 1,
        "no fsync/fdatasync of a file under {} in the trace",
        data.display()
    );
    assert!(report.unreadable_count == 0, "{}", report.describe());
    assert!(
        report.matched == report.oks,
        "only {} of {} 200s name an id that a write to the log carried:\n{}",
        report.matched,
        report.oks,
        report.describe()
    );
    assert!(report.violation_count == 0, "{}", report.describe());
}

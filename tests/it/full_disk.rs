//! A nearly full disk answers 503 (the sender retries) instead of letting sled
//! fill it: sled 0.34 hangs in `flush()` on ENOSPC rather than failing.
//! Needs root to mount a small tmpfs; CI runs as root.

use std::process::Command;

use crate::common::relay::{Opts, Relay, SECRET};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, send_json, within};

struct Mount(tempfile::TempDir);

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Mount(dir))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn full_disk_answers_503() {
    let Some(mount) = Mount::tmpfs("16m") else {
        crate::common::skip("cannot mount a tmpfs here (run as root)");
        return;
    };
    let data = tempfile::Builder::new().tempdir_in(mount.0.path()).unwrap();
    let opts = Opts {
        max_body_bytes: 1 << 20,
        server_extra: "min_free_bytes = 8388608".into(),
        // A destination that is never reached keeps every body stored.
        dests: vec![crate::common::relay::Dest {
            name: "down".into(),
            url: "http://127.0.0.1:9/x".into(),
            extra: String::new(),
        }],
        ..Opts::default()
    };
    let relay = Relay::start_in(opts, data).await;
    let c = client();
    let url = relay.shopify_url("acme");
    let mut statuses = Vec::new();
    for i in 0..64 {
        let body = format!(r#"{{"id":{i},"pad":"{}"}}"#, "x".repeat(400_000)).into_bytes();
        let h = ShopifyWebhook {
            topic: "orders/create",
            event_id: Some(format!("full-{i}")),
            body,
            secret: SECRET,
        };
        let status = h.request(&c, &url).send().await.unwrap().status().as_u16();
        statuses.push(status);
        if status == 503 {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&503),
        "disk never filled: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert_eq!(
        relay.healthz().await,
        503,
        "healthz must say the relay cannot accept"
    );
    // Everything acknowledged before the 503 is still there after a restart.
    let acked = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        acked >= 5,
        "only {acked} accepted before the reserve was hit"
    );
    // Below the reserve, a webhook accepted before needs no write: still
    // answered `duplicate` (the sender stops retrying it), and healthz stays 503.
    let again = ShopifyWebhook {
        topic: "orders/create",
        event_id: Some("full-0".into()),
        body: format!(r#"{{"id":0,"pad":"{}"}}"#, "x".repeat(400_000)).into_bytes(),
        secret: SECRET,
    };
    let v = send_json("re-send below the reserve", again.request(&c, &url)).await;
    assert_eq!(v["status"], "duplicate", "{v}");
    assert_eq!(
        relay.healthz().await,
        503,
        "a duplicate is no sign the disk has room"
    );
    let dir = relay.stop().await;
    let relay = Relay::start_in(
        Opts {
            server_extra: "min_free_bytes = 0".into(),
            ..Opts::default()
        },
        dir,
    )
    .await;
    for i in 0..acked {
        let body = format!(r#"{{"id":{i},"pad":"{}"}}"#, "x".repeat(400_000)).into_bytes();
        let h = ShopifyWebhook {
            topic: "orders/create",
            event_id: Some(format!("full-{i}")),
            body,
            secret: SECRET,
        };
        let v = send_json("re-send", h.request(&c, &relay.shopify_url("acme"))).await;
        assert_eq!(
            v["status"], "duplicate",
            "webhook {i} acknowledged before the disk filled was lost: {v}"
        );
    }
    relay.stop().await;
    drop(mount);
}

/// The relay's `min_free_bytes` in the cycle test.
const CYCLE_RESERVE: u64 = 4 * MIB;
const CYCLE_TMPFS: &str = "32m";
/// Other files on the disk before the first cycle. The destination is down
/// in every cycle, so the relay's data only grows: each cycle the operator
/// frees `BALLAST_FREED` of these, so that every cycle has room to accept.
const BALLAST_START: u64 = 16 * MIB;
const BALLAST_FREED: u64 = 3 * MIB;
const MIB: u64 = 1 << 20;
const ENOSPC: i32 = 28;

/// The cycle test's relay: a reserve that trips, fast retries, one
/// destination `wh` at `dest_url` (a closed port while the disk fills; the
/// same lane with a receiver answering 200 at the end).
fn cycle_opts(dest_url: &str) -> Opts {
    Opts {
        max_body_bytes: 1 << 20,
        server_extra: format!("min_free_bytes = {CYCLE_RESERVE}"),
        dests: vec![crate::common::relay::Dest {
            name: "wh".into(),
            url: dest_url.into(),
            extra: "events = [\"track\"]".into(),
        }],
        extra: "[retry]\ninitial_interval = \"50ms\"\nmax_interval = \"200ms\"\n".into(),
        ..Opts::default()
    }
}

/// Webhook number `n` of the cycle test: order id `n` (unique), 200–400 KB.
fn big_order(n: u64) -> ShopifyWebhook<'static> {
    let pad = 200_000 + (n * 37_813) % 200_000;
    let body = format!(
        r#"{{"id":{n},"email":"c{n}@example.com","pad":"{}"}}"#,
        "x".repeat(pad as usize)
    );
    ShopifyWebhook {
        topic: "orders/create",
        event_id: Some(format!("cycle-{n}")),
        body: body.into_bytes(),
        secret: SECRET,
    }
}

/// Appends to `path` until the disk answers ENOSPC; the bytes written.
fn fill_until_enospc(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut written = 0u64;
    // Megabytes first, then pages for what is left.
    for chunk in [MIB as usize, 4096] {
        let buf = vec![0xa5u8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let e = f.write(&[0u8; 1]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOSPC), "the disk is not full: {e}");
    written
}

/// A file of `bytes` written out (a tmpfs keeps no pages for holes).
fn write_ballast(path: &std::path::Path, bytes: u64) {
    let chunk = vec![0x5au8; MIB as usize];
    let mut f = std::fs::File::create(path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        std::io::Write::write_all(&mut f, &chunk[..n]).unwrap();
        left -= n as u64;
    }
}

/// A cycle's relay: in process (stopped gracefully) or the binary (kill -9).
enum CycleRelay {
    InProcess(Relay),
    Child(crate::common::relay::Child_),
}

impl CycleRelay {
    fn ingest(&self) -> &str {
        match self {
            CycleRelay::InProcess(r) => &r.ingest,
            CycleRelay::Child(c) => &c.ingest,
        }
    }
}

/// A webhook that got a 200: its order id, its cycle, the relay's id for it.
struct Acked {
    n: u64,
    cycle: u64,
    id: String,
}

/// Five times on the same data dir, the destination down: start, accept until
/// the reserve answers 503, fill the disk to ENOSPC and keep it full for two
/// checkpoint intervals (checkpoints and delivery outcomes meet it), stop
/// (cycles 1 and 3 run the binary and end with kill -9, the others run in
/// process and stop gracefully), free the disk. Then one relay with the
/// destination up delivers every webhook any of the five acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_cycle_five_times_loses_nothing_and_the_relay_starts_each_time() {
    use crate::common::receiver::TestReceiver;
    use crate::common::relay::{spawn_binary, toml};
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::time::{Duration, Instant};

    let started = Instant::now();
    let Some(mount) = Mount::tmpfs(CYCLE_TMPFS) else {
        crate::common::skip("cannot mount a tmpfs here (run as root)");
        return;
    };
    let disk = mount.0.path().to_path_buf();
    let (filler, ballast) = (disk.join("filler"), disk.join("ballast"));
    // The binary's config lives off the small disk.
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("relay.toml");
    let mut data = Some(tempfile::Builder::new().tempdir_in(&disk).unwrap());
    write_ballast(&ballast, BALLAST_START);

    let c = client();
    let healthz = |ingest: &str| {
        let req = c.get(format!("{ingest}/healthz")).send();
        async move { within("healthz", req).await.unwrap().status().as_u16() }
    };
    let down = "http://127.0.0.1:9/events";
    let mut acked: Vec<Acked> = Vec::new();
    let mut per_cycle = Vec::new();
    for cycle in 0..5u64 {
        // (1) Start on the same data dir, the destination down; the relay
        // must open its store (it answers /admin/stats).
        let killed = cycle % 2 == 1;
        let relay = if killed {
            let dir = data.as_ref().unwrap().path();
            std::fs::write(&conf, toml(&cycle_opts(down), dir)).unwrap();
            let mut child = spawn_binary(&conf);
            child.wait_open().await;
            CycleRelay::Child(child)
        } else {
            let mut r = Relay::start_in(cycle_opts(down), data.take().unwrap()).await;
            r.wait_open().await;
            CycleRelay::InProcess(r)
        };
        let url = format!("{}/webhooks/shopify/acme", relay.ingest());

        // (2) Accept until the reserve answers 503.
        let before = acked.len();
        let mut last = 0;
        for i in 0..500 {
            let n = cycle * 1000 + i;
            let r = within("ingest", big_order(n).request(&c, &url).send())
                .await
                .unwrap();
            last = r.status().as_u16();
            match last {
                200 => {
                    let v: serde_json::Value = within("ingest answer", r.json()).await.unwrap();
                    assert_eq!(v["status"], "queued", "cycle {cycle}, webhook {n}: {v}");
                    let id = v["id"].as_str().unwrap().to_string();
                    acked.push(Acked { n, cycle, id });
                }
                503 => break,
                s => panic!("cycle {cycle}: webhook {n} answered {s}"),
            }
        }
        assert_eq!(last, 503, "cycle {cycle}: the reserve never tripped");
        let accepted = acked.len() - before;
        assert!(
            accepted > 0,
            "cycle {cycle}: nothing accepted after {} MiB were freed",
            BALLAST_FREED / MIB
        );

        // (3) Fill the disk for real while the relay runs. Ingest still
        // answers (a 200 here would have to be delivered like any other).
        let filled = fill_until_enospc(&filler);
        let n = cycle * 1000 + 999;
        let r = within(
            "ingest on a full disk",
            big_order(n).request(&c, &url).send(),
        )
        .await
        .unwrap();
        match r.status().as_u16() {
            503 => {}
            200 => {
                let v: serde_json::Value = within("ingest answer", r.json()).await.unwrap();
                let id = v["id"].as_str().unwrap().to_string();
                acked.push(Acked { n, cycle, id });
            }
            s => panic!("cycle {cycle}: on a full disk, ingest answered {s}"),
        }
        // The disk stays full for two checkpoint intervals: the relay's
        // checkpoints and retries meet ENOSPC. It keeps answering meanwhile.
        let full_since = Instant::now();
        let mut health_when_full = 0;
        while full_since.elapsed() < 2 * shoprelay::CHECKPOINT_EVERY {
            health_when_full = healthz(relay.ingest()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // (4) Stop: gracefully, or kill -9.
        let mut complaints: BTreeMap<String, usize> = BTreeMap::new();
        match relay {
            CycleRelay::InProcess(r) => data = Some(r.stop().await),
            CycleRelay::Child(mut child) => {
                child.child.kill().unwrap();
                child.child.wait().unwrap();
                for line in child.log.last() {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if v["level"] == "WARN" || v["level"] == "ERROR" {
                        let message = v["message"].as_str().unwrap_or_default();
                        let what = format!(
                            "{} {}",
                            v["level"].as_str().unwrap_or_default(),
                            message.chars().take(60).collect::<String>()
                        );
                        *complaints.entry(what).or_default() += 1;
                    }
                }
            }
        }
        // (5) Free the disk: the filler, and some of the other files.
        std::fs::remove_file(&filler).unwrap();
        let left = BALLAST_START.saturating_sub(BALLAST_FREED * (cycle + 1));
        std::fs::File::options()
            .write(true)
            .open(&ballast)
            .unwrap()
            .set_len(left)
            .unwrap();
        eprintln!(
            "cycle {cycle} ({}): {accepted} acknowledged; filler {:.1} MiB; healthz while full {health_when_full}; {:.1?} so far{}",
            if killed { "kill -9" } else { "graceful stop" },
            filled as f64 / MIB as f64,
            started.elapsed(),
            if complaints.is_empty() {
                String::new()
            } else {
                format!("; the child's last log lines had {complaints:?}")
            }
        );
        per_cycle.push(accepted);
    }

    // (6) The disk has room, the destination is up: every acknowledged
    // webhook arrives (matched by the order id in its body).
    std::fs::remove_file(&ballast).unwrap();
    let receiver = TestReceiver::start().await;
    let mut relay = Relay::start_in(cycle_opts(&receiver.url), data.take().unwrap()).await;
    relay.wait_open().await;
    // order id -> the messageIds it arrived with, one per request.
    let delivered = || -> HashMap<String, Vec<String>> {
        let mut d: HashMap<String, Vec<String>> = HashMap::new();
        for r in receiver.received() {
            let v = r.json();
            let order = v["properties"]["order_id"].as_str().unwrap_or_default();
            let message = v["messageId"].as_str().unwrap_or_default();
            d.entry(order.to_string())
                .or_default()
                .push(message.to_string());
        }
        d
    };
    let missing = || -> Vec<String> {
        let d = delivered();
        acked
            .iter()
            .filter(|a| !d.contains_key(&a.n.to_string()))
            .map(|a| format!("order {} (cycle {}, id {})", a.n, a.cycle, a.id))
            .collect()
    };
    // Bounded: polls until nothing is missing or the limit passes.
    let deadline = Instant::now() + crate::common::LIMIT;
    while !missing().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost = missing();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged webhooks not delivered within {:?} (acknowledged per cycle {per_cycle:?}); the first: {:?}",
        lost.len(),
        acked.len(),
        crate::common::LIMIT,
        &lost[..lost.len().min(10)]
    );
    relay.wait_drained().await;
    relay.stop().await;
    drop(mount);

    // A webhook may arrive more than once (at least once), but always as the
    // same messageId.
    let d = delivered();
    for a in &acked {
        let ids: HashSet<&String> = d[&a.n.to_string()].iter().collect();
        assert_eq!(
            ids.len(),
            1,
            "order {} arrived with different messageIds: {ids:?}",
            a.n
        );
    }
    let repeated = acked
        .iter()
        .filter(|a| d[&a.n.to_string()].len() > 1)
        .count();
    eprintln!(
        "acknowledged per cycle {per_cycle:?}, {} in all, every one delivered: {} requests, {repeated} webhooks arrived more than once (same messageId); {:.1?}",
        acked.len(),
        receiver.count(),
        started.elapsed()
    );
    // The destination was down until the end: every delivery was a retry in
    // the index, none was delivered before a restart, so none may repeat
    // (they all did before a lane skipped what it had handed to the index).
    assert_eq!(
        repeated, 0,
        "webhooks delivered twice after the full-disk cycles"
    );
}

//! The store contract on PostgreSQL, then what is its own (several stores on
//! one database: leases across relays, dedup across relays, retention).
//!
//! They need a server: `scripts/test-postgres` starts a throwaway one and
//! sets `SHOPRELAY_TEST_PG_URL`. Without it they pass without running and
//! say so on stderr; under `CI=true` a missing server fails them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use super::PgStore;
use crate::queue::contract::{accept, dead, store_contract};
use crate::queue::*;

/// The variable naming the test server.
pub const URL_VAR: &str = "SHOPRELAY_TEST_PG_URL";

/// The test server's URL, or None (reported once; a failure under CI).
fn server() -> Option<String> {
    static SKIPPED: Once = Once::new();
    match std::env::var(URL_VAR) {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{URL_VAR} is not set under CI=true: start a server with scripts/test-postgres")
        }
        _ => {
            SKIPPED.call_once(|| {
                // Straight to stderr: the test harness captures print macros.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL store tests skipped: {URL_VAR} is not set (run scripts/test-postgres)"
                );
            });
            None
        }
    }
}

fn ready() -> bool {
    server().is_some()
}

/// A schema of its own for `name` on the test server; returns a URL whose
/// connections use it.
pub fn schema_url(name: &str) -> String {
    let url = server().expect("a test server");
    let schema = format!("t_{:016x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        h.finish()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .unwrap();
        drop(c);
        let _ = conn.await;
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// The store of "relay" `dir` (its lease owner) on the schema of `dir`.
fn open(dir: &Path) -> Box<dyn Store> {
    Box::new(open_as(dir, &dir.display().to_string()))
}

fn open_as(dir: &Path, owner: &str) -> PgStore {
    PgStore::open(&schema_url(&dir.display().to_string()), 4, owner).unwrap()
}

store_contract!(open, when: ready);

#[test]
fn a_dead_relays_leases_end_and_another_relay_takes_them() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        open_as(dir.path(), "relay-a"),
        open_as(dir.path(), "relay-b"),
    );
    a.accept_batch(&[accept("w1", &["x"]), accept("w2", &["x"])], 100)
        .unwrap();
    let held = a.claim_due("x", 100, 1000, 1).unwrap();
    // The other relay takes what a does not hold, never what it does.
    let other = b.claim_due("x", 100, 1000, 10).unwrap();
    assert_eq!((held.len(), other.len()), (1, 1));
    assert_ne!(held[0].record.id, other[0].record.id);
    b.complete_many("x", &[(other[0].record.id, other[0].lease)])
        .unwrap();
    // a dies holding its lease; b sees when it ends and takes it then.
    drop(a);
    assert_eq!(b.next_due("x").unwrap(), Some(1000));
    assert!(b.claim_due("x", 999, 2000, 10).unwrap().is_empty());
    let taken = b.claim_due("x", 1000, 2000, 10).unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].record.id, held[0].record.id);
    assert_eq!(taken[0].webhook.meta().dedup_id, "w1", "oldest first");
    b.complete_many("x", &[(taken[0].record.id, taken[0].lease)])
        .unwrap();
    assert!(b.stats().unwrap().0.is_empty());
}

#[test]
fn an_outcome_needs_the_owner_as_well_as_the_token() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        open_as(dir.path(), "relay-a"),
        open_as(dir.path(), "relay-b"),
    );
    a.accept_batch(&[accept("w1", &["x"])], 100).unwrap();
    let c = a.claim_due("x", 100, 1000, 10).unwrap();
    // b writes with a's token: nothing changes.
    b.complete_many("x", &[(c[0].record.id, c[0].lease)])
        .unwrap();
    b.bury(&dead(&c[0].record, 200, "not mine"), c[0].lease)
        .unwrap();
    let (lanes, dead_count) = a.stats().unwrap();
    assert_eq!((lanes["x"].pending, dead_count), (1, 0));
    a.complete_many("x", &[(c[0].record.id, c[0].lease)])
        .unwrap();
    assert!(a.stats().unwrap().0.is_empty());
}

#[test]
fn dedup_holds_across_relays_even_when_they_commit_at_once() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<PgStore> = (0..3)
        .map(|i| open_as(dir.path(), &format!("relay-{i}")))
        .collect();
    // Every relay gets the same 50 webhooks, in a different order, at once.
    let outcomes: Vec<Vec<AcceptOutcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, st)| {
                s.spawn(move || {
                    let mut batch: Vec<Accept> =
                        (0..50).map(|n| accept(&format!("w{n}"), &["x"])).collect();
                    batch.rotate_left(i * 17);
                    st.accept_batch(&batch, 100).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let queued = outcomes
        .iter()
        .flatten()
        .filter(|o| matches!(o, AcceptOutcome::Queued(_)))
        .count();
    assert_eq!(queued, 50, "each webhook queued once, by one relay");
    assert_eq!(stores[0].stats().unwrap().0["x"].pending, 50);
}

/// A connection of its own to `url` (`schema_url`: a transaction the test
/// holds open), and its backend's pid.
async fn raw(url: &str) -> (tokio_postgres::Client, i32) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pid = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    (c, pid)
}

/// Waits until `n` backends wait for a lock that backend `pid` holds (asks
/// on a connection of its own: within a transaction the server's activity
/// view does not change).
async fn blocked_by(url: &str, pid: i32, n: i64) {
    let (c, _) = raw(url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{waiting} accepts wait for the other transaction, not {n}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_key_committed_by_another_transaction_mid_accept_is_a_duplicate_of_it() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(open_as(dir.path(), "relay"));
    let url = schema_url(&dir.path().display().to_string());
    let rt = runtime();
    rt.block_on(async {
        let (mut other, pid) = raw(&url).await;
        let w1 = accept("w1", &["x"]);
        // Another batch (here a bare transaction) has inserted w1's key and
        // not committed yet: the accept waits for it. Its statement began
        // before the other committed, so it must read the id afresh.
        let tx = other.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO shoprelay_dedup (key, webhook_id, accepted_at_ms) VALUES ($1, 4242, 1)",
            &[&super::accept::key(&w1).to_vec()],
        )
        .await
        .unwrap();
        let (st, batch) = (
            s.clone(),
            vec![accept("w0", &["x"]), w1, accept("w2", &["x"])],
        );
        let pending = tokio::task::spawn_blocking(move || st.accept_batch(&batch, 100));
        blocked_by(&url, pid, 1).await;
        tx.commit().await.unwrap();
        let out = pending.await.unwrap().unwrap();
        assert!(matches!(out[0], AcceptOutcome::Queued(_)), "{out:?}");
        assert_eq!(out[1], AcceptOutcome::Duplicate(4242));
        assert!(matches!(out[2], AcceptOutcome::Queued(_)), "{out:?}");
        assert_eq!(
            s.stats().unwrap().0["x"].pending,
            2,
            "nothing stored for w1"
        );
        // Rolled back instead: the accept stores it.
        let w3 = accept("w3", &["x"]);
        let tx = other.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO shoprelay_dedup (key, webhook_id, accepted_at_ms) VALUES ($1, 4343, 1)",
            &[&super::accept::key(&w3).to_vec()],
        )
        .await
        .unwrap();
        let st = s.clone();
        let pending = tokio::task::spawn_blocking(move || st.accept_batch(&[w3], 100));
        blocked_by(&url, pid, 1).await;
        tx.rollback().await.unwrap();
        let out = pending.await.unwrap().unwrap();
        assert!(
            matches!(out[0], AcceptOutcome::Queued(id) if id != 4343),
            "{out:?}"
        );
        assert_eq!(s.stats().unwrap().0["x"].pending, 3);
    });
}

#[test]
fn a_key_in_two_batches_in_flight_at_once_is_queued_once() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        std::sync::Arc::new(open_as(dir.path(), "relay-a")),
        std::sync::Arc::new(open_as(dir.path(), "relay-b")),
    );
    let url = schema_url(&dir.path().display().to_string());
    let rt = runtime();
    rt.block_on(async {
        let (mut other, pid) = raw(&url).await;
        // A third transaction holds w1's key, so relay a's batch with w1
        // stays in flight while others commit.
        let tx = other.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO shoprelay_dedup (key, webhook_id, accepted_at_ms) VALUES ($1, 4242, 1)",
            &[&super::accept::key(&accept("w1", &["x"])).to_vec()],
        )
        .await
        .unwrap();
        let st = a.clone();
        let first = tokio::task::spawn_blocking(move || {
            st.accept_batch(&[accept("w1", &["x"]), accept("w2", &["x"])], 100)
        });
        blocked_by(&url, pid, 1).await;
        // A batch of other keys commits meanwhile.
        let st = b.clone();
        let w3 = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || st.accept_batch(&[accept("w3", &["x"])], 100)),
        )
        .await
        .expect("a batch of other keys commits while the first waits")
        .unwrap()
        .unwrap();
        assert!(matches!(w3[0], AcceptOutcome::Queued(_)), "{w3:?}");
        // w1 again, in a second batch in flight: both wait for the key.
        let st = b.clone();
        let second = tokio::task::spawn_blocking(move || {
            st.accept_batch(&[accept("w4", &["x"]), accept("w1", &["x"])], 100)
        });
        blocked_by(&url, pid, 2).await;
        tx.rollback().await.unwrap();
        let (first, second) = (
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        );
        assert!(matches!(first[1], AcceptOutcome::Queued(_)), "{first:?}");
        assert!(matches!(second[0], AcceptOutcome::Queued(_)), "{second:?}");
        let copies = [first[0], second[1]];
        let queued = copies
            .iter()
            .filter(|o| matches!(o, AcceptOutcome::Queued(_)))
            .count();
        assert_eq!(queued, 1, "exactly one copy queued: {copies:?}");
        let ids: Vec<u64> = copies
            .iter()
            .map(|o| match o {
                AcceptOutcome::Queued(id) | AcceptOutcome::Duplicate(id) => *id,
            })
            .collect();
        assert_eq!(ids[0], ids[1], "the duplicate names the queued copy");
        assert_ne!(ids[0], 4242, "the rolled-back copy is not it");
    });
    assert_eq!(a.stats().unwrap().0["x"].pending, 4);
}

#[test]
fn shared_keys_racing_in_concurrent_batches_are_queued_once_each() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_as(dir.path(), "relay");
    // Two batches at once, round after round, sharing half their keys (in
    // opposite orders), each also holding a copy of a key twice.
    for round in 0..20 {
        let go = std::sync::Barrier::new(2);
        let outcomes: Vec<(Vec<String>, Vec<AcceptOutcome>)> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|side| {
                    let (s, go) = (&s, &go);
                    sc.spawn(move || {
                        let mut names: Vec<String> = (0..16)
                            .map(|n| format!("r{round}-shared-{n}"))
                            .chain((0..16).map(|n| format!("r{round}-own{side}-{n}")))
                            .collect();
                        if side == 1 {
                            names.reverse();
                        }
                        names.push(names[3].clone());
                        let batch: Vec<Accept> = names.iter().map(|n| accept(n, &["x"])).collect();
                        go.wait();
                        (names, s.accept_batch(&batch, 100).unwrap())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut by_name: BTreeMap<&str, Vec<AcceptOutcome>> = BTreeMap::new();
        for (names, out) in &outcomes {
            assert_eq!(names.len(), out.len());
            for (n, o) in names.iter().zip(out) {
                by_name.entry(n).or_default().push(*o);
            }
        }
        assert_eq!(by_name.len(), 48);
        for (name, outs) in by_name {
            let queued: Vec<u64> = outs
                .iter()
                .filter_map(|o| match o {
                    AcceptOutcome::Queued(id) => Some(*id),
                    _ => None,
                })
                .collect();
            assert_eq!(queued.len(), 1, "{name}: {outs:?}");
            for o in &outs {
                let (AcceptOutcome::Queued(id) | AcceptOutcome::Duplicate(id)) = o;
                assert_eq!(*id, queued[0], "{name}: {outs:?}");
            }
        }
    }
    assert_eq!(s.stats().unwrap().0["x"].pending, 20 * 48);
}

#[test]
fn bodies_are_compressed_with_lz4_where_the_server_can() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_as(dir.path(), "relay");
    let (can, uses): (bool, String) = s
        .call(|pool| async move {
            let c = pool.get().await.map_err(super::pool_err)?;
            let r = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_settings
                                     WHERE name = 'default_toast_compression'
                                       AND 'lz4' = ANY (enumvals)),
                            (SELECT attcompression::text FROM pg_attribute
                              WHERE attrelid = 'shoprelay_webhooks'::regclass AND attname = 'body')",
                    &[],
                )
                .await
                .map_err(super::pg_err)?;
            Ok((r.get(0), r.get(1)))
        })
        .unwrap();
    assert_eq!(uses, if can { "l" } else { "" });
}

#[test]
fn an_unchanged_identity_entry_is_neither_locked_nor_rewritten() {
    if !ready() {
        return;
    }
    use crate::mapping::IdKind;
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(open_as(dir.path(), "relay"));
    let entry = |v: &str| vec![(IdKind::Customer, "1".to_string(), v.to_string())];
    s.identity_put("a.shop", &entry("ann@example.com"), 1_000)
        .unwrap();
    let url = schema_url(&dir.path().display().to_string());
    let rt = runtime();
    rt.block_on(async {
        // Another relay's transaction holds the entry's row.
        let (mut other, pid) = raw(&url).await;
        let tx = other.transaction().await.unwrap();
        tx.execute("SELECT 1 FROM shoprelay_identity FOR UPDATE", &[])
            .await
            .unwrap();
        // The same value an hour later: nothing to write, so nothing to wait for.
        let st = s.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || {
                st.identity_put("a.shop", &entry("ann@example.com"), 3_600_000)
            }),
        )
        .await
        .expect("an unchanged entry waits for no lock")
        .unwrap()
        .unwrap();
        // A changed one is written, after the other transaction.
        let st = s.clone();
        let changed = tokio::task::spawn_blocking(move || {
            st.identity_put("a.shop", &entry("ann@example.org"), 3_600_000)
        });
        blocked_by(&url, pid, 1).await;
        tx.rollback().await.unwrap();
        changed.await.unwrap().unwrap();
    });
    let seen: i64 = s
        .call(|pool| async move {
            let c = pool.get().await.map_err(super::pool_err)?;
            let r = c
                .query_one("SELECT seen_at_ms FROM shoprelay_identity", &[])
                .await
                .map_err(super::pg_err)?;
            Ok(r.get(0))
        })
        .unwrap();
    assert_eq!(seen, 3_600_000);
    assert_eq!(
        s.identity_get("a.shop", IdKind::Customer, "1")
            .unwrap()
            .as_deref(),
        Some("ann@example.org")
    );
}

#[test]
fn retention_deletes_what_no_delivery_needs() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = open_as(dir.path(), "relay");
    s.accept_batch(&[accept("w1", &["x", "y"]), accept("w2", &["x"])], 100)
        .unwrap();
    let count = |s: &PgStore| -> i64 {
        s.call(|pool| async move {
            let c = pool.get().await.map_err(super::pool_err)?;
            let r = c
                .query_one("SELECT count(*) FROM shoprelay_webhooks", &[])
                .await
                .map_err(super::pg_err)?;
            Ok(r.get(0))
        })
        .unwrap()
    };
    assert_eq!(count(&s), 2);
    let x = s.claim_due("x", 100, 1000, 10).unwrap();
    let done: Vec<_> = x.iter().map(|c| (c.record.id, c.lease)).collect();
    s.complete_many("x", &done).unwrap();
    assert_eq!(count(&s), 1, "w2 is done; w1 still goes to y");
    let y = s.claim_due("y", 100, 1000, 10).unwrap();
    s.complete_many("y", &[(y[0].record.id, y[0].lease)])
        .unwrap();
    assert_eq!(count(&s), 0);
    assert_eq!(s.sweep_now().unwrap(), 0, "nothing left behind");
    assert_eq!(s.expire_dedup(101).unwrap(), 2);
}

#[test]
fn another_relays_accept_and_replay_wake_this_relays_lane() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        open_as(dir.path(), "relay-a"),
        open_as(dir.path(), "relay-b"),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    b.listen(std::sync::Arc::new(move |lane: &str| {
        let _ = tx.lock().unwrap().send(lane.to_string());
    }));
    let wait = Duration::from_secs(10);
    // Listening starts by waking every lane with work: none yet. Keep
    // accepting until b is listening and hears one.
    let mut n = 0;
    let heard = loop {
        n += 1;
        a.accept_batch(&[accept(&format!("w{n}"), &["x"])], 100)
            .unwrap();
        if let Ok(lane) = rx.recv_timeout(Duration::from_millis(200)) {
            break lane;
        }
        assert!(n < 50, "b never heard of a's accepts");
    };
    assert_eq!(heard, "x");
    while rx.try_recv().is_ok() {}
    let c = a.claim_due("x", 100, 1000, 1).unwrap();
    a.bury(&dead(&c[0].record, 200, "HTTP 400"), c[0].lease)
        .unwrap();
    a.replay(c[0].record.id, 300).unwrap();
    assert_eq!(rx.recv_timeout(wait).as_deref(), Ok("x"), "replay wakes b");
}

/// The CA of the test server's certificate (`SHOPRELAY_TEST_PG_CA`, set by
/// scripts/test-postgres, whose server takes TLS); None (reported once) when
/// the server was started otherwise; under CI a failure.
fn tls_server() -> Option<(String, String)> {
    static SKIPPED: Once = Once::new();
    let url = server()?;
    match std::env::var("SHOPRELAY_TEST_PG_CA") {
        Ok(ca) if !ca.is_empty() => Some((url, ca)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "SHOPRELAY_TEST_PG_CA is not set under CI=true: start the server with scripts/test-postgres"
            )
        }
        _ => {
            SKIPPED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL TLS tests skipped: SHOPRELAY_TEST_PG_CA is not set (run scripts/test-postgres)"
                );
            });
            None
        }
    }
}

/// The test server's URL as `user` at `host`, with `query` appended.
fn variant(server: &str, user: &str, host: &str, query: &str) -> String {
    let mut u = url::Url::parse(server).unwrap();
    u.set_username(user).unwrap();
    u.set_host(Some(host)).unwrap();
    let mut s = u.to_string();
    if !query.is_empty() {
        s.push(if u.query().is_some() { '&' } else { '?' });
        s.push_str(query);
    }
    s
}

/// Connects as the store does and asks the server whether the connection
/// is encrypted.
fn encrypted(url: &str) -> Result<bool, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (pg, tls) = super::connect_config(url).map_err(|e| e.to_string())?;
        let (c, conn) = pg
            .connect(tls)
            .await
            .map_err(|e| super::pg_err(e).to_string())?;
        let conn = tokio::spawn(conn);
        let ssl: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        drop(c);
        let _ = conn.await;
        Ok(ssl)
    })
}

#[test]
fn sslmode_and_sslrootcert_against_a_server_with_tls() {
    let Some((server, ca)) = tls_server() else {
        return;
    };
    let at = |host: &str, query: &str| variant(&server, "shoprelay", host, query);
    let root = format!("sslrootcert={ca}");
    // The server's certificate is for `localhost`, signed by the test CA.
    let cases: &[(String, Result<bool, &str>)] = &[
        (at("127.0.0.1", "sslmode=disable"), Ok(false)),
        (at("127.0.0.1", ""), Ok(true)),
        (at("127.0.0.1", "sslmode=prefer"), Ok(true)),
        (at("127.0.0.1", "sslmode=require"), Ok(true)),
        (
            at("localhost", &format!("sslmode=verify-full&{root}")),
            Ok(true),
        ),
        (
            at("127.0.0.1", &format!("sslmode=verify-ca&{root}")),
            Ok(true),
        ),
        (
            at("127.0.0.1", &format!("sslmode=verify-full&{root}")),
            Err("not valid for name"),
        ),
        // libpq: require with a root file checks the chain (as verify-ca).
        (
            at("127.0.0.1", &format!("sslmode=require&{root}")),
            Ok(true),
        ),
        // The system's roots do not know the test CA.
        (
            at("localhost", "sslmode=verify-full"),
            Err("invalid peer certificate"),
        ),
        (
            at("localhost", "sslrootcert=system"),
            Err("invalid peer certificate"),
        ),
    ];
    for (url, want) in cases {
        let got = encrypted(url);
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g, "{url}"),
            (Err(w), Err(g)) => assert!(
                g.contains(w) || g.contains("no trusted root certificates"),
                "{url}: {g}"
            ),
            _ => panic!("{url}: {got:?}, wanted {want:?}"),
        }
    }
    // The role the server takes only over TLS.
    let tls_only = |query: &str| variant(&server, "shoprelay_tls", "127.0.0.1", query);
    assert_eq!(encrypted(&tls_only("sslmode=require")), Ok(true));
    let refused = encrypted(&tls_only("sslmode=disable")).unwrap_err();
    assert!(refused.contains("pg_hba.conf rejects"), "{refused}");
}

#[test]
fn a_store_over_tls_accepts_claims_and_hears_another_relay() {
    let Some((server, _ca)) = tls_server() else {
        return;
    };
    // The schema is made over the plain test URL; the stores connect as the
    // role the server takes only over TLS.
    let dir = tempfile::tempdir().unwrap();
    let plain = schema_url(&dir.path().display().to_string());
    let query = plain.split_once('?').map_or("", |(_, q)| q);
    let url = variant(
        &server,
        "shoprelay_tls",
        "127.0.0.1",
        &format!("sslmode=require&{query}"),
    );
    let a = PgStore::open(&url, 2, "relay-a").unwrap();
    let b = PgStore::open(&url, 2, "relay-b").unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    b.listen(std::sync::Arc::new(move |lane: &str| {
        let _ = tx.lock().unwrap().send(lane.to_string());
    }));
    let mut n = 0;
    loop {
        n += 1;
        a.accept_batch(&[accept(&format!("w{n}"), &["x"])], 100)
            .unwrap();
        if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            break;
        }
        assert!(n < 50, "b never heard of a's accepts over TLS");
    }
    let claimed = b.claim_due("x", 100, 1000, 100).unwrap();
    assert_eq!(claimed.len(), n);
    let done: Vec<_> = claimed.iter().map(|c| (c.record.id, c.lease)).collect();
    b.complete_many("x", &done).unwrap();
    assert!(a.stats().unwrap().0.is_empty());
}

/// What stats should say, counted from the deliveries themselves (the scan
/// the counts replace): per lane (pending, oldest due), and dead letters.
fn counted(s: &PgStore) -> (BTreeMap<String, (u64, Option<u64>)>, u64) {
    s.call(|pool| async move {
        let c = pool.get().await.map_err(super::pool_err)?;
        let lanes = c
            .query(
                "SELECT lane, count(*), min(due_ms) FROM shoprelay_deliveries
                  WHERE dead_at_ms IS NULL GROUP BY lane",
                &[],
            )
            .await
            .map_err(super::pg_err)?
            .iter()
            .map(|r| {
                let due: Option<i64> = r.get(2);
                (
                    r.get::<_, String>(0),
                    (r.get::<_, i64>(1) as u64, due.map(|d| d as u64)),
                )
            })
            .collect();
        let dead: i64 = c
            .query_one(
                "SELECT count(*) FROM shoprelay_deliveries WHERE dead_at_ms IS NOT NULL",
                &[],
            )
            .await
            .map_err(super::pg_err)?
            .get(0);
        Ok((lanes, dead as u64))
    })
    .unwrap()
}

/// stats, in the shape of [`counted`].
fn stated(s: &PgStore) -> (BTreeMap<String, (u64, Option<u64>)>, u64) {
    let (lanes, dead) = s.stats().unwrap();
    (
        lanes
            .into_iter()
            .map(|(l, st)| (l, (st.pending, st.oldest_due_ms)))
            .collect(),
        dead,
    )
}

/// Rows waiting in the deltas table (not folded yet).
fn deltas(s: &PgStore) -> i64 {
    s.call(|pool| async move {
        let c = pool.get().await.map_err(super::pool_err)?;
        let r = c
            .query_one("SELECT count(*) FROM shoprelay_lane_deltas", &[])
            .await
            .map_err(super::pg_err)?;
        Ok(r.get(0))
    })
    .unwrap()
}

#[test]
fn counts_are_exact_before_and_after_folds_from_any_relay() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        open_as(dir.path(), "relay-a"),
        open_as(dir.path(), "relay-b"),
    );
    let agree = |step: &str| {
        let want = counted(&a);
        assert_eq!(stated(&a), want, "a, after {step}");
        assert_eq!(stated(&b), want, "b, after {step}");
    };
    let batch = |from: usize, lanes: &[&str]| -> Vec<Accept> {
        (from..from + 20)
            .map(|n| accept(&format!("w{n}"), lanes))
            .collect()
    };
    a.accept_batch(&batch(0, &["x", "y"]), 100).unwrap();
    b.accept_batch(&batch(20, &["x"]), 200).unwrap();
    agree("accepts, nothing folded");
    assert!(deltas(&a) > 0);
    assert!(a.fold_now().unwrap());
    assert_eq!(deltas(&a), 0);
    agree("a fold");
    // In flight: due at 100, held until 5000; the oldest due time stays 100.
    let held = a.claim_due("x", 300, 5000, 15).unwrap();
    agree("a claim");
    let taken = b.claim_due("x", 300, 5000, 15).unwrap();
    b.complete_many(
        "x",
        &taken
            .iter()
            .map(|c| (c.record.id, c.lease))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    agree("b completes");
    for c in &held[..5] {
        a.bury(&dead(&c.record, 400, "HTTP 400"), c.lease).unwrap();
    }
    b.fold_now().unwrap();
    agree("burials, b folds");
    a.replay(held[0].record.id, 500).unwrap();
    a.purge(held[1].record.id).unwrap();
    agree("replay and purge");
    let y = b.claim_due("y", 300, 5000, 100).unwrap();
    b.complete_many(
        "y",
        &y.iter().map(|c| (c.record.id, c.lease)).collect::<Vec<_>>(),
    )
    .unwrap();
    a.fold_now().unwrap();
    agree("y drained, a folds");
    assert!(
        !stated(&a).0.contains_key("y"),
        "an empty lane is not listed"
    );
    // What is left, drained: nothing pending, the dead letters counted.
    loop {
        let c = a.claim_due("x", 10_000, 20_000, 100).unwrap();
        if c.is_empty() {
            break;
        }
        a.complete_many(
            "x",
            &c.iter().map(|c| (c.record.id, c.lease)).collect::<Vec<_>>(),
        )
        .unwrap();
    }
    a.fold_now().unwrap();
    agree("drained");
    assert_eq!(stated(&a), (BTreeMap::new(), 3));
}

#[test]
fn counts_stay_exact_while_relays_write_and_fold_at_once() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<PgStore> = (0..3)
        .map(|i| open_as(dir.path(), &format!("relay-{i}")))
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let folder = s.spawn(|| {
            let mut folds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                folds += stores[0].fold_now().unwrap() as usize;
                folds += stores[1].fold_now().unwrap() as usize;
            }
            folds
        });
        let workers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, st)| {
                s.spawn(move || {
                    for round in 0..15 {
                        let batch: Vec<Accept> = (0..10)
                            .map(|n| accept(&format!("r{i}-{round}-{n}"), &["x", "y"]))
                            .collect();
                        st.accept_batch(&batch, 100).unwrap();
                        let lane = if round % 2 == 0 { "x" } else { "y" };
                        let c = st.claim_due(lane, 100, 100_000, 7).unwrap();
                        if let Some((first, rest)) = c.split_first() {
                            st.bury(&dead(&first.record, 200, "no"), first.lease)
                                .unwrap();
                            let done: Vec<_> =
                                rest.iter().map(|c| (c.record.id, c.lease)).collect();
                            st.complete_many(lane, &done).unwrap();
                            if round % 3 == 0 {
                                st.replay(first.record.id, 300).unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(folder.join().unwrap() > 0, "folded while they wrote");
    });
    let want = counted(&stores[0]);
    assert_eq!(
        want.0["x"].0 + want.0["y"].0 + want.1,
        3 * 15 * 10 * 2 - 3 * 15 * 6
    );
    for s in &stores {
        assert_eq!(stated(s), want);
    }
    stores[2].fold_now().unwrap();
    assert_eq!(stated(&stores[2]), want);
}

#[test]
fn migration_3_counts_what_the_queue_held_before_it() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = schema_url(&dir.path().display().to_string());
    // A database at version 2 with a queue in it, as a relay before counts left it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        c.batch_execute(
            "CREATE TABLE shoprelay_schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
        for m in &super::schema::MIGRATIONS[..2] {
            c.batch_execute(m.sql).await.unwrap();
            c.execute(
                "INSERT INTO shoprelay_schema_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .unwrap();
        }
        c.batch_execute(
            "INSERT INTO shoprelay_deliveries (webhook_id, slot, lane, targets, due_ms, ready_ms, dead_at_ms)
             SELECT n, 0, CASE WHEN n % 3 = 0 THEN 'y' ELSE 'x' END, '{x}', n, n,
                    CASE WHEN n % 10 = 0 THEN n END
               FROM generate_series(1, 100) AS n",
        )
        .await
        .unwrap();
        drop(c);
        let _ = conn.await;
    });
    let s = PgStore::open(&url, 2, "relay").unwrap();
    let want = counted(&s);
    assert_eq!(want.1, 10);
    assert_eq!(stated(&s), want);
}

/// The cost of a scrape with a million pending deliveries, before (the
/// count this replaced) and now. Not run by default (it writes ~1M rows):
/// `scripts/test-postgres cargo test --release --lib scrape_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn scrape_cost_with_a_million_pending() {
    if !ready() {
        return;
    }
    const N: i64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let s = open_as(dir.path(), "relay");
    // Five lanes, 200k each, written as accepts would (one delta per lane),
    // plus a few in flight and dead, with small bodies.
    s.call(|pool| async move {
        let c = pool.get().await.map_err(super::pool_err)?;
        c.batch_execute(&format!(
            "INSERT INTO shoprelay_webhooks (id, kind, source, topic, dedup_id, received_at_ms, body)
             SELECT n, 'shopify', 'acme', 'orders/create', 'w' || n, n, '\\x7b7d'
               FROM generate_series(1, {N} / 5) AS n;
             INSERT INTO shoprelay_deliveries (webhook_id, slot, lane, targets, due_ms, ready_ms)
             SELECT n, s, 'lane' || s, ARRAY['lane' || s], 1000 + n, 1000 + n
               FROM generate_series(1, {N} / 5) AS n, generate_series(0, 4) AS s;
             INSERT INTO shoprelay_lane_deltas (lane, pending, dead)
             SELECT 'lane' || s, {N} / 5, 0 FROM generate_series(0, 4) AS s;
             ANALYZE shoprelay_deliveries;"
        ))
        .await
        .map_err(super::pg_err)?;
        Ok(())
    })
    .unwrap();
    s.fold_now().unwrap();
    for lane in ["lane0", "lane3"] {
        let c = s.claim_due(lane, 2000, 1_000_000, 100).unwrap();
        s.bury(&dead(&c[0].record, 3000, "x"), c[0].lease).unwrap();
    }
    let time = |what: &str, f: &dyn Fn()| {
        f();
        let mut ms: Vec<f64> = (0..20)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        eprintln!(
            "{what}: median {:.2} ms, max {:.2} ms (20 calls, {N} pending in 5 lanes)",
            ms[10], ms[19]
        );
        ms[10]
    };
    let before = time(
        "before: count(*), min(due_ms) GROUP BY lane; count(*) of dead",
        &|| {
            counted(&s);
        },
    );
    let now = time("now: stats()", &|| {
        s.stats().unwrap();
    });
    let (lanes, dead) = counted(&s);
    assert_eq!(stated(&s), (lanes, dead));
    assert!(
        now * 10.0 < before,
        "stats {now:.2} ms vs the count {before:.2} ms"
    );
}

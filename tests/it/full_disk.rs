//! A nearly full disk answers 503 (the sender retries) instead of letting sled
//! fill it: sled 0.34 hangs in `flush()` on ENOSPC rather than failing.
//! Needs root to mount a small tmpfs; CI runs as root.

use std::process::Command;

use crate::common::relay::{Opts, Relay, SECRET};
use crate::common::sign::ShopifyWebhook;
use crate::common::{client, send_json};

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
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (run as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
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

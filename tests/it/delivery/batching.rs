//! Batched formats: `webhook-batch` and `segment-api` bodies and signatures.

use super::*;

#[tokio::test]
async fn batch_and_segment_api_bodies_and_signatures() {
    let batch = TestReceiver::start().await;
    let seg = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest(
                "batch",
                &batch,
                "format = \"webhook-batch\"\nbatch_size = 50\nlinger = \"100ms\"",
            ),
            Dest {
                name: "seg".into(),
                url: seg.url.clone(),
                extra: "format = \"segment-api\"\nwrite_key = \"wk_123\"\nlinger = \"100ms\""
                    .into(),
            },
        ],
        ..Opts::default()
    })
    .await;
    for n in 0..3 {
        post(&relay, &order(300 + n)).await;
    }
    let events = |r: &TestReceiver, f: fn(&Value) -> usize| {
        r.received().iter().map(|x| f(&x.json())).sum::<usize>()
    };
    until("all six events in batches", || {
        events(&batch, |v| v.as_array().map_or(0, Vec::len)) >= 6
            && events(&seg, |v| v["batch"].as_array().map_or(0, Vec::len)) >= 6
    })
    .await;
    for req in batch.received() {
        let first = serde_json::to_string(&req.json()[0]).unwrap();
        assert_eq!(
            req.header("x-signature").unwrap(),
            sha1_hex(DEST_SECRET, first.as_bytes()),
            "signed over the first event"
        );
    }
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("wk_123:")
    );
    for req in seg.received() {
        assert_eq!(req.header("authorization").unwrap(), want);
        assert!(req.json()["sentAt"].as_str().unwrap().ends_with('Z'));
        assert!(req.header("x-signature").is_none());
    }
    relay.stop().await;
}

//! `delivery = "first-success"`: a source's destinations tried in order.

use super::*;

#[tokio::test]
async fn first_success_stops_at_the_first_2xx_in_order() {
    let down = TestReceiver::with(Arc::new(|_| Answer::status(500))).await;
    let up = TestReceiver::start().await;
    let spare = TestReceiver::start().await;
    let relay = Relay::start(Opts {
        dests: vec![
            dest("a_down", &down, ""),
            dest("b_up", &up, ""),
            dest("c_spare", &spare, ""),
        ],
        acme_extra: "delivery = \"first-success\"".into(),
        extra: FAST_RETRY.into(),
        ..Opts::default()
    })
    .await;
    post(&relay, &order(6)).await;
    up.wait_for(2).await;
    relay.wait_drained().await;
    assert_eq!(down.count(), 1, "tried first");
    assert_eq!(spare.count(), 0, "never needed");
    relay.stop().await;
}

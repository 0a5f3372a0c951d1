//! The local destinations, which count what arrives into the ledger.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use warp::Filter;

use crate::ledger::Ledger;

/// Local destinations: count what arrives; hold it while `down` is true.
/// Returns their addresses and their servers' tasks (abort them to close the
/// listeners).
pub async fn start_destinations(
    k: usize,
    base_port: u16,
    ledger: Arc<Ledger>,
    down: watch::Receiver<bool>,
) -> (Vec<SocketAddr>, Vec<tokio::task::JoinHandle<()>>) {
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for d in 0..k {
        let (ledger, down) = (ledger.clone(), down.clone());
        let route = warp::post()
            .and(warp::body::bytes())
            .then(move |body: Bytes| {
                let (ledger, mut down) = (ledger.clone(), down.clone());
                async move {
                    // Down: hold the request (the relay's attempt times out) rather
                    // than refuse it, so the backlog is not churned by retries.
                    let _ = down.wait_for(|d| !*d).await;
                    ledger.arrival(d, &body);
                    warp::reply::with_status("", warp::http::StatusCode::OK)
                }
            });
        let port = if base_port == 0 {
            0
        } else {
            base_port + d as u16
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind a destination port on 127.0.0.1");
        addrs.push(listener.local_addr().expect("bound address"));
        tasks.push(tokio::spawn(warp::serve(route).incoming(listener).run()));
    }
    (addrs, tasks)
}

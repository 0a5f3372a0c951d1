//! A destination to point shoprelay at while trying it out: verifies
//! `X-Signature` and prints one line per event.
//!
//!     cargo run --example receiver                      # 127.0.0.1:9000, path /events
//!     cargo run --example receiver -- --listen 0.0.0.0:9100
//!
//! `RECEIVER_LISTEN` also sets the address; `RECEIVER_SECRET` the shared secret
//! (default `shoprelay-dev-receiver`, as in the shipped relay.toml). A body
//! that is a JSON array (format `webhook-batch`) is signed over its first
//! element's JSON text exactly as sent. Answers 200, or 401 on a bad signature.

mod routes;

use std::net::SocketAddr;

use routes::routes;

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
const DEFAULT_SECRET: &str = "shoprelay-dev-receiver";

fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = std::env::var("RECEIVER_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.into());
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            _ => return Err(format!("usage: receiver [--listen ADDR] (got `{a}`)")),
        }
    }
    listen
        .parse()
        .map_err(|e| format!("bad listen address `{listen}`: {e}"))
}

#[tokio::main]
async fn main() {
    let addr = match listen_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let secret: &'static [u8] = std::env::var("RECEIVER_SECRET")
        .unwrap_or_else(|_| DEFAULT_SECRET.into())
        .into_bytes()
        .leak();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(addr);
    eprintln!("receiver: POST http://{addr}/events (X-Signature checked)");
    warp::serve(routes(secret)).incoming(listener).run().await;
}

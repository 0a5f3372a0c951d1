//! The ceiling: the fastest a webhook endpoint can be acknowledged on this
//! machine, to state the relay's throughput as a ratio to it.
//!
//! A bare warp 0.4 server with one route, `POST /webhooks/shopify/{source}`,
//! that does only what every Shopify endpoint must: read the body (capped at
//! 1 MiB, the relay's default `max_body_bytes`), check `X-Shopify-Hmac-Sha256`
//! (base64 HMAC-SHA256 of the raw body) in constant time, and answer 401 on a
//! mismatch or 200 `{"status":"queued"}`. It parses nothing, stores nothing and
//! delivers nothing, so the relay can approach it but not pass it: the ratio
//! relay/ceiling is what the relay's queue and bookkeeping cost, on whatever
//! machine the two are measured side by side.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/ceiling --listen 127.0.0.1:9200 --secret loadgen-secret
//! cargo run --release --example loadgen -- --spawn-binary --destinations 1 --duration 10 --vs-ceiling
//! ```
//!
//! `loadgen --vs-ceiling` starts it as a child process, reads the `listening on
//! ADDR` line it prints on stdout once bound, and sends it the same load as the
//! relay. The body-size cap is the declared `Content-Length` (warp's
//! `content_length_limit`): a body over 1 MiB is 413, one without a length 411.

use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use warp::http::StatusCode;
use warp::{Filter, Reply};

/// The relay's default `max_body_bytes`.
const MAX_BODY_BYTES: u64 = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    about = "bare HMAC-verifying webhook endpoint: the ceiling loadgen compares the relay to"
)]
struct Args {
    /// Address to listen on (port 0 = any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The Shopify source secret the HMAC is keyed with.
    #[arg(long, default_value = "loadgen-secret")]
    secret: String,
}

/// True when `signature` is the base64 HMAC-SHA256 of `body` under `key`
/// (compared in constant time by `verify_slice`).
fn verified(key: &Hmac<Sha256>, body: &[u8], signature: Option<&str>) -> bool {
    let Some(tag) = signature.and_then(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
    }) else {
        return false;
    };
    let mut mac = key.clone();
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

fn answer(key: &Hmac<Sha256>, signature: Option<String>, body: Bytes) -> warp::reply::Response {
    let (status, text) = if verified(key, &body, signature.as_deref()) {
        (StatusCode::OK, r#"{"status":"queued"}"#)
    } else {
        (StatusCode::UNAUTHORIZED, r#"{"error":"bad signature"}"#)
    };
    warp::reply::with_status(
        warp::reply::with_header(text, "content-type", "application/json"),
        status,
    )
    .into_response()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // Keyed once, cloned per request, as the relay's verifier does.
    let key = Hmac::<Sha256>::new_from_slice(args.secret.as_bytes()).expect("any key length");
    let route = warp::path!("webhooks" / "shopify" / String)
        .and(warp::post())
        .and(warp::header::optional::<String>("x-shopify-hmac-sha256"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .map(
            move |_source: String, signature: Option<String>, body: Bytes| {
                answer(&key, signature, body)
            },
        );
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    println!("listening on {addr}");
    warp::serve(route).incoming(listener).run().await;
}

//! The sending side: the signed payload, a minimal HTTP/1.1 connection, and the
//! senders that spread the load over it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::args::Args;
use crate::ledger::{Ledger, MAX_WEBHOOKS};

pub const SECRET: &str = "loadgen-secret";

pub const QUEUED: &[u8] = b"\"queued\"";

pub const FIXTURE: &str = include_str!("../../tests/fixtures/shopify/orders__create.json");

pub fn sign(body: &[u8]) -> String {
    shoprelay::sources::sign::shopify(SECRET, body)
}

/// The body every webhook carries (the fixture as compact JSON) and its
/// signature under `loadgen-secret`.
pub fn payload() -> (Bytes, String) {
    let v: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");
    let body: Bytes = serde_json::to_vec(&v).expect("serialise").into();
    let signature = sign(&body);
    (body, signature)
}

pub struct Sender {
    /// `host:port` and request head of each relay; connection `i` sends to
    /// target `i % len` (round robin by connection).
    pub targets: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub ledger: Arc<Ledger>,
    pub rate: f64,
    pub count: u64,
    /// When sending began: the rate's schedule and the deadline count from here.
    pub start: Instant,
    pub deadline: Instant,
}

/// One keep-alive HTTP/1.1 connection that speaks just enough of the protocol
/// to post a webhook and read the answer (status, Content-Length, body). A
/// general-purpose client costs the generator more CPU per request than the
/// relay spends storing the webhook, and both share this machine's two cores;
/// like wrk, the generator should be the cheap side of the measurement.
pub struct Conn {
    pub stream: tokio::net::TcpStream,
    pub buf: Vec<u8>,
}

/// An answer: status and whether its body said `"queued"`.
pub struct Answer {
    pub status: u16,
    pub queued: bool,
}

impl Conn {
    pub async fn open(addr: &str) -> std::io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    pub async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        self.stream.write_all(request).await?;
        self.buf.clear();
        let (head_len, status, body_len) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head"))?;
                let status = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("status line"))?;
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| bad("no content-length"))?;
                break (end + 4, status, len);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("closed"));
            }
        };
        while self.buf.len() < head_len + body_len {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("closed mid-body"));
            }
        }
        let body = &self.buf[head_len..head_len + body_len];
        Ok(Answer {
            status,
            queued: body.windows(QUEUED.len()).any(|w| w == QUEUED),
        })
    }
}

/// The request for webhook `n`: the fixed head, its two ids, the shared body.
pub fn request(out: &mut Vec<u8>, s: &Sender, head: &[u8], n: u64) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(head);
    let run = &s.ledger.run;
    let _ = write!(
        out,
        "x-shopify-event-id: lg-{run}-{n}\r\nx-shopify-webhook-id: wh-{run}-{n}\r\n\r\n"
    );
    out.extend_from_slice(&s.body);
}

/// `host:port` and the request head shared by every webhook of a run.
pub fn request_head(url: &str, body_len: usize, signature: &str) -> (String, Vec<u8>) {
    let u = url::Url::parse(url).expect("--target is an http:// URL");
    assert_eq!(u.scheme(), "http", "the load generator speaks plain HTTP");
    let host = u.host_str().expect("URL has a host");
    let addr = format!("{host}:{}", u.port_or_known_default().unwrap_or(80));
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-shopify-topic: orders/create\r\nx-shopify-hmac-sha256: {signature}\r\n\
         x-shopify-shop-domain: loadgen.myshopify.com\r\nx-shopify-api-version: 2025-01\r\n\
         content-length: {body_len}\r\n",
        u.path()
    );
    (addr, head.into_bytes())
}

pub async fn send_loop(s: Arc<Sender>, i: usize) {
    let l = &s.ledger;
    let (addr, head) = &s.targets[i % s.targets.len()];
    let mut conn: Option<Conn> = None;
    let mut req = Vec::with_capacity(head.len() + s.body.len() + 128);
    loop {
        let n = l.issued.fetch_add(1, Relaxed);
        if n >= s.count {
            return;
        }
        let sched = if s.rate > 0.0 {
            let at = s.start + Duration::from_secs_f64(n as f64 / s.rate);
            if at >= s.deadline {
                return;
            }
            tokio::time::sleep_until(at.into()).await;
            at
        } else {
            let now = Instant::now();
            if now >= s.deadline {
                return;
            }
            now
        };
        // `issued` may exceed what is sent (the last number each sender drew);
        // the slots of numbers never sent stay 0 and are never counted.
        let sched_us = sched.duration_since(l.start).as_micros() as u64;
        if let Some(slot) = l.scheduled.get(n) {
            slot.store(sched_us + 1, Relaxed);
        }
        request(&mut req, &s, head, n);
        let sent_at = Instant::now();
        l.sent.fetch_add(1, Relaxed);
        let answer = async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(Conn::open(addr).await?),
            };
            c.round_trip(&req).await
        };
        let r = tokio::time::timeout(Duration::from_secs(30), answer).await;
        match r {
            Ok(Ok(a)) if a.status == 200 => {
                let done = Instant::now();
                if a.queued {
                    if let Some(a) = l.ack.get(n) {
                        a.store(1, Relaxed);
                    }
                    l.acked.fetch_add(1, Relaxed);
                    l.ack_latency
                        .record(done.duration_since(sent_at).as_micros() as u64);
                    l.ack_from_schedule
                        .record(done.duration_since(sched).as_micros() as u64);
                } else {
                    l.duplicate_acks.fetch_add(1, Relaxed);
                }
            }
            Ok(Ok(_)) => {
                l.refused.fetch_add(1, Relaxed);
            }
            Ok(Err(_)) | Err(_) => {
                // The connection's state is unknown: start a fresh one.
                conn = None;
                l.errors.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Sends the load the arguments describe (connections, rate, duration,
/// count) to `urls` (connections spread over them round robin), counting
/// into `ledger`: the one sender both the relay and the ceiling are measured
/// with. Returns the seconds from the start of sending to the last answer.
pub async fn send_load(
    urls: &[String],
    body: &Bytes,
    signature: &str,
    ledger: &Arc<Ledger>,
    args: &Args,
) -> f64 {
    let targets = urls
        .iter()
        .map(|u| request_head(u, body.len(), signature))
        .collect();
    let start = Instant::now();
    let sender = Arc::new(Sender {
        targets,
        body: body.clone(),
        ledger: ledger.clone(),
        rate: args.rate,
        count: args.count.unwrap_or(MAX_WEBHOOKS).min(MAX_WEBHOOKS),
        start,
        deadline: start + Duration::from_secs_f64(args.duration),
    });
    let senders: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(send_loop(sender.clone(), i)))
        .collect();
    for s in senders {
        let _ = s.await;
    }
    start.elapsed().as_secs_f64()
}

/// Waits until `url` answers 200 to a fresh signed webhook; returns how long.
pub async fn time_to_serve(url: &str, body: &Bytes, signature: &str, run: &str) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        let r = client
            .post(url)
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-hmac-sha256", signature)
            .header("x-shopify-event-id", format!("probe-{run}"))
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) || started.elapsed() > Duration::from_secs(120) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

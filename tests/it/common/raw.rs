//! Raw sockets to a relay: for what no HTTP client sends (a head that never
//! ends, a body that stalls, HTTP/2 without TLS).

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// `host:port` of a relay base URL (`http://host:port`).
pub fn addr(base: &str) -> &str {
    base.strip_prefix("http://").unwrap_or(base)
}

pub async fn connect(base: &str) -> TcpStream {
    super::within("connect", TcpStream::connect(addr(base)))
        .await
        .unwrap()
}

/// Reads until the relay closes the connection (end of stream or a reset),
/// within `limit`: how long that took and what it sent; `None` if it stayed open.
pub async fn closed_within<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some((started.elapsed(), got))
}

/// One HTTP/1.1 answer read off a kept-alive connection: the head and a
/// Content-Length body.
pub async fn read_answer<R: AsyncReadExt + Unpin>(reader: &mut R) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = super::within("an answer", reader.read(&mut buf))
            .await
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if got.len() >= end + 4 + length {
            return text;
        }
    }
}

//! A real local HTTP receiver whose answers the test controls, recording
//! every request it gets.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use warp::Filter;
use warp::http::{HeaderMap, StatusCode};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// How to answer: status, extra headers, optional delay (ms) before answering.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay_ms: u64,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: vec![],
            delay_ms: 0,
            body: String::new(),
        }
    }
}

/// Decides each answer from the number of requests so far (0-based).
pub type Script = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

pub struct TestReceiver {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

impl TestReceiver {
    /// A receiver answering 200 to everything.
    pub async fn start() -> TestReceiver {
        TestReceiver::with(Arc::new(|_| Answer::status(200))).await
    }

    pub async fn with(script: Script) -> TestReceiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script));
        let (l, s) = (log.clone(), script.clone());
        let route = warp::any()
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(move |headers: HeaderMap, body: Bytes| {
                let (l, s) = (l.clone(), s.clone());
                async move {
                    let n = {
                        let mut log = l.lock().unwrap();
                        log.push(Received {
                            headers,
                            body,
                            at: std::time::Instant::now(),
                        });
                        log.len() - 1
                    };
                    let answer = (s.lock().unwrap())(n);
                    if answer.delay_ms > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(answer.delay_ms)).await;
                    }
                    let mut r = warp::reply::Reply::into_response(answer.body.clone());
                    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap();
                    for (k, v) in &answer.headers {
                        r.headers_mut().insert(
                            warp::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            v.parse().unwrap(),
                        );
                    }
                    r
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        TestReceiver {
            url: format!("http://{addr}/events"),
            log,
            script,
        }
    }

    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        super::until(&format!("{n} requests at {}", self.url), || {
            self.count() >= n
        })
        .await;
        self.received()
    }
}

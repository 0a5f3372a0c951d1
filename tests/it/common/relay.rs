//! Starting a relay: in process (fast, most tests) or as a child process (crash tests).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shoprelay::config::Config;

/// One destination the test wants.
pub struct Dest {
    pub name: String,
    pub url: String,
    /// Extra lines for the `[destinations.NAME]` table.
    pub extra: String,
}

/// A destination at `r` signed with [`super::sign::DEST_SECRET`], plus `extra`
/// lines for its table.
pub fn signed_dest(name: &str, r: &super::receiver::TestReceiver, extra: &str) -> Dest {
    Dest {
        name: name.into(),
        url: r.url.clone(),
        extra: format!("shared_secret = \"{}\"\n{extra}", super::sign::DEST_SECRET),
    }
}

/// What the test relay is configured with; defaults: one Shopify source
/// `acme` and one convertedin source `ci`, secrets "s1" and "s2" (rotation),
/// no destinations.
pub struct Opts {
    pub dests: Vec<Dest>,
    /// Extra top-level TOML (e.g. `[retry]`) appended verbatim.
    pub extra: String,
    pub admin_token: Option<String>,
    pub max_body_bytes: u64,
    /// Lines for `[sources.acme]` beyond kind/secrets/destinations.
    pub acme_extra: String,
    /// Lines for `[server]`.
    pub server_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            dests: vec![],
            extra: String::new(),
            admin_token: None,
            max_body_bytes: 1 << 20,
            acme_extra: String::new(),
            server_extra: String::new(),
        }
    }
}

pub const SECRET: &str = "s1";
pub const OLD_SECRET: &str = "s0";

pub fn toml(opts: &Opts, data_dir: &std::path::Path) -> String {
    let dests: Vec<String> = opts
        .dests
        .iter()
        .map(|d| format!("\"{}\"", d.name))
        .collect();
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nmax_body_bytes = {}\n{}\n{}\n\
         [sources.acme]\nkind = \"shopify\"\nsecrets = [\"{SECRET}\", \"{OLD_SECRET}\"]\ndestinations = [{}]\n{}\n\
         [sources.ci]\nkind = \"convertedin\"\nsecrets = [\"{SECRET}\"]\ndestinations = [{}]\n",
        data_dir.display().to_string(),
        opts.max_body_bytes,
        opts.admin_token
            .as_ref()
            .map(|t| format!("admin_token = \"{t}\""))
            .unwrap_or_default(),
        opts.server_extra,
        dests.join(", "),
        opts.acme_extra,
        dests.join(", "),
    );
    for d in &opts.dests {
        t.push_str(&format!(
            "\n[destinations.{}]\nurl = \"{}\"\n{}\n",
            d.name, d.url, d.extra
        ));
    }
    t.push_str(&opts.extra);
    t
}

/// A relay running inside the test process.
pub struct Relay {
    pub ingest: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), shoprelay::RunError>>>,
}

impl Relay {
    pub async fn start(opts: Opts) -> Relay {
        Relay::start_in(opts, tempfile::tempdir().unwrap()).await
    }

    /// Starts on an existing data dir (restart tests).
    pub async fn start_in(opts: Opts, dir: tempfile::TempDir) -> Relay {
        let text = toml(&opts, dir.path());
        let cfg = Config::from_toml_str(&text, &|_| None)
            .unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        let ingest = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (i, a) = (ingest.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(shoprelay::run(
            cfg,
            shoprelay::Listeners { ingest, admin },
            async move {
                let _ = rx.await;
            },
        ));
        Relay {
            ingest: format!("http://{i}"),
            admin: format!("http://{a}"),
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn shopify_url(&self, source: &str) -> String {
        format!("{}/webhooks/shopify/{source}", self.ingest)
    }

    /// Graceful stop; returns the data dir for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            super::within("relay shutdown", task)
                .await
                .unwrap()
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

/// The relay binary as a child process, for kill -9 tests.
pub struct Child_ {
    pub child: Child,
    pub ingest: String,
    pub admin: String,
    /// What it wrote to stderr after "listening".
    pub log: Arc<LogTap>,
}

impl Drop for Child_ {
    /// A test that fails midway leaves no relay running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts a child relay's log, and keeps its refusal lines and its last lines.
#[derive(Default)]
pub struct LogTap {
    bytes: AtomicU64,
    refusals: Mutex<Vec<String>>,
    last: Mutex<std::collections::VecDeque<String>>,
}

/// Lines [`LogTap::last`] keeps.
const LAST_LINES: usize = 200;

impl LogTap {
    /// Bytes logged since "listening".
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The "webhook refused" lines so far (the first 10,000).
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }

    /// The last lines logged (at most 200), for failure messages.
    pub fn last(&self) -> Vec<String> {
        self.last.lock().unwrap().iter().cloned().collect()
    }

    fn line(&self, line: &str) {
        self.bytes
            .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
        {
            let mut last = self.last.lock().unwrap();
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(line.to_string());
        }
        if line.contains("webhook refused") {
            let mut r = self.refusals.lock().unwrap();
            if r.len() < 10_000 {
                r.push(line.to_string());
            }
        }
    }
}

pub fn spawn_binary(config_path: &std::path::Path) -> Child_ {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoprelay"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoprelay");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut before = Vec::new();
    let (ingest, admin) = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("relay exited before listening:\n{}", before.join("\n")))
            .unwrap();
        before.push(line.clone());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            break (
                v["ingest"].as_str().unwrap().to_string(),
                v["admin"].as_str().unwrap().to_string(),
            );
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let log = Arc::new(LogTap::default());
    let tap = log.clone();
    std::thread::spawn(move || {
        for line in lines {
            match line {
                Ok(line) => tap.line(&line),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
                Err(_) => return,
            }
        }
    });
    Child_ {
        child,
        ingest: format!("http://{ingest}"),
        admin: format!("http://{admin}"),
        log,
    }
}

impl Child_ {
    /// Waits until the store is open and the admin listener answers
    /// (`listening` is logged before the store opens); panics with the
    /// child's last log lines if it exits first.
    pub async fn wait_open(&mut self) {
        let url = format!("{}/admin/stats", self.admin);
        let c = super::client();
        super::within("the child relay to open its store", async {
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    // Let the stderr thread read what is left.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    panic!(
                        "the relay exited ({status}) before opening its store:\n{}",
                        self.log.last().join("\n")
                    );
                }
                if answers_200(&c, &url).await {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// Whether `GET url` answers 200 within half a second.
async fn answers_200(c: &reqwest::Client, url: &str) -> bool {
    c.get(url)
        .timeout(std::time::Duration::from_millis(500))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

impl Relay {
    /// Waits until the store is open and the admin listener answers; panics
    /// with the run's error if it ended first.
    pub async fn wait_open(&mut self) {
        let url = format!("{}/admin/stats", self.admin);
        let c = super::client();
        super::within("the relay to open its store", async {
            loop {
                if self.task.as_ref().is_none_or(|t| t.is_finished()) {
                    let ended = match self.task.take() {
                        Some(t) => format!("{:?}", t.await),
                        None => "stopped".into(),
                    };
                    panic!("the relay ended before opening its store: {ended}");
                }
                if answers_200(&c, &url).await {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// `GET /admin/stats`.
    pub async fn stats(&self) -> serde_json::Value {
        super::get_json(format!("{}/admin/stats", self.admin)).await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        super::get_text(format!("{}/metrics", self.admin)).await
    }

    /// `GET /admin/dead-letters`.
    pub async fn dead_letters(&self) -> Vec<serde_json::Value> {
        let v = super::get_json(format!("{}/admin/dead-letters", self.admin)).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// `POST /admin/dead-letters/{id}/replay`: the status.
    pub async fn replay(&self, id: &str) -> u16 {
        let url = format!("{}/admin/dead-letters/{id}/replay", self.admin);
        let r = super::within("replay", super::client().post(url).send()).await;
        r.unwrap().status().as_u16()
    }

    /// `GET /healthz` on the ingest listener: the status.
    pub async fn healthz(&self) -> u16 {
        let url = format!("{}/healthz", self.ingest);
        let r = super::within("healthz", super::client().get(url).send()).await;
        r.unwrap().status().as_u16()
    }

    /// Waits until no delivery is pending in any lane.
    pub async fn wait_drained(&self) {
        super::eventually("queue drained", || async {
            self.stats().await["lanes"]
                .as_object()
                .is_some_and(|l| l.is_empty())
                .then_some(())
        })
        .await
    }

    /// Waits until `/metrics` contains `line`.
    pub async fn wait_metric(&self, line: &str) {
        super::eventually(line, || async {
            self.metrics().await.contains(line).then_some(())
        })
        .await
    }
}

//! The relays under test: their relay.toml, and starting and stopping them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::sender::SECRET;

/// `--rules`: the contract's example filter (every loadgen order passes it)
/// and transform (it keeps `context`, where the ledger finds the webhook),
/// with `N`, the destination's number, in each: no two destinations run the
/// same program.
pub const RULES_FILTER: &str = r#".type != "track" or (.properties.total // 0) >= 10N"#;

pub const RULES_TRANSFORM: &str = r#".properties.channel = "shopify-dN""#;

pub fn relay_toml(
    data: &std::path::Path,
    dests: &[SocketAddr],
    args: &Args,
    storage: Option<&str>,
) -> String {
    let names: Vec<String> = (0..dests.len()).map(|d| format!("\"d{d}\"")).collect();
    let mut t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = {:?}\nmax_body_bytes = 1048576\nmin_free_bytes = 1073741824\n\n\
         [mapping]\nidentify_on_orders = false\n\n\
         [sources.shop]\nkind = \"shopify\"\nsecrets = [\"{SECRET}\"]\ndestinations = [{}]\n",
        data.display().to_string(),
        names.join(", ")
    );
    for (d, addr) in dests.iter().enumerate() {
        t.push_str(&format!(
            "\n[destinations.d{d}]\nurl = \"http://{addr}/events\"\ntimeout = \"5s\"\nconcurrency = {}\n",
            args.dest_concurrency
        ));
        if args.rules {
            let n = d.to_string();
            t.push_str(&format!(
                "filter = '{}'\ntransform = '{}'\n",
                RULES_FILTER.replace('N', &n),
                RULES_TRANSFORM.replace('N', &n)
            ));
        }
    }
    if let Some(url) = storage {
        t.push_str(&format!(
            "\n[storage]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = {}\n",
            args.pool_size
        ));
    }
    t
}

/// A relay the generator runs: in this process, or the real binary.
pub enum Relay {
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), shoprelay::RunError>>,
    },
    Child {
        child: std::process::Child,
    },
    External,
}

pub async fn start_in_process(toml: &str) -> (Relay, String) {
    let cfg = shoprelay::config::Config::from_toml_str(toml, &|_| None)
        .unwrap_or_else(|e| panic!("generated config: {e}\n{toml}"));
    let ingest = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = ingest.local_addr().expect("bound address");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shoprelay::run(
        cfg,
        shoprelay::Listeners { ingest, admin },
        async move {
            let _ = rx.await;
        },
    ));
    (
        Relay::InProcess { stop, task },
        format!("http://{addr}/webhooks/shopify/shop"),
    )
}

pub fn spawn_binary(binary: &std::path::Path, config: &std::path::Path) -> (Relay, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (cargo build --release first)",
                binary.display()
            )
        });
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let ingest = loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .expect("read relay stderr");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            break v["ingest"].as_str().expect("ingest address").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (
        Relay::Child { child },
        format!("http://{ingest}/webhooks/shopify/shop"),
    )
}

/// SIGTERM, then SIGKILL if the relay has not exited within a minute: a
/// graceful stop lets a relay run under a profiler (`--binary` a wrapper
/// script that execs `valgrind --tool=callgrind …`) write its profile.
pub fn stop_child(child: &mut std::process::Child) {
    let pid = rustix::process::Pid::from_child(child);
    if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn relay_pid(relay: &Relay) -> Option<String> {
    match relay {
        Relay::InProcess { .. } => Some("self".into()),
        Relay::Child { child } => Some(child.id().to_string()),
        Relay::External => None,
    }
}

/// The pids of `relays`, each once (in-process relays are all this process).
pub fn relay_pids(relays: &[Relay]) -> Vec<String> {
    let mut pids: Vec<String> = relays.iter().filter_map(relay_pid).collect();
    pids.dedup();
    pids
}

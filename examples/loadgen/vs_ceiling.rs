//! `--vs-ceiling`: the relay against a bare HMAC-verifying endpoint, interleaved.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::args::{Args, Kind, load_line};
use crate::ledger::{Ledger, new_ledger, spawn_progress};
use crate::report::{median, side_figures};
use crate::run::relay_run;
use crate::sender::{SECRET, send_load};

/// Starts the ceiling binary on an ephemeral port; returns it and its
/// webhook URL once it printed `listening on ADDR`.
pub fn spawn_ceiling(binary: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--secret", SECRET])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (cargo build --release --examples first)",
                binary.display()
            )
        });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .next()
        .expect("ceiling exited before listening")
        .expect("read ceiling stdout");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("ceiling printed {line:?}, not `listening on ADDR`"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}/webhooks/shopify/shop"))
}

/// One run against a fresh ceiling process; returns the seconds of sending.
pub async fn ceiling_run(args: &Args, ledger: &Arc<Ledger>, body: &Bytes, signature: &str) -> f64 {
    let (mut child, url) = spawn_ceiling(&args.ceiling_binary);
    let progress = spawn_progress(ledger.clone());
    let secs = send_load(&[url], body, signature, ledger, args).await;
    progress.abort();
    let _ = child.kill();
    let _ = child.wait();
    secs
}

/// `--vs-ceiling`: rounds of ceiling then relay under the same load. Prints
/// each side's figures per round and the median of the rounds' ratios;
/// false when a relay ledger did not balance or the ceiling refused or
/// failed a request.
pub async fn vs_ceiling(args: &Args, body: &Bytes, signature: &str) -> bool {
    if !args.ceiling_binary.exists() {
        eprintln!(
            "{} not found: build it first with `cargo build --release --examples` (or pass --ceiling-binary)",
            args.ceiling_binary.display()
        );
        std::process::exit(2);
    }
    println!(
        "loadgen vs ceiling: {} against {} (a child process), {}, {} rounds",
        Kind::of(args).describe(),
        args.ceiling_binary.display(),
        load_line(args, body.len()),
        args.rounds
    );
    let mut ratios = Vec::new();
    let mut valid = true;
    for round in 1..=args.rounds {
        let ceiling = new_ledger(0);
        let secs = ceiling_run(args, &ceiling, body, signature).await;
        let (ceiling_rate, figures) = side_figures(&ceiling, secs);
        let clean = ceiling.refused.load(Relaxed) == 0 && ceiling.errors.load(Relaxed) == 0;
        println!(
            "round {round} ceiling: {figures}{}",
            if clean { "" } else { "  NOT CLEAN" }
        );
        let r = relay_run(args, new_ledger(args.destinations), body, signature).await;
        let (relay_rate, figures) = side_figures(&r.ledger, r.send_secs);
        println!(
            "round {round} relay:   {figures}  ledger {}",
            if r.balanced { "BALANCED" } else { "VOID" }
        );
        let ratio = relay_rate / ceiling_rate;
        println!("round {round} ratio relay/ceiling: {ratio:.2}");
        ratios.push(ratio);
        valid &= clean && r.balanced;
    }
    let median = median(&mut ratios);
    println!("ratio relay/ceiling: {median:.2} (median of rounds)");
    println!(
        "RESULT {}",
        if valid {
            "BALANCED"
        } else {
            "VOID (a relay ledger does not balance or the ceiling refused or failed requests)"
        }
    );
    valid
}

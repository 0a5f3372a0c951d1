//! `--vs-rules`: the relay without and with jq rules, interleaved.

use bytes::Bytes;

use crate::args::{Args, Kind, load_line};
use crate::ledger::new_ledger;
use crate::relay::{RULES_FILTER, RULES_TRANSFORM};
use crate::report::{deliveries_per_sec, median, side_figures};
use crate::run::relay_run;

/// `--vs-rules`: rounds of the relay without then with `--rules`, under the
/// same load. Prints each side per round and the median ratio of
/// deliveries/s (with/without); false when a ledger did not balance.
pub async fn vs_rules(args: &Args, body: &Bytes, signature: &str) -> bool {
    println!(
        "loadgen vs rules: {}, {}, {} rounds; rules on destination N: filter = '{RULES_FILTER}', transform = '{RULES_TRANSFORM}'",
        Kind::of(args).describe(),
        load_line(args, body.len()),
        args.rounds
    );
    let mut ratios = Vec::new();
    let mut valid = true;
    for round in 1..=args.rounds {
        let mut rates = [0.0; 2];
        for (side, rules) in [false, true].into_iter().enumerate() {
            let a = Args {
                rules,
                ..args.clone()
            };
            let r = relay_run(&a, new_ledger(a.destinations), body, signature).await;
            let (_, figures) = side_figures(&r.ledger, r.send_secs);
            rates[side] = deliveries_per_sec(&r);
            let cpu = match r.relay_cpu {
                Some(c) => format!(
                    "  relay cpu while sending {:.0} µs per acked webhook",
                    c * 1e6 / r.acked.max(1) as f64
                ),
                None => String::new(),
            };
            println!(
                "round {round} {}: deliveries/s {:>8.0}  {figures}{cpu}  ledger {}",
                if rules { "rules   " } else { "no rules" },
                rates[side],
                if r.balanced { "BALANCED" } else { "VOID" }
            );
            valid &= r.balanced;
        }
        let ratio = rates[1] / rates[0];
        println!("round {round} ratio rules/no rules (deliveries/s): {ratio:.3}");
        ratios.push(ratio);
    }
    let median = median(&mut ratios);
    println!(
        "ratio rules/no rules: {median:.3} (median of rounds; the rules cost {:.1}% of fan-out throughput)",
        (1.0 - median) * 100.0
    );
    println!(
        "RESULT {}",
        if valid {
            "BALANCED"
        } else {
            "VOID (a ledger does not balance)"
        }
    );
    valid
}

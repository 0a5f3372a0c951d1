use super::*;

const fn cfg(max_age_s: u64, initial_ms: u64, max_s: u64) -> RetryConfig {
    RetryConfig {
        max_age: Duration::from_secs(max_age_s),
        initial_interval: Duration::from_millis(initial_ms),
        max_interval: Duration::from_secs(max_s),
    }
}
/// The shipped defaults: 4 h, 1 s, 10 min.
const DEFAULT: RetryConfig = cfg(4 * 3600, 1000, 600);

#[test]
fn backoff_table() {
    let ms = Duration::from_millis;
    for (attempts, jitter, want) in [
        (0, 0.0, ms(500)), // 0 is read as 1
        (1, 0.0, ms(500)),
        (1, 0.5, ms(750)),
        (1, 0.75, ms(875)),
        (1, 1.0, ms(1000)),
        (2, 0.0, ms(1000)),
        (3, 0.0, ms(2000)),
        (3, 0.5, ms(3000)),
        (10, 0.0, ms(256_000)),
        (11, 0.0, ms(300_000)), // 1024 s capped at 600 s
        (11, 0.75, ms(525_000)),
        (32, 0.0, ms(300_000)), // 2^31 · 1 s overflows nothing, capped
        (33, 0.0, ms(300_000)), // 2^32 overflows u32: capped
        (u32::MAX, 0.0, ms(300_000)),
        (u32::MAX, 0.875, ms(562_500)),
        (1, -3.0, ms(500)),     // clamped
        (1, 7.0, ms(1000)),     // clamped
        (1, f64::NAN, ms(500)), // NaN counts as 0
    ] {
        assert_eq!(
            backoff_delay(attempts, &DEFAULT, jitter),
            want,
            "attempts {attempts}, jitter {jitter}"
        );
    }
}

#[test]
fn backoff_edge_configs() {
    let zero = cfg(60, 0, 0);
    assert_eq!(backoff_delay(5, &zero, 0.5), Duration::ZERO);
    // Initial above the cap: the cap wins from the first retry.
    let inverted = cfg(60, 10_000, 2);
    assert_eq!(backoff_delay(1, &inverted, 1.0), Duration::from_secs(2));
    // Durations near the type's limit do not overflow.
    let huge = RetryConfig {
        max_age: Duration::MAX,
        initial_interval: Duration::MAX,
        max_interval: Duration::MAX,
    };
    assert_eq!(
        backoff_delay(u32::MAX, &huge, 0.0),
        Duration::MAX - Duration::MAX / 2
    );
}

#[test]
fn backoff_never_exceeds_max_interval() {
    for attempts in [1, 5, 9, 10, 11, 12, 40, 1000, u32::MAX] {
        for jitter in [0.0, 0.25, 0.5, 0.75, 0.999_999_999, 1.0] {
            let d = backoff_delay(attempts, &DEFAULT, jitter);
            assert!(d <= DEFAULT.max_interval, "{attempts} {jitter}: {d:?}");
        }
    }
}

#[test]
fn next_step_table() {
    const T0: u64 = 1_795_434_157_000; // first attempt
    const END: u64 = T0 + 4 * 3600 * 1000;
    let s = |n| Some(Duration::from_secs(n));
    let cases: &[(&str, u64, u32, Option<Duration>, Step)] = &[
        ("first failure", T0, 1, None, Step::RetryAt(T0 + 500)),
        (
            "third failure",
            T0 + 10_000,
            3,
            None,
            Step::RetryAt(T0 + 12_000),
        ),
        (
            "capped delay",
            T0 + 3_600_000,
            20,
            None,
            Step::RetryAt(T0 + 3_900_000),
        ),
        (
            "retry-after longer wins",
            T0,
            1,
            s(30),
            Step::RetryAt(T0 + 30_000),
        ),
        (
            "retry-after shorter: backoff wins",
            T0 + 1,
            10,
            s(1),
            Step::RetryAt(T0 + 256_001),
        ),
        ("retry-after zero", T0, 1, s(0), Step::RetryAt(T0 + 500)),
        (
            "clamped to window end",
            END - 1_000,
            30,
            None,
            Step::RetryAt(END),
        ),
        (
            "retry-after past the end: one last try at the edge",
            T0 + 60_000,
            2,
            s(86_400),
            Step::RetryAt(END),
        ),
        (
            "huge retry-after does not overflow",
            T0,
            2,
            Some(Duration::MAX),
            Step::RetryAt(END),
        ),
        (
            "one ms before the end",
            END - 1,
            1,
            None,
            Step::RetryAt(END),
        ),
        ("at the end", END, 1, None, Step::GiveUp),
        (
            "the edge attempt failed too",
            END + 37,
            40,
            None,
            Step::GiveUp,
        ),
        ("long past", END + 86_400_000, 3, s(5), Step::GiveUp),
        (
            "clock behind the first attempt still retries",
            T0 - 5_000,
            1,
            None,
            Step::RetryAt(T0 - 4_500),
        ),
    ];
    for (name, now, attempts, retry_after, want) in cases {
        assert_eq!(
            next_step(*now, T0, *attempts, *retry_after, &DEFAULT, 0.0),
            *want,
            "{name}"
        );
    }
}

#[test]
fn next_step_window_edges() {
    // max_age 0: the first failure is final.
    assert_eq!(
        next_step(5, 5, 1, None, &cfg(0, 1000, 600), 0.0),
        Step::GiveUp
    );
    // max_age that overflows u64 ms: never gives up, never overflows.
    let forever = RetryConfig {
        max_age: Duration::MAX,
        ..DEFAULT
    };
    assert_eq!(
        next_step(u64::MAX - 10, 0, 1, None, &forever, 0.0),
        Step::RetryAt(u64::MAX)
    );
    // A sub-millisecond delay rounds up: never due at `now` again.
    let tiny = RetryConfig {
        initial_interval: Duration::from_micros(2),
        ..DEFAULT
    };
    assert_eq!(next_step(100, 100, 1, None, &tiny, 0.0), Step::RetryAt(101));
}

#[test]
fn give_up_reason_table() {
    let window = |max_age| RetryConfig { max_age, ..DEFAULT };
    for (attempts, max_age, want) in [
        (
            14,
            Duration::from_secs(4 * 3600),
            "gave up after 14 attempts over 4h: HTTP 503",
        ),
        (
            1,
            Duration::from_secs(90 * 60),
            "gave up after 1 attempt over 1h30m: HTTP 503",
        ),
        (
            2,
            Duration::from_secs(61),
            "gave up after 2 attempts over 1m1s: HTTP 503",
        ),
        (
            1,
            Duration::ZERO,
            "gave up after 1 attempt over 0s: HTTP 503",
        ),
    ] {
        assert_eq!(give_up_reason(attempts, &window(max_age), "HTTP 503"), want);
    }
}

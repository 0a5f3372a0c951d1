use super::*;

const NOW: u64 = 1_795_434_157_000; // Mon, 23 Nov 2026 11:42:37 GMT

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().expect("test header"));
    }
    h
}

/// A failed attempt as a table row states it: retried (and the Retry-After in
/// seconds) or not, what the log shows, what `last_error` and the dead letter store.
#[derive(Debug, PartialEq)]
struct Seen {
    retried: bool,
    retry_after: Option<u64>,
    logged: String,
    stored: String,
}

fn retry(retry_after: Option<u64>, logged: &str, stored: &str) -> Option<Seen> {
    Some(Seen {
        retried: true,
        retry_after,
        logged: logged.into(),
        stored: stored.into(),
    })
}

fn fail(logged: &str, stored: &str) -> Option<Seen> {
    Some(Seen {
        retried: false,
        retry_after: None,
        logged: logged.into(),
        stored: stored.into(),
    })
}

/// `outcome` as a row (`None`: delivered), checking that a failure carries `status`.
fn seen(outcome: &Outcome, status: Option<u16>) -> Option<Seen> {
    let f = outcome.failure()?;
    assert_eq!(f.status, status, "{outcome:?}");
    let retry_after = match outcome {
        Outcome::Retry { retry_after, .. } => retry_after.map(|d| d.as_secs()),
        _ => None,
    };
    Some(Seen {
        retried: matches!(outcome, Outcome::Retry { .. }),
        retry_after,
        logged: f.summary.clone(),
        stored: f.reason(),
    })
}

/// Status, response headers, body start, verdict (`None`: delivered).
type Case = (
    u16,
    &'static [(&'static str, &'static str)],
    &'static str,
    Option<Seen>,
);

#[test]
fn status_table() {
    let cases: &[Case] = &[
        (200, &[], "", None),
        (202, &[], "queued", None),
        (204, &[("retry-after", "5")], "", None),
        (299, &[], "", None),
        (
            500,
            &[],
            "boom",
            retry(
                None,
                "HTTP 500 Internal Server Error",
                "HTTP 500 Internal Server Error: boom",
            ),
        ),
        (
            502,
            &[],
            "",
            retry(None, "HTTP 502 Bad Gateway", "HTTP 502 Bad Gateway"),
        ),
        (
            503,
            &[("retry-after", "120")],
            "busy",
            retry(
                Some(120),
                "HTTP 503 Service Unavailable (Retry-After 120s)",
                "HTTP 503 Service Unavailable (Retry-After 120s): busy",
            ),
        ),
        (
            503,
            &[("retry-after", "Mon, 23 Nov 2026 11:43:07 GMT")],
            "",
            retry(
                Some(30),
                "HTTP 503 Service Unavailable (Retry-After 30s)",
                "HTTP 503 Service Unavailable (Retry-After 30s)",
            ),
        ),
        (
            503,
            &[("retry-after", "soon")],
            "",
            retry(
                None,
                "HTTP 503 Service Unavailable",
                "HTTP 503 Service Unavailable",
            ),
        ),
        (
            500,
            &[("retry-after", "60")],
            "",
            retry(
                None,
                "HTTP 500 Internal Server Error",
                "HTTP 500 Internal Server Error",
            ),
        ), // only 429/503
        (599, &[], "", retry(None, "HTTP 599", "HTTP 599")),
        (
            408,
            &[],
            "",
            retry(None, "HTTP 408 Request Timeout", "HTTP 408 Request Timeout"),
        ),
        (
            429,
            &[("retry-after", "7")],
            "slow down",
            retry(
                Some(7),
                "HTTP 429 Too Many Requests (Retry-After 7s)",
                "HTTP 429 Too Many Requests (Retry-After 7s): slow down",
            ),
        ),
        (
            429,
            &[],
            "",
            retry(
                None,
                "HTTP 429 Too Many Requests",
                "HTTP 429 Too Many Requests",
            ),
        ),
        (
            400,
            &[],
            "{\"error\":\"bad\"}\n",
            fail(
                "HTTP 400 Bad Request",
                "HTTP 400 Bad Request: {\"error\":\"bad\"}",
            ),
        ),
        (
            401,
            &[],
            "",
            fail("HTTP 401 Unauthorized", "HTTP 401 Unauthorized"),
        ),
        (
            404,
            &[],
            "<html>\r\n  <h1>Not\tFound</h1>\r\n</html>",
            fail(
                "HTTP 404 Not Found",
                "HTTP 404 Not Found: <html> <h1>Not Found</h1> </html>",
            ),
        ),
        (
            410,
            &[("retry-after", "5")],
            "",
            fail("HTTP 410 Gone", "HTTP 410 Gone"),
        ),
        (
            413,
            &[],
            "",
            fail("HTTP 413 Payload Too Large", "HTTP 413 Payload Too Large"),
        ),
        (499, &[], "", fail("HTTP 499", "HTTP 499")),
        (
            301,
            &[("location", "https://new.example/hook")],
            "",
            fail(
                "HTTP 301 Moved Permanently (redirects are not followed)",
                "HTTP 301 Moved Permanently (redirects are not followed; Location: https://new.example/hook)",
            ),
        ),
        (
            302,
            &[("location", "/moved?token=t")],
            "see elsewhere",
            fail(
                "HTTP 302 Found (redirects are not followed)",
                "HTTP 302 Found (redirects are not followed; Location: /moved?token=t): see elsewhere",
            ),
        ),
        (
            302,
            &[],
            "",
            fail(
                "HTTP 302 Found (redirects are not followed)",
                "HTTP 302 Found (redirects are not followed)",
            ),
        ),
        (
            304,
            &[],
            "",
            fail(
                "HTTP 304 Not Modified (redirects are not followed)",
                "HTTP 304 Not Modified (redirects are not followed)",
            ),
        ),
        (
            100,
            &[],
            "",
            retry(None, "HTTP 100 Continue", "HTTP 100 Continue"),
        ),
        (600, &[], "", retry(None, "HTTP 600", "HTTP 600")),
        (42, &[], "", retry(None, "HTTP 42", "HTTP 42")),
    ];
    for (status, hs, body, want) in cases {
        let got = classify_response(*status, &headers(hs), body.as_bytes(), NOW);
        assert_eq!(&seen(&got, Some(*status)), want, "status {status}");
    }
}

#[test]
fn body_excerpt_is_one_bounded_line() {
    let long = "x".repeat(5000);
    let Outcome::Fail(failure) = classify_response(400, &HeaderMap::new(), long.as_bytes(), NOW)
    else {
        panic!("400 must fail");
    };
    assert_eq!(failure.excerpt, Some(format!("{}…", "x".repeat(200))));
    assert_eq!(
        failure.reason(),
        format!("HTTP 400 Bad Request: {}…", "x".repeat(200))
    );

    for (input, max, want) in [
        ("", 10, ""),
        ("  \n\t ", 10, ""),
        ("a\nb\r\nc", 10, "a b c"),
        ("  lead and trail  ", 50, "lead and trail"),
        ("0123456789", 10, "0123456789"),
        ("0123456789a", 10, "0123456789…"),
        ("01234 6789", 5, "01234…"),
        ("ééééé€€", 6, "ééééé€…"),
        ("nul\0bell\x07esc\x1b[0m", 30, "nul bell esc [0m"),
        ("a\u{2028}b\u{85}c", 10, "a b c"),
    ] {
        assert_eq!(one_line(input.as_bytes(), max), want, "{input:?}");
    }
    assert_eq!(one_line(b"ok\xff\xfeok", 20), "ok\u{fffd}\u{fffd}ok");
}

#[test]
fn retry_after_table() {
    let s = |n| Some(Duration::from_secs(n));
    for (value, want) in [
        ("0", s(0)),
        ("120", s(120)),
        (" 30 ", s(30)),
        ("99999999999999999999999", s(u64::MAX)),
        ("-5", None),
        ("1.5", None),
        ("", None),
        ("soon", None),
        ("Mon, 23 Nov 2026 11:42:37 GMT", s(0)),
        ("Mon, 23 Nov 2026 11:52:37 GMT", s(600)),
        ("Tue, 24 Nov 2026 11:42:37 GMT", s(86_400)),
        ("Sun, 06 Nov 1994 08:49:37 GMT", s(0)), // in the past: now
        ("Monday, 23-Nov-26 11:52:37 GMT", None), // RFC 850: not accepted
        ("Mon Nov 23 11:52:37 2026", None),      // asctime: not accepted
    ] {
        assert_eq!(parse_retry_after(value, NOW), want, "{value:?}");
    }
}

#[test]
fn http_date_table() {
    for (value, want) in [
        ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777_000)),
        ("Mon, 23 Nov 2026 11:42:37 GMT", Some(NOW)),
        ("Tue, 29 Feb 2028 23:59:59 GMT", Some(1_835_481_599_000)),
        ("Wed, 31 Dec 1969 23:59:59 GMT", None), // before the epoch
        ("Fri, 29 Feb 2027 00:00:00 GMT", None), // not a leap year
        ("Mon, 31 Apr 2026 00:00:00 GMT", None),
        ("Mon, 00 Nov 2026 00:00:00 GMT", None),
        ("Mon, 23 Nov 2026 24:00:00 GMT", None),
        ("Mon, 23 Nov 2026 11:60:00 GMT", None),
        ("Mon, 23 Nov 2026 11:42:37 UTC", None),
        ("Mon, 23 nov 2026 11:42:37 GMT", None),
        ("Mon, 3 Nov 2026 11:42:37 GMT", None),
        ("Mon, 23 Nov 26 11:42:37 GMT", None),
        ("Mon 23 Nov 2026 11:42:37 GMT", None),
        ("Mon, 23 Nov 2026 11:42 GMT", None),
        ("Mon, 23 Nov 2026 11:42:37:00 GMT", None),
        ("Mon,  23 Nov 2026 11:42:37 GMT", None),
        ("Mon, 23 Nov 2026 11:42:37 GMT extra", None),
        ("Mon, +3 Nov 2026 11:42:37 GMT", None),
    ] {
        assert_eq!(parse_http_date(value), want, "{value:?}");
    }
}

#[test]
fn transport_table() {
    let t = Duration::from_secs(5);
    for (err, timeout, want) in [
        (Transport::Timeout, t, "timed out after 5s"),
        (
            Transport::Timeout,
            Duration::from_millis(1500),
            "timed out after 1.5s",
        ),
        (Transport::ConnectionRefused, t, "connection refused"),
        (
            Transport::Connect("dns error: no such host".into()),
            t,
            "connection failed: dns error: no such host",
        ),
        (
            Transport::Other("connection reset".into()),
            t,
            "request failed: connection reset",
        ),
    ] {
        let got = classify_transport(&err, timeout);
        assert_eq!(seen(&got, None), retry(None, want, want), "{err:?}");
    }
}

#[test]
fn failures_log_our_words_and_store_the_destinations() {
    assert_eq!(Outcome::Delivered.failure(), None);
    let mut h = headers(&[("location", "https://x.example/hook?token=SECRET")]);
    h.insert("retry-after", "1".parse().expect("test header"));
    for status in [301, 400, 503] {
        let got = classify_response(status, &h, b"{\"email\":\"a@b.c\"}", NOW);
        let f = got.failure().expect("a failure");
        assert!(f.reason().contains("a@b.c"), "{status}: {f:?}");
        assert!(!f.summary.contains("a@b.c"), "{status}: {f:?}");
        assert!(!f.summary.contains("SECRET"), "{status}: {f:?}");
        assert_eq!(f.reason().contains("SECRET"), status == 301, "{f:?}");
    }
    let ours = Failure::no_answer("destination `x` is no longer in relay.toml".into());
    assert_eq!(ours.status, None);
    assert_eq!(ours.reason(), ours.summary);
}

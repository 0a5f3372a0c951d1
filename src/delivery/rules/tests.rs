use super::*;
use crate::config::{Format, JqProgram};

const ORDER: &str = r#"{"type":"track","event":"Order Completed","userId":"a@b.c","properties":{"total":150,"email":"a@b.c","products":[{"category":"shoes"},{"category":"hats"}]},"messageId":"srl_1"}"#;
const SMALL: &str = r#"{"type":"track","event":"Order Completed","userId":"a@b.c","properties":{"total":20},"messageId":"srl_2"}"#;
const IDENTIFY: &str =
    r#"{"type":"identify","userId":"a@b.c","traits":{"email":"a@b.c"},"messageId":"srl_3"}"#;

fn rules(events: Option<&[&str]>, filter: Option<&str>, transform: Option<&str>) -> Rules {
    let mut cfg = crate::delivery::format::tests::dest(Format::Webhook);
    cfg.events = events.map(|e| e.iter().map(|s| s.to_string()).collect());
    cfg.filter = filter.map(|p| JqProgram::compile(p).expect("filter compiles"));
    cfg.transform = transform.map(|p| JqProgram::compile(p).expect("transform compiles"));
    Rules::new("crm", &cfg)
}

/// A selection with its events as text.
#[derive(Debug)]
struct Picked {
    events: Vec<String>,
    filtered: u32,
    dropped: u32,
}

fn select(r: &Rules, events: &[Candidate<'_>]) -> Result<Picked, RuleError> {
    r.select(events).map(|s| Picked {
        events: s.texts(events).into_iter().map(str::to_string).collect(),
        filtered: s.filtered,
        dropped: s.dropped,
    })
}

fn track(json: &str) -> Candidate<'_> {
    Candidate {
        call: "track",
        name: Some("Order Completed"),
        json,
    }
}

fn identify(json: &str) -> Candidate<'_> {
    Candidate {
        call: "identify",
        name: None,
        json,
    }
}

#[test]
fn filter_outcomes() {
    let sent = Verdict::Send(Cow::Borrowed(ORDER));
    let table: &[(&str, Result<Verdict<'_>, &str>)] = &[
        ("true", Ok(sent.clone())),
        (".properties.total >= 100", Ok(sent.clone())),
        ("false", Ok(Verdict::Filtered)),
        (".properties.total < 100", Ok(Verdict::Filtered)),
        ("null", Ok(Verdict::Filtered)),
        (".properties.missing", Ok(Verdict::Filtered)),
        ("empty", Ok(Verdict::Filtered)),
        ("select(false)", Ok(Verdict::Filtered)),
        // jq's truth: anything but false and null.
        (".properties.total", Ok(sent.clone())),
        // Several outputs: any true one sends (here: one product is shoes).
        (
            r#".properties.products[].category == "shoes""#,
            Ok(sent.clone()),
        ),
        (
            r#".properties.products[].category == "bags""#,
            Ok(Verdict::Filtered),
        ),
        (r#"error("no total")"#, Err("no total")),
        (".properties.total.amount", Err("cannot index")),
        // An error after a true output is never reached.
        (r#"true, error("late")"#, Ok(sent.clone())),
        (r#"false, error("after false")"#, Err("after false")),
    ];
    for (filter, want) in table {
        let got = rules(None, Some(filter), None).apply(track(ORDER));
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(&g, w, "{filter}"),
            (Err(w), Err(e)) => {
                assert_eq!(e.key, "destinations.crm.filter", "{filter}");
                assert!(e.message.contains(w), "{filter}: {}", e.message);
                assert!(
                    e.to_string()
                        .starts_with("destinations.crm.filter: run-time error: "),
                    "{e}"
                );
            }
            (w, g) => panic!("{filter}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn transform_outcomes() {
    let owned = |s: &str| Ok(Verdict::Send(Cow::Owned(s.to_string())));
    let table: &[(&str, Result<Verdict<'_>, &str>)] = &[
        // One output object: it replaces the event.
        (
            r#".properties.channel = "shopify""#,
            owned(
                r#"{"type":"track","event":"Order Completed","userId":"a@b.c","properties":{"total":20,"channel":"shopify"},"messageId":"srl_2"}"#,
            ),
        ),
        // jaq's `del` may move the last key into the hole: JSON objects
        // are unordered, and the bytes sent are still what is signed.
        (
            "del(.userId) | .properties.total *= 2",
            owned(
                r#"{"type":"track","event":"Order Completed","messageId":"srl_2","properties":{"total":40}}"#,
            ),
        ),
        (".", owned(SMALL)),
        // No output: dropped.
        ("empty", Ok(Verdict::Dropped)),
        ("select(.properties.total > 100)", Ok(Verdict::Dropped)),
        // Two outputs, or something other than an object: errors.
        (". , .", Err("more than one output")),
        (".properties.total", Err("yielded a number, not an object")),
        ("[.]", Err("yielded an array, not an object")),
        ("null", Err("yielded null, not an object")),
        (r#"error("bad shape")"#, Err("bad shape")),
    ];
    for (transform, want) in table {
        let got = rules(None, None, Some(transform)).apply(track(SMALL));
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(&g, w, "{transform}"),
            (Err(w), Err(e)) => {
                assert_eq!(e.key, "destinations.crm.transform", "{transform}");
                assert!(e.message.contains(w), "{transform}: {}", e.message);
            }
            (w, g) => panic!("{transform}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn events_composes_with_filter_and_transform() {
    let r = rules(
        Some(&["Order Completed"]),
        Some(".properties.total >= 100"),
        Some(".properties.rule = \"big\""),
    );
    let events = [identify(IDENTIFY), track(ORDER), track(SMALL)];
    let s = select(&r, &events).expect("no run-time error");
    // identify: not listed (not counted); ORDER: passes and is transformed;
    // SMALL: filtered.
    assert_eq!(s.filtered, 1);
    assert_eq!(s.dropped, 0);
    assert_eq!(s.events.len(), 1);
    assert!(
        s.events[0].contains(r#""rule":"big""#) && s.events[0].contains("srl_1"),
        "{:?}",
        s.events
    );

    // `events` alone: no jq, the events' own bytes.
    let r = rules(Some(&["identify"]), None, None);
    assert!(r.is_plain());
    let s = select(&r, &[identify(IDENTIFY), track(ORDER)]).unwrap();
    assert_eq!(s.events, [IDENTIFY]);
    // Unchanged events are not copied.
    assert_eq!(
        r.select(&[identify(IDENTIFY)]).unwrap().sent,
        [Sent::Event(0)]
    );

    // A filter on the call type instead of `events`.
    let r = rules(None, Some(r#".type == "identify""#), None);
    let s = select(&r, &[identify(IDENTIFY), track(ORDER)]).unwrap();
    assert_eq!((s.events.len(), s.filtered), (1, 1));

    // A run-time error on any event fails the whole selection.
    let r = rules(None, Some(".traits.email | test(\"@\")"), None);
    let e = select(&r, &[identify(IDENTIFY), track(ORDER)]).unwrap_err();
    assert_eq!(e.key, "destinations.crm.filter");
}

#[test]
fn the_readme_examples_do_what_they_say() {
    // Only orders over 100 (other calls pass).
    let r = rules(
        None,
        Some(r#".type != "track" or (.properties.total // 0) >= 100"#),
        None,
    );
    let s = select(&r, &[identify(IDENTIFY), track(ORDER), track(SMALL)]).unwrap();
    assert_eq!((s.events.len(), s.filtered), (2, 1));
    // Only a product category.
    let r = rules(
        None,
        Some(r#"any(.properties.products[]?; .category == "hats")"#),
        None,
    );
    let s = select(&r, &[track(ORDER), track(SMALL)]).unwrap();
    assert_eq!((s.events.len(), s.filtered), (1, 1));
    // Drop a PII field wherever it is (jaq's `del(.traits.email)` fails on
    // an event without traits; `..` with `?` does not).
    let r = rules(None, None, Some("del(.. | .email?, .phone?)"));
    let s = select(&r, &[track(ORDER), identify(IDENTIFY)]).unwrap();
    assert!(s.events.iter().all(|e| !e.contains(r#""email""#)), "{s:?}");
    assert!(s.events.iter().all(|e| e.contains(r#""userId":"a@b.c""#)));
    // Add a field: jaq, unlike jq, does not create a missing object on
    // assignment, so guard it (or merge with `+=`).
    let r = rules(None, None, Some(r#".properties.channel = "shopify""#));
    let e = select(&r, &[identify(IDENTIFY)]).unwrap_err();
    assert!(e.message.contains("cannot use null"), "{e}");
    for add in [
        r#"if .type == "track" then .properties.channel = "shopify" end"#,
        r#"if .properties then .properties += {channel: "shopify"} end"#,
    ] {
        let r = rules(None, None, Some(add));
        let s = select(&r, &[track(ORDER), identify(IDENTIFY)]).unwrap();
        assert_eq!(s.events.len(), 2, "{add}");
        assert!(s.events[0].contains(r#""channel":"shopify""#), "{add}");
    }
    // Route `delete` calls only to the warehouse: the other destinations
    // skip them.
    let r = rules(None, Some(r#".type != "delete""#), None);
    let delete = Candidate {
        call: "delete",
        name: None,
        json: r#"{"type":"delete","userId":"a@b.c","messageId":"srl_4"}"#,
    };
    let s = select(&r, &[delete, track(ORDER)]).unwrap();
    assert_eq!((s.events.len(), s.filtered), (1, 1));
}

#[test]
fn the_readme_category_filter_works_on_products_and_orders() {
    let r = rules(
        None,
        Some(
            r#".properties.category == "Shoes" or any(.properties.products[]?; .brand == "Acme" or (.sku // "" | startswith("SHOE-")))"#,
        ),
        None,
    );
    let product = r#"{"type":"track","event":"Product Created","properties":{"category":"Shoes"}}"#;
    let order_sku = r#"{"type":"track","event":"Order Completed","properties":{"products":[{"sku":"SHOE-1"}]}}"#;
    let order_brand = r#"{"type":"track","event":"Order Completed","properties":{"products":[{"brand":"Acme"}]}}"#;
    let other = r#"{"type":"track","event":"Order Completed","properties":{"products":[{"brand":"X","sku":null}]}}"#;
    let s = select(
        &r,
        &[
            track(product),
            track(order_sku),
            track(order_brand),
            track(other),
            identify(IDENTIFY),
        ],
    )
    .unwrap();
    assert_eq!((s.events.len(), s.filtered), (3, 2));
}

//! The receiver's one route, `POST /events`: `X-Signature` checked, one line
//! printed per event. `tests/it/examples.rs` serves it too.

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha1::Sha1;
use warp::Filter;
use warp::http::StatusCode;

/// The bytes `X-Signature` covers: the whole body, or for an array its first
/// element as it appears in the body.
fn signed_part(body: &[u8]) -> &[u8] {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start.filter(|&i| body[i] == b'[') else {
        return body;
    };
    let rest = &body[start + 1..];
    let skip = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let first = &rest[skip..];
    let mut values = serde_json::Deserializer::from_slice(first).into_iter::<Value>();
    match values.next() {
        Some(Ok(_)) => &first[..values.byte_offset()],
        _ => body,
    }
}

fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(tag) = signature.and_then(|s| hex::decode(s.trim()).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return false;
    };
    mac.update(signed_part(body));
    mac.verify_slice(&tag).is_ok()
}

/// One line per event: type, event name, who, messageId.
fn describe(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let who = match (e["userId"].as_str(), e["anonymousId"].as_str()) {
        (Some(u), _) => format!("userId={u}"),
        (None, Some(a)) => format!("anonymousId={a}"),
        _ => "-".into(),
    };
    let name = match s("type").as_str() {
        "track" => format!("{:?}", s("event")),
        _ => "-".into(),
    };
    format!(
        "{:<9} {name:<28} {who:<40} messageId={}",
        s("type"),
        s("messageId")
    )
}

fn handle(secret: &[u8], signature: Option<String>, body: Bytes) -> (StatusCode, &'static str) {
    if !verify(secret, &body, signature.as_deref()) {
        eprintln!("401: X-Signature missing or wrong ({} bytes)", body.len());
        return (StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    let events = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(a)) => a,
        Ok(Value::Object(o)) if o.contains_key("batch") => {
            o["batch"].as_array().cloned().unwrap_or_default()
        }
        Ok(v) => vec![v],
        Err(e) => {
            eprintln!("400: body is not JSON: {e}");
            return (StatusCode::BAD_REQUEST, "not JSON\n");
        }
    };
    for e in &events {
        println!("{}", describe(e));
    }
    (StatusCode::OK, "ok\n")
}

/// `POST /events`.
pub fn routes(
    secret: &'static [u8],
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("events")
        .and(warp::post())
        .and(warp::header::optional::<String>("x-signature"))
        .and(warp::body::bytes())
        .map(move |sig: Option<String>, body: Bytes| {
            let (status, text) = handle(secret, sig, body);
            warp::reply::with_status(text, status)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(body: &[u8]) -> String {
        let mut m = Hmac::<Sha1>::new_from_slice(b"k").unwrap();
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    #[test]
    fn single_and_batch_bodies_verify() {
        let one = br#"{"type":"track","event":"Order Paid"}"#;
        assert!(verify(b"k", one, Some(&sign(one))));
        assert!(!verify(b"k", one, Some(&sign(b"{}"))));
        assert!(!verify(b"k", one, None));
        let batch = br#"[{"type":"track","a":[1,2]},{"type":"identify"}]"#;
        let first = br#"{"type":"track","a":[1,2]}"#;
        assert_eq!(signed_part(batch), first);
        assert!(verify(b"k", batch, Some(&sign(first))));
    }
}

//! Every admin route, with and without the bearer token.

use reqwest::Method;

use crate::common::client;
use crate::common::relay::{Opts, Relay};

#[tokio::test]
async fn admin_routes_need_the_token_metrics_and_health_do_not() {
    let relay = Relay::start(Opts {
        admin_token: Some("s3cret-admin".into()),
        ..Opts::default()
    })
    .await;
    let c = client();
    let id = "00000000000004d2-0";
    let routes: &[(Method, String, u16)] = &[
        (Method::GET, "/admin/stats".into(), 200),
        (Method::GET, "/admin/dead-letters".into(), 200),
        (Method::GET, format!("/admin/dead-letters/{id}"), 404),
        (
            Method::POST,
            format!("/admin/dead-letters/{id}/replay"),
            404,
        ),
        (Method::POST, "/admin/dead-letters/replay".into(), 200),
        (Method::DELETE, format!("/admin/dead-letters/{id}"), 404),
        (Method::DELETE, "/admin/dead-letters".into(), 200),
    ];
    for (method, path, with_token) in routes {
        let url = format!("{}{path}", relay.admin);
        let none = c.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without a token");
        let wrong = c
            .request(method.clone(), &url)
            .bearer_auth("s3cret-admiN")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
        let body = wrong.text().await.unwrap();
        assert!(!body.contains("s3cret"), "{body}");
        let ok = c
            .request(method.clone(), &url)
            .bearer_auth("s3cret-admin")
            .send()
            .await
            .unwrap();
        assert_eq!(
            ok.status().as_u16(),
            *with_token,
            "{method} {path} with the token"
        );
    }
    for open in ["/metrics", "/healthz"] {
        let r = c
            .get(format!("{}{open}", relay.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{open} is open to scrapers");
    }
    let r = c
        .get(format!("{}/admin/nope", relay.admin))
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{}/admin/dead-letters/not-an-id", relay.admin))
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    relay.stop().await;
}

//! The admin API's bearer token against the real binary: required on every endpoint but
//! `/healthz` when configured, and an unauthorised change changes nothing.

mod support;

use reqwest::Method;
use serde_json::json;

use support::admin_api::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_configured() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.token = Some("s3cret-t0ken".into());
    let gw = builder.start().await;
    let bearer = "Bearer s3cret-t0ken";

    for (method, path) in [
        (Method::GET, "/status"),
        (Method::GET, "/metrics"),
        (Method::GET, "/backends"),
        (Method::DELETE, "/backends?url=x"),
        (Method::GET, "/nope"),
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-t0ke"),
            Some("s3cret-t0ken"),
        ] {
            let mut req = admin(&gw, method.clone(), path);
            if let Some(auth) = auth {
                req = req.header("Authorization", auth);
            }
            let (code, body) = json_of(req.send().await.expect("request")).await;
            assert_eq!(code, 401, "{method} {path} with {auth:?}");
            assert!(body["error"].is_string());
        }
    }
    let resp = admin(&gw, Method::POST, "/backends")
        .json(&json!({"url": b.url()}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));

    let healthz = admin(&gw, Method::GET, "/healthz")
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.status(), 200);

    let status = |auth: &'static str| {
        admin(&gw, Method::GET, "/status")
            .header("Authorization", auth)
            .send()
    };
    let (code, s) = json_of(status(bearer).await.expect("status")).await;
    assert_eq!(code, 200);
    assert_eq!(
        s["total_backends"], 1,
        "the unauthorised POST changed the pool"
    );
    assert_eq!(
        status("bearer s3cret-t0ken")
            .await
            .expect("status")
            .status(),
        200
    );

    let resp = admin(&gw, Method::POST, "/backends")
        .header("Authorization", bearer)
        .json(&json!({"url": b.url()}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 201);
}

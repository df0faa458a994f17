//! The admin API's endpoints against the real binary: `/status`, `/healthz` and `/metrics`
//! answer, `POST /backends` as in the SPEC's example, `DELETE /backends` by JSON body and by query.

mod support;

use reqwest::Method;
use serde_json::json;

use support::admin_api::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_healthz_and_metrics_answer() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .weighted(b.url(), 3)
        .start()
        .await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    assert!(gw.wait_alive(&b.url(), true, DEADLINE).await);

    let (code, s) = json_of(
        admin(&gw, Method::GET, "/status")
            .send()
            .await
            .expect("status"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(s["total_backends"], 2);
    assert_eq!(s["active_backends"], 2);
    assert_eq!(s["strategy"], "round-robin");
    let backends = s["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2);
    for (entry, origin, weight) in [(&backends[0], &a, 1), (&backends[1], &b, 3)] {
        assert_eq!(entry["url"], origin.url());
        assert_eq!(entry["alive"], true);
        assert_eq!(entry["current_connections"], 0);
        assert_eq!(entry["weight"], weight);
    }

    let (code, h) = json_of(
        admin(&gw, Method::GET, "/healthz")
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok");

    let m = admin(&gw, Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(m.status(), 200);
    let ct = m.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = m.text().await.expect("text");
    assert!(text.contains("portico_backend_up"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_adds_a_backend_as_in_the_spec_example() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let gw = GatewayBuilder::default().backend(a.url()).start().await;
    let url = format!("http://localhost:{}", b.addr.port());
    // The SPEC's curl example, byte for byte.
    let resp = admin(&gw, Method::POST, "/backends")
        .header("Content-Type", "application/json")
        .body(format!("{{\"url\": \"{url}\"}}"))
        .send()
        .await
        .expect("POST");
    let (code, body) = json_of(resp).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["url"], url);
    assert_eq!(body["weight"], 1);
    assert!(body["alive"].is_boolean() && body["current_connections"] == 0);
    assert_eq!(pool(&gw).await, vec![(a.url(), 1), (url.clone(), 1)]);
    assert!(gw.wait_alive(&url, true, DEADLINE).await);
    let http = client();
    let reached = eventually(DEADLINE, || async {
        let _ = proxied(&http, &gw).await;
        b.requests() > 0
    })
    .await;
    assert!(reached, "the added backend never got a request");

    let c = Origin::start("c").await;
    let (code, body) = add(&gw, json!({"url": c.url(), "weight": 3})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["weight"], 3);
    assert!(pool(&gw).await.contains(&(c.url(), 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_json_body_and_by_query() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    let resp = admin(&gw, Method::DELETE, "/backends")
        .header("Content-Type", "application/json")
        .body(format!("{{\"url\": \"{}\"}}", a.url()))
        .send()
        .await
        .expect("DELETE");
    let (code, body) = json_of(resp).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["removed"]["url"], a.url());
    assert_eq!(pool(&gw).await, vec![(b.url(), 1)]);

    let (code, body) = delete_by_query(&gw, &b.url()).await;
    assert_eq!(code, 200, "{body}");
    assert!(pool(&gw).await.is_empty());
    let (status, _) = proxied(&client(), &gw).await;
    assert_eq!(status, 503);
}

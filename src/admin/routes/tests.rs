//! Unit tests of admin routing and handlers, without sockets.

use std::sync::Arc;

use super::*;
use crate::backend::Observation;
use crate::balancer::LoadBalancer;

fn api(token: Option<&str>) -> AdminApi {
    let control = crate::control::testing::control(None);
    let balancer = control.balancer().clone();
    control
        .seed(
            &[crate::config::test_spec("http://127.0.0.1:9", 2)],
            &Default::default(),
        )
        .expect("seeded");
    let b = balancer.snapshot().backends[0].clone();
    balancer.set_backend_status(&b, Observation::Passed);
    let metrics = Arc::new(Metrics::new(balancer).expect("metrics"));
    AdminApi {
        control,
        metrics,
        token: token.map(str::to_owned),
        guard: crate::admin::AdminGuard::new("127.0.0.1:8081".parse().expect("addr"), Vec::new()),
    }
}

fn req(method: Method, path: &str, body: &str) -> AdminRequest {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path.to_string(), None),
    };
    AdminRequest {
        method,
        path,
        query,
        authorization: None,
        content_type: Some("application/json".into()),
        body: Some(body.as_bytes().to_vec()),
        host: Some("127.0.0.1:8081".into()),
        origin: None,
        local_ip: None,
    }
}

fn body(r: &AdminResponse) -> Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

fn pool_urls(api: &AdminApi) -> Vec<String> {
    api.control
        .balancer()
        .snapshot()
        .backends
        .iter()
        .map(|b| b.name.clone())
        .collect()
}

#[tokio::test]
async fn status_has_the_spec_shape() {
    let api = api(None);
    let r = api.handle(req(Method::GET, "/status", "")).await;
    assert_eq!(r.status, 200);
    let v = body(&r);
    assert_eq!(v["total_backends"], 1);
    assert_eq!(v["active_backends"], 1);
    assert_eq!(v["strategy"], "round-robin");
    let b = &v["backends"][0];
    assert_eq!(b["url"], "http://127.0.0.1:9");
    assert_eq!(b["alive"], true);
    assert_eq!(b["current_connections"], 0);
    assert_eq!(b["weight"], 2);
    assert_eq!(b["health"], "up");
}

#[tokio::test]
async fn bad_input_gets_the_right_status_and_changes_nothing() {
    let api = api(None);
    let before = pool_urls(&api);
    let big = format!("{{\"url\": \"http://a:1\", \"x\": \"{}\"}}", "a".repeat(10));
    let cases: Vec<(AdminRequest, u16)> = vec![
        (req(Method::POST, "/backends", "{not json"), 400),
        (req(Method::POST, "/backends", "{}"), 400),
        (
            req(
                Method::POST,
                "/backends",
                r#"{"url": "http://a:1", "extra": 1}"#,
            ),
            400,
        ),
        (req(Method::POST, "/backends", &big), 400),
        (
            req(Method::POST, "/backends", r#"{"url": "ftp://a:1"}"#),
            400,
        ),
        (
            req(
                Method::POST,
                "/backends",
                r#"{"url": "http://a:1", "weight": 0}"#,
            ),
            400,
        ),
        (
            req(
                Method::POST,
                "/backends",
                r#"{"url": "http://a:1", "protocol": "h2"}"#,
            ),
            400,
        ),
        (
            req(
                Method::POST,
                "/backends",
                r#"{"url": "https://a:1", "protocol": "spdy"}"#,
            ),
            400,
        ),
        (
            req(
                Method::POST,
                "/backends",
                r#"{"url": "http://127.0.0.1:9/"}"#,
            ),
            409,
        ),
        (req(Method::POST, "/backends", ""), 400),
        (
            req(
                Method::DELETE,
                "/backends",
                r#"{"url": "http://127.0.0.1:10"}"#,
            ),
            404,
        ),
        (
            req(
                Method::DELETE,
                "/backends?url=http%3A%2F%2F127.0.0.1%3A10",
                "",
            ),
            404,
        ),
        (req(Method::DELETE, "/backends", r#"{"url": 5}"#), 400),
        (req(Method::DELETE, "/backends", ""), 400),
        (req(Method::PUT, "/backends", ""), 405),
        (req(Method::POST, "/status", ""), 405),
        (req(Method::GET, "/nope", ""), 404),
    ];
    for (r, want) in cases {
        let label = format!(
            "{} {} {:?}",
            r.method,
            r.path,
            r.body.as_deref().map(String::from_utf8_lossy)
        );
        let resp = api.handle(r).await;
        assert_eq!(resp.status, want, "{label}");
        assert!(body(&resp)["error"].is_string(), "{label}: no error field");
    }
    let mut too_big = req(Method::POST, "/backends", "");
    too_big.body = None;
    assert_eq!(api.handle(too_big).await.status, 413);
    let mut form = req(Method::POST, "/backends", "url=http://a:1");
    form.content_type = Some("application/x-www-form-urlencoded".into());
    assert_eq!(api.handle(form).await.status, 415);
    let mut untyped = req(
        Method::POST,
        "/backends",
        r#"{"url": "http://127.0.0.1:7"}"#,
    );
    untyped.content_type = None;
    assert_eq!(api.handle(untyped).await.status, 415);
    assert_eq!(pool_urls(&api), before);
}

#[tokio::test]
async fn a_cross_site_post_changes_nothing() {
    let api = api(None);
    let before = pool_urls(&api);
    let add = r#"{"url": "http://127.0.0.1:7"}"#;
    let mut foreign_host = req(Method::POST, "/backends", add);
    foreign_host.host = Some("rebound.example:8081".into());
    assert_eq!(api.handle(foreign_host).await.status, 421);
    let mut foreign_origin = req(Method::POST, "/backends", add);
    foreign_origin.origin = Some("http://evil.example".into());
    assert_eq!(api.handle(foreign_origin).await.status, 403);
    assert_eq!(pool_urls(&api), before);
    // The admin API's own page may write.
    let mut own = req(Method::POST, "/backends", add);
    own.origin = Some("http://127.0.0.1:8081".into());
    assert_eq!(api.handle(own).await.status, 201);
}

#[tokio::test]
async fn method_not_allowed_names_the_allowed_ones() {
    let api = api(None);
    let r = api.handle(req(Method::PATCH, "/backends", "")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.allow, Some("GET, HEAD, POST, DELETE"));
}

#[tokio::test]
async fn delete_by_query_or_body_removes() {
    let api = api(None);
    let r = api
        .handle(req(Method::DELETE, "/backends?url=http://127.0.0.1:9", ""))
        .await;
    assert_eq!(r.status, 200);
    assert!(pool_urls(&api).is_empty());
}

#[tokio::test]
async fn token_guards_everything_but_healthz() {
    let api = api(Some("s3cret"));
    assert_eq!(
        api.handle(req(Method::GET, "/healthz", "")).await.status,
        200
    );
    let r = api.handle(req(Method::GET, "/status", "")).await;
    assert_eq!(r.status, 401);
    assert!(r.www_authenticate);
    let mut wrong = req(Method::GET, "/status", "");
    wrong.authorization = Some("Bearer s3cre".into());
    assert_eq!(api.handle(wrong).await.status, 401);
    let mut right = req(Method::GET, "/status", "");
    right.authorization = Some("Bearer s3cret".into());
    assert_eq!(api.handle(right).await.status, 200);
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_others_are_refused() {
    let api = api(Some("s3cret"));
    for (auth, want) in [
        ("bearer s3cret", 200),
        ("BEARER  s3cret ", 200),
        ("Basic s3cret", 401),
        ("s3cret", 401),
        ("Bearer", 401),
        ("Bearer s3cret2", 401),
    ] {
        let mut r = req(Method::GET, "/status", "");
        r.authorization = Some(auth.into());
        assert_eq!(api.handle(r).await.status, want, "{auth:?}");
    }
}

#[tokio::test]
async fn metrics_show_every_backend_and_survive_concurrent_scrapes() {
    let api = Arc::new(api(None));
    let backend = api.control.balancer().snapshot().backends[0].clone();
    let leases: Vec<_> = (0..3)
        .map(|_| crate::backend::Lease::new(backend.clone()))
        .collect();
    let want = [
        "portico_backend_requests_total{backend=\"http://127.0.0.1:9\"} 3",
        "portico_backend_in_flight{backend=\"http://127.0.0.1:9\"} 3",
        "portico_backend_up{backend=\"http://127.0.0.1:9\"} 1",
        "portico_backend_weight{backend=\"http://127.0.0.1:9\"} 2",
        "portico_in_flight_requests 3",
        "portico_backends{state=\"total\"} 1",
    ];
    let scrapes: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| String::from_utf8(api.metrics.render()).expect("utf-8"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for s in scrapes {
        for text in s.join().expect("scraper") {
            for line in want {
                assert!(text.contains(line), "missing {line:?} in\n{text}");
            }
        }
    }
    // Removed with requests in flight: still exported, as draining.
    let url = backend.url.clone();
    api.control.remove(&url).await.expect("removed");
    let text = String::from_utf8(api.metrics.render()).expect("utf-8");
    assert!(text.contains("portico_backend_draining{backend=\"http://127.0.0.1:9\"} 1"));
    assert!(text.contains("portico_backend_up{backend=\"http://127.0.0.1:9\"} 0"));
    drop(leases);
    let text = String::from_utf8(api.metrics.render()).expect("utf-8");
    assert!(!text.contains("http://127.0.0.1:9"), "{text}");
    assert!(text.contains("portico_in_flight_requests 0"));
}

#[test]
fn query_params_are_decoded() {
    assert_eq!(
        query_param("a=1&url=http%3A%2F%2Fh%3A1", "url").as_deref(),
        Some("http://h:1")
    );
    assert_eq!(query_param("url=%zz%", "url").as_deref(), Some("%zz%"));
    assert_eq!(query_param("x=1", "url"), None);
}

#[test]
fn constant_time_eq_compares_whole_values() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
}

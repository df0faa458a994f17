//! The admin API against the real binary: every endpoint, every refusal (with an unchanged
//! pool), drain on removal, concurrent changes under traffic, the state file across restarts
//! and `kill -9`, the bearer token and the Prometheus exposition.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const DEADLINE: Duration = Duration::from_secs(15);

/// A request to the admin API.
fn admin(gw: &Gateway, method: Method, path: &str) -> reqwest::RequestBuilder {
    client().request(method, gw.admin(path))
}

/// Status and JSON body of a response (panics with the text if the body is not JSON).
async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    (status, value)
}

async fn add(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    let resp = admin(gw, Method::POST, "/backends")
        .json(&body)
        .send()
        .await
        .expect("POST /backends");
    json_of(resp).await
}

async fn delete_by_query(gw: &Gateway, url: &str) -> (StatusCode, Value) {
    let resp = admin(gw, Method::DELETE, "/backends")
        .query(&[("url", url)])
        .send()
        .await
        .expect("DELETE /backends");
    json_of(resp).await
}

/// The pool as `/status` lists it: (url, weight), sorted.
async fn pool(gw: &Gateway) -> Vec<(String, u64)> {
    let status = gw.status().await;
    let mut list: Vec<(String, u64)> = status["backends"]
        .as_array()
        .expect("backends array")
        .iter()
        .map(|b| {
            let url = b["url"].as_str().expect("url").to_string();
            (url, b["weight"].as_u64().expect("weight"))
        })
        .collect();
    list.sort();
    list
}

/// Sends raw bytes to `port` and returns what comes back before the connection closes or
/// `within` passes.
async fn raw_exchange(port: u16, request: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Which origin answered a proxied request (the origins send `x-origin: <name>`).
async fn proxied(http: &reqwest::Client, gw: &Gateway) -> (StatusCode, String) {
    let resp = http.get(gw.url("/")).send().await.expect("proxied request");
    let origin = resp
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (resp.status(), origin)
}

/// Waits until every in-flight count (pool and draining) is back to 0.
async fn wait_idle(gw: &Gateway) -> bool {
    eventually(DEADLINE, || async {
        let s = gw.status().await;
        let idle = |list: &Value| {
            list.as_array()
                .is_some_and(|l| l.iter().all(|b| b["current_connections"] == 0))
        };
        idle(&s["backends"]) && s["draining"].as_array().is_some_and(|d| d.is_empty())
    })
    .await
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_json_and_changes_nothing() {
    let a = Origin::start("a").await;
    let gw = GatewayBuilder::default().backend(a.url()).start().await;
    let before = pool(&gw).await;
    let json_ct = "application/json";
    let big = format!(
        r#"{{"url": "http://127.0.0.1:1", "pad": "{}"}}"#,
        "x".repeat(70_000)
    );
    // (method, path, content type, body, status)
    let cases: Vec<(Method, String, Option<&str>, String, u16)> = vec![
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            "{not json".into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            "".into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            "{}".into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"weight": 2}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "http://127.0.0.1:1", "extra": true}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": 7}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "ftp://127.0.0.1:1"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "127.0.0.1:1"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "http://127.0.0.1:1/app"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "http://127.0.0.1:99999"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "http://:1"}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "http://127.0.0.1:1", "weight": 0}"#.into(),
            400,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            format!(r#"{{"url": "{}"}}"#, a.url()),
            409,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some(json_ct),
            format!(r#"{{"url": "{}/"}}"#, a.url().to_uppercase()),
            409,
        ),
        (Method::POST, "/backends".into(), Some(json_ct), big, 413),
        (
            Method::POST,
            "/backends".into(),
            Some("application/x-www-form-urlencoded"),
            "url=http://127.0.0.1:1".into(),
            415,
        ),
        (
            Method::POST,
            "/backends".into(),
            Some("text/plain"),
            r#"{"url": "http://127.0.0.1:1"}"#.into(),
            415,
        ),
        (
            Method::DELETE,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "http://127.0.0.1:1"}"#.into(),
            404,
        ),
        (
            Method::DELETE,
            "/backends?url=http%3A%2F%2F127.0.0.1%3A1".into(),
            None,
            "".into(),
            404,
        ),
        (
            Method::DELETE,
            "/backends".into(),
            Some(json_ct),
            "{not json".into(),
            400,
        ),
        (
            Method::DELETE,
            "/backends".into(),
            Some(json_ct),
            r#"{"url": "x", "y": 1}"#.into(),
            400,
        ),
        (Method::DELETE, "/backends".into(), None, "".into(), 400),
        (
            Method::DELETE,
            "/backends?url=gopher://a:1".into(),
            None,
            "".into(),
            400,
        ),
        (Method::GET, "/nope".into(), None, "".into(), 404),
        (
            Method::POST,
            "/backends/x".into(),
            Some(json_ct),
            "{}".into(),
            404,
        ),
        (
            Method::PUT,
            "/backends".into(),
            Some(json_ct),
            "{}".into(),
            405,
        ),
        (
            Method::PATCH,
            "/backends".into(),
            Some(json_ct),
            "{}".into(),
            400,
        ),
        (
            Method::POST,
            "/status".into(),
            Some(json_ct),
            "{}".into(),
            405,
        ),
        (Method::DELETE, "/metrics".into(), None, "".into(), 405),
        (Method::POST, "/healthz".into(), None, "".into(), 405),
    ];
    for (method, path, ct, body, want) in cases {
        let label = format!("{method} {path} {ct:?} {:.60}", body);
        let mut req = admin(&gw, method, &path).body(body);
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{label}: {e}"));
        let allow = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let (code, value) = json_of(resp).await;
        assert_eq!(code.as_u16(), want, "{label}: {value}");
        assert!(
            value["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{label}: no error message in {value}"
        );
        if want == 405 {
            let allow = allow.unwrap_or_else(|| panic!("{label}: 405 without Allow"));
            assert!(allow.contains("GET"), "{label}: Allow: {allow}");
        }
        assert_eq!(pool(&gw).await, before, "{label} changed the pool");
    }
    let resp = admin(&gw, Method::PUT, "/backends")
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST, PATCH, DELETE");
    // The gateway still proxies after all that.
    let (status, _) = proxied(&client(), &gw).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_or_slow_bodies_stall_nothing() {
    let a = Origin::start("a").await;
    let gw = GatewayBuilder::default().backend(a.url()).start().await;
    let before = pool(&gw).await;

    // A terabyte announced: refused before a byte of it is read (or allocated).
    let head = "POST /backends HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000000000\r\n\r\n";
    let answer = raw_exchange(gw.admin_port, head.as_bytes(), DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    // A chunked body that grows past the cap: refused once 64 KiB have arrived.
    let mut chunked = b"POST /backends HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 30_000).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 30_000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(gw.admin_port, &chunked, DEADLINE).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // Slowloris: headers promise 100 bytes, 10 arrive, the rest never does.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.admin_port))
            .await
            .expect("connect");
        let head = "POST /backends HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 100\r\n\r\n{\"url\": \"h";
        s.write_all(head.as_bytes()).await.expect("write");
        slow.push(s);
    }
    // Meanwhile the admin API (reads and writes) and the proxy answer at once.
    let started = Instant::now();
    let b = Origin::start("b").await;
    let (code, body) = add(&gw, json!({"url": b.url()})).await;
    assert_eq!(code, 201, "{body}");
    let (code, _) = delete_by_query(&gw, &b.url()).await;
    assert_eq!(code, 200);
    assert_eq!(pool(&gw).await, before);
    let (status, _) = proxied(&client(), &gw).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "admin and proxy waited on the slow clients ({:?})",
        started.elapsed()
    );
    drop(slow);
    assert_eq!(pool(&gw).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_backend_gets_nothing_new_while_its_slow_request_finishes() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(b.url());
    builder.read_timeout = "30s".into();
    let gw = builder.start().await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    assert!(gw.wait_alive(&b.url(), true, DEADLINE).await);

    let http = client();
    let slow_url = gw.url("/slow?ms=5000");
    let slow = tokio::spawn({
        let http = http.clone();
        async move {
            let r = http.get(slow_url).send().await.expect("slow request");
            (r.status(), r.text().await.expect("slow body"))
        }
    });
    let started = eventually(DEADLINE, || async {
        a.in_progress() + b.in_progress() == 1
    })
    .await;
    assert!(started, "the slow request never reached an origin");
    let (victim, other) = if a.in_progress() == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let victim_requests = victim.requests();

    let (code, body) = delete_by_query(&gw, &victim.url()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["removed"]["url"], victim.url());

    let s = gw.status().await;
    let in_pool: Vec<&Value> = s["backends"].as_array().expect("backends").iter().collect();
    assert_eq!(in_pool.len(), 1);
    assert_eq!(in_pool[0]["url"], other.url());
    let draining = s["draining"].as_array().expect("draining list");
    assert_eq!(draining.len(), 1, "{s}");
    assert_eq!(draining[0]["url"], victim.url());
    assert_eq!(draining[0]["current_connections"], 1);

    for _ in 0..20 {
        let (status, origin) = proxied(&http, &gw).await;
        assert_eq!(status, 200);
        assert_eq!(origin, other.name);
    }
    assert_eq!(
        victim.requests(),
        victim_requests,
        "the removed backend got new requests"
    );

    let (status, text) = slow.await.expect("slow task");
    assert_eq!(status, 200);
    assert_eq!(text.trim(), victim.name);
    assert_eq!(victim.cancelled(), 0);
    assert!(wait_idle(&gw).await, "in-flight counts did not return to 0");
    assert_eq!(victim.requests(), victim_requests);
}

/// One admin call as the test saw it.
struct Op {
    url: String,
    add: bool,
    sent: Instant,
    returned: Instant,
    ok: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_changes_under_traffic_leave_the_pool_as_acknowledged() {
    const EXTRA: usize = 10;
    const LANES: usize = 20;
    const PER_LANE: usize = 5;
    const OPS: usize = LANES * PER_LANE;
    const WORKERS: usize = 4;
    let stable = [Origin::start("s0").await, Origin::start("s1").await];
    let mut extra = Vec::new();
    for i in 0..EXTRA {
        extra.push(Origin::start(&format!("x{i}")).await);
    }
    let mut builder = GatewayBuilder::default()
        .backend(stable[0].url())
        .backend(stable[1].url());
    builder.access_log = false;
    let gw = Arc::new(builder.start().await);
    for s in &stable {
        assert!(gw.wait_alive(&s.url(), true, DEADLINE).await);
    }
    let name_of: HashMap<String, String> = extra
        .iter()
        .chain(stable.iter())
        .map(|o| (o.url(), o.name.clone()))
        .collect();

    // Traffic: (sent at, status, origin name).
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(Instant, StatusCode, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (gw, stop, seen) = (gw.clone(), stop.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let (status, origin) = proxied(&http, &gw).await;
                seen.lock().expect("seen").push((sent, status, origin));
            }
        }));
    }

    // LANES clients run concurrently, each making PER_LANE changes one after another, so
    // that changes to one URL both race and follow each other in time.
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let gw = gw.clone();
        let urls: Vec<String> = (0..PER_LANE)
            .map(|i| extra[(lane * 3 + i) % EXTRA].url())
            .collect();
        lanes.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for (i, url) in urls.into_iter().enumerate() {
                let is_add = (i + lane / 2) % 2 == 0;
                let sent = Instant::now();
                let (code, body) = if is_add {
                    add(&gw, json!({ "url": url })).await
                } else {
                    delete_by_query(&gw, &url).await
                };
                let returned = Instant::now();
                let expected: &[u16] = if is_add { &[201, 409] } else { &[200, 404] };
                assert!(expected.contains(&code.as_u16()), "{code}: {body}");
                done.push(Op {
                    url,
                    add: is_add,
                    sent,
                    returned,
                    ok: code.is_success(),
                });
            }
            done
        }));
    }
    let mut ops = Vec::new();
    for lane in lanes {
        ops.extend(lane.await.expect("admin lane"));
    }
    assert_eq!(ops.len(), OPS);
    // A little more traffic after the last change, then stop.
    let count = seen.lock().expect("seen").len();
    let more = eventually(DEADLINE, || async {
        seen.lock().expect("seen").len() >= count + 40
    })
    .await;
    assert!(more, "traffic stalled");
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("traffic worker");
    }

    // The pool is exactly what the successful calls say.
    let final_pool: Vec<String> = pool(&gw).await.into_iter().map(|(u, _)| u).collect();
    for o in &stable {
        assert!(final_pool.contains(&o.url()), "stable backend lost");
    }
    assert_eq!(
        final_pool.len(),
        2 + extra
            .iter()
            .filter(|o| final_pool.contains(&o.url()))
            .count()
    );
    for o in &extra {
        let url = o.url();
        let adds = ops
            .iter()
            .filter(|op| op.url == url && op.add && op.ok)
            .count();
        let removes = ops
            .iter()
            .filter(|op| op.url == url && !op.add && op.ok)
            .count();
        assert!(adds >= 1, "{url}: no add succeeded");
        assert!(
            adds == removes || adds == removes + 1,
            "{url}: {adds} adds and {removes} removes succeeded"
        );
        assert_eq!(final_pool.contains(&url), adds == removes + 1, "{url}");
    }

    // No request sent after a DELETE returned reached that backend, unless it was added again.
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    assert!(seen.len() > 40, "too little traffic: {}", seen.len());
    for (sent, status, origin) in seen.iter() {
        assert_eq!(*status, 200, "a request failed during the changes");
        let Some(url) = name_of
            .iter()
            .find(|(_, n)| *n == origin)
            .map(|(u, _)| u.clone())
        else {
            panic!("answer from unknown origin {origin:?}");
        };
        // Each successful DELETE of this URL that returned before the request was sent must
        // be followed by a successful add that may have been applied after it (it returned
        // after the DELETE was sent) and before the request (it was sent before it).
        for d in ops
            .iter()
            .filter(|op| op.url == url && !op.add && op.ok && op.returned < *sent)
        {
            let re_added = ops.iter().any(|op| {
                op.url == url && op.add && op.ok && op.sent < *sent && op.returned > d.sent
            });
            assert!(
                re_added,
                "{url} got a request sent {:?} after its DELETE returned",
                sent.duration_since(d.returned)
            );
        }
    }
    // Requests sent after some DELETE of the backend that served them were checked above;
    // and traffic after the last change must have reached only backends still in the pool.
    let last_change = ops.iter().map(|op| op.returned).max().expect("ops");
    for (sent, _, origin) in seen.iter().filter(|(sent, _, _)| *sent > last_change) {
        let url = name_of
            .iter()
            .find(|(_, n)| *n == origin)
            .map(|(u, _)| u.clone())
            .expect("known origin");
        assert!(
            final_pool.contains(&url),
            "{url} is not in the pool but got a request sent {:?} after the last change",
            sent.duration_since(last_change)
        );
    }
    assert!(
        seen.iter().any(|(sent, _, _)| *sent > last_change),
        "no traffic after the last change"
    );
    assert!(wait_idle(&gw).await, "in-flight counts did not return to 0");
    for o in stable.iter().chain(extra.iter()) {
        assert_eq!(o.in_progress(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_state_file_keeps_runtime_changes() {
    let (a, b, c) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    );
    let state = tempfile::tempdir().expect("state dir");
    let state_file = state.path().join("state.json");
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(b.url());
    builder.state_file = Some(state_file.clone());

    let mut first = builder.clone().start().await;
    assert!(!first.log().contains("wins over"), "no state file yet");
    let (code, _) = add(&first, json!({"url": c.url(), "weight": 4})).await;
    assert_eq!(code, 201);
    let (code, _) = delete_by_query(&first, &a.url()).await;
    assert_eq!(code, 200);
    let mut expected = vec![(b.url(), 1), (c.url(), 4)];
    expected.sort();
    assert_eq!(pool(&first).await, expected);
    first.signal(Signal::SIGTERM);
    assert!(
        first.wait_exit(DEADLINE).await.is_some(),
        "did not stop on SIGTERM"
    );

    let second = builder.start().await;
    assert_eq!(pool(&second).await, expected);
    assert!(
        second.log().contains("wins over `backends`"),
        "the log does not say the state file wins:\n{}",
        second.log()
    );
    assert!(second.log().contains(&state_file.display().to_string()));
    assert!(second.wait_alive(&c.url(), true, DEADLINE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_stored_is_refused_and_not_applied() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().join("lib");
    std::fs::create_dir(&state_dir).expect("mkdir");
    let state_file = state_dir.join("state.json");
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.state_file = Some(state_file.clone());
    let gw = builder.start().await;
    let before = pool(&gw).await;
    std::fs::remove_dir(&state_dir).expect("rmdir");

    let (code, body) = add(&gw, json!({"url": b.url()})).await;
    assert_eq!(code, 500, "{body}");
    let message = body["error"].as_str().expect("error message");
    assert!(
        message.contains(&state_file.display().to_string()),
        "{message}"
    );
    let (code, _) = delete_by_query(&gw, &a.url()).await;
    assert_eq!(code, 500);
    assert_eq!(pool(&gw).await, before);
    assert_eq!(b.requests(), 0);
    let (status, _) = proxied(&client(), &gw).await;
    assert_eq!(status, 200);

    // Once the directory is back, changes are stored again.
    std::fs::create_dir(&state_dir).expect("mkdir again");
    let (code, _) = add(&gw, json!({"url": b.url()})).await;
    assert_eq!(code, 201);
    assert!(std::fs::read_to_string(&state_file)
        .expect("stored")
        .contains(&b.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_an_upgrade_waits_survive_it() {
    let (a, b, c) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    );
    let state = tempfile::tempdir().expect("state dir");
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(b.url());
    builder.state_file = Some(state.path().join("state.json"));
    let mut old = builder.start().await;
    let (code, _) = add(&old, json!({"url": c.url()})).await;
    assert_eq!(code, 201);

    // `portico -u` starts (and loads the state file), then waits for the sockets...
    let mut new = old.spawn_upgrade().await;
    // ...while the old process still takes admin changes.
    let (code, _) = delete_by_query(&old, &a.url()).await;
    assert_eq!(code, 200);
    let (code, _) = add(
        &old,
        json!({"url": format!("http://localhost:{}", a.addr.port()), "weight": 2}),
    )
    .await;
    assert_eq!(code, 201);
    let expected = pool(&old).await;
    old.hand_over(&mut new).await;
    assert!(
        old.wait_exit(Duration::from_secs(30)).await.is_some(),
        "old process stayed"
    );

    // The new process serves the pool as the old one left it.
    assert_eq!(pool(&new).await, expected, "log:\n{}", new.log());
    assert!(
        new.wait_alive(
            &format!("http://localhost:{}", a.addr.port()),
            true,
            DEADLINE
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_adds_loses_nothing_acknowledged() {
    const ADDERS: u16 = 3;
    const ENOUGH: usize = 30;
    let a = Origin::start("a").await;
    let state = tempfile::tempdir().expect("state dir");
    let state_file = state.path().join("state.json");
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.state_file = Some(state_file.clone());
    builder.access_log = false;
    let gw = Arc::new(builder.clone().start().await);

    // Backends that refuse connections: they are stored like any other (and probed DOWN).
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut adders = Vec::new();
    for t in 0..ADDERS {
        let (gw, acked) = (gw.clone(), acked.clone());
        adders.push(tokio::spawn(async move {
            let http = client();
            for i in 0..1000u16 {
                let url = format!("http://127.0.0.1:{}", 20_000 + t * 1000 + i);
                let resp = http
                    .post(gw.admin("/backends"))
                    .json(&json!({ "url": url }))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => acked.lock().expect("acked").push(url),
                    Ok(r) => panic!("{url}: {}", r.status()),
                    Err(_) => return, // the process died mid-call: not acknowledged
                }
            }
        }));
    }
    let enough = eventually(Duration::from_secs(60), || async {
        acked.lock().expect("acked").len() >= ENOUGH
    })
    .await;
    assert!(enough, "adds too slow");
    gw.signal(Signal::SIGKILL);
    for t in adders {
        t.await.expect("adder");
    }
    let acked = acked.lock().expect("acked").clone();

    let text = std::fs::read_to_string(&state_file).expect("state file exists");
    let doc: Value = serde_json::from_str(&text).expect("state file is valid JSON");
    let stored: Vec<&str> = doc["backends"]
        .as_array()
        .expect("backends list")
        .iter()
        .map(|b| b["url"].as_str().expect("url"))
        .collect();
    for url in &acked {
        assert!(
            stored.contains(&url.as_str()),
            "{url} was acknowledged but not stored"
        );
    }

    let next = builder.start().await;
    let loaded: Vec<String> = pool(&next).await.into_iter().map(|(u, _)| u).collect();
    for url in &acked {
        assert!(loaded.contains(url), "{url} acknowledged but not loaded");
    }
    assert_eq!(loaded.len(), stored.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let state_file = dir.path().join("state.json");
    let corrupt = "{\"version\": 1, \"backends\": [{\"url\": \"http://127.0.0.1:1\"";
    std::fs::write(&state_file, corrupt).expect("write state");
    let mut builder = GatewayBuilder::default().backend("http://127.0.0.1:9");
    builder.state_file = Some(state_file.clone());
    let config = dir.path().join("portico.yaml");
    std::fs::write(&config, builder.yaml(dir.path(), free_port(), free_port())).expect("config");

    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(support::gateway::BIN)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(&stderr_path).expect("stderr file"),
        ))
        .spawn()
        .expect("spawn");
    let mut exit = None;
    let exited = eventually(DEADLINE, || {
        let done = child.try_wait().ok().flatten();
        exit = exit.or(done);
        async move { done.is_some() }
    })
    .await;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("portico started with a corrupt state file");
    }
    let status = exit.expect("exit status");
    assert!(!status.success(), "exit status {status}");
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(
        stderr.contains(&state_file.display().to_string()),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&state_file).expect("state"),
        corrupt
    );

    let check = support::gateway::check_file(&config);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains(&state_file.display().to_string()));
}

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

/// One sample of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough for a test: every non-comment line is
/// `name{labels} value` with a float value; every sample's family has HELP and TYPE lines.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut help = HashMap::new();
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
            help.insert(name.to_string(), ());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("bad type: {line}"));
            }
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value not a float: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?;
                (
                    name,
                    parse_labels(body).map_err(|e| format!("{e}: {line}"))?,
                )
            }
        };
        if !valid_name(name) {
            return Err(format!("bad metric name: {line}"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        if !help.contains_key(family) || !types.contains_key(family) {
            return Err(format!("no HELP/TYPE for {family}"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

fn parse_labels(body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        if chars.next() != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        }
        labels.insert(key.trim().to_string(), value);
        match chars.next() {
            None => return Ok(labels),
            Some(',') if chars.peek().is_none() => return Ok(labels),
            Some(',') => {}
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value)
}

async fn scrape(gw: &Gateway) -> Vec<Sample> {
    let text = admin(gw, Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn the_test_parser_rejects_what_is_not_prometheus_text() {
    let ok = "# HELP m a help\n# TYPE m counter\nm{a=\"x\",b=\"y\\\"z\"} 3\n";
    let s = parse_prometheus(ok).expect("valid");
    assert_eq!(s[0].labels["b"], "y\"z");
    assert_eq!(s[0].value, 3.0);
    for bad in [
        "m 1\n",
        "# HELP m h\n# TYPE m counter\nm one\n",
        "# HELP m h\n# TYPE m counter\nm{a=x} 1\n",
        "# HELP m h\n# TYPE m counter\nm{a=\"x\" 1\n",
        "# HELP m h\n# TYPE m counter\nm\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_the_requests_sent() {
    const SENT: usize = 20;
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    assert!(gw.wait_alive(&b.url(), true, DEADLINE).await);
    let http = client();
    for _ in 0..SENT {
        let (status, _) = proxied(&http, &gw).await;
        assert_eq!(status, 200);
    }
    http.get(gw.url("/missing-origin-route"))
        .send()
        .await
        .expect("one more");
    let sent = SENT + 1;
    assert_eq!(a.requests() + b.requests(), sent as u64);

    // The totals are counted when each request's log phase ends: poll until they settle.
    let settled = eventually(DEADLINE, || async {
        let s = scrape(&gw).await;
        let total: f64 = s
            .iter()
            .filter(|x| x.name == "portico_requests_total")
            .map(|x| x.value)
            .sum();
        total == sent as f64
    })
    .await;
    let s = scrape(&gw).await;
    assert!(
        settled,
        "portico_requests_total never reached {sent}: {s:?}"
    );
    assert_eq!(
        sample(&s, "portico_requests_total", &[("class", "2xx")]),
        Some(sent as f64)
    );
    assert_eq!(
        sample(&s, "portico_requests_total", &[("class", "5xx")]),
        Some(0.0)
    );
    for o in [&a, &b] {
        let l = [("backend", o.url())];
        let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            sample(&s, "portico_backend_requests_total", &l),
            Some(o.requests() as f64),
            "{}",
            o.name
        );
        assert_eq!(sample(&s, "portico_backend_errors_total", &l), Some(0.0));
        assert_eq!(sample(&s, "portico_backend_in_flight", &l), Some(0.0));
        assert_eq!(sample(&s, "portico_backend_up", &l), Some(1.0));
    }
    assert_eq!(
        sample(&s, "portico_request_duration_seconds_count", &[]),
        Some(sent as f64)
    );
    assert_eq!(
        sample(
            &s,
            "portico_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(sent as f64)
    );
    assert!(sample(&s, "portico_request_duration_seconds_sum", &[]).is_some_and(|v| v > 0.0));
    assert_eq!(
        sample(&s, "portico_backends", &[("state", "total")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&s, "portico_backends", &[("state", "ready")]),
        Some(2.0)
    );
    assert_eq!(sample(&s, "portico_in_flight_requests", &[]), Some(0.0));

    // Concurrent scrapes all see the same counters (none resets another's).
    let scrapes = futures_util::future::join_all((0..16).map(|_| scrape(&gw))).await;
    for s in scrapes {
        for o in [&a, &b] {
            assert_eq!(
                sample(
                    &s,
                    "portico_backend_requests_total",
                    &[("backend", o.url().as_str())]
                ),
                Some(o.requests() as f64)
            );
        }
    }
}

//! Runtime changes to backends that stay in the pool (`PATCH /backends`: weight, drain and
//! enable) against the real binary, their persistence across a restart, the refusals;
//! `GET /readyz` (backends, SIGTERM drain); admin `HEAD` answers.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const DEADLINE: Duration = Duration::from_secs(15);

async fn patch(gw: &Gateway, body: Value) -> (StatusCode, Value) {
    let resp = client()
        .patch(gw.admin("/backends"))
        .json(&body)
        .send()
        .await
        .expect("PATCH /backends");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text:?}"));
    (status, value)
}

/// Sends `n` requests through the proxy, each answered 200.
async fn traffic(gw: &Gateway, n: usize) {
    let http = client();
    for _ in 0..n {
        let r = http.get(gw.url("/")).send().await.expect("proxied");
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_weight_changes_the_share_at_once() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = GatewayBuilder::default()
        .strategy("weighted-round-robin")
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    traffic(&gw, 10).await;
    assert_eq!((a.requests(), b.requests()), (5, 5));

    let (status, body) = patch(&gw, json!({"url": b.url(), "weight": 3})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weight"], 3);
    assert_eq!(gw.backend(&b.url()).await.expect("listed")["weight"], 3);
    // Whole cycles of 1 + 3 picks: exact shares from the first request after the answer.
    traffic(&gw, 40).await;
    assert_eq!((a.requests(), b.requests()), (5 + 10, 5 + 30));
    assert!(gw
        .log()
        .contains(&format!("backend {} weight 1 -> 3", b.url())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_finishes_its_requests_gets_no_new_one_and_is_still_probed() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    // One slow request on each backend (round robin), then drain `a` under them.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = gw.url("/slow?ms=1500");
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    assert!(
        eventually(DEADLINE, || async {
            a.in_progress() == 1 && b.in_progress() == 1
        })
        .await,
        "the slow requests did not reach both origins"
    );
    let (status, body) = patch(&gw, json!({"url": a.url(), "state": "drain"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["draining"], true);
    let entry = gw.backend(&a.url()).await.expect("still in the pool");
    assert_eq!(entry["draining"], true);
    assert_eq!(entry["alive"], true);
    assert_eq!(entry["current_connections"], 1);
    assert_eq!(gw.status().await["active_backends"], 1);

    let a_before = a.requests();
    traffic(&gw, 20).await;
    assert_eq!(
        a.requests(),
        a_before,
        "a drained backend got a new request"
    );
    for s in slow {
        let status = s.await.expect("task").expect("slow request");
        assert_eq!(
            status, 200,
            "a request in flight on the drained backend failed"
        );
    }

    // Still probed: its health follows the origin while drained.
    a.set_health(500);
    assert!(
        eventually(DEADLINE, || async {
            gw.backend(&a.url())
                .await
                .is_some_and(|e| e["health"] == "down" && e["draining"] == true)
        })
        .await,
        "a drained backend's health no longer changes: {:?}",
        gw.backend(&a.url()).await
    );
    a.set_health(200);
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);

    let (status, body) = patch(&gw, json!({"url": a.url(), "state": "enabled"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["draining"], false);
    traffic(&gw, 10).await;
    assert!(a.requests() > a_before, "an enabled backend got no request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_and_drain_survive_a_restart_with_the_state_file() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let state = tempfile::tempdir().expect("state dir");
    let path = state.path().join("state.json");
    let builder = GatewayBuilder {
        state_file: Some(path.clone()),
        ..GatewayBuilder::default()
    }
    .backend(a.url())
    .backend(b.url());
    let gw = builder.clone().start().await;
    let (status, _) = patch(&gw, json!({"url": a.url(), "weight": 5, "state": "drain"})).await;
    assert_eq!(status, 200);
    let (status, _) = patch(&gw, json!({"url": b.url(), "weight": 2})).await;
    assert_eq!(status, 200);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("state file")).expect("JSON");
    let stored = stored["backends"].as_array().expect("backends").clone();
    assert_eq!(
        stored,
        vec![
            json!({"url": a.url(), "weight": 5, "drained": true}),
            json!({"url": b.url(), "weight": 2}),
        ]
    );
    drop(gw);

    let gw = builder.start().await;
    let a_entry = gw.backend(&a.url()).await.expect("a after restart");
    assert_eq!(
        (&a_entry["weight"], &a_entry["draining"]),
        (&json!(5), &json!(true))
    );
    let b_entry = gw.backend(&b.url()).await.expect("b after restart");
    assert_eq!(
        (&b_entry["weight"], &b_entry["draining"]),
        (&json!(2), &json!(false))
    );
    let a_before = a.requests();
    traffic(&gw, 10).await;
    assert_eq!(
        a.requests(),
        a_before,
        "drained before the restart, served after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_patches_are_refused_and_change_nothing() {
    let a = Origin::start("a").await;
    let gw = GatewayBuilder::default().weighted(a.url(), 2).start().await;
    let absent = format!("http://127.0.0.1:{}", free_port());
    for (body, want, needle) in [
        (json!({"url": a.url()}), 400, "nothing to change"),
        (json!({"url": a.url(), "weight": 0}), 400, "weight"),
        (json!({"url": a.url(), "weight": 100000}), 400, "weight"),
        (json!({"url": a.url(), "weight": "3"}), 400, "invalid JSON"),
        (json!({"url": a.url(), "state": "paused"}), 400, "state"),
        (
            json!({"url": a.url(), "draining": true}),
            400,
            "unknown field",
        ),
        (json!({"url": "ftp://x:1", "weight": 3}), 400, "ftp"),
        (json!({"weight": 3}), 400, "url"),
        (
            json!({"url": absent, "state": "drain"}),
            404,
            "not in the pool",
        ),
    ] {
        let (status, v) = patch(&gw, body.clone()).await;
        assert_eq!(status.as_u16(), want, "{body}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{body}: {msg:?} does not mention {needle:?}"
        );
    }
    let resp = client()
        .patch(gw.admin("/backends"))
        .header("Content-Type", "text/plain")
        .body(format!("{{\"url\": \"{}\", \"weight\": 3}}", a.url()))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status(), 415);
    let entry = gw.backend(&a.url()).await.expect("listed");
    assert_eq!(
        (&entry["weight"], &entry["draining"]),
        (&json!(2), &json!(false))
    );
}

/// One HTTP/1.1 exchange on an open connection: the status code and the body.
async fn exchange(conn: &mut TcpStream, request: &str) -> (u16, String) {
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(DEADLINE, async {
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = text[9..12].parse().expect("status code");
                    return (status, text[end + 4..end + 4 + length].to_string());
                }
            }
            let n = conn.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed mid-answer: {text:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    read.expect("an answer in time")
}

const READYZ: &str = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_backends() {
    let mut a = Origin::start("a").await;
    let gw = GatewayBuilder::default().backend(a.url()).start().await;
    let ready = client()
        .get(gw.admin("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.expect("JSON")["status"],
        "ready"
    );

    let port = a.addr.port();
    a.stop();
    let unready = eventually(DEADLINE, || async {
        client()
            .get(gw.admin("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
    assert!(unready, "/readyz stayed 200 with no backend alive");
    let body: Value = client()
        .get(gw.admin("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("JSON");
    assert_eq!(body["reason"], "no backend is alive");
    // `/healthz` is liveness: the gateway itself is fine.
    let live = client()
        .get(gw.admin("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status(), 200);

    let a = Origin::start_on("a", port).await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    let ready = client()
        .get(gw.admin("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_during_the_sigterm_drain() {
    let origin = Origin::start("slow").await;
    let mut gw = GatewayBuilder {
        grace_period: 10,
        ..GatewayBuilder::default()
    }
    .backend(origin.url())
    .start()
    .await;
    // A keep-alive connection to the admin API opened before the signal: once shutdown
    // starts Pingora accepts no new connection, but answers on this one.
    let mut admin = TcpStream::connect(("127.0.0.1", gw.admin_port))
        .await
        .expect("admin connection");
    assert_eq!(exchange(&mut admin, READYZ).await.0, 200);

    let url = gw.url("/slow?ms=3000");
    let slow = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    assert!(
        eventually(DEADLINE, || async { origin.in_progress() == 1 }).await,
        "the slow request did not reach the origin"
    );
    gw.signal(Signal::SIGTERM);
    let shutting_down = eventually(DEADLINE, || async {
        gw.log()
            .contains("shutting down: admin changes refused and /readyz answers 503")
    })
    .await;
    assert!(shutting_down, "no shutdown in the log:\n{}", gw.log());
    assert_eq!(
        origin.in_progress(),
        1,
        "the slow request is no longer in flight"
    );

    let (status, body) = exchange(&mut admin, READYZ).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");

    let status = slow.await.expect("task").expect("slow request");
    assert_eq!(status, 200);
    let exit = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.is_some_and(|s| s.success()), "exit {exit:?}");
    assert_eq!(origin.state.completed.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_in_the_old_process_of_an_upgrade_and_200_in_the_new_one() {
    let origin = Origin::start("a").await;
    let mut old = GatewayBuilder::default()
        .backend(origin.url())
        .start()
        .await;
    let mut to_old = TcpStream::connect(("127.0.0.1", old.admin_port))
        .await
        .expect("admin connection");
    assert_eq!(exchange(&mut to_old, READYZ).await.0, 200);

    let new = old.upgrade().await;
    let frozen = eventually(DEADLINE, || async {
        old.log()
            .contains("handing the listening sockets over; admin changes now go to the new process")
    })
    .await;
    assert!(
        frozen,
        "the old process did not freeze; log:\n{}",
        old.log()
    );
    let (status, body) = exchange(&mut to_old, READYZ).await;
    assert_eq!(status, 503, "the old process still says ready: {body}");
    assert!(body.contains("handing over"), "{body}");
    let ready = eventually(DEADLINE, || async {
        client()
            .get(new.admin("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "the new process is not ready; log:\n{}", new.log());
    let exit = old.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.is_some_and(|s| s.success()), "old exit {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_carry_the_get_headers_and_no_body() {
    let a = Origin::start("a").await;
    let gw = GatewayBuilder {
        token: Some("t0ken".into()),
        ..GatewayBuilder::default()
    }
    .backend(a.url())
    .start()
    .await;
    // One client: HEAD and GET share a connection, so a stray body after a HEAD answer would
    // break the next answer.
    let http = client();
    let send = |method: Method, path: &str| {
        http.request(method, gw.admin(path))
            .bearer_auth("t0ken")
            .send()
    };
    for path in [
        "/",
        "/ui",
        "/ui/app.js",
        "/ui/app.css",
        "/healthz",
        "/nope",
        "/metrics",
    ] {
        let head = send(Method::HEAD, path).await.expect("HEAD");
        let (status, headers) = (head.status(), head.headers().clone());
        assert!(head.bytes().await.expect("HEAD body").is_empty(), "{path}");
        let get = send(Method::GET, path).await.expect("GET");
        assert_eq!(status, get.status(), "{path}");
        for name in ["content-type", "cache-control", "content-security-policy"] {
            assert_eq!(headers.get(name), get.headers().get(name), "{path}: {name}");
        }
        let length = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{path}: HEAD without Content-Length"));
        let body = get.bytes().await.expect("GET body");
        if path != "/metrics" {
            assert_eq!(length, body.len(), "{path}");
        } else {
            assert!(length > 0);
        }
    }
    // Refusals too: 401 without the token, with its `WWW-Authenticate`.
    let head = http.head(gw.admin("/status")).send().await.expect("HEAD");
    assert_eq!(head.status(), 401);
    assert!(head.headers().contains_key("www-authenticate"));
    assert!(head.headers()["content-length"] != "0");
}

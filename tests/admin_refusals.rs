//! What the admin API refuses, against the real binary: every bad request gets a JSON error and
//! leaves the pool unchanged; huge, endless or slow bodies stall neither the admin API nor the proxy.

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::admin_api::*;
use support::*;

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
            405,
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
    assert_eq!(resp.headers()["allow"], "GET, HEAD, POST, DELETE");
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

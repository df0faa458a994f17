//! The gateway core against the real binary: balancing, failure handling, connection
//! accounting, header handling and large streamed bodies.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// Deadline for anything that should happen "soon" on a loaded machine.
const SOON: Duration = Duration::from_secs(10);
/// An error answer that comes "at once": far below any timeout in play, generous for CI.
const AT_ONCE: Duration = Duration::from_secs(2);
const MIB: u64 = 1024 * 1024;

async fn origins(names: &[&str]) -> Vec<Origin> {
    let mut v = Vec::new();
    for n in names {
        v.push(Origin::start(n).await);
    }
    v
}

fn with_backends(mut b: GatewayBuilder, origins: &[Origin]) -> GatewayBuilder {
    for o in origins {
        b = b.backend(o.url());
    }
    b
}

/// `current_connections` of every backend in `/status`.
async fn connections(gw: &Gateway) -> Vec<u64> {
    gw.status().await["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["current_connections"].as_u64().unwrap_or(u64::MAX))
                .collect()
        })
        .unwrap_or_default()
}

async fn all_connections_zero(gw: &Gateway) -> bool {
    let c = connections(gw).await;
    !c.is_empty() && c.iter().all(|&n| n == 0)
}

/// A URL where nothing listens (a port that was free a moment ago).
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// The gateway's resident memory in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the RSS of `pid` until dropped; `max()` is the largest value seen.
struct RssSampler {
    max: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let max = Arc::new(AtomicU64::new(rss_kib(pid)));
        let m = max.clone();
        let task = tokio::spawn(async move {
            loop {
                m.fetch_max(rss_kib(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        RssSampler { max, task }
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw HTTP/1.1 answer: status, headers (lower-case names) and body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw TCP connection to the gateway's proxy port.
async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect gateway")
}

/// Sends `request` verbatim (it must ask for `Connection: close`) and reads to EOF.
async fn raw_exchange(gw: &Gateway, request: &str) -> RawResponse {
    raw_exchange_on(connect(gw).await, request).await
}

/// [`raw_exchange`] on a connection already open.
async fn raw_exchange_on(mut s: TcpStream, request: &str) -> RawResponse {
    s.write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut buf = Vec::new();
    tokio::time::timeout(SOON, s.read_to_end(&mut buf))
        .await
        .expect("answer before the deadline")
        .expect("read answer");
    let (body_at, mut r) = parse_head(&buf).expect("end of headers");
    r.body = buf[body_at..].to_vec();
    r
}

/// The status and headers of a response in `buf` (its body left empty) and where its body
/// starts; `None` while the head is incomplete.
fn parse_head(buf: &[u8]) -> Option<(usize, RawResponse)> {
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let r = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    Some((split + 4, r))
}

/// Asserts an error answer carries a JSON `{"error": "<non-empty>"}` body.
async fn assert_json_error(resp: reqwest::Response) {
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        ctype.starts_with("application/json"),
        "content-type {ctype:?}"
    );
    // The gateway closes the connection after an error and must say so.
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let body: Value = resp.json().await.expect("JSON error body");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "body {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_exactly_evenly() {
    let o = origins(&["a", "b", "c"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let http = client();
    for _ in 0..90 {
        let r = http.get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    let counts: Vec<u64> = o.iter().map(Origin::requests).collect();
    assert_eq!(counts, vec![30, 30, 30]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_away_from_busy_backends() {
    let o = origins(&["a", "b", "c"]).await;
    let gw = with_backends(GatewayBuilder::default().strategy("least-conn"), &o)
        .start()
        .await;
    let http = client();
    // Two slow requests, each confirmed in flight at an origin before the next is sent:
    // least-conn must place them on two different backends.
    let mut held = Vec::new();
    for i in 1..=2i64 {
        let (http, url) = (http.clone(), gw.url("/slow?ms=20000"));
        held.push(tokio::spawn(async move { http.get(url).send().await }));
        let placed = eventually(SOON, || async {
            o.iter().map(Origin::in_progress).sum::<i64>() == i
        })
        .await;
        assert!(placed, "slow request {i} did not reach an origin");
    }
    let busy: Vec<i64> = o.iter().map(Origin::in_progress).collect();
    assert_eq!(busy.iter().filter(|&&n| n == 1).count(), 2, "{busy:?}");
    let idle = busy.iter().position(|&n| n == 0).expect("one idle origin");
    let before: Vec<u64> = o.iter().map(Origin::requests).collect();

    let idle_url = o[idle].url();
    for _ in 0..20 {
        let r = http.get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["x-origin"].to_str().ok(),
            Some(o[idle].name.as_str())
        );
        // The gateway releases a request's count just after the client has the response:
        // wait for it, or the next pick may see the idle backend as busy as the others.
        let released = eventually(SOON, || async {
            gw.backend(&idle_url)
                .await
                .is_some_and(|b| b["current_connections"] == 0)
        })
        .await;
        assert!(released, "the idle backend's count did not return to 0");
    }
    let after: Vec<u64> = o.iter().map(Origin::requests).collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let expected = if i == idle { b + 20 } else { *b };
        assert_eq!(
            *a, expected,
            "origin {} before {before:?} after {after:?}",
            o[i].name
        );
    }
    for h in held {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_listening_gives_503_json_at_once() {
    let gw = GatewayBuilder::default()
        .backend(dead_url())
        .backend(dead_url())
        .start()
        .await;
    let http = client();
    for _ in 0..3 {
        let start = Instant::now();
        let r = http.get(gw.url("/anything")).send().await.expect("answer");
        assert_eq!(r.status(), 503);
        assert!(start.elapsed() < AT_ONCE, "503 took {:?}", start.elapsed());
        assert_json_error(r).await;
    }
    let status = gw.status().await;
    assert_eq!(status["active_backends"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_backends_give_503_json_at_once() {
    let mut o = origins(&["a", "b"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let http = client();
    assert_eq!(
        http.get(gw.url("/")).send().await.expect("up").status(),
        200
    );
    for origin in o.iter_mut() {
        origin.stop();
    }
    for origin in &o {
        assert!(
            gw.wait_alive(&origin.url(), false, SOON).await,
            "{} still alive",
            origin.name
        );
    }
    let start = Instant::now();
    let r = http.get(gw.url("/")).send().await.expect("answer");
    assert_eq!(r.status(), 503);
    assert!(start.elapsed() < AT_ONCE, "503 took {:?}", start.elapsed());
    assert_json_error(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_skipped_without_failed_requests() {
    let mut o = origins(&["a", "b", "c"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (http, url) = (client(), gw.url("/"));
        let (failures, served, stop) = (failures.clone(), served.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let ok = match http.get(&url).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if ok { &served } else { &failures };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let flowing = eventually(SOON, || async { served.load(Ordering::SeqCst) >= 50 }).await;
    assert!(flowing, "traffic did not flow");
    let victim = o[1].url();
    o[1].stop();
    assert!(
        gw.wait_alive(&victim, false, SOON).await,
        "{victim} not marked down"
    );
    let at_down = served.load(Ordering::SeqCst);
    let more = eventually(SOON, || async {
        served.load(Ordering::SeqCst) >= at_down + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    assert!(more, "traffic stalled after the backend died");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "client saw failures");
    let status = gw.status().await;
    assert_eq!(status["active_backends"], 2, "{status}");
    let entry = gw.backend(&victim).await.expect("victim in /status");
    assert_eq!(entry["alive"], false);
    assert_eq!(
        gw.log_count(&format!("backend {victim} is DOWN")),
        1,
        "{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_marks_down_at_once_and_retries_elsewhere() {
    // Probes are rare here: only the proxy can notice the dead backend in time.
    let mut o = origins(&["a", "b", "c"]).await;
    let mut b = with_backends(GatewayBuilder::default(), &o);
    b.health_frequency = "1h".into();
    let gw = b.start().await;
    let victim = o[0].url();
    o[0].stop();
    let http = client();
    for _ in 0..6 {
        // A POST with a body: the retry must carry the body to the next backend.
        let r = http
            .post(gw.url("/echo"))
            .body("payload")
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        let echo: Value = r.json().await.expect("echo JSON");
        assert_eq!(echo["body_len"], 7, "{echo}");
    }
    let entry = gw.backend(&victim).await.expect("victim in /status");
    assert_eq!(entry["alive"], false, "{entry}");
    let line = format!("backend {victim} is DOWN (connection refused)");
    assert!(
        eventually(SOON, || async { gw.log_count(&line) == 1 }).await,
        "no {line:?} in log:\n{}",
        gw.log()
    );
    assert_eq!(o[1].requests() + o[2].requests(), 6);
    assert!(eventually(SOON, || all_connections_zero(&gw)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_by_default_to_two() {
    // Four backends believed alive (probes are rare) that all refuse: the first request
    // tries three of them (1 + `retries`), marks each DOWN and fails; the next one finds
    // the last, marks it DOWN too and then has nowhere to go: a backend failed it, so 502
    // (503 is for a request that found no backend at all).
    let mut o = origins(&["a", "b", "c", "d"]).await;
    let mut b = with_backends(GatewayBuilder::default(), &o);
    b.health_frequency = "1h".into();
    let gw = b.start().await;
    assert_eq!(gw.status().await["active_backends"], 4);
    for origin in o.iter_mut() {
        origin.stop();
    }
    let http = client();
    let r = http.get(gw.url("/")).send().await.expect("answer");
    assert_eq!(r.status(), 502);
    assert_json_error(r).await;
    let downs = |gw: &Gateway| gw.log_count("is DOWN (connection refused)");
    assert!(
        eventually(SOON, || async { downs(&gw) == 3 }).await,
        "{}",
        gw.log()
    );
    assert_eq!(gw.status().await["active_backends"], 1);

    let r = http.get(gw.url("/")).send().await.expect("answer");
    assert_eq!(r.status(), 502);
    assert_json_error(r).await;
    assert_eq!(gw.status().await["active_backends"], 0);
    assert!(eventually(SOON, || async { downs(&gw) == 4 }).await);
    let r = http.get(gw.url("/")).send().await.expect("answer");
    assert_eq!(r.status(), 503, "no backend at all");
    assert!(eventually(SOON, || all_connections_zero(&gw)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_lets_the_first_refusal_through() {
    let mut o = origins(&["a", "b"]).await;
    let mut b = with_backends(GatewayBuilder::default(), &o);
    b.health_frequency = "1h".into();
    b.extra = "retries: 0\n".into();
    let gw = b.start().await;
    o[0].stop();
    let http = client();
    let mut codes = Vec::new();
    for _ in 0..8 {
        let r = http.get(gw.url("/")).send().await.expect("answer");
        codes.push(r.status().as_u16());
    }
    let failed = codes.iter().filter(|&&c| c != 200).count();
    assert_eq!(failed, 1, "codes {codes:?}");
    assert!(codes.contains(&502), "codes {codes:?}");
    assert_eq!(o[1].requests(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_gives_504_after_read_timeout() {
    let silent = SilentOrigin::start().await;
    let mut b = GatewayBuilder::default().backend(silent.url());
    b.health_path = None;
    b.read_timeout = "1s".into();
    let gw = b.start().await;
    assert!(gw.wait_alive(&silent.url(), true, SOON).await);
    let start = Instant::now();
    let r = client().get(gw.url("/")).send().await.expect("answer");
    let took = start.elapsed();
    assert_eq!(r.status(), 504);
    assert!(
        took >= Duration::from_millis(900),
        "504 after only {took:?}"
    );
    assert!(took < Duration::from_secs(8), "504 after {took:?}");
    assert_json_error(r).await;
    assert!(eventually(SOON, || all_connections_zero(&gw)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_backend_request() {
    let o = origins(&["a"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let mut s = connect(&gw).await;
    s.write_all(b"GET /slow?ms=30000 HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    assert!(eventually(SOON, || async { o[0].in_progress() == 1 }).await);
    assert_eq!(connections(&gw).await, vec![1]);
    drop(s);
    assert!(
        eventually(SOON, || async { o[0].cancelled() > 0 }).await,
        "the origin did not see the cancellation"
    );
    assert!(eventually(SOON, || all_connections_zero(&gw)).await);
    assert_eq!(o[0].in_progress(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_upload_cancels_the_backend_request() {
    let o = origins(&["a"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let mut s = connect(&gw).await;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        10 * MIB
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(&vec![b'u'; MIB as usize])
        .await
        .expect("write part of the body");
    assert!(eventually(SOON, || async { o[0].in_progress() == 1 }).await);
    drop(s);
    assert!(
        eventually(SOON, || async { o[0].cancelled() > 0 }).await,
        "the origin did not see the cancellation"
    );
    assert!(eventually(SOON, || all_connections_zero(&gw)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_leave_no_connection_counted() {
    let o = origins(&["a", "b", "c"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let http = client();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, url) = (http.clone(), gw.url(&format!("/slow?ms={}", i % 50)));
        tasks.push(tokio::spawn(async move {
            let r = http.get(url).send().await?;
            let status = r.status();
            r.bytes().await?;
            Ok::<_, reqwest::Error>(status)
        }));
    }
    for t in tasks {
        let status = t.await.expect("task").expect("request");
        assert_eq!(status, 200);
    }
    let total: u64 = o.iter().map(Origin::requests).sum();
    assert_eq!(total, 200);
    assert!(
        eventually(SOON, || all_connections_zero(&gw)).await,
        "counts left: {:?}",
        connections(&gw).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_round_trips_with_forwarding_headers_and_without_hop_by_hop() {
    let o = origins(&["a"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let request = "POST /echo?x=1&y=two HTTP/1.1\r\n\
         Host: shop.example:8443\r\n\
         X-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-For: 198.51.100.2\r\n\
         Connection: close, X-Hop\r\n\
         X-Hop: secret\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         X-Custom: value 1\r\n\
         Content-Length: 11\r\n\
         \r\n\
         hello world";
    let r = raw_exchange(&gw, request).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-origin-reply"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let echo: Value = serde_json::from_slice(&r.body).expect("echo JSON");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "x=1&y=two");
    assert_eq!(echo["body_len"], 11);
    let h = &echo["headers"];
    assert_eq!(h["x-custom"], "value 1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 198.51.100.2, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8443");
    for hop in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(hop).is_none(), "{hop} reached the origin: {h}");
    }

    // Without an incoming X-Forwarded-For the client address starts the list.
    let r = client()
        .get(gw.url("/echo"))
        .header("X-Custom", "v")
        .send()
        .await
        .expect("echo");
    let echo: Value = r.json().await.expect("echo JSON");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["method"], "GET");
    assert!(echo["query"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_stop_at_the_gateway() {
    let o = origins(&["a"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let r = raw_exchange(
        &gw,
        "GET /hop-reply HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-kept"), Some("yes"));
    for hop in ["x-private", "keep-alive", "proxy-authenticate", "trailer"] {
        assert!(
            r.header(hop).is_none(),
            "{hop} reached the client: {:?}",
            r.headers
        );
    }
    // The client's own connection state, not the backend's.
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"a\n");

    // The common reply (the backend says only `Connection: keep-alive`) keeps its headers.
    let r = raw_exchange(
        &gw,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-origin"), Some("a"));
    assert_eq!(r.header("connection"), Some("close"));
}

/// Reads one response with a `Content-Length` body from a kept-alive connection.
async fn read_one_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((body_at, mut r)) = parse_head(&buf) {
            let len: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            if buf.len() >= body_at + len {
                r.body = buf[body_at..body_at + len].to_vec();
                return r;
            }
        }
        let n = tokio::time::timeout(SOON, s.read(&mut chunk))
            .await
            .expect("answer before the deadline")
            .expect("read answer");
        assert!(n > 0, "connection closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_its_connection_leaves_the_client_connection_open() {
    let o = origins(&["a"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let mut s = connect(&gw).await;
    for _ in 0..2 {
        s.write_all(b"GET /close-reply HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write request");
        let r = read_one_response(&mut s).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"a\n");
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "{:?}",
            r.headers
        );
    }
    // Still open: a third request on the same connection is answered.
    let r = raw_exchange_on(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-origin"), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_status_codes_and_headers_come_back() {
    let o = origins(&["a"]).await;
    // A TCP health check, so the origin's `/health` status is free to play with.
    let mut b = with_backends(GatewayBuilder::default(), &o);
    b.health_path = None;
    let gw = b.start().await;
    let http = client();
    let r = http.get(gw.url("/")).send().await.expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-origin"], "a");
    for code in [404u16, 418, 503] {
        o[0].set_health(code);
        let r = http.get(gw.url("/health")).send().await.expect("answer");
        assert_eq!(r.status().as_u16(), code);
        assert_eq!(r.text().await.expect("body"), format!("a health {code}\n"));
    }
    // A backend's own 503 is its answer, not a reason to take it out of the pool.
    let entry = gw.backend(&o[0].url()).await.expect("in /status");
    assert_eq!(entry["alive"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_upload_and_download_stream_with_flat_memory() {
    let o = origins(&["a"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let http = client();
    let size = 100 * MIB;
    // Warm up: connection pools, buffers, allocator arenas.
    for _ in 0..3 {
        let r = http
            .get(gw.url("/download?bytes=1048576"))
            .send()
            .await
            .expect("warm");
        assert_eq!(r.bytes().await.expect("warm body").len() as u64, MIB);
    }
    let pid = gw.child.id();
    let baseline = rss_kib(pid);
    assert!(baseline > 0, "cannot read VmRSS of {pid}");
    let sampler = RssSampler::start(pid);

    const CHUNK: usize = 64 * 1024;
    let chunk = bytes::Bytes::from(vec![b'u'; CHUNK]);
    let chunks = (size as usize) / CHUNK;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let r = http
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("upload answer"), size.to_string());

    let r = http
        .get(gw.url(&format!("/download?bytes={size}")))
        .send()
        .await
        .expect("download");
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut received = 0u64;
    use futures_util::StreamExt;
    while let Some(piece) = body.next().await {
        let piece = piece.expect("download chunk");
        assert!(piece.iter().all(|&b| b == b'x'), "corrupted download");
        received += piece.len() as u64;
    }
    assert_eq!(received, size);
    assert!(eventually(SOON, || all_connections_zero(&gw)).await);

    let growth_kib = sampler.max().saturating_sub(baseline);
    eprintln!(
        "gateway RSS: baseline {} KiB, peak {} KiB",
        baseline,
        sampler.max()
    );
    assert!(
        growth_kib < 50 * 1024,
        "RSS grew by {} MiB (baseline {} MiB)",
        growth_kib / 1024,
        baseline / 1024
    );
}

/// Sends `GET /upgrade` with `Upgrade: <protocol>` on a raw connection; returns the response
/// head (lower-cased) and the connection.
async fn upgrade_request(gw: &Gateway, protocol: &str) -> (String, TcpStream) {
    let mut conn = connect(gw).await;
    let request = format!(
        "GET /upgrade HTTP/1.1\r\nHost: portico.test\r\nConnection: Upgrade\r\n\
         Upgrade: {protocol}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(SOON, conn.read(&mut byte))
            .await
            .expect("response in time")
            .expect("read");
        assert_eq!(n, 1, "connection closed before the response head: {head:?}");
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).to_lowercase(), conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_and_carry_raw_bytes() {
    let o = origins(&["ws"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    let (head, mut conn) = upgrade_request(&gw, "websocket").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let message = b"ping over the upgraded connection";
    conn.write_all(message).await.expect("write");
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(SOON, conn.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(echoed, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_upgrades_are_not_forwarded() {
    let o = origins(&["plain"]).await;
    let gw = with_backends(GatewayBuilder::default(), &o).start().await;
    // Pingora's upstream policy forwards Connection/Upgrade only for WebSocket: the origin
    // sees a plain GET and answers it.
    let (head, _conn) = upgrade_request(&gw, "h2c").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-origin: plain"), "{head}");
}

//! Health checking end to end: the real binary probes real origins; failures take backends
//! out of rotation within `fall` intervals, recoveries bring them back within `rise`, only
//! transitions are logged, runtime additions are probed first, shutdown is prompt.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

/// Generous bound for anything that should take a few probe intervals, on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

/// A port that refuses connections and stays reserved while the socket lives (bound, never
/// listening), so that no other test's origin can take it meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, String) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, format!("http://127.0.0.1:{port}"))
}

/// Sends `n` requests through the gateway; returns the `x-origin` of each (all must be 200).
async fn spread(gw: &Gateway, n: usize) -> Vec<String> {
    let http = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = http.get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200, "log:\n{}", gw.log());
        let origin = r.headers().get("x-origin").and_then(|v| v.to_str().ok());
        seen.push(origin.unwrap_or("").to_string());
    }
    seen
}

/// Waits until `origin` has answered `n` more health checks than now (`n` probe rounds).
async fn rounds(gw: &Gateway, origin: &Origin, n: u64) {
    let target = health_checks(origin) + n;
    let done = eventually(SLACK * 2, || async { health_checks(origin) >= target }).await;
    assert!(
        done,
        "{} was not probed {n} more times; log:\n{}",
        origin.name,
        gw.log()
    );
}

fn health_checks(o: &Origin) -> u64 {
    o.state
        .health_checks
        .load(std::sync::atomic::Ordering::SeqCst)
}

fn up_line(url: &str) -> String {
    format!("backend {url} is UP")
}

fn down_line(url: &str, reason: &str) -> String {
    format!("backend {url} is DOWN ({reason})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_origin_goes_down_within_fall_and_comes_back_within_rise() {
    let a = Origin::start("a").await;
    let mut b = Origin::start("b").await;
    let (b_url, b_port) = (b.url(), b.addr.port());
    let (interval, timeout) = (Duration::from_millis(400), Duration::from_millis(500));
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(&b_url);
    builder.health_frequency = "400ms".into();
    builder.health_timeout = "500ms".into();
    builder.fall = 3;
    builder.rise = 2;
    let gw = builder.start().await;
    assert!(gw.wait_alive(&b_url, true, SLACK).await);

    b.stop();
    let stopped = Instant::now();
    assert!(
        gw.wait_alive(&b_url, false, 3 * interval + timeout + SLACK)
            .await,
        "log:\n{}",
        gw.log()
    );
    let took = stopped.elapsed();
    assert!(
        took >= 2 * interval,
        "DOWN after {took:?}: fall 3 not honoured"
    );
    let status = gw.backend(&b_url).await.expect("listed");
    assert_eq!(status["health"], "down");
    assert_eq!(status["last_change_reason"], "connection refused");
    assert!(status["last_probe"].as_u64().is_some());
    let served = spread(&gw, 20).await;
    assert!(served.iter().all(|o| o == "a"), "{served:?}");

    let b = Origin::start_on("b", b_port).await;
    let restarted = Instant::now();
    assert!(
        gw.wait_alive(&b_url, true, 2 * interval + timeout + SLACK)
            .await,
        "log:\n{}",
        gw.log()
    );
    let took = restarted.elapsed();
    assert!(
        took >= interval / 2,
        "UP after {took:?}: rise 2 not honoured"
    );
    let status = gw.backend(&b_url).await.expect("listed");
    assert_eq!(status["health"], "up");
    assert_eq!(
        status["last_change_reason"],
        "2 health checks passed in a row"
    );
    let served = spread(&gw, 20).await;
    assert!(served.iter().any(|o| o == "b"), "{served:?}");
    assert!(b.requests() >= 5, "b got {} of 20", b.requests());
    assert_eq!(gw.log_count(&down_line(&b_url, "connection refused")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_the_proxy_marked_down_comes_back_only_through_the_checker() {
    let a = Origin::start("a").await;
    let mut b = Origin::start("b").await;
    let (b_url, b_port) = (b.url(), b.addr.port());
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(&b_url);
    // The checker alone would need 1000 failures: any DOWN here comes from the proxy.
    builder.health_frequency = "1s".into();
    builder.fall = 1000;
    builder.rise = 2;
    let gw = builder.start().await;
    assert!(gw.wait_alive(&b_url, true, SLACK).await);

    b.stop();
    let served = spread(&gw, 4).await;
    assert!(served.iter().all(|o| o == "a"), "{served:?}");
    let status = gw.backend(&b_url).await.expect("listed");
    assert_eq!(status["health"], "down", "{status}");
    assert_eq!(gw.log_count(&down_line(&b_url, "connection refused")), 1);

    let b = Origin::start_on("b", b_port).await;
    let served = spread(&gw, 10).await;
    let status = gw.backend(&b_url).await.expect("listed");
    if status["health"] == "down" {
        assert_eq!(
            b.requests(),
            0,
            "traffic brought back a DOWN backend: {served:?}"
        );
    }
    assert!(
        gw.wait_alive(&b_url, true, SLACK).await,
        "log:\n{}",
        gw.log()
    );
    let status = gw.backend(&b_url).await.expect("listed");
    assert_eq!(
        status["last_change_reason"],
        "2 health checks passed in a row"
    );
    let served = spread(&gw, 10).await;
    assert!(served.iter().any(|o| o == "b"), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_failing_its_health_path_goes_down_while_a_passing_one_stays_up() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    assert!(gw.wait_alive(&a.url(), true, SLACK).await);

    a.set_health(500);
    assert!(gw.wait_alive(&a.url(), false, SLACK).await);
    let status = gw.backend(&a.url()).await.expect("listed");
    assert_eq!(status["last_change_reason"], "health check returned 500");
    rounds(&gw, &b, 3).await;
    let status = gw.backend(&b.url()).await.expect("listed");
    assert_eq!(status["alive"], true);
    assert_eq!(status["health"], "up");
    let served = spread(&gw, 10).await;
    assert!(served.iter().all(|o| o == "b"), "{served:?}");
    assert_eq!(a.requests(), 0);

    // 3xx passes too.
    a.set_health(302);
    assert!(gw.wait_alive(&a.url(), true, SLACK).await);
    assert_eq!(gw.log_count("is DOWN"), 1, "log:\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_origin_goes_down_after_the_timeout_without_delaying_other_probes() {
    let silent = SilentOrigin::start().await;
    let a = Origin::start("a").await;
    let timeout = Duration::from_secs(5);
    let mut builder = GatewayBuilder::default()
        .backend(silent.url())
        .backend(a.url());
    builder.health_frequency = "200ms".into();
    builder.health_timeout = "5s".into();
    let started = Instant::now();
    let gw = builder.start().await;
    // The first round waits for the silent one's verdict before the proxy takes traffic.
    assert!(
        started.elapsed() >= timeout,
        "ready before the first round ended"
    );
    let status = gw.backend(&silent.url()).await.expect("listed");
    assert_eq!(status["health"], "down");
    assert_eq!(status["last_change_reason"], "no answer within 5s");
    assert!(gw.wait_alive(&a.url(), true, SLACK).await);

    // Probes of the silent one now hang for 5 s each; `a` must still be judged every 200 ms.
    a.set_health(503);
    let failed = Instant::now();
    let down = gw
        .wait_alive(&a.url(), false, timeout - Duration::from_secs(1))
        .await;
    assert!(
        down,
        "a was not marked DOWN within {:?}: its probes wait for the silent backend",
        failed.elapsed()
    );
    a.set_health(200);
    assert!(
        gw.wait_alive(&a.url(), true, timeout - Duration::from_secs(1))
            .await
    );
    assert_eq!(
        gw.log_count(&down_line(&silent.url(), "no answer within 5s")),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_are_logged_once_each_and_steady_states_never() {
    let a = Origin::start("a").await;
    let mut b = Origin::start("b").await;
    let (a_url, b_url) = (a.url(), b.url());
    let gw = GatewayBuilder::default()
        .backend(&a_url)
        .backend(&b_url)
        .start()
        .await;
    rounds(&gw, &a, 5).await;
    assert_eq!(gw.log_count(&up_line(&a_url)), 1, "log:\n{}", gw.log());
    assert_eq!(gw.log_count(&up_line(&b_url)), 1);
    assert_eq!(gw.log_count("is DOWN"), 0);

    a.set_health(500);
    assert!(gw.wait_alive(&a_url, false, SLACK).await);
    rounds(&gw, &a, 5).await;
    assert_eq!(
        gw.log_count(&down_line(&a_url, "health check returned 500")),
        1,
        "log:\n{}",
        gw.log()
    );
    assert_eq!(gw.log_count(&format!("backend {a_url} is DOWN")), 1);

    a.set_health(200);
    assert!(gw.wait_alive(&a_url, true, SLACK).await);
    rounds(&gw, &a, 5).await;
    assert_eq!(gw.log_count(&up_line(&a_url)), 2, "log:\n{}", gw.log());

    b.stop();
    assert!(gw.wait_alive(&b_url, false, SLACK).await);
    rounds(&gw, &a, 5).await;
    assert_eq!(
        gw.log_count(&down_line(&b_url, "connection refused")),
        1,
        "log:\n{}",
        gw.log()
    );
    assert_eq!(gw.log_count(&format!("backend {b_url} is")), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_configured_backend_gets_no_request_from_the_very_first_one() {
    let a = Origin::start("a").await;
    let failing = Origin::start("failing").await;
    failing.set_health(500);
    let (_reserved, closed) = closed_port();
    let mut builder = GatewayBuilder::default()
        .backend(&closed)
        .backend(failing.url())
        .backend(a.url());
    // Long interval and fall: only the first round can have judged them.
    builder.health_frequency = "1h".into();
    builder.fall = 3;
    builder.rise = 3;
    let gw = builder.start().await;
    let served = spread(&gw, 12).await;
    assert!(served.iter().all(|o| o == "a"), "{served:?}");
    assert_eq!(failing.requests(), 0);
    assert_eq!(health_checks(&failing), 1);
    let status = gw.backend(&closed).await.expect("listed");
    assert_eq!(status["requests"], 0, "{status}");
    assert_eq!(status["health"], "down");
    assert_eq!(gw.log_count(&down_line(&closed, "connection refused")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_addition_is_probed_at_once_and_gets_no_traffic_before_it_passes() {
    let a = Origin::start("a").await;
    let healthy = Origin::start("healthy").await;
    let failing = Origin::start("failing").await;
    failing.set_health(500);
    let mut builder = GatewayBuilder::default().backend(a.url());
    // No periodic round will come: only the probe on addition can judge the new backends.
    builder.health_frequency = "1h".into();
    let gw = builder.start().await;

    // Traffic flows while the backends are added; every answer from `healthy` must come
    // after its first health check.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (url, stop) = (gw.url("/"), stop.clone());
        let checks = healthy.state.clone();
        tokio::spawn(async move {
            let http = client();
            let mut from_healthy = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = http.get(&url).send().await.expect("request");
                assert_eq!(r.status(), 200);
                if r.headers().get("x-origin").is_some_and(|v| v == "healthy") {
                    let probed = checks
                        .health_checks
                        .load(std::sync::atomic::Ordering::SeqCst);
                    assert!(probed >= 1, "traffic reached a backend never probed");
                    from_healthy += 1;
                }
            }
            from_healthy
        })
    };
    let http = client();
    for o in [&failing, &healthy] {
        let r = http
            .post(gw.admin("/backends"))
            .json(&json!({"url": o.url()}))
            .send()
            .await
            .expect("add");
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.expect("json");
        assert_ne!(body["health"], "pending", "not probed at once: {body}");
    }
    assert_eq!(health_checks(&failing), 1);
    assert_eq!(health_checks(&healthy), 1);
    assert!(
        eventually(SLACK, || async { healthy.requests() >= 3 }).await,
        "the passing addition got no traffic"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let from_healthy = traffic.await.expect("traffic task");
    assert!(from_healthy >= 1);
    assert_eq!(failing.requests(), 0, "a failing addition got traffic");
    let status = gw.backend(&failing.url()).await.expect("listed");
    assert_eq!(status["alive"], false);
    assert_eq!(status["last_change_reason"], "health check returned 500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_checker_and_the_process_promptly_with_a_long_interval() {
    let a = Origin::start("a").await;
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.health_frequency = "1h".into();
    builder.grace_period = 5;
    let mut gw = builder.start().await;
    assert_eq!(spread(&gw, 2).await, ["a", "a"]);
    gw.signal(Signal::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    let status = status.unwrap_or_else(|| panic!("still running; log:\n{}", gw.log()));
    assert!(status.success(), "{status:?}; log:\n{}", gw.log());
    assert_eq!(
        gw.log_count("service 'BG health checker' exited"),
        1,
        "log:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_dead_backends_are_judged_within_about_one_timeout() {
    const SILENT: usize = 100;
    const CLOSED: usize = 200;
    let timeout = Duration::from_secs(2);
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(SilentOrigin::start().await);
    }
    let a = Origin::start("a").await;
    let mut builder = GatewayBuilder::default().backend(a.url());
    for s in &silent {
        builder = builder.backend(s.url());
    }
    let mut reserved = Vec::new();
    for _ in 0..CLOSED {
        let (socket, url) = closed_port();
        builder = builder.backend(url);
        reserved.push(socket);
    }
    builder.health_frequency = "1h".into();
    builder.health_timeout = "2s".into();
    let started = Instant::now();
    let gw = builder.start().await;
    let took = started.elapsed();
    eprintln!(
        "{} backends judged, gateway ready after {took:?}",
        1 + SILENT + CLOSED
    );
    // Sequential probes would take 100 x 2 s; concurrent ones about one timeout.
    assert!(took < timeout + SLACK, "ready after {took:?}");
    let status = gw.status().await;
    let backends = status["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 1 + SILENT + CLOSED);
    let pending: Vec<&Value> = backends
        .iter()
        .filter(|b| b["health"] == "pending")
        .collect();
    assert!(
        pending.is_empty(),
        "ready before the first round ended: {pending:?}"
    );
    for s in &silent {
        let b = backends
            .iter()
            .find(|b| b["url"] == s.url())
            .expect("listed");
        assert_eq!(b["last_change_reason"], "no answer within 2s");
    }
    assert_eq!(spread(&gw, 5).await, ["a"; 5]);
}

//! The balancer under failure, through the real binary: even spreading over the alive
//! backends, outlier ejection (and its floor, `max_ejection_percent`), slow start, the
//! latency-aware `p2c-ewma` strategy, and a retry budget that covers every upstream failure.

mod support;

use std::time::{Duration, Instant};

use support::*;

const SOON: Duration = Duration::from_secs(10);

async fn origins(names: &[&str]) -> Vec<Origin> {
    let mut v = Vec::new();
    for n in names {
        v.push(Origin::start(n).await);
    }
    v
}

fn with_backends(mut b: GatewayBuilder, urls: &[String]) -> GatewayBuilder {
    b.access_log = false;
    for u in urls {
        b = b.backend(u.clone());
    }
    b
}

fn urls(origins: &[Origin]) -> Vec<String> {
    origins.iter().map(Origin::url).collect()
}

/// Sends `n` sequential GETs without cookies; returns how many were answered 200.
async fn send(gw: &Gateway, n: usize) -> usize {
    let http = client();
    let mut ok = 0;
    for _ in 0..n {
        if let Ok(r) = http.get(gw.url("/")).send().await {
            if r.status() == 200 {
                ok += 1;
            }
        }
    }
    ok
}

async fn wait_alive_all(gw: &Gateway, urls: &[String]) {
    for u in urls {
        assert!(gw.wait_alive(u, true, SOON).await, "{u} never UP");
    }
}

/// Four backends, one refusing: 400 requests split evenly (within 1) over the other three,
/// for round-robin and for new clients (no cookie) of `cookie`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_backend_s_share_is_spread_evenly() {
    for strategy in ["round-robin", "cookie"] {
        let mut o = origins(&["a", "b", "c", "d"]).await;
        o[1].stop();
        let all = urls(&o);
        let gw = with_backends(GatewayBuilder::default().strategy(strategy), &all)
            .start()
            .await;
        assert!(gw.wait_alive(&all[1], false, SOON).await);
        wait_alive_all(&gw, &[all[0].clone(), all[2].clone(), all[3].clone()]).await;
        assert_eq!(send(&gw, 400).await, 400);
        let counts: Vec<u64> = o.iter().map(Origin::requests).collect();
        assert_eq!(counts[1], 0);
        for i in [0, 2, 3] {
            assert!(
                (132..=135).contains(&counts[i]),
                "{strategy}: uneven split {counts:?}"
            );
        }
    }
}

/// A listener whose accept queue is full: new connections time out (the overload case).
struct Blackhole {
    listener: tokio::net::TcpListener,
    held: Vec<tokio::net::TcpStream>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 1], free_port()).into())
            .expect("bind");
        // A backlog of 1: the kernel queues at most two connections nobody accepts.
        let listener = socket.listen(1).expect("listen");
        Blackhole {
            listener,
            held: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.listener.local_addr().expect("addr"))
    }

    /// Fills the accept queue: connects until a connection no longer completes.
    async fn fill(&mut self) {
        let addr = self.listener.local_addr().expect("addr");
        for _ in 0..8 {
            match tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => self.held.push(s),
                _ => return,
            }
        }
    }
}

/// Three of four backends time out on connect: outlier ejection takes no more than
/// `max_ejection_percent` (50 %: two) of them out, and every request is still served, by
/// the healthy backend (the third timing-out backend's requests are retried there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeouts_eject_no_more_than_the_floor_allows() {
    let good = Origin::start("good").await;
    let mut holes: Vec<Blackhole> = (0..3).map(|_| Blackhole::start()).collect();
    let mut all: Vec<String> = holes.iter().map(Blackhole::url).collect();
    all.push(good.url());
    let mut b = with_backends(GatewayBuilder::default(), &all);
    // TCP probes, once at start (they pass: the queues are empty), then not for an hour.
    b.health_path = None;
    b.health_frequency = "1h".into();
    b.connect_timeout = "200ms".into();
    b.extra =
        "retries: 3\noutlier_detection:\n  consecutive_errors: 2\n  max_ejection_percent: 50\n"
            .into();
    let gw = b.start().await;
    wait_alive_all(&gw, &all).await;
    for h in holes.iter_mut() {
        h.fill().await;
    }
    assert_eq!(send(&gw, 40).await, 40, "a request failed:\n{}", gw.log());
    let status = gw.status().await;
    let ejected = status["backends"]
        .as_array()
        .map(|a| a.iter().filter(|b| b["ejected"] == true).count())
        .unwrap_or(0);
    assert_eq!(ejected, 2, "{status}");
    assert!(gw.backend(&good.url()).await.expect("listed")["alive"] == true);
    // Logged at most once per 10 s (once here, twice if the machine is slow).
    let warnings = gw.log_count("consecutive errors: 2 of 4 backends are ejected already");
    assert!(
        (1..=2).contains(&warnings),
        "floor warning (once per period), {warnings} times:\n{}",
        gw.log()
    );
    assert_eq!(gw.log_count("(ejected: 2 consecutive errors)"), 2);
}

/// How long `url` stays ejected from the moment this is called (it must be ejected then).
async fn ejection_lasts(gw: &Gateway, url: &str) -> Duration {
    let start = Instant::now();
    assert!(gw.backend(url).await.expect("listed")["ejected"] == true);
    assert!(
        gw.wait_alive(url, true, Duration::from_secs(20)).await,
        "never came back:\n{}",
        gw.log()
    );
    start.elapsed()
}

/// Sends requests until `origin` has answered `n` more of them.
async fn until_it_answers(gw: &Gateway, origin: &Origin, n: u64) {
    let target = origin.requests() + n;
    let http = client();
    for _ in 0..200 {
        if origin.requests() >= target {
            return;
        }
        let _ = http.get(gw.url("/")).send().await;
    }
    panic!("{} answered {} requests", origin.name, origin.requests());
}

/// A backend answering 500 is ejected after 5 of them, returns once its ejection time is
/// over and a probe passes, and a second ejection lasts twice as long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500_is_ejected_then_returns_and_ejections_grow() {
    let o = origins(&["a", "b", "c"]).await;
    o[0].set_status(500);
    let all = urls(&o);
    let mut b = with_backends(GatewayBuilder::default(), &all);
    b.health_frequency = "100ms".into();
    b.extra = "outlier_detection:\n  base_ejection_time: 1s\n  max_ejection_time: 10s\n".into();
    let gw = b.start().await;
    wait_alive_all(&gw, &all).await;

    until_it_answers(&gw, &o[0], 5).await;
    let line = format!("backend {} is DOWN (ejected: 5 consecutive errors)", all[0]);
    assert!(
        eventually(SOON, || async { gw.log_count(&line) == 1 }).await,
        "{}",
        gw.log()
    );
    let before = o[0].requests();
    assert_eq!(send(&gw, 20).await, 20, "the others answer everything");
    assert_eq!(o[0].requests(), before, "an ejected backend got requests");
    let first = ejection_lasts(&gw, &all[0]).await;
    assert!(
        first >= Duration::from_millis(800),
        "first ejection {first:?}"
    );

    until_it_answers(&gw, &o[0], 5).await;
    assert!(
        eventually(SOON, || async { gw.log_count(&line) == 2 }).await,
        "{}",
        gw.log()
    );
    let second = ejection_lasts(&gw, &all[0]).await;
    assert!(
        second >= Duration::from_millis(1800),
        "second ejection {second:?}"
    );
    let entry = gw.backend(&all[0]).await.expect("listed");
    assert_eq!(entry["ejections"], 2, "{entry}");
    assert_eq!(
        entry["last_change_reason"],
        "ejection over, health check passed"
    );
}

/// With `slow_start: 10s`, a backend back from DOWN gets under 30 % of its fair share in its
/// first 2 s, and all of it once its ramp is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_back_from_down_ramps_up() {
    let o = origins(&["a", "b", "c"]).await;
    let all = urls(&o);
    // Weight 100 each (same shares as 1 each), so that `effective_weight` (rounded) shows the
    // ramp to within 1 %.
    let mut b = GatewayBuilder {
        access_log: false,
        ..Default::default()
    };
    for u in &all {
        b = b.weighted(u.clone(), 100);
    }
    b.health_frequency = "100ms".into();
    b.extra = "slow_start: 10s\n".into();
    let gw = b.start().await;
    wait_alive_all(&gw, &all).await;
    o[0].set_health(503);
    assert!(gw.wait_alive(&all[0], false, SOON).await);
    o[0].set_health(200);
    assert!(gw.wait_alive(&all[0], true, SOON).await);
    let up = Instant::now();

    let (mut sent, before) = (0u64, o[0].requests());
    let http = client();
    while up.elapsed() < Duration::from_secs(2) {
        let r = http.get(gw.url("/")).send().await.expect("answer");
        assert_eq!(r.status(), 200);
        sent += 1;
    }
    let got = o[0].requests() - before;
    let fair = sent as f64 / 3.0;
    assert!(
        (got as f64) < 0.3 * fair,
        "{got} of {sent} requests in the first 2 s (fair share {fair:.0})"
    );
    let entry = gw.backend(&all[0]).await.expect("listed");
    let ramping = entry["effective_weight"]
        .as_u64()
        .expect("effective_weight");
    assert!(
        ramping < 100,
        "effective weight {ramping} of 100 while ramping: {entry}"
    );

    // The ramp is over when the backend's effective weight is its whole weight again (10 s
    // after it came back; 20 s at most here).
    assert!(
        eventually(Duration::from_secs(20), || async {
            gw.backend(&all[0]).await.expect("listed")["effective_weight"] == 100
        })
        .await,
        "the ramp never ended: {:?}",
        gw.backend(&all[0]).await
    );
    assert!(
        up.elapsed() >= Duration::from_secs(9),
        "ramp over after {:?}",
        up.elapsed()
    );
    let before = o[0].requests();
    assert_eq!(send(&gw, 300).await, 300);
    let got = o[0].requests() - before;
    assert!((95..=105).contains(&got), "{got} of 300 after the ramp");
}

/// The 99th percentile of `n` sequential request latencies.
async fn p99(gw: &Gateway, n: usize) -> Duration {
    let http = client();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let r = http.get(gw.url("/")).send().await.expect("answer");
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[n * 99 / 100]
}

/// One origin answering in 50 ms and two at once: `p2c-ewma` sends the slow one under 10 %
/// of 600 sequential requests, and its p99 beats least-conn's and round-robin's on the same
/// origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_avoids_the_slow_backend() {
    let o = origins(&["slow", "fast1", "fast2"]).await;
    o[0].set_delay(Duration::from_millis(50));
    let all = urls(&o);
    let mut p99s = Vec::new();
    for strategy in ["p2c-ewma", "least-conn", "round-robin"] {
        let gw = with_backends(GatewayBuilder::default().strategy(strategy), &all)
            .start()
            .await;
        wait_alive_all(&gw, &all).await;
        let before = o[0].requests();
        p99s.push((strategy, p99(&gw, 600).await));
        if strategy == "p2c-ewma" {
            let slow = o[0].requests() - before;
            assert!(slow < 60, "p2c-ewma sent {slow} of 600 to the slow backend");
        }
    }
    let (p2c, lc, rr) = (p99s[0].1, p99s[1].1, p99s[2].1);
    assert!(p2c < lc && p2c < rr, "p99: {p99s:?}");
}

/// `retries: 0` with backends that close reused connections: every request reaches exactly
/// one backend (Pingora by default retries a failed reused connection elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_means_one_backend_per_request() {
    let a = ClosingOrigin::start(Closing::ReusedConnections).await;
    let b = ClosingOrigin::start(Closing::ReusedConnections).await;
    let all = vec![a.url(), b.url()];
    let mut g = with_backends(GatewayBuilder::default(), &all);
    g.health_path = None;
    g.health_frequency = "1h".into();
    g.extra = "retries: 0\n".into();
    let gw = g.start().await;
    wait_alive_all(&gw, &all).await;
    let http = client();
    let mut codes = Vec::new();
    for _ in 0..12 {
        let r = http.get(gw.url("/")).send().await.expect("answer");
        codes.push(r.status().as_u16());
    }
    assert_eq!(a.received() + b.received(), 12, "codes {codes:?}");
    assert!(
        codes.contains(&200) && codes.contains(&502),
        "codes {codes:?}"
    );
}

/// A POST whose backend closes after reading the body reaches exactly one backend (it is
/// not idempotent), and the client gets 502; the failure counts once on that backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_body_was_sent_is_not_retried() {
    let a = ClosingOrigin::start(Closing::AfterTheBody).await;
    let b = ClosingOrigin::start(Closing::AfterTheBody).await;
    let all = vec![a.url(), b.url()];
    let mut g = with_backends(GatewayBuilder::default(), &all);
    g.health_path = None;
    let gw = g.start().await;
    wait_alive_all(&gw, &all).await;
    let r = client()
        .post(gw.url("/upload"))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 502);
    assert_eq!(a.received() + b.received(), 1);
    let status = gw.status().await;
    let errors: u64 = status["backends"]
        .as_array()
        .map(|v| v.iter().filter_map(|b| b["errors"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(errors, 1, "{status}");
}

/// A GET whose backends close without answering is retried within the one `retries` budget
/// (here 1: two backends of three), ends in 502, and each failure counts on its backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_is_retried_within_the_budget_and_each_failure_counts_once() {
    let closing: Vec<ClosingOrigin> = vec![
        ClosingOrigin::start(Closing::AfterTheBody).await,
        ClosingOrigin::start(Closing::AfterTheBody).await,
        ClosingOrigin::start(Closing::AfterTheBody).await,
    ];
    let all: Vec<String> = closing.iter().map(ClosingOrigin::url).collect();
    let mut g = with_backends(GatewayBuilder::default(), &all);
    g.health_path = None;
    g.extra = "retries: 1\n".into();
    let gw = g.start().await;
    wait_alive_all(&gw, &all).await;
    let r = client().get(gw.url("/")).send().await.expect("answer");
    assert_eq!(r.status(), 502);
    let received: u64 = closing.iter().map(ClosingOrigin::received).sum();
    assert_eq!(received, 2);
    let status = gw.status().await;
    for (c, url) in closing.iter().zip(&all) {
        let entry = status["backends"]
            .as_array()
            .and_then(|v| v.iter().find(|b| &b["url"] == url).cloned())
            .expect("listed");
        assert_eq!(entry["errors"].as_u64(), Some(c.received()), "{entry}");
    }
}

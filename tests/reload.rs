//! Configuration reload on `SIGHUP` (in place, without a failed request), a broken file on
//! `SIGHUP` (logged, nothing changes), and `SIGUSR1`/`SIGUSR2` (the process keeps serving).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{client, eventually, Gateway, GatewayBuilder, Origin};

const DEADLINE: Duration = Duration::from_secs(15);

/// Rewrites the gateway's configuration file from `builder` (same ports and files).
fn rewrite(gw: &Gateway, builder: &GatewayBuilder) {
    let yaml = builder.yaml(gw.dir.path(), gw.port, gw.admin_port);
    std::fs::write(&gw.config, yaml).expect("rewrite config");
}

/// Sends `n` requests one after the other; returns how many each origin answered.
async fn spread(gw: &Gateway, names: &[&str], n: usize) -> Vec<usize> {
    let http = client();
    let mut counts = vec![0; names.len()];
    for _ in 0..n {
        let body = http
            .get(gw.url("/"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        let i = names
            .iter()
            .position(|name| body.trim() == *name)
            .unwrap_or_else(|| panic!("unexpected answer {body:?}"));
        counts[i] += 1;
    }
    counts
}

async fn wait_log(gw: &Gateway, needle: &str, times: usize) -> bool {
    eventually(DEADLINE, || {
        let n = gw.log_count(needle);
        async move { n >= times }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_switches_to_weighted_under_load_without_a_failed_request() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let builder = GatewayBuilder {
        access_log: false,
        ..GatewayBuilder::default()
    }
    .backend(a.url())
    .backend(b.url());
    let gw = builder.clone().start().await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    assert!(gw.wait_alive(&b.url(), true, DEADLINE).await);
    assert_eq!(spread(&gw, &["a", "b"], 20).await, vec![10, 10]);

    // Load: four clients sending back to back, counting every request that fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, failed, url) = (stop.clone(), sent.clone(), failed.clone(), gw.url("/"));
        load.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                let ok = match http.get(&url).send().await {
                    Ok(r) => r.status() == 200 && r.text().await.is_ok(),
                    Err(_) => false,
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    assert!(
        eventually(DEADLINE, || {
            let n = sent.load(Ordering::Relaxed);
            async move { n >= 50 }
        })
        .await
    );

    let mut next = GatewayBuilder {
        access_log: false,
        ..GatewayBuilder::default()
    }
    .strategy("weighted-round-robin");
    next.backends = vec![(a.url(), 1), (b.url(), 4)];
    rewrite(&gw, &next);
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_log(&gw, "reloaded: changed strategy, backends", 1).await,
        "{}",
        gw.log()
    );
    let before = sent.load(Ordering::Relaxed);
    assert!(
        eventually(DEADLINE, || {
            let n = sent.load(Ordering::Relaxed);
            async move { n >= before + 50 }
        })
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed across the reload; log:\n{}",
        gw.log()
    );

    let status = gw.status().await;
    assert_eq!(status["strategy"], "weighted-round-robin");
    let weights: Vec<_> = status["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["url"].as_str().unwrap_or("").to_string(),
                b["weight"].clone(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        vec![(a.url(), 1.into()), (b.url(), 4.into())],
        "{status}"
    );
    // Sequential requests now follow the new weights exactly (smooth weighted round-robin).
    assert_eq!(spread(&gw, &["a", "b"], 50).await, vec![10, 40]);
    assert_eq!(gw.log_count("takes effect at the next upgrade"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_on_sighup_is_logged_and_changes_nothing() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let builder = GatewayBuilder::default().backend(a.url()).backend(b.url());
    let gw = builder.clone().start().await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    assert!(gw.wait_alive(&b.url(), true, DEADLINE).await);
    let before = gw.status().await;

    let mut broken = builder.yaml(gw.dir.path(), gw.port, gw.admin_port);
    broken = broken.replace("strategy: round-robin", "strategy: fastest");
    broken += "retries: 99\n";
    // A valid change next to the errors: it must not be applied either.
    broken = broken.replace(&format!("  - url: {}\n    weight: 1\n", b.url()), "");
    std::fs::write(&gw.config, broken).expect("write");
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_log(&gw, "not reloaded (2 errors); nothing changed", 1).await,
        "{}",
        gw.log()
    );
    let log = gw.log();
    assert!(
        log.contains("strategy: unknown strategy \"fastest\""),
        "{log}"
    );
    assert!(log.contains("retries: 99 is out of range"), "{log}");
    assert_eq!(gw.status().await, before);
    assert_eq!(spread(&gw, &["a", "b"], 10).await, vec![5, 5]);

    // Fixed again, the same reload applies.
    let mut fixed = builder.clone();
    fixed.backends.truncate(1);
    rewrite(&gw, &fixed);
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_log(&gw, "reloaded: changed backends", 1).await,
        "{}",
        gw.log()
    );
    assert_eq!(spread(&gw, &["a", "b"], 4).await, vec![4, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_need_new_sockets_wait_for_the_next_upgrade() {
    let a = Origin::start("a").await;
    let builder = GatewayBuilder::default().backend(a.url());
    let gw = builder.clone().start().await;
    let mut yaml = builder.yaml(gw.dir.path(), gw.port, gw.admin_port);
    yaml = yaml.replace("threads: 2", "threads: 3");
    yaml += "retries: 1\n";
    std::fs::write(&gw.config, yaml).expect("write");
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_log(&gw, "reloaded: changed retries", 1).await,
        "{}",
        gw.log()
    );
    assert!(
        wait_log(&gw, "threads changed; takes effect at the next upgrade", 1).await,
        "{}",
        gw.log()
    );
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_and_sigusr2_leave_the_process_serving() {
    let a = Origin::start("a").await;
    let mut gw = GatewayBuilder::default().backend(a.url()).start().await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    for (sig, name) in [(Signal::SIGUSR1, "SIGUSR1"), (Signal::SIGUSR2, "SIGUSR2")] {
        gw.signal(sig);
        assert!(
            wait_log(&gw, &format!("{name} received"), 1).await,
            "{}",
            gw.log()
        );
        let r = client().get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    assert!(gw.wait_exit(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_timeouts_to_the_backends_already_in_the_pool() {
    let a = Origin::start("a").await;
    let builder = GatewayBuilder::default().backend(a.url());
    let gw = builder.clone().start().await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    a.set_delay(Duration::from_millis(1500));
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert_eq!(
        r.status(),
        200,
        "a 1.5 s answer is within the 5 s read timeout"
    );

    let mut shorter = builder.clone();
    shorter.read_timeout = "300ms".into();
    rewrite(&gw, &shorter);
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_log(&gw, "reloaded: changed timeouts", 1).await,
        "{}",
        gw.log()
    );
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert_eq!(r.status(), 504);
    let body = r.text().await.expect("body");
    assert!(body.contains("300ms"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_file_the_store_keeps_the_pool_on_sighup() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let state = tempfile::tempdir().expect("tempdir");
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.state_file = Some(state.path().join("state.json"));
    let gw = builder.clone().start().await;
    assert!(gw.wait_alive(&a.url(), true, DEADLINE).await);
    let next = builder.clone().backend(b.url());
    rewrite(&gw, &next);
    gw.signal(Signal::SIGHUP);
    assert!(
        wait_log(&gw, "`backends` not re-applied", 1).await,
        "{}",
        gw.log()
    );
    assert!(
        gw.backend(&b.url()).await.is_none(),
        "the file's pool won over the store"
    );
    assert!(gw.backend(&a.url()).await.is_some());
}

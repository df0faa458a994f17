//! Several instances sharing one pool through a real etcd: changes made on one instance reach
//! the others within a second, duplicate adds race to exactly one winner, concurrent writes
//! leave every pool equal to what was acknowledged, an etcd outage fails no proxied request
//! (writes answer 503 until etcd is back), restarts reload the shared pool (or the local cache
//! when etcd is down), and sticky strategies agree across instances.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// How soon a change made on one instance must be applied by the others.
const PROPAGATION: Duration = Duration::from_secs(1);

/// A gateway on `etcd` under `prefix`, seeded (if first) with `backends`.
fn member(etcd: &Etcd, prefix: &str, backends: &[&Origin]) -> GatewayBuilder {
    let mut b = GatewayBuilder {
        extra: etcd.store_yaml(prefix),
        access_log: false,
        ..GatewayBuilder::default()
    };
    for o in backends {
        b = b.backend(o.url());
    }
    b
}

/// `POST /backends {"url": url}`: the status and the body.
async fn add(gw: &Gateway, url: &str) -> (u16, Value) {
    let r = client()
        .post(gw.admin("/backends"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .expect("add request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `DELETE /backends?url=...`: the status.
async fn remove(gw: &Gateway, url: &str) -> u16 {
    client()
        .delete(gw.admin(&format!("/backends?url={url}")))
        .send()
        .await
        .expect("remove request")
        .status()
        .as_u16()
}

/// The URLs of the pool as `/status` shows it, sorted.
async fn pool(gw: &Gateway) -> Vec<String> {
    let status = gw.status().await;
    let mut urls: Vec<String> = status["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["url"].as_str().expect("url").to_string())
        .collect();
    urls.sort();
    urls
}

/// The body of `GET url`, if it answered 200.
async fn answer(url: &str) -> Option<String> {
    let r = client().get(url).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    r.text().await.ok().map(|t| t.trim().to_string())
}

/// A closed loopback port: a backend URL nobody answers on (it stays DOWN, which is fine
/// for membership tests).
fn closed_backend() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_on_one_instance_is_served_by_the_other_within_a_second() {
    let etcd = Etcd::start().await;
    let (one, two) = (Origin::start("one").await, Origin::start("two").await);
    let a = member(&etcd, "/t/add", &[&one]).start().await;
    let b = member(&etcd, "/t/add", &[&one]).start().await;
    assert!(a.log().contains("seeded from `backends`"), "{}", a.log());
    assert!(
        !b.log().contains("seeded from"),
        "the prefix was seeded twice: {}",
        b.log()
    );

    let (status, body) = add(&a, &two.url()).await;
    assert_eq!(status, 201, "{body}");
    let acked = Instant::now();
    let served = eventually(PROPAGATION, || async {
        answer(&b.url("/")).await.as_deref() == Some("two")
    })
    .await;
    assert!(
        served,
        "B did not serve the backend added on A within {PROPAGATION:?} (pool {:?}); log:\n{}",
        pool(&b).await,
        b.log()
    );
    eprintln!("added on A, served by B after {:?}", acked.elapsed());
    let store = &b.status().await["store"];
    assert_eq!(store["kind"], "etcd");
    assert_eq!(store["connected"], true);
    assert_eq!(store["prefix"], "/t/add");
    assert_eq!(etcd.urls("/t/add").await, pool(&a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remove_on_one_instance_drains_on_the_other() {
    let etcd = Etcd::start().await;
    let (one, two) = (Origin::start("one").await, Origin::start("two").await);
    let a = member(&etcd, "/t/drain", &[&one, &two]).start().await;
    let b = member(&etcd, "/t/drain", &[&one, &two]).start().await;
    assert!(
        a.wait_alive(&two.url(), true, Duration::from_secs(10))
            .await
    );

    // Slow requests through A until one is in progress on `two`.
    let slow = a.url("/slow?ms=2500");
    let mut requests = Vec::new();
    let started = eventually(Duration::from_secs(10), || {
        let slow = slow.clone();
        requests.push(tokio::spawn(
            async move { client().get(&slow).send().await },
        ));
        let in_progress = two.in_progress();
        async move { in_progress > 0 }
    })
    .await;
    assert!(started, "no slow request reached `two`");

    assert_eq!(remove(&b, &two.url()).await, 200);
    let drained = eventually(PROPAGATION, || async {
        let s = a.status().await;
        let in_pool = s["backends"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["url"] == two.url()));
        let draining = s["draining"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["url"] == two.url()));
        !in_pool && draining
    })
    .await;
    assert!(
        drained,
        "A did not drain the backend removed on B: {}",
        a.status().await
    );
    for r in requests {
        let r = r.await.expect("task").expect("slow request");
        assert_eq!(
            r.status(),
            200,
            "a request in flight to the removed backend failed"
        );
    }
    let before = two.requests();
    for _ in 0..20 {
        assert_eq!(answer(&a.url("/")).await.as_deref(), Some("one"));
    }
    assert_eq!(
        two.requests(),
        before,
        "A still sends to the removed backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_add_on_both_instances_at_once_gives_one_201_and_one_409() {
    let etcd = Etcd::start().await;
    let a = member(&etcd, "/t/dup", &[]).start().await;
    let b = member(&etcd, "/t/dup", &[]).start().await;
    for round in 0..5 {
        let url = closed_backend();
        let ((sa, ba), (sb, bb)) = tokio::join!(add(&a, &url), add(&b, &url));
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {ba} / {bb}");
    }
    assert_eq!(etcd.urls("/t/dup").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_writes_over_both_instances_leave_both_pools_as_acknowledged() {
    let etcd = Etcd::start().await;
    let a = Arc::new(member(&etcd, "/t/writes", &[]).start().await);
    let b = Arc::new(member(&etcd, "/t/writes", &[]).start().await);
    let urls: Vec<String> = (0..140).map(|_| closed_backend()).collect();
    // 140 adds and 60 removes (of the first 60 URLs, racing their adds), on both instances.
    let mut tasks = Vec::new();
    for k in 0..200usize {
        let (a, b, urls) = (a.clone(), b.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let on = |i: usize| {
                if i.is_multiple_of(2) {
                    a.clone()
                } else {
                    b.clone()
                }
            };
            if k < 140 {
                let (status, body) = add(&on(k), &urls[k]).await;
                assert!(matches!(status, 201), "add {}: {status} {body}", urls[k]);
                (urls[k].clone(), true, status)
            } else {
                let url = urls[k - 140].clone();
                let status = remove(&on(k + 1), &url).await;
                assert!(matches!(status, 200 | 404), "remove {url}: {status}");
                (url, false, status)
            }
        }));
    }
    let mut expected = BTreeSet::new();
    let mut removed = Vec::new();
    for t in tasks {
        let (url, is_add, status) = t.await.expect("writer");
        match (is_add, status) {
            (true, 201) => {
                expected.insert(url);
            }
            (false, 200) => removed.push(url),
            _ => {}
        }
    }
    for url in &removed {
        expected.remove(url);
    }
    let expected: Vec<String> = expected.into_iter().collect();
    for gw in [&a, &b] {
        let equal = eventually(PROPAGATION * 3, || async { pool(gw).await == expected }).await;
        assert!(
            equal,
            "pool differs from what was acknowledged ({} removes acknowledged): {:?} vs {:?}",
            removed.len(),
            pool(gw).await.len(),
            expected.len()
        );
    }
    assert_eq!(etcd.urls("/t/writes").await, expected);
}

/// GETs through `urls` until `stop`, counting answers that are not 200.
fn traffic(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = client();
        while !stop.load(Ordering::SeqCst) {
            for url in &urls {
                match http.get(url).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .expect("failures")
                        .push(format!("{url}: {}", r.status())),
                    Err(e) => failures
                        .lock()
                        .expect("failures")
                        .push(format!("{url}: {e}")),
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_etcd_outage_fails_no_request_refuses_writes_and_recovers_without_restart() {
    let mut etcd = Etcd::start().await;
    let (one, two, three) = (
        Origin::start("one").await,
        Origin::start("two").await,
        Origin::start("three").await,
    );
    let a = member(&etcd, "/t/outage", &[&one, &two]).start().await;
    let b = member(&etcd, "/t/outage", &[&one, &two]).start().await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let load = traffic(
        vec![a.url("/"), b.url("/")],
        stop.clone(),
        ok.clone(),
        failures.clone(),
    );

    etcd.stop();
    for gw in [&a, &b] {
        let noticed = eventually(Duration::from_secs(10), || async {
            gw.status().await["store"]["connected"] == false
        })
        .await;
        assert!(noticed, "the outage is not shown: {}", gw.status().await);
    }
    let (status, body) = add(&a, &three.url()).await;
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("store unavailable: "), "{body}");
    assert_eq!(remove(&b, &one.url()).await, 503);
    assert_eq!(
        pool(&a).await,
        pool(&b).await,
        "a refused write changed a pool"
    );
    assert!(!pool(&a).await.contains(&three.url()));
    let during = ok.load(Ordering::SeqCst);

    etcd.restart().await;
    let written = eventually(Duration::from_secs(15), || async {
        add(&a, &three.url()).await.0 == 201
    })
    .await;
    assert!(
        written,
        "no write succeeded after etcd came back; log:\n{}",
        a.log()
    );
    let served = eventually(Duration::from_secs(5), || async {
        answer(&b.url("/")).await.as_deref() == Some("three")
    })
    .await;
    assert!(
        served,
        "the write after the outage did not reach B; log:\n{}",
        b.log()
    );
    assert_eq!(b.status().await["store"]["connected"], true);

    stop.store(true, Ordering::SeqCst);
    load.await.expect("traffic");
    let failures = failures.lock().expect("failures").clone();
    assert!(during > 0, "no traffic during the outage");
    assert!(
        failures.is_empty(),
        "{} proxied requests failed (of {}), first: {:?}",
        failures.len(),
        ok.load(Ordering::SeqCst),
        failures.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_loads_the_shared_pool_not_its_configuration() {
    let etcd = Etcd::start().await;
    let (one, two) = (Origin::start("one").await, Origin::start("two").await);
    let a = member(&etcd, "/t/restart", &[&one]).start().await;
    let b = member(&etcd, "/t/restart", &[&one]).start().await;
    assert_eq!(add(&a, &two.url()).await.0, 201);
    assert_eq!(remove(&a, &one.url()).await, 200);
    drop(b);
    // Its configuration still lists `one` only: the shared pool wins, and is not re-seeded.
    let b = member(&etcd, "/t/restart", &[&one]).start().await;
    assert_eq!(pool(&b).await, [two.url()]);
    assert!(b.log().contains("from etcd"), "{}", b.log());
    assert!(!b.log().contains("seeded from"), "{}", b.log());
    assert!(
        b.wait_alive(&two.url(), true, Duration::from_secs(10))
            .await
    );
    assert_eq!(answer(&b.url("/")).await.as_deref(), Some("two"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_an_instance_starts_from_its_cache_or_refuses_clearly() {
    let mut etcd = Etcd::start().await;
    let (one, two) = (Origin::start("one").await, Origin::start("two").await);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cached = GatewayBuilder {
        state_file: Some(cache_dir.path().join("pool.json")),
        ..member(&etcd, "/t/cache", &[&one])
    };
    let a = cached.clone().start().await;
    assert_eq!(add(&a, &two.url()).await.0, 201);
    let cache_has_two = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(cache_dir.path().join("pool.json"))
            .is_ok_and(|t| t.contains(&two.url()))
    })
    .await;
    assert!(cache_has_two, "the cache file was not updated");
    drop(a);
    etcd.stop();

    let a = cached.start().await;
    assert!(a.log().contains("etcd at"), "{}", a.log());
    assert_eq!(pool(&a).await, {
        let mut v = vec![one.url(), two.url()];
        v.sort();
        v
    });
    assert_eq!(a.status().await["store"]["connected"], false);
    assert!(
        a.wait_alive(&two.url(), true, Duration::from_secs(10))
            .await
    );
    let served = eventually(Duration::from_secs(5), || async {
        answer(&a.url("/")).await.as_deref() == Some("two")
    })
    .await;
    assert!(served, "the cached pool is not served");

    // Without a cache it refuses to start, and says why.
    let uncached = member(&etcd, "/t/cache", &[&one]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portico.yaml");
    let (port, admin_port) = (free_port(), free_port());
    std::fs::write(&config, uncached.yaml(dir.path(), port, admin_port)).expect("config");
    let mut refused = Gateway::spawn(dir, config, port, admin_port, &[]);
    let exit = refused.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| !s.success()),
        "started without etcd and without a cache ({exit:?}); log:\n{}",
        refused.log()
    );
    assert!(
        refused.log().contains("cannot reach etcd at"),
        "{}",
        refused.log()
    );
    let out = uncached.check();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "`portico -t` passed with etcd down");
    assert!(text.contains("cannot reach etcd at"), "{text}");
    assert!(text.contains("state_file"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_strategies_agree_across_instances() {
    let etcd = Etcd::start().await;
    let origins = [
        Origin::start("one").await,
        Origin::start("two").await,
        Origin::start("three").await,
    ];
    for strategy in ["cookie", "ip-hash"] {
        let prefix = format!("/t/sticky-{strategy}");
        let builder = |order: [usize; 3]| {
            GatewayBuilder {
                strategy: strategy.into(),
                extra: format!("{}sticky_secret: s3cret\n", etcd.store_yaml(&prefix)),
                access_log: false,
                ..GatewayBuilder::default()
            }
            .backend(origins[order[0]].url())
            .backend(origins[order[1]].url())
            .backend(origins[order[2]].url())
        };
        // A seeds in one order; B loads etcd's (key) order.
        let a = builder([2, 0, 1]).start().await;
        let b = builder([0, 1, 2]).start().await;
        for gw in [&a, &b] {
            for o in &origins {
                assert!(gw.wait_alive(&o.url(), true, Duration::from_secs(10)).await);
            }
        }
        let http = client();
        if strategy == "ip-hash" {
            let on_a = answer(&a.url("/")).await;
            assert!(on_a.is_some());
            for _ in 0..10 {
                assert_eq!(answer(&b.url("/")).await, on_a, "ip-hash disagrees");
            }
            continue;
        }
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            let r = http.get(a.url("/")).send().await.expect("request");
            let cookie = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.starts_with("portico_backend="))
                .map(|v| v.split(';').next().unwrap_or_default().to_string())
                .expect("a new client gets a cookie");
            let first = r.text().await.expect("body").trim().to_string();
            seen.insert(first.clone());
            for _ in 0..5 {
                let on_b = http
                    .get(b.url("/"))
                    .header("Cookie", &cookie)
                    .send()
                    .await
                    .expect("request")
                    .text()
                    .await
                    .expect("body");
                assert_eq!(on_b.trim(), first, "B ignores A's cookie {cookie}");
            }
        }
        assert_eq!(seen.len(), 3, "A spread new clients over {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_prefix_is_not_applied_as_an_empty_pool() {
    let etcd = Etcd::start().await;
    let one = Origin::start("one").await;
    let a = member(&etcd, "/t/wipe", &[&one]).start().await;
    assert!(
        a.wait_alive(&one.url(), true, Duration::from_secs(10))
            .await
    );

    let mut client = etcd.client().await;
    client
        .delete(
            "/t/wipe/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("wipe the prefix");
    let refused = eventually(Duration::from_secs(5), || async {
        let store = &a.status().await["store"];
        store["synced"] == false
            && store["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("wiped") || e.contains("holds no pool"))
    })
    .await;
    assert!(refused, "the wipe is not reported: {}", a.status().await);
    assert_eq!(pool(&a).await, [one.url()], "the wipe emptied the pool");
    assert_eq!(answer(&a.url("/")).await.as_deref(), Some("one"));
    assert_eq!(add(&a, &closed_backend()).await.0, 503);

    // An instance that starts seeds the prefix again; A follows.
    let _b = member(&etcd, "/t/wipe", &[&one]).start().await;
    let back = eventually(Duration::from_secs(5), || async {
        a.status().await["store"]["synced"] == true
    })
    .await;
    assert!(back, "A did not resync after the prefix was seeded again");
    assert_eq!(add(&a, &closed_backend()).await.0, 201);
}

//! Pool changes through the admin API under traffic, against the real binary: a removed backend
//! drains (no new request, the slow one finishes), and a hundred concurrent changes leave the
//! pool exactly as the successful calls acknowledged.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{json, Value};

use support::admin_api::*;
use support::*;

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

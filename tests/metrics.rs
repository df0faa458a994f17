//! The Prometheus exposition on the admin port against the real binary: it parses, and its
//! counters match the requests sent; the test parser itself refuses what is not exposition.

mod support;

use support::admin_api::*;
use support::prometheus::*;
use support::*;

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

//! Backends that follow DNS: a backend URL with a host name has one endpoint per address
//! (each with its own health and traffic), follows the record as it changes, keeps its last
//! addresses when the name server fails, and starts DOWN (then comes UP) when the name does
//! not resolve yet. A DNS server in the test process answers for the name.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;
use support::dns::{Answer, DnsServer};
use support::{client, eventually, free_port, Gateway, GatewayBuilder, Origin};

const DEADLINE: Duration = Duration::from_secs(15);
const NAME: &str = "backend.test";
const IP2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const IP3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn gateway(dns: &DnsServer, url: &str) -> GatewayBuilder {
    GatewayBuilder {
        extra: format!("dns:\n  servers: [\"{}\"]\n  refresh: 300ms\n", dns.addr),
        access_log: false,
        ..GatewayBuilder::default()
    }
    .backend(url)
}

/// The `(address, alive)` pairs of the `/status` entry of `url`, sorted.
async fn endpoints(gw: &Gateway, url: &str) -> Vec<(String, bool)> {
    let Some(entry) = gw.backend(url).await else {
        return Vec::new();
    };
    let mut list: Vec<(String, bool)> = entry["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["address"].as_str().unwrap_or("").to_string(),
                        e["alive"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

async fn wait_endpoints(gw: &Gateway, url: &str, want: &[(String, bool)]) -> bool {
    eventually(DEADLINE, || async { endpoints(gw, url).await == want }).await
}

/// Sends `n` requests one after the other; returns the answering origins' names.
async fn answers(gw: &Gateway, n: usize) -> Vec<String> {
    let http = client();
    let mut names = Vec::new();
    for _ in 0..n {
        let r = http.get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
        names.push(r.text().await.expect("body").trim().to_string());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_two_addresses_follows_the_record_and_survives_a_dead_server() {
    let port = free_port();
    let a = Origin::start_at("a", IP2, port).await;
    let b = Origin::start_at("b", IP3, port).await;
    let dns = DnsServer::start(NAME, Answer::Addrs(vec![IP2, IP3])).await;
    let url = format!("http://{NAME}:{port}");
    let gw = gateway(&dns, &url).start().await;

    // Both addresses are endpoints of the one backend, and both get traffic.
    let both = vec![
        (format!("{IP2}:{port}"), true),
        (format!("{IP3}:{port}"), true),
    ];
    assert!(
        wait_endpoints(&gw, &url, &both).await,
        "{:?}\n{}",
        endpoints(&gw, &url).await,
        gw.log()
    );
    let status = gw.status().await;
    assert_eq!(status["total_backends"], 1, "{status}");
    let entry: Value = gw.backend(&url).await.expect("entry");
    assert_eq!(entry["alive"], true);
    let got = answers(&gw, 20).await;
    assert_eq!(got.iter().filter(|n| *n == "a").count(), 10, "{got:?}");
    assert_eq!(got.iter().filter(|n| *n == "b").count(), 10, "{got:?}");

    // The record loses 127.0.0.3: within a refresh and a probe it leaves and gets nothing new.
    dns.set(Answer::Addrs(vec![IP2]));
    let one = vec![(format!("{IP2}:{port}"), true)];
    assert!(
        wait_endpoints(&gw, &url, &one).await,
        "{:?}\n{}",
        endpoints(&gw, &url).await,
        gw.log()
    );
    assert!(gw.log().contains("address gone from DNS"), "{}", gw.log());
    let b_before = b.requests();
    let got = answers(&gw, 10).await;
    assert!(got.iter().all(|n| n == "a"), "{got:?}");
    assert_eq!(
        b.requests(),
        b_before,
        "the vanished address got new requests"
    );

    // The name server stops answering: the last addresses keep serving.
    dns.set(Answer::Silent);
    assert!(
        eventually(DEADLINE, || async {
            gw.log().contains(&format!("dns: cannot resolve {NAME}"))
        })
        .await,
        "{}",
        gw.log()
    );
    let got = answers(&gw, 10).await;
    assert!(got.iter().all(|n| n == "a"), "{got:?}");
    assert_eq!(endpoints(&gw, &url).await, one);
    assert!(a.requests() >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_unresolvable_at_start_is_down_then_comes_up_when_it_appears() {
    let port = free_port();
    let a = Origin::start_at("a", IP2, port).await;
    let dns = DnsServer::start(NAME, Answer::NoSuchName).await;
    let url = format!("http://{NAME}:{port}");
    let gw = gateway(&dns, &url).start().await;

    let entry = gw.backend(&url).await.expect("the backend exists");
    assert_eq!(entry["alive"], false, "{entry}");
    assert_eq!(entry["health"], "down", "{entry}");
    let reason = entry["last_change_reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with(&format!("cannot resolve {NAME}")),
        "{entry}"
    );
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert_eq!(r.status(), 503);

    dns.set(Answer::Addrs(vec![IP2]));
    assert!(gw.wait_alive(&url, true, DEADLINE).await, "{}", gw.log());
    assert_eq!(answers(&gw, 3).await, vec!["a", "a", "a"]);
    assert_eq!(a.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_added_through_the_admin_api_gets_its_endpoints() {
    let port = free_port();
    let (a, b) = (
        Origin::start_at("a", IP2, port).await,
        Origin::start_at("b", IP3, port).await,
    );
    let dns = DnsServer::start(NAME, Answer::Addrs(vec![IP2, IP3])).await;
    let first = Origin::start("first").await;
    let gw = gateway(&dns, &first.url()).start().await;
    let url = format!("http://{NAME}:{port}");
    let r = client()
        .post(gw.admin("/backends"))
        .json(&serde_json::json!({"url": url}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201);
    let both = vec![
        (format!("{IP2}:{port}"), true),
        (format!("{IP3}:{port}"), true),
    ];
    assert!(wait_endpoints(&gw, &url, &both).await, "{}", gw.log());
    // The URL is one backend: adding it again is a duplicate, removing it removes both.
    let again = client()
        .post(gw.admin("/backends"))
        .json(&serde_json::json!({"url": url}))
        .send()
        .await
        .expect("POST");
    assert_eq!(again.status(), 409);
    let r = client()
        .delete(gw.admin("/backends"))
        .json(&serde_json::json!({"url": url}))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    assert!(gw.backend(&url).await.is_none());
    let before = (a.requests(), b.requests());
    answers(&gw, 4).await;
    assert_eq!((a.requests(), b.requests()), before);
}

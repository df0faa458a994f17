//! Weighted and sticky balancing through the real binary: exact smooth weighted round-robin
//! shares (weights from the file and from the admin API), ip-hash and cookie stickiness over
//! many distinct clients, failover of a DOWN backend's clients, and consistent hashing when
//! one of ten backends is removed.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::json;

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);
/// Clients making requests at the same time in the many-client tests.
const CONCURRENCY: usize = 16;

/// A gateway builder whose health checks do not flap on a loaded machine (a flap would
/// rightly reshuffle weighted windows and sticky clients): a 2 s probe timeout and three
/// failures before DOWN. A stopped origin still goes DOWN within about a second.
fn steady() -> GatewayBuilder {
    GatewayBuilder {
        health_timeout: "2s".into(),
        fall: 3,
        ..Default::default()
    }
}

/// A gateway with `strategy` over `origins` (access log off: these tests send thousands of
/// requests), once every origin is alive.
async fn sticky_gateway(strategy: &str, origins: &[Origin]) -> Gateway {
    let mut b = steady().strategy(strategy);
    b.access_log = false;
    for o in origins {
        b = b.backend(o.url());
    }
    let gw = b.start().await;
    wait_all_alive(&gw, origins).await;
    gw
}

/// A distinct loopback source address per client (all of 127.0.0.0/8 is local on Linux).
fn client_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 20, (i / 200) as u8, (i % 200 + 1) as u8))
}

/// A plain-HTTP client whose connections come from `ip`.
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip)
        .tls_built_in_root_certs(false)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The name of the origin that answered `GET url` (origins answer with their name).
async fn served_by(http: &reqwest::Client, url: &str) -> String {
    let r = http.get(url).send().await.expect("request");
    assert_eq!(r.status(), 200, "GET {url}");
    r.text().await.expect("body").trim().to_string()
}

async fn start_origins(names: &[&str]) -> Vec<Origin> {
    let mut origins = Vec::new();
    for n in names {
        origins.push(Origin::start(n).await);
    }
    origins
}

async fn wait_all_alive(gw: &Gateway, origins: &[Origin]) {
    for o in origins {
        assert!(
            gw.wait_alive(&o.url(), true, DEADLINE).await,
            "{} never UP; log:\n{}",
            o.url(),
            gw.log()
        );
    }
}

/// Sends `windows` windows of `window` requests and returns each window's count per origin.
async fn windows(gw: &Gateway, window: usize, windows: usize) -> Vec<HashMap<String, usize>> {
    let http = client();
    let mut out = Vec::new();
    for _ in 0..windows {
        let mut counts = HashMap::new();
        for _ in 0..window {
            *counts
                .entry(served_by(&http, &gw.url("/")).await)
                .or_insert(0) += 1;
        }
        out.push(counts);
    }
    out
}

fn expected(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_gives_exact_shares_from_config_weights() {
    let origins = start_origins(&["a", "b", "c"]).await;
    let gw = steady()
        .strategy("weighted-round-robin")
        .weighted(origins[0].url(), 5)
        .weighted(origins[1].url(), 3)
        .weighted(origins[2].url(), 2)
        .start()
        .await;
    wait_all_alive(&gw, &origins).await;

    let status = gw.status().await;
    assert_eq!(status["strategy"], "weighted-round-robin");
    for (o, w) in origins.iter().zip([5, 3, 2]) {
        assert_eq!(gw.backend(&o.url()).await.expect("listed")["weight"], w);
    }

    let want = expected(&[("a", 5), ("b", 3), ("c", 2)]);
    for (i, counts) in windows(&gw, 10, 5).await.into_iter().enumerate() {
        assert_eq!(counts, want, "window {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_uses_weights_given_to_the_admin_api() {
    let origins = start_origins(&["a", "b"]).await;
    let gw = steady()
        .strategy("weighted-round-robin")
        .backend(origins[0].url())
        .start()
        .await;
    wait_all_alive(&gw, &origins[..1]).await;

    let r = client()
        .post(gw.admin("/backends"))
        .json(&json!({"url": origins[1].url(), "weight": 3}))
        .send()
        .await
        .expect("add backend");
    assert_eq!(r.status(), 201);
    let added: serde_json::Value = r.json().await.expect("json");
    assert_eq!(added["weight"], 3, "{added}");
    wait_all_alive(&gw, &origins).await;
    assert_eq!(gw.backend(&origins[0].url()).await.expect("a")["weight"], 1);
    assert_eq!(gw.backend(&origins[1].url()).await.expect("b")["weight"], 3);

    let want = expected(&[("a", 1), ("b", 3)]);
    for (i, counts) in windows(&gw, 4, 6).await.into_iter().enumerate() {
        assert_eq!(counts, want, "window {i}");
    }

    let bad = client()
        .post(gw.admin("/backends"))
        .json(&json!({"url": "http://127.0.0.1:1", "weight": 0}))
        .send()
        .await
        .expect("add backend");
    assert_eq!(bad.status(), 400, "weight 0 must be refused");
}

/// For each client `i` in `clients`, the origins that answered its `per_client` requests.
async fn owners(
    gw: &Gateway,
    clients: impl Iterator<Item = usize>,
    per_client: usize,
) -> HashMap<usize, Vec<String>> {
    let url = gw.url("/");
    stream::iter(clients)
        .map(|i| {
            let url = url.clone();
            async move {
                let http = client_from(client_ip(i));
                let mut seen = Vec::new();
                for _ in 0..per_client {
                    seen.push(served_by(&http, &url).await);
                }
                (i, seen)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// Each client's single origin; fails if a client reached two.
fn sticky(owners: &HashMap<usize, Vec<String>>) -> HashMap<usize, String> {
    owners
        .iter()
        .map(|(i, seen)| {
            assert!(
                seen.iter().all(|s| s == &seen[0]),
                "client {} moved: {seen:?}",
                client_ip(*i)
            );
            (*i, seen[0].clone())
        })
        .collect()
}

fn per_origin(owner: &HashMap<usize, String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for o in owner.values() {
        *counts.entry(o.clone()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_each_of_a_thousand_clients_on_one_backend() {
    let origins = start_origins(&["a", "b", "c", "d"]).await;
    let gw = sticky_gateway("ip-hash", &origins).await;

    let owner = sticky(&owners(&gw, 0..1000, 2).await);
    let spread = per_origin(&owner);
    for o in &origins {
        let n = spread.get(&o.name).copied().unwrap_or(0);
        assert!(n >= 100, "clients are not spread: {spread:?}");
    }
    // A second pass, later: still the same backend for everyone.
    let again = sticky(&owners(&gw, 0..1000, 1).await);
    assert_eq!(again, owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_moves_a_down_backends_clients_and_they_stay() {
    let mut origins = start_origins(&["a", "b", "c"]).await;
    let gw = sticky_gateway("ip-hash", &origins).await;

    let owner = sticky(&owners(&gw, 0..90, 1).await);
    let victims: Vec<usize> = owner
        .iter()
        .filter(|(_, o)| o.as_str() == "a")
        .map(|(i, _)| *i)
        .collect();
    assert!(!victims.is_empty(), "no client on a: {owner:?}");
    origins[0].stop();
    assert!(gw.wait_alive(&origins[0].url(), false, DEADLINE).await);

    let moved = sticky(&owners(&gw, victims.iter().copied(), 5).await);
    assert!(moved.values().all(|o| o != "a"), "{moved:?}");
    let others = sticky(
        &owners(
            &gw,
            owner.keys().copied().filter(|i| !victims.contains(i)),
            1,
        )
        .await,
    );
    for (i, o) in others {
        assert_eq!(
            owner[&i],
            o,
            "client {} of a live backend moved",
            client_ip(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_one_of_ten_backends_moves_about_a_tenth_of_ip_hash_clients() {
    let names = ["o0", "o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8", "o9"];
    let origins = start_origins(&names).await;
    let gw = sticky_gateway("ip-hash", &origins).await;

    let before = sticky(&owners(&gw, 0..1000, 1).await);
    let gone = &origins[3];
    let r = client()
        .delete(gw.admin("/backends"))
        .json(&json!({"url": gone.url()}))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let after = sticky(&owners(&gw, 0..1000, 1).await);

    let moved: Vec<usize> = (0..1000).filter(|i| before[i] != after[i]).collect();
    let on_gone: HashSet<usize> = (0..1000).filter(|i| before[i] == gone.name).collect();
    assert_eq!(
        moved.iter().copied().collect::<HashSet<_>>(),
        on_gone,
        "only the removed backend's clients may move"
    );
    let fraction = moved.len() as f64 / 1000.0;
    assert!(
        (0.05..=0.17).contains(&fraction),
        "{} of 1000 clients moved",
        moved.len()
    );
    assert!(after.values().all(|o| o != &gone.name));
}

/// The sticky cookie's `name=value` from a response, if it sets one.
fn set_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("portico_backend="))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

async fn get_with_cookie(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    let mut req = http.get(url);
    if let Some(c) = cookie {
        req = req.header("Cookie", format!("theme=dark; {c}"));
    }
    let r = req.send().await.expect("request");
    assert_eq!(r.status(), 200);
    let set = set_cookie(&r);
    (r.text().await.expect("body").trim().to_string(), set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_stickiness_over_a_thousand_requests_and_tampered_cookies_are_ignored() {
    let origins = start_origins(&["a", "b", "c"]).await;
    let gw = sticky_gateway("cookie", &origins).await;
    let url = gw.url("/");

    // 100 clients, each a first request then 10 with its cookie: 1,000 sticky requests.
    let results: Vec<(String, String)> = stream::iter(0..100usize)
        .map(|i| {
            let url = url.clone();
            async move {
                let http = client_from(client_ip(i));
                let (first, cookie) = get_with_cookie(&http, &url, None).await;
                let cookie = cookie.expect("first response sets the sticky cookie");
                for _ in 0..10 {
                    let (o, again) = get_with_cookie(&http, &url, Some(&cookie)).await;
                    assert_eq!(o, first, "client {i} left its backend");
                    assert_eq!(again, None, "a valid cookie is not set again");
                }
                (first, cookie)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut token_of: HashMap<String, String> = HashMap::new();
    for (origin, cookie) in &results {
        let value = cookie.trim_start_matches("portico_backend=");
        for o in &origins {
            let port = o.addr.port().to_string();
            assert!(
                !value.contains(&port) && !value.contains("127.0.0.1"),
                "cookie names the backend in clear: {cookie}"
            );
        }
        let prev = token_of.insert(origin.clone(), cookie.clone());
        assert!(prev.is_none_or(|p| &p == cookie), "one cookie per backend");
    }
    assert_eq!(
        token_of.len(),
        3,
        "new clients are spread over every backend"
    );

    // A tampered cookie is ignored: it is answered like a new client (spread, new cookie).
    let (target, cookie) = token_of.iter().next().expect("a cookie");
    let mut tampered = cookie.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == '0' { '1' } else { '0' });
    let http = client();
    let mut seen = HashSet::new();
    for _ in 0..12 {
        let (o, set) = get_with_cookie(&http, &url, Some(&tampered)).await;
        let set = set.expect("a tampered cookie is replaced");
        assert_ne!(set, tampered);
        assert_eq!(
            set, token_of[&o],
            "the replacement names the backend that answered"
        );
        seen.insert(o);
    }
    assert_eq!(
        seen.len(),
        3,
        "a tampered cookie for {target} must be spread like a new client: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_client_whose_backend_goes_down_moves_and_stays() {
    let mut origins = start_origins(&["a", "b", "c"]).await;
    let gw = sticky_gateway("cookie", &origins).await;
    let url = gw.url("/");
    let http = client();

    // Find a cookie for `a`.
    let mut cookie_a = None;
    for _ in 0..6 {
        let (o, c) = get_with_cookie(&http, &url, None).await;
        if o == "a" {
            cookie_a = c;
            break;
        }
    }
    let cookie_a = cookie_a.expect("round-robin reached a");
    let port_a = origins[0].addr.port();
    origins[0].stop();
    assert!(gw.wait_alive(&origins[0].url(), false, DEADLINE).await);

    let (new_home, new_cookie) = get_with_cookie(&http, &url, Some(&cookie_a)).await;
    assert_ne!(new_home, "a");
    let new_cookie = new_cookie.expect("the client is given a cookie for its new backend");
    assert_ne!(new_cookie, cookie_a);

    // `a` comes back: the client stays where it was moved.
    let _a_again = Origin::start_on("a", port_a).await;
    assert!(gw.wait_alive(&origins[0].url(), true, DEADLINE).await);
    for _ in 0..20 {
        let (o, set) = get_with_cookie(&http, &url, Some(&new_cookie)).await;
        assert_eq!(o, new_home);
        assert_eq!(set, None);
    }
    let (back, _) = get_with_cookie(&http, &url, Some(&cookie_a)).await;
    assert_eq!(back, "a", "the old cookie names a, which is UP again");
}

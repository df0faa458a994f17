//! Idle keep-alive client connections: each waits for its next request in Portico's small
//! future (`keepalive.rs`), not in Pingora's per-request one, and is served as before when the
//! request comes, however long it waited.

mod support;

use std::mem::size_of_val;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::HttpServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use portico::balancer::{strategy, Balancer};
use portico::config::Config;
use portico::config::StrategyKind;
use portico::control::PhaseCell;
use portico::keepalive::{LeanKeepalive, KEEPALIVE};
use portico::metrics::Metrics;
use portico::proxy::Proxy;
use portico::serve::Serve;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

fn proxy() -> Proxy {
    let balancer = Arc::new(Balancer::new(strategy(StrategyKind::RoundRobin), 1, 1));
    let metrics = Arc::new(Metrics::new(balancer.clone()).expect("metrics"));
    let config = Config::from_text("backends: [\"http://127.0.0.1:1\"]").expect("config");
    let settings = Arc::new(ArcSwap::from_pointee(portico::proxy_settings(&config)));
    Proxy::new(
        balancer,
        metrics,
        settings,
        false,
        Arc::new(PhaseCell::default()),
    )
}

fn stream() -> Stream {
    let (a, _b) = tokio::net::UnixStream::pair().expect("socket pair");
    Box::new(L4Stream::from(a))
}

#[tokio::test]
async fn an_idle_connection_waits_in_a_small_future() {
    let conf = Arc::new(ServerConf::default());
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let pingora_app = Arc::new(pingora::proxy::http_proxy(&conf, proxy()));
    let per_request = HttpServerApp::process_new_http(
        &pingora_app,
        ServerSession::new_http1(stream()),
        &shutdown,
    );
    let lean = Arc::new(LeanKeepalive::new(
        pingora::proxy::http_proxy(&conf, proxy()),
        KEEPALIVE,
    ));
    let waiting = lean.serve(stream(), &shutdown);
    let (big, small) = (size_of_val(&*per_request), size_of_val(&waiting));
    println!("Pingora's per-request future: {big} bytes; Portico's waiting one: {small} bytes");
    // The session (680 bytes) must not be part of the waiting future's state.
    assert!(small <= 512, "the waiting future grew to {small} bytes");
    assert!(small * 10 < big, "{small} bytes against {big}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_between_requests_is_served_each_time() {
    let a = Origin::start("a").await;
    let gw = GatewayBuilder::default().backend(a.url()).start().await;
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    for round in 0..3 {
        if round > 0 {
            // Idle between requests: the connection waits in the keep-alive loop.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let complete = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let n = conn.read(&mut buf).await.expect("read");
                assert!(n > 0, "round {round}: the gateway closed the connection");
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().expect("length"))
                        })
                        .expect("content-length");
                    if body.len() >= len {
                        return text.into_owned();
                    }
                }
            }
        })
        .await
        .expect("a response in time");
        assert!(
            complete.starts_with("HTTP/1.1 200"),
            "round {round}: {complete}"
        );
    }
    assert_eq!(a.requests(), 3);

    // A connection that closes while idle costs nothing: the gateway goes on serving.
    drop(conn);
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert_eq!(r.status(), 200);
}

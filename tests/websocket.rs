//! WebSockets through Portico (real tokio-tungstenite peers): the upgrade passes through, frames
//! flow both ways in order and at once, the connection counts in `current_connections` while it
//! lives, removing its backend drains it, `timeouts.websocket_idle` (not `timeouts.read`) bounds
//! its silence, and SIGTERM closes it only after the grace period.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::{client, eventually, local_listener, Gateway, GatewayBuilder};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one message may take through the gateway before the test calls it stuck.
const PROMPT: Duration = Duration::from_secs(10);

/// A WebSocket echo server on its own port: greets each connection with `hello from <name>`,
/// then echoes every text and binary message. Stopping it (drop) closes every connection.
struct WsOrigin {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WsOrigin {
    async fn start(name: &str) -> WsOrigin {
        let listener = local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let name: Arc<str> = name.into();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let name = name.clone();
                // Health probes connect and close: their handshake fails, nothing to do.
                conns.spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    if ws
                        .send(Message::text(format!("hello from {name}")))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() {
                            return;
                        }
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsOrigin { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway over `origins` with TCP health checks (a WebSocket server has no `/health`).
async fn gateway(origins: &[&WsOrigin], tune: impl FnOnce(&mut GatewayBuilder)) -> Gateway {
    let mut b = GatewayBuilder {
        health_path: None,
        ..GatewayBuilder::default()
    };
    tune(&mut b);
    for o in origins {
        b = b.backend(o.url());
    }
    let gw = b.start().await;
    for o in origins {
        assert!(
            gw.wait_alive(&o.url(), true, Duration::from_secs(10)).await,
            "origin never came up; log:\n{}",
            gw.log()
        );
    }
    gw
}

/// Opens a WebSocket through the gateway; returns it and the name of the origin that took it.
async fn connect(gw: &Gateway) -> (Ws, String) {
    let url = format!("ws://127.0.0.1:{}/chat", gw.port);
    let (mut ws, resp) = tokio::time::timeout(PROMPT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .unwrap_or_else(|e| {
            panic!(
                "WebSocket handshake through Portico: {e}; log:\n{}",
                gw.log()
            )
        });
    assert_eq!(resp.status(), 101);
    let hello = next_text(&mut ws).await;
    let name = hello
        .strip_prefix("hello from ")
        .unwrap_or_else(|| panic!("unexpected greeting {hello:?}"))
        .to_string();
    (ws, name)
}

async fn next_text(ws: &mut Ws) -> String {
    match tokio::time::timeout(PROMPT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends `text` and waits for its echo.
async fn round_trip(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    assert_eq!(next_text(ws).await, text);
}

/// Waits for the connection to end (close frame, error or end of stream); returns when.
async fn closed_within(ws: &mut Ws, deadline: Duration) -> Option<Instant> {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Some(Instant::now()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// `current_connections` of each listed backend (pool first, then draining), by URL.
async fn connections(gw: &Gateway, url: &str) -> Option<u64> {
    let status = gw.status().await;
    ["backends", "draining"].iter().find_map(|list| {
        status[list].as_array()?.iter().find(|b| b["url"] == url)?["current_connections"].as_u64()
    })
}

#[tokio::test]
async fn a_thousand_messages_each_way_arrive_in_order_and_at_once() {
    let origin = WsOrigin::start("a").await;
    let gw = gateway(&[&origin], |_| {}).await;
    let (mut ws, name) = connect(&gw).await;
    assert_eq!(name, "a");
    // Lock-step: each echo must come back before the next message leaves, so nothing may sit
    // in a buffer on the way.
    for i in 0..1000 {
        round_trip(&mut ws, &format!("ping {i}")).await;
    }
    // Pipelined, text and binary: everything comes back, in order.
    for i in 0..1000u32 {
        let msg = if i % 2 == 0 {
            Message::text(format!("text {i}"))
        } else {
            Message::binary(i.to_be_bytes().to_vec())
        };
        ws.feed(msg).await.expect("queue");
    }
    ws.flush().await.expect("send");
    for i in 0..1000u32 {
        let got = tokio::time::timeout(PROMPT, ws.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("message");
        let want = if i % 2 == 0 {
            Message::text(format!("text {i}"))
        } else {
            Message::binary(i.to_be_bytes().to_vec())
        };
        assert_eq!(got, want, "message {i}");
    }
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn a_websocket_counts_in_current_connections_while_it_lives() {
    let origin = WsOrigin::start("a").await;
    let gw = gateway(&[&origin], |_| {}).await;
    let url = origin.url();
    let (mut ws, _) = connect(&gw).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            connections(&gw, &url).await == Some(1)
        })
        .await,
        "open WebSocket not counted: {:?}",
        connections(&gw, &url).await
    );
    round_trip(&mut ws, "still here").await;
    assert_eq!(connections(&gw, &url).await, Some(1));
    ws.close(None).await.expect("close");
    assert!(
        eventually(Duration::from_secs(5), || async {
            connections(&gw, &url).await == Some(0)
        })
        .await,
        "closed WebSocket still counted: {:?}",
        connections(&gw, &url).await
    );
    let entry = gw.backend(&url).await.expect("listed");
    assert_eq!(entry["requests"], 1, "{entry}");
    assert_eq!(
        entry["errors"], 0,
        "a clean close counted as an error: {entry}"
    );
}

#[tokio::test]
async fn removing_its_backend_lets_a_websocket_run_and_new_ones_go_elsewhere() {
    let (a, b) = (WsOrigin::start("a").await, WsOrigin::start("b").await);
    let gw = gateway(&[&a, &b], |_| {}).await;
    let (mut ws, name) = connect(&gw).await;
    let (gone, other) = if name == "a" { (&a, "b") } else { (&b, "a") };
    let removed = client()
        .delete(gw.admin("/backends"))
        .json(&serde_json::json!({"url": gone.url()}))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(removed.status(), 200);

    round_trip(&mut ws, "after the removal").await;
    assert_eq!(connections(&gw, &gone.url()).await, Some(1), "not draining");
    for _ in 0..4 {
        let (mut fresh, took) = connect(&gw).await;
        assert_eq!(took, other, "a new WebSocket went to the removed backend");
        fresh.close(None).await.expect("close");
    }
    for i in 0..100 {
        round_trip(&mut ws, &format!("still draining {i}")).await;
    }
    ws.close(None).await.expect("close");
    assert!(
        eventually(Duration::from_secs(5), || async {
            connections(&gw, &gone.url()).await.unwrap_or(0) == 0
        })
        .await,
        "the drained backend still counts the closed WebSocket"
    );
}

#[tokio::test]
async fn an_idle_websocket_survives_40s_with_the_default_settings() {
    let origin = WsOrigin::start("a").await;
    // `timeouts.read` at its default (30 s); `timeouts.websocket_idle` left at its default.
    let gw = gateway(&[&origin], |b| b.read_timeout = "30s".into()).await;
    let (mut ws, _) = connect(&gw).await;
    // Idle on purpose (this is what is tested), well past the 30 s read timeout.
    tokio::time::sleep(Duration::from_secs(40)).await;
    round_trip(&mut ws, "still open after 40 s").await;
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn websocket_idle_bounds_silence_and_traffic_resets_it() {
    let origin = WsOrigin::start("a").await;
    let gw = gateway(&[&origin], |b| {
        b.read_timeout = "30s".into();
        b.websocket_idle = Some("1s".into());
    })
    .await;
    let (mut ws, _) = connect(&gw).await;
    // Traffic every 300 ms for 2.5 s: longer than the idle bound, never idle that long.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        round_trip(&mut ws, &format!("keepalive {i}")).await;
    }
    let silent_since = Instant::now();
    let closed = closed_within(&mut ws, Duration::from_secs(20))
        .await
        .expect("a WebSocket silent past websocket_idle was not closed");
    assert!(
        closed.duration_since(silent_since) >= Duration::from_millis(900),
        "closed after {:?}, before the idle bound",
        closed.duration_since(silent_since)
    );
    // An idle close is the bound doing its job, not a backend failure.
    let entry = gw.backend(&origin.url()).await.expect("listed");
    assert_eq!(entry["errors"], 0, "{entry}");
    assert_eq!(entry["consecutive_errors"], 0, "{entry}");
    assert_eq!(entry["alive"], true, "{entry}");
}

#[tokio::test]
async fn sigterm_closes_a_websocket_after_the_grace_period_and_exits() {
    let origin = WsOrigin::start("a").await;
    let grace = 2;
    let mut gw = gateway(&[&origin], |b| b.grace_period = grace).await;
    let (mut ws, _) = connect(&gw).await;
    let signalled = Instant::now();
    gw.signal(Signal::SIGTERM);
    // Within the grace period the WebSocket keeps working.
    round_trip(&mut ws, "during the grace period").await;
    let closed = closed_within(&mut ws, Duration::from_secs(30))
        .await
        .expect("the WebSocket outlived the grace period");
    assert!(
        closed.duration_since(signalled) >= Duration::from_secs(grace) - Duration::from_millis(100),
        "closed {:?} after SIGTERM, before the {grace} s grace period",
        closed.duration_since(signalled)
    );
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("still running; log:\n{}", gw.log()));
    assert!(status.success(), "exit status {status}; log:\n{}", gw.log());
}

#[tokio::test]
async fn a_graceful_upgrade_keeps_a_websocket_until_the_grace_period_then_closes_it() {
    let origin = WsOrigin::start("a").await;
    let grace = 2;
    let mut old = gateway(&[&origin], |b| b.grace_period = grace).await;
    let (mut ws, _) = connect(&old).await;
    let new = old.upgrade().await;
    let handed_over = Instant::now();
    // The old process still carries its WebSocket. (For a few seconds after the hand-over both
    // processes accept on the shared sockets, so a new connection made now could land on
    // either: new ones are checked once the old process has gone.)
    round_trip(&mut ws, "across the upgrade").await;
    let closed = closed_within(&mut ws, Duration::from_secs(30))
        .await
        .expect("the old process kept its WebSocket past the grace period");
    assert!(
        closed.duration_since(handed_over)
            >= Duration::from_secs(grace) - Duration::from_millis(100),
        "closed {:?} after the hand-over, before the {grace} s grace period",
        closed.duration_since(handed_over)
    );
    let status = old
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("old process still running; log:\n{}", old.log()));
    assert!(status.success(), "old process exit status {status}");
    // The new process serves WebSockets and counts its own.
    let (mut fresh, _) = connect(&new).await;
    round_trip(&mut fresh, "to the new process").await;
    assert_eq!(connections(&new, &origin.url()).await, Some(1));
    fresh.close(None).await.expect("close");
}

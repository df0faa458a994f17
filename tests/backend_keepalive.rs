//! Idle backend connections: kept in the pool for reuse, and closed by Portico once idle for
//! `timeouts.keepalive` (a pool as large as `max_connections` must not keep a burst's
//! connections open for good).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

/// One backend connection: the paths it served, when it last answered, when its peer closed it.
#[derive(Default, Clone)]
struct Conn {
    paths: Vec<String>,
    answered: Option<Instant>,
    closed: Option<Instant>,
}

/// A keep-alive HTTP/1.1 backend on a raw socket that records every connection.
async fn recording_backend() -> (String, Arc<Mutex<Vec<Conn>>>) {
    let listener = local_listener().await;
    let url = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
    let seen = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let conns = seen.clone();
            let index = {
                let mut all = conns.lock().expect("lock");
                all.push(Conn::default());
                all.len() - 1
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        conns.lock().expect("lock")[index].closed = Some(Instant::now());
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                        let mut all = conns.lock().expect("lock");
                        all[index].paths.push(path);
                        all[index].answered = Some(Instant::now());
                    }
                }
            });
        }
    });
    (url, conns)
}

fn data_conns(conns: &Arc<Mutex<Vec<Conn>>>) -> Vec<Conn> {
    conns
        .lock()
        .expect("lock")
        .iter()
        .filter(|c| c.paths.iter().any(|p| p == "/data"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_backend_connection_is_reused_then_closed_after_timeouts_keepalive() {
    let (url, conns) = recording_backend().await;
    let mut builder = GatewayBuilder::default().backend(url);
    builder.backend_keepalive = Some("1s".into());
    let gw = builder.start().await;
    let http = client();
    for _ in 0..2 {
        let resp = http.get(gw.url("/data")).send().await.expect("request");
        assert_eq!(resp.status(), 200);
    }
    // Both requests went over one pooled backend connection.
    let used = data_conns(&conns);
    assert_eq!(used.len(), 1, "backend connections used: {}", used.len());
    assert_eq!(used[0].paths.iter().filter(|p| *p == "/data").count(), 2);
    // Idle, it is closed by Portico once `timeouts.keepalive` has passed, not before.
    assert!(
        eventually(Duration::from_secs(10), || async {
            data_conns(&conns)[0].closed.is_some()
        })
        .await,
        "the idle backend connection was never closed; log:\n{}",
        gw.log()
    );
    let c = &data_conns(&conns)[0];
    let (answered, closed) = (c.answered.expect("answered"), c.closed.expect("closed"));
    let idle = closed.duration_since(answered);
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

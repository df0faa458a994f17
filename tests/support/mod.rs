//! Test support shared by the integration suites: origin servers on ports of their own, a
//! launcher for the real `portico` binary with a temporary configuration, a real `etcd`,
//! `eventually`, calls to the admin API (`admin_api`) and a Prometheus text parser
//! (`prometheus`).
#![allow(dead_code, unused_imports)]

pub mod admin_api;
pub mod closing;
pub mod dns;
pub mod etcd;
pub mod gateway;
pub mod origin;
pub mod prometheus;
pub mod recording;

pub use closing::{Closing, ClosingOrigin};
pub use etcd::Etcd;
pub use gateway::{Gateway, GatewayBuilder};
pub use origin::{Origin, SilentOrigin};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns true or `deadline` passes; returns whether it held.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ports handed out by [`free_port`]: below the kernel's ephemeral range (32768-60999 by
/// default), so neither `bind(0)` nor an outgoing connection can take one between the moment it
/// is handed out and the moment its owner binds it.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A free port on 127.0.0.1 that no other caller in this test process is ever given, even after
/// its owner closed it: a test that stops an origin keeps sending to that port, and must get
/// "connection refused" there, not another test's origin. Each process starts at its own offset
/// (from its pid and the clock), so parallel test processes rarely even try the same ports;
/// every port is checked free by binding it before it is handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % span
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + (start + n) % span;
        // `span` keeps the value below 32000.
        let port = u16::try_from(port).expect("port in range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port left in {PORTS:?}");
}

/// A listener on 127.0.0.1, on a port from [`free_port`].
/// Another process on the machine (a test suite run from another checkout) can take a port
/// between the check and the bind: then the next port is tried.
pub async fn local_listener() -> tokio::net::TcpListener {
    let mut last = None;
    for _ in 0..8 {
        match tokio::net::TcpListener::bind(("127.0.0.1", free_port())).await {
            Ok(listener) => return listener,
            Err(e) => last = Some(e),
        }
    }
    panic!("bind a local listener: {last:?}");
}

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Which origin answered a proxied request (the origins send `x-origin: <name>`).
pub async fn proxied(http: &reqwest::Client, gw: &Gateway) -> (reqwest::StatusCode, String) {
    let resp = http.get(gw.url("/")).send().await.expect("proxied request");
    let origin = resp
        .headers()
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (resp.status(), origin)
}

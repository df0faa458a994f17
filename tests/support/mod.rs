//! Test support shared by the integration suites: origin servers on ephemeral ports, a
//! launcher for the real `portico` binary with a temporary configuration, and `eventually`.
#![allow(dead_code, unused_imports)]

pub mod gateway;
pub mod origin;

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

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// An HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

//! The smallest end-to-end check: the binary balances three origins round-robin, with one
//! worker thread (Pingora's no-steal runtime, Portico's default there) and with two (stealing).

mod support;

use std::time::Duration;

use support::*;

async fn round_robin_over_three_origins(threads: u32) {
    let origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    let mut b = GatewayBuilder {
        threads,
        ..GatewayBuilder::default()
    };
    for o in &origins {
        b = b.backend(o.url());
    }
    let gw = b.start().await;
    let http = client();
    for _ in 0..30 {
        let r = http.get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    for o in &origins {
        assert_eq!(o.requests(), 10, "{} got {}", o.name, o.requests());
    }
    // The health checker and the admin API run on the same kind of runtime.
    for o in &origins {
        assert!(gw.wait_alive(&o.url(), true, Duration::from_secs(5)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_with_one_worker_thread() {
    round_robin_over_three_origins(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_with_two_worker_threads() {
    round_robin_over_three_origins(2).await;
}

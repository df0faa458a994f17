//! The smallest end-to-end check: the binary balances three origins round-robin.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_three_origins() {
    let origins = [
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    ];
    let mut b = GatewayBuilder::default();
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
}

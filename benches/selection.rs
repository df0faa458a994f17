//! Criterion benchmark of backend selection: `Balancer::next_valid_peer` plus the lease's drop,
//! for each strategy over pools of 3, 100 and 10,000 ready backends. Run: `cargo bench --bench selection`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use portico::backend::{Backend, Tried};
use portico::balancer::{cookie_token, strategy, Balancer, LoadBalancer, RequestKey};
use portico::config::{BackendSpec, BackendUrl, StrategyKind, Timeouts};

const SIZES: [usize; 3] = [3, 100, 10_000];

/// A balancer over `n` ready backends on distinct loopback addresses (no socket is opened).
fn pool(kind: StrategyKind, n: usize) -> Balancer {
    let lb = Balancer::new(strategy(kind), 1, 1);
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(1),
        websocket_idle: Duration::from_secs(1),
        keepalive: Duration::from_secs(1),
    };
    let backends: Vec<Arc<Backend>> = (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
            let addr = SocketAddr::new(IpAddr::V4(ip), 8080);
            let url = BackendUrl::parse(&format!("http://{addr}")).expect("valid url");
            let spec = BackendSpec {
                url,
                weight: 1 + (i % 3) as u32,
                drained: false,
                protocol: Default::default(),
            };
            let token = cookie_token(b"bench", &spec.url.to_string());
            let b = Arc::new(Backend::new(i as u64, &spec, addr, &timeouts, token));
            b.set_alive(true);
            b
        })
        .collect();
    for b in backends {
        lb.add_backend(b).expect("unique backend");
    }
    lb
}

fn selection(c: &mut Criterion) {
    let strategies = [
        (StrategyKind::RoundRobin, &SIZES[..]),
        (StrategyKind::LeastConn, &SIZES[..]),
        // Plans rebuilt on every add make 10,000-backend pools slow to set up here: smaller sizes.
        (StrategyKind::WeightedRoundRobin, &SIZES[..2]),
        (StrategyKind::IpHash, &SIZES[..2]),
    ];
    let tried = Tried::default();
    for (kind, sizes) in strategies {
        let mut group = c.benchmark_group(format!("select/{}", kind.name()));
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        for &n in sizes {
            let lb = pool(kind, n);
            let mut client = 0u32;
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
                bench.iter(|| {
                    client = client.wrapping_add(1);
                    let key = RequestKey {
                        client_ip: Some(IpAddr::V4(Ipv4Addr::from(client))),
                        cookie: None,
                    };
                    black_box(lb.next_valid_peer(black_box(&key), &tried))
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, selection);
criterion_main!(benches);

//! Prometheus metrics: request totals by status class and a latency histogram (updated on the
//! request path with atomics only), plus per-backend series read from the pool at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::balancer::Balancer;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The gateway's metrics. Per-request updates touch pre-resolved handles, never a label map.
pub struct Metrics {
    registry: Registry,
    by_class: [IntCounter; 6],
    latency: Histogram,
}

impl Metrics {
    pub fn new(balancer: Arc<Balancer>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portico_requests_total",
                "Requests answered, by status class (\"none\": no response was sent)",
            ),
            &["class"],
        )?;
        let by_class =
            ["1xx", "2xx", "3xx", "4xx", "5xx", "none"].map(|c| requests.with_label_values(&[c]));
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "portico_request_duration_seconds",
                "Time from request to end of response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(requests))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(PoolCollector::new(balancer)?))?;
        Ok(Metrics {
            registry,
            by_class,
            latency,
        })
    }

    /// Records one finished request (`status` 0 when nothing was sent).
    #[inline]
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        self.by_class[class].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Per-backend series, read from the pool's atomics when scraped.
struct PoolCollector {
    balancer: Arc<Balancer>,
    requests: IntCounterVec,
    errors: IntCounterVec,
    in_flight: IntGaugeVec,
    up: IntGaugeVec,
    weight: IntGaugeVec,
    descs: Vec<Desc>,
}

impl PoolCollector {
    fn new(balancer: Arc<Balancer>) -> Result<Self, prometheus::Error> {
        let l = &["backend"];
        let requests = IntCounterVec::new(
            Opts::new(
                "portico_backend_requests_total",
                "Requests sent to the backend",
            ),
            l,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "portico_backend_errors_total",
                "Requests to the backend that failed or got a 5xx",
            ),
            l,
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "portico_backend_in_flight",
                "Requests in flight to the backend",
            ),
            l,
        )?;
        let up = IntGaugeVec::new(
            Opts::new("portico_backend_up", "1 when the backend is healthy"),
            l,
        )?;
        let weight = IntGaugeVec::new(
            Opts::new("portico_backend_weight", "Configured weight of the backend"),
            l,
        )?;
        let descs = [
            &requests.desc(),
            &errors.desc(),
            &in_flight.desc(),
            &up.desc(),
            &weight.desc(),
        ]
        .into_iter()
        .flat_map(|d| d.iter().map(|x| (*x).clone()))
        .collect();
        Ok(PoolCollector {
            balancer,
            requests,
            errors,
            in_flight,
            up,
            weight,
            descs,
        })
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for v in [&self.requests, &self.errors] {
            v.reset();
        }
        for v in [&self.in_flight, &self.up, &self.weight] {
            v.reset();
        }
        let snap = self.balancer.snapshot();
        let draining = self.balancer.draining();
        for b in snap.backends.iter().chain(draining.iter()) {
            let l = [b.name.as_str()];
            self.requests.with_label_values(&l).inc_by(b.requests());
            self.errors.with_label_values(&l).inc_by(b.errors());
            self.in_flight
                .with_label_values(&l)
                .set(b.in_flight() as i64);
            self.up.with_label_values(&l).set(i64::from(b.is_ready()));
            self.weight.with_label_values(&l).set(i64::from(b.weight));
        }
        let mut out = self.requests.collect();
        out.extend(self.errors.collect());
        out.extend(self.in_flight.collect());
        out.extend(self.up.collect());
        out.extend(self.weight.collect());
        out
    }
}

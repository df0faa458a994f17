//! Prometheus metrics: request totals by status class and a latency histogram (updated on the
//! request path with atomics only), plus per-backend series read from the pool at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
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
    /// Registers every family; the per-backend ones read `balancer` at each scrape.
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

    /// The Prometheus text exposition (format 0.0.4) of everything. Safe to call from many
    /// scrapes at once.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Per-backend series and pool totals, read from the pool's atomics when scraped. Each scrape
/// builds its families afresh, so concurrent scrapes never see each other's values.
struct PoolCollector {
    balancer: Arc<Balancer>,
    descs: Vec<Desc>,
}

/// The series a [`PoolCollector`] exports, built per scrape.
struct PoolFamilies {
    requests: IntCounterVec,
    errors: IntCounterVec,
    in_flight: IntGaugeVec,
    up: IntGaugeVec,
    weight: IntGaugeVec,
    draining: IntGaugeVec,
    backends: IntGaugeVec,
    total_in_flight: IntGauge,
}

impl PoolFamilies {
    fn new() -> Result<Self, prometheus::Error> {
        let l = &["backend"];
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), l);
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), l);
        Ok(PoolFamilies {
            requests: counter(
                "portico_backend_requests_total",
                "Requests sent to the backend (retries count once per attempt)",
            )?,
            errors: counter(
                "portico_backend_errors_total",
                "Requests to the backend that failed or got a 5xx",
            )?,
            in_flight: gauge(
                "portico_backend_in_flight",
                "Requests in flight to the backend",
            )?,
            up: gauge(
                "portico_backend_up",
                "1 when the backend takes new requests (healthy and in the pool)",
            )?,
            weight: gauge("portico_backend_weight", "Configured weight of the backend")?,
            draining: gauge(
                "portico_backend_draining",
                "1 when the backend was removed and still has requests in flight",
            )?,
            backends: IntGaugeVec::new(
                Opts::new(
                    "portico_backends",
                    "Backends in the pool (\"total\") and those taking new requests (\"ready\")",
                ),
                &["state"],
            )?,
            total_in_flight: IntGauge::new(
                "portico_in_flight_requests",
                "Requests in flight to all backends, including removed ones still draining",
            )?,
        })
    }

    fn collectors(&self) -> [&dyn Collector; 8] {
        [
            &self.requests,
            &self.errors,
            &self.in_flight,
            &self.up,
            &self.weight,
            &self.draining,
            &self.backends,
            &self.total_in_flight,
        ]
    }
}

impl PoolCollector {
    fn new(balancer: Arc<Balancer>) -> Result<Self, prometheus::Error> {
        let families = PoolFamilies::new()?;
        let descs = families
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        Ok(PoolCollector { balancer, descs })
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = match PoolFamilies::new() {
            Ok(f) => f,
            Err(e) => {
                log::error!("cannot build pool metrics: {e}");
                return Vec::new();
            }
        };
        let snap = self.balancer.snapshot();
        let draining = self.balancer.draining();
        // A URL removed and added again may be both draining and in the pool: its series
        // sum the two, and the pool's entry sets the gauges that describe configuration.
        for b in draining.iter() {
            let l = [b.name.as_str()];
            f.requests.with_label_values(&l).inc_by(b.requests());
            f.errors.with_label_values(&l).inc_by(b.errors());
            f.in_flight.with_label_values(&l).add(gauge(b.in_flight()));
            f.up.with_label_values(&l).set(0);
            f.weight.with_label_values(&l).set(i64::from(b.weight()));
            f.draining.with_label_values(&l).set(1);
        }
        for b in snap.backends.iter() {
            let l = [b.name.as_str()];
            f.requests.with_label_values(&l).inc_by(b.requests());
            f.errors.with_label_values(&l).inc_by(b.errors());
            f.in_flight.with_label_values(&l).add(gauge(b.in_flight()));
            // A name's endpoints share the URL's series: it is up when any endpoint is.
            let up = f.up.with_label_values(&l);
            up.set(up.get().max(i64::from(b.is_ready())));
            f.weight.with_label_values(&l).set(i64::from(b.weight()));
            f.draining.with_label_values(&l).add(0);
        }
        let ready = snap.backends.iter().filter(|b| b.is_ready()).count();
        f.backends
            .with_label_values(&["total"])
            .set(gauge(snap.backends.len() as u64));
        f.backends
            .with_label_values(&["ready"])
            .set(gauge(ready as u64));
        let in_flight: u64 = snap
            .backends
            .iter()
            .chain(draining.iter())
            .map(|b| b.in_flight())
            .sum();
        f.total_in_flight.set(gauge(in_flight));
        f.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

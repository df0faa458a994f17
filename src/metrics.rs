//! Prometheus metrics: request totals by status class and latency histograms, overall and per
//! backend (updated on the request path with atomics only), per-backend series read from the
//! pool at scrape time, the build and the process (CPU, memory, file descriptors).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::backend::Backend;
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
    backend_latency: BackendLatency,
}

/// `portico_backend_request_duration_seconds{backend}`. The request path looks a backend's
/// histogram up by backend id in an immutable map (one atomic load, no lock); only a backend's
/// first request goes through the `HistogramVec`'s locked label map and copies the map.
/// Scrapes drop the series of backends that left the pool, as the other per-backend series
/// (read from the pool) disappear with them.
struct BackendLatency {
    vec: HistogramVec,
    /// Keyed by backend id with Fx hashing: ids are Portico's own counters, not client input.
    by_id: ArcSwap<FxHashMap<u64, Histogram>>,
    balancer: Arc<Balancer>,
}

impl BackendLatency {
    fn new(balancer: Arc<Balancer>) -> Result<Self, prometheus::Error> {
        let vec = HistogramVec::new(
            HistogramOpts::new(
                "portico_backend_request_duration_seconds",
                "Time from request to end of response, by the backend that answered",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["backend"],
        )?;
        Ok(BackendLatency {
            vec,
            by_id: ArcSwap::from_pointee(FxHashMap::default()),
            balancer,
        })
    }

    fn observe(&self, backend: &Backend, seconds: f64) {
        if let Some(h) = self.by_id.load().get(&backend.id) {
            h.observe(seconds);
            return;
        }
        let h = self.vec.with_label_values(&[backend.name.as_str()]);
        h.observe(seconds);
        self.by_id.rcu(|map| {
            let mut map = FxHashMap::clone(map);
            map.insert(backend.id, h.clone());
            map
        });
    }

    /// Forgets backends no longer in the pool nor draining. A request still finishing on one
    /// after this re-creates its series until the next scrape: harmless.
    fn prune(&self) {
        let snap = self.balancer.snapshot();
        let draining = self.balancer.draining();
        let live: Vec<(u64, &str)> = snap
            .backends
            .iter()
            .chain(draining.iter())
            .map(|b| (b.id, b.name.as_str()))
            .collect();
        if self
            .by_id
            .load()
            .keys()
            .all(|id| live.iter().any(|(l, _)| l == id))
        {
            return;
        }
        self.by_id.rcu(|map| {
            let mut map = FxHashMap::clone(map);
            map.retain(|id, _| live.iter().any(|(l, _)| l == id));
            map
        });
        for family in self.vec.collect() {
            for metric in family.get_metric() {
                for label in metric.get_label() {
                    let name = label.value();
                    if !live.iter().any(|(_, l)| *l == name) {
                        let _ = self.vec.remove_label_values(&[name]);
                    }
                }
            }
        }
    }
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
        let backend_latency = BackendLatency::new(balancer.clone())?;
        registry.register(Box::new(backend_latency.vec.clone()))?;
        registry.register(Box::new(PoolCollector::new(balancer)?))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "portico_build_info",
                "Always 1; the label says which Portico version runs",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        // process_max_fds, process_start_time_seconds, ... read from /proc at each scrape.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            by_class,
            latency,
            backend_latency,
        })
    }

    /// Records one request that finished with `backend` (after [`Metrics::observe`]).
    #[inline]
    pub fn observe_backend(&self, backend: &Backend, elapsed: Duration) {
        self.backend_latency.observe(backend, elapsed.as_secs_f64());
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
        self.backend_latency.prune();
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
                "1 when the backend takes no new requests but finishes those in flight (drained by an operator, or removed with requests in flight)",
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
            if b.is_drained() {
                f.draining.with_label_values(&l).set(1);
            } else {
                f.draining.with_label_values(&l).add(0);
            }
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

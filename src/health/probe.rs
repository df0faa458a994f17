//! One probe of one backend: an HTTP `GET` of the configured path (2xx/3xx passes) or, without
//! a path, a TCP (or TLS) connect; with `grpc: true`, HTTP/2 backends get a gRPC health check
//! ([`super::grpc`]) instead. Bounded as a whole by the probe timeout.
//!
//! The probe does what `pingora-load-balancing`'s `HttpHealthCheck` / `TcpHealthCheck` do (the
//! same Pingora connectors, peers, sessions and error types) but shares one connector across
//! all backends. Those check types each own a connector, and each Pingora connector loads the
//! platform CA store when built (`HttpHealthCheck` builds two): since the Host header and SNI
//! differ per backend, Portico would need one check object per backend, and a pool of 1,000
//! backends would spend tens of seconds of CPU building them before its first round.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::backend::Backend;
use crate::backend::Observation;
use crate::balancer::Balancer;
use crate::config::{format_duration, HealthConfig, Protocol};

/// The `User-Agent` of HTTP probes, so that backends can tell them from traffic.
pub const USER_AGENT: &str = "portico-health-check";

/// What to probe and how long to wait: swapped whole on a configuration reload.
struct ProbeSettings {
    /// `GET path`; `None`: connect (and TLS handshake for `https` backends), then close.
    path: Option<String>,
    /// `health_check.grpc`: HTTP/2 backends get `grpc.health.v1.Health/Check`.
    grpc: bool,
    timeout: Duration,
}

/// Probes backends. Cheap to share (`Arc`); probes of different backends run concurrently and
/// never wait for one another here (the checker bounds how many run at once).
///
/// Both connectors (each with its TLS context) are built once and shared by every backend, so
/// that a reload can switch between HTTP and TCP checks without rebuilding them.
pub struct Prober {
    http: Box<HttpConnector>,
    tcp: Box<TransportConnector>,
    /// The connector of gRPC probes (HTTP/2 backends, with `health_check.grpc`).
    grpc: Box<HttpConnector>,
    settings: ArcSwap<ProbeSettings>,
}

impl Prober {
    /// A prober for `config` (path or TCP, timeout). Builds its connectors, which load the
    /// platform CA store.
    pub fn new(config: &HealthConfig) -> Prober {
        Prober {
            http: Box::new(HttpConnector::new(None)),
            tcp: Box::new(TransportConnector::new(None)),
            grpc: Box::new(HttpConnector::new(None)),
            settings: ArcSwap::from_pointee(ProbeSettings::from(config)),
        }
    }

    /// Verifies HTTPS backends against Pingora's `ca_file` (the roots the proxy trusts too)
    /// instead of the platform's store; `None` keeps the platform's. The file must load
    /// (`portico::prepare` checks it first): Pingora's connector panics on a bad one.
    pub fn with_ca_file(mut self, ca_file: Option<&str>) -> Prober {
        let Some(ca) = ca_file else {
            return self;
        };
        let mut options = pingora::connectors::ConnectorOptions::new(1);
        options.ca_file = Some(ca.to_string());
        self.http = Box::new(HttpConnector::new(Some(options.clone())));
        self.grpc = Box::new(HttpConnector::new(Some(options.clone())));
        self.tcp = Box::new(TransportConnector::new(Some(options)));
        self
    }

    /// Takes the path and timeout of `config` for the probes that start from now on (a
    /// configuration reload); probes under way finish as they started.
    pub fn reconfigure(&self, config: &HealthConfig) {
        self.settings.store(Arc::new(ProbeSettings::from(config)));
    }

    /// The bound on one probe (`health_check.timeout`).
    pub fn timeout(&self) -> Duration {
        self.settings.load().timeout
    }

    /// Probes `backend` once on a fresh connection; never takes longer than the timeout.
    /// Returns `Passed` or `Failed` with a short reason ("connection refused").
    pub async fn probe(&self, backend: &Backend) -> Observation {
        let settings = self.settings.load_full();
        let timeout = settings.timeout;
        match tokio::time::timeout(timeout, self.check(backend, &settings)).await {
            Err(_) => Observation::Failed(no_answer(timeout)),
            Ok(Ok(())) => Observation::Passed,
            Ok(Err(e)) => Observation::Failed(probe_reason(&e, timeout)),
        }
    }

    /// Probes `backend` and feeds the result to `balancer`, stamped when the probe started (a
    /// passive DOWN during the probe makes the result stale). Nothing is recorded for a
    /// backend removed meanwhile.
    pub async fn probe_into(&self, balancer: &Balancer, backend: &Backend) {
        let stamp = backend.probe_stamp();
        let seen = self.probe(backend).await;
        if backend.is_enabled() {
            balancer.record_probe(backend, stamp, seen);
        }
    }

    /// The backend's own peer (address, TLS, SNI, certificate checks) with the probe timeout
    /// on every step.
    fn peer(backend: &Backend, timeout: Duration) -> Box<HttpPeer> {
        let mut peer = backend.peer();
        let t = Some(timeout);
        peer.options.connection_timeout = t;
        peer.options.total_connection_timeout = t;
        peer.options.read_timeout = t;
        peer.options.write_timeout = t;
        peer
    }

    async fn check(&self, backend: &Backend, settings: &ProbeSettings) -> Result<()> {
        let timeout = settings.timeout;
        let peer = Self::peer(backend, timeout);
        if settings.grpc && backend.protocol == Protocol::H2 {
            return super::grpc::check(&self.grpc, &peer, &backend.url.authority()).await;
        }
        match &settings.path {
            None => self.tcp.get_stream(&*peer).await.map(|_| ()),
            Some(path) => {
                let (mut session, _) = self.http.get_http_session(&*peer).await?;
                session.set_write_timeout(Some(timeout));
                session.set_read_timeout(Some(timeout));
                let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
                req.insert_header("Host", backend.url.authority())?;
                req.insert_header("User-Agent", USER_AGENT)?;
                req.insert_header("Connection", "close")?;
                session.write_request_header(Box::new(req)).await?;
                session.finish_request_body().await?;
                session.read_response_header().await?;
                let status = match session.response_header() {
                    Some(resp) => resp.status,
                    None => {
                        return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header")
                    }
                };
                if !passes(status.as_u16()) {
                    return Error::e_explain(
                        ErrorType::CustomCode("health check status", status.as_u16()),
                        "health check",
                    );
                }
                while session.read_response_body().await?.is_some() {}
                Ok(())
            }
        }
    }
}

impl From<&HealthConfig> for ProbeSettings {
    fn from(config: &HealthConfig) -> Self {
        ProbeSettings {
            path: config.path.clone(),
            grpc: config.grpc,
            timeout: config.timeout,
        }
    }
}

/// Whether an HTTP probe answered with `status` passes: 2xx and 3xx do.
pub fn passes(status: u16) -> bool {
    (200..400).contains(&status)
}

fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", format_duration(timeout))
}

/// A short reason for logs and `/status`: "connection refused", "health check returned 500".
/// `timeout` is the bound that expired, for the timeout kinds.
pub fn probe_reason(e: &Error, timeout: Duration) -> String {
    match e.etype() {
        ErrorType::ConnectRefused => "connection refused".into(),
        ErrorType::ConnectTimedout => {
            format!("connect timed out after {}", format_duration(timeout))
        }
        ErrorType::ConnectNoRoute => "no route to host".into(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => no_answer(timeout),
        ErrorType::ConnectionClosed => "connection closed".into(),
        ErrorType::CustomCode(_, code) => format!("health check returned {code}"),
        t if *t == super::grpc::GRPC_HEALTH => match &e.context {
            Some(c) => format!("gRPC health check: {}", c.as_str()),
            None => "gRPC health check failed".into(),
        },
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => {
            // The context names the TLS failure ("invalid peer certificate: UnknownIssuer");
            // Pingora's cause here only carries the local address.
            let detail = e.context.as_ref().map(|c| c.as_str().to_string());
            format!(
                "TLS handshake failed: {}",
                detail.unwrap_or_else(|| cause(e))
            )
        }
        other => match &e.cause {
            Some(c) => format!("{}: {c}", other.as_str()),
            None => other.as_str().to_string(),
        },
    }
}

fn cause(e: &Error) -> String {
    match &e.cause {
        Some(c) => c.to_string(),
        None => e.context.as_ref().map_or_else(
            || e.etype().as_str().to_string(),
            |c| c.as_str().to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_and_3xx_pass() {
        for s in [200, 204, 301, 302, 399] {
            assert!(passes(s), "{s}");
        }
        for s in [100, 199, 400, 404, 500, 503] {
            assert!(!passes(s), "{s}");
        }
    }

    #[test]
    fn reasons_are_short_and_name_the_cause() {
        let t = Duration::from_millis(1500);
        let reason = |et| probe_reason(&Error::new(et), t);
        assert_eq!(reason(ErrorType::ConnectRefused), "connection refused");
        assert_eq!(reason(ErrorType::ReadTimedout), "no answer within 1500ms");
        assert_eq!(
            reason(ErrorType::CustomCode("health check status", 500)),
            "health check returned 500"
        );
        assert_eq!(reason(ErrorType::ConnectionClosed), "connection closed");
    }
}

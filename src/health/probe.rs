//! One probe of one backend: an HTTP `GET` of the configured path (2xx/3xx passes) or, without
//! a path, a TCP (or TLS) connect; bounded as a whole by the probe timeout.
//!
//! The probe does what `pingora-load-balancing`'s `HttpHealthCheck` / `TcpHealthCheck` do (the
//! same Pingora connectors, peers, sessions and error types) but shares one connector across
//! all backends. Those check types each own a connector, and each Pingora connector loads the
//! platform CA store when built (`HttpHealthCheck` builds two): since the Host header and SNI
//! differ per backend, Portico would need one check object per backend, and a pool of 1,000
//! backends would spend tens of seconds of CPU building them before its first round.

use std::time::Duration;

use pingora::connectors::http::Connector as HttpConnector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::backend::Backend;
use crate::backend::Observation;
use crate::balancer::Balancer;
use crate::config::{format_duration, HealthConfig};

/// The `User-Agent` of HTTP probes, so that backends can tell them from traffic.
pub const USER_AGENT: &str = "portico-health-check";

/// How probes are made, chosen once from the configuration.
enum Method {
    /// `GET path`; one connector (with its TLS context) shared by every backend.
    Http {
        path: String,
        connector: Box<HttpConnector>,
    },
    /// Connect (and TLS handshake for `https` backends), then close.
    Tcp { connector: Box<TransportConnector> },
}

/// Probes backends. Cheap to share (`Arc`); probes of different backends run concurrently and
/// never wait for one another here (the checker bounds how many run at once).
pub struct Prober {
    method: Method,
    timeout: Duration,
}

impl Prober {
    /// A prober for `config` (path or TCP, timeout). Builds its connector, which loads the
    /// platform CA store once.
    pub fn new(config: &HealthConfig) -> Prober {
        let method = match &config.path {
            Some(path) => Method::Http {
                path: path.clone(),
                connector: Box::new(HttpConnector::new(None)),
            },
            None => Method::Tcp {
                connector: Box::new(TransportConnector::new(None)),
            },
        };
        Prober {
            method,
            timeout: config.timeout,
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
        self.method = match self.method {
            Method::Http { path, .. } => Method::Http {
                path,
                connector: Box::new(HttpConnector::new(Some(options))),
            },
            Method::Tcp { .. } => Method::Tcp {
                connector: Box::new(TransportConnector::new(Some(options))),
            },
        };
        self
    }

    /// The bound on one probe (`health_check.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Probes `backend` once on a fresh connection; never takes longer than the timeout.
    /// Returns `Passed` or `Failed` with a short reason ("connection refused").
    pub async fn probe(&self, backend: &Backend) -> Observation {
        match tokio::time::timeout(self.timeout, self.check(backend)).await {
            Err(_) => Observation::Failed(no_answer(self.timeout)),
            Ok(Ok(())) => Observation::Passed,
            Ok(Err(e)) => Observation::Failed(probe_reason(&e, self.timeout)),
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
    fn peer(&self, backend: &Backend) -> Box<HttpPeer> {
        let mut peer = backend.peer();
        let t = Some(self.timeout);
        peer.options.connection_timeout = t;
        peer.options.total_connection_timeout = t;
        peer.options.read_timeout = t;
        peer.options.write_timeout = t;
        peer
    }

    async fn check(&self, backend: &Backend) -> Result<()> {
        let peer = self.peer(backend);
        match &self.method {
            Method::Tcp { connector } => connector.get_stream(&*peer).await.map(|_| ()),
            Method::Http { path, connector } => {
                let (mut session, _) = connector.get_http_session(&*peer).await?;
                session.set_write_timeout(Some(self.timeout));
                session.set_read_timeout(Some(self.timeout));
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

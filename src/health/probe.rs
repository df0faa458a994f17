//! One probe of one backend, with `pingora-load-balancing`'s `HttpHealthCheck` (GET of the
//! configured path, 2xx/3xx passes) or `TcpHealthCheck` (connect only), bounded by the timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend as LbBackend;
use pingora::{Error, ErrorType};

use crate::balancer::Observation;
use crate::config::{format_duration, HealthConfig};
use crate::pool::Backend;

/// Probes backends; keeps one check object per backend (its Host header and SNI differ).
pub struct Prober {
    path: Option<String>,
    timeout: Duration,
    checks: Mutex<HashMap<u64, Arc<dyn HealthCheck + Send + Sync>>>,
}

impl Prober {
    pub fn new(config: &HealthConfig) -> Prober {
        Prober {
            path: config.path.clone(),
            timeout: config.timeout,
            checks: Mutex::new(HashMap::new()),
        }
    }

    /// Probes `backend` once; never takes longer than the configured timeout.
    pub async fn probe(&self, backend: &Backend) -> Observation {
        let target = match LbBackend::new(&backend.addr.to_string()) {
            Ok(t) => t,
            Err(e) => return Observation::Failed(format!("bad address: {e}")),
        };
        let check = self.check_for(backend);
        match tokio::time::timeout(self.timeout, check.check(&target)).await {
            Err(_) => Observation::Failed(format!(
                "no answer within {}",
                format_duration(self.timeout)
            )),
            Ok(Ok(())) => Observation::Passed,
            Ok(Err(e)) => Observation::Failed(probe_reason(&e, self.timeout)),
        }
    }

    /// Forgets the check objects of backends no longer in `live`.
    pub fn retain(&self, live: &[u64]) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.retain(|id, _| live.contains(id));
    }

    fn check_for(&self, backend: &Backend) -> Arc<dyn HealthCheck + Send + Sync> {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks
            .entry(backend.id)
            .or_insert_with(|| self.build_check(backend))
            .clone()
    }

    fn build_check(&self, backend: &Backend) -> Arc<dyn HealthCheck + Send + Sync> {
        let tls = backend.url.is_tls();
        let sni = if tls { backend.url.host.as_str() } else { "" };
        match &self.path {
            None => {
                let mut check = if tls {
                    TcpHealthCheck::new_tls(sni)
                } else {
                    TcpHealthCheck::new()
                };
                check.peer_template.options.connection_timeout = Some(self.timeout);
                Arc::from(check as Box<dyn HealthCheck + Send + Sync>)
            }
            Some(path) => {
                let mut check = HttpHealthCheck::new(&backend.url.authority(), tls);
                if tls {
                    check.peer_template.sni = sni.to_string();
                }
                check.peer_template.options.connection_timeout = Some(self.timeout);
                check.peer_template.options.read_timeout = Some(self.timeout);
                if let Ok(mut req) =
                    pingora::http::RequestHeader::build("GET", path.as_bytes(), None)
                {
                    let _ = req.insert_header("Host", backend.url.authority());
                    let _ = req.insert_header("User-Agent", "portico-health-check");
                    check.req = req;
                }
                check.validator = Some(Box::new(|resp| {
                    let s = resp.status;
                    if s.is_success() || s.is_redirection() {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("health check status", s.as_u16()),
                            "health check",
                        )
                    }
                }));
                Arc::new(check)
            }
        }
    }
}

/// A short reason for logs and `/status`: "connection refused", "health check returned 500".
pub fn probe_reason(e: &Error, timeout: Duration) -> String {
    match e.etype() {
        ErrorType::ConnectRefused => "connection refused".into(),
        ErrorType::ConnectTimedout => {
            format!("connect timed out after {}", format_duration(timeout))
        }
        ErrorType::ConnectNoRoute => "no route to host".into(),
        ErrorType::ReadTimedout => format!("no answer within {}", format_duration(timeout)),
        ErrorType::ConnectionClosed => "connection closed".into(),
        ErrorType::CustomCode(_, code) => format!("health check returned {code}"),
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError => {
            format!("TLS handshake failed: {}", e.root_cause())
        }
        other => other.as_str().to_string(),
    }
}

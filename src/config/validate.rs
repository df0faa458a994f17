//! Validation: the file's raw keys checked one by one and turned into the [`Config`] the rest
//! of the program uses; every error names its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pingora::server::configuration::ServerConf;

use super::error::{err, ConfigError};
use super::file::{FileConfig, RawDuration};
use super::{
    backend_entry, parse_duration, AdminConfig, BackendSpec, Config, HealthConfig, StrategyKind,
    Timeouts, TlsConfig,
};

/// `timeouts.keepalive`: how long an idle backend connection stays pooled (nginx's upstream
/// `keepalive_timeout` default). Shorter than most backends' own idle timeouts would be safer
/// still against reuse races; a backend that closes sooner is noticed when the connection is
/// taken from the pool (Pingora reads it first) or retried.
const BACKEND_KEEPALIVE: Duration = Duration::from_secs(60);

/// A duration that must be greater than zero.
pub(super) fn duration(
    key: &str,
    raw: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = duration_or_zero(key, raw, default)?;
    if d.is_zero() {
        return err(key, "must be greater than zero");
    }
    Ok(d)
}

/// A duration where zero is allowed (it turns the feature off).
pub(super) fn duration_or_zero(
    key: &str,
    raw: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(default),
        Some(RawDuration::Seconds(s)) => Ok(Duration::from_secs(s)),
        Some(RawDuration::Text(t)) => parse_duration(&t).or_else(|m| err(key, m)),
    }
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().or_else(|_| {
        err(
            key,
            format!("invalid listen address {text:?} (expected ip:port, e.g. \"0.0.0.0:8080\")"),
        )
    })
}

fn count(key: &str, raw: Option<i64>, default: u32, max: u32) -> Result<u32, ConfigError> {
    match raw {
        None => Ok(default),
        Some(n) => match u32::try_from(n) {
            Ok(v) if (1..=max).contains(&v) => Ok(v),
            _ => err(key, format!("{n} is out of range (1 to {max})")),
        },
    }
}

/// Collects errors so that validation can go on after the first one and report them all.
#[derive(Default)]
pub(crate) struct Errors(pub Vec<ConfigError>);

impl Errors {
    /// The value, or `fallback` with the error recorded.
    fn or<T>(&mut self, r: Result<T, ConfigError>, fallback: T) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(e);
            fallback
        })
    }

    /// The value, or `None` with the error recorded.
    fn some<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Checks every Portico key and builds the internal configuration. Goes on after an error, so
/// that every wrong key is reported at once (in the order of the file's sections).
pub(crate) fn validate(raw: FileConfig, server: ServerConf) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let fallback_listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    let listen = match (raw.listen, raw.port) {
        (Some(_), Some(_)) => {
            errors.push("port", "give either `listen` or `port`, not both");
            fallback_listen
        }
        (Some(l), None) => errors.or(socket_addr("listen", &l), fallback_listen),
        (None, Some(p)) => match u16::try_from(p) {
            Ok(port) if port > 0 => SocketAddr::from(([0, 0, 0, 0], port)),
            _ => {
                errors.push("port", format!("{p} is out of range (1 to 65535)"));
                fallback_listen
            }
        },
        (None, None) => fallback_listen,
    };

    let strategy = match raw.strategy.as_deref() {
        None => StrategyKind::RoundRobin,
        Some(s) => StrategyKind::parse(s).unwrap_or_else(|| {
            errors.push(
                "strategy",
                format!(
                    "unknown strategy {s:?} (expected one of: {})",
                    StrategyKind::ALL.map(StrategyKind::name).join(", ")
                ),
            );
            StrategyKind::RoundRobin
        }),
    };

    let hc = raw.health_check.unwrap_or_default();
    let path = match hc.path {
        None => None,
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => Some(p),
        Some(p) => {
            errors.push(
                "health_check.path",
                format!("invalid path {p:?} (must start with '/' and contain no spaces)"),
            );
            None
        }
    };
    let health = HealthConfig {
        interval: errors.or(
            duration(
                "health_check_frequency",
                raw.health_check_frequency,
                Duration::from_secs(10),
            ),
            Duration::from_secs(10),
        ),
        path,
        timeout: errors.or(
            duration("health_check.timeout", hc.timeout, Duration::from_secs(2)),
            Duration::from_secs(2),
        ),
        rise: errors.or(count("health_check.rise", hc.rise, 2, 1000), 2),
        fall: errors.or(count("health_check.fall", hc.fall, 3, 1000), 3),
        grpc: hc.grpc.unwrap_or(false),
    };

    let mut backends: Vec<BackendSpec> = Vec::with_capacity(raw.backends.len());
    for (i, value) in raw.backends.iter().enumerate() {
        let key = format!("backends[{i}]");
        let Some(spec) = errors.some(backend_entry(&key, value)) else {
            continue;
        };
        if let Some(j) = backends.iter().position(|b| b.url == spec.url) {
            errors.push(
                key,
                format!("duplicate backend {} (also backends[{j}])", spec.url),
            );
            continue;
        }
        backends.push(spec);
    }

    let t = raw.timeouts.unwrap_or_default();
    let timeouts = Timeouts {
        connect: errors.or(
            duration("timeouts.connect", t.connect, Duration::from_secs(2)),
            Duration::from_secs(2),
        ),
        read: errors.or(
            duration("timeouts.read", t.read, Duration::from_secs(30)),
            Duration::from_secs(30),
        ),
        websocket_idle: errors.or(
            duration(
                "timeouts.websocket_idle",
                t.websocket_idle,
                Duration::from_secs(3600),
            ),
            Duration::from_secs(3600),
        ),
        keepalive: errors.or(
            duration("timeouts.keepalive", t.keepalive, BACKEND_KEEPALIVE),
            BACKEND_KEEPALIVE,
        ),
    };

    let a = raw.admin.unwrap_or_default();
    let admin = AdminConfig {
        listen: errors.or(
            socket_addr(
                "admin.listen",
                a.listen.as_deref().unwrap_or("127.0.0.1:8081"),
            ),
            SocketAddr::from(([127, 0, 0, 1], 8081)),
        ),
        token: match a.token {
            Some(t) if t.trim().is_empty() => {
                errors.push("admin.token", "must not be empty (omit it to disable auth)");
                None
            }
            t => t,
        },
        hosts: errors.or(admin_hosts(a.hosts.unwrap_or_default()), Vec::new()),
    };

    let tls = raw.tls.and_then(|t| {
        let cert = t.cert.or_else(|| {
            errors.push("tls.cert", "missing (path to a PEM certificate chain)");
            None
        });
        let key = t.key.or_else(|| {
            errors.push("tls.key", "missing (path to a PEM private key)");
            None
        });
        for (k, p) in [("tls.cert", &cert), ("tls.key", &key)] {
            if let Some(p) = p {
                if let Err(e) = std::fs::metadata(p) {
                    errors.push(k, format!("cannot read {p:?}: {e}"));
                }
            }
        }
        let listen = errors.some(socket_addr(
            "tls.listen",
            t.listen.as_deref().unwrap_or("0.0.0.0:8443"),
        ))?;
        Some(TlsConfig {
            listen,
            cert: cert?.into(),
            key: key?.into(),
        })
    });

    let sticky_cookie = raw
        .sticky_cookie
        .unwrap_or_else(|| "portico_backend".into());
    if sticky_cookie.is_empty()
        || !sticky_cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        errors.push(
            "sticky_cookie",
            format!("invalid cookie name {sticky_cookie:?} (letters, digits, '_' and '-')"),
        );
    }

    let mut listeners = vec![("listen", listen), ("admin.listen", admin.listen)];
    if let Some(t) = &tls {
        listeners.push(("tls.listen", t.listen));
    }
    for (i, (ka, a)) in listeners.iter().enumerate() {
        for (kb, b) in &listeners[i + 1..] {
            if a == b && a.port() != 0 {
                errors.push(*kb, format!("{b} is already used by `{ka}`"));
            }
        }
    }

    let retries = match raw.retries {
        None => 2,
        Some(n) => match u32::try_from(n) {
            Ok(v) if v <= 16 => v,
            _ => {
                errors.push("retries", format!("{n} is out of range (0 to 16)"));
                2
            }
        },
    };

    let outlier = errors.or(
        super::resilience::outlier(raw.outlier_detection),
        Default::default(),
    );
    let slow_start = errors.or(
        duration_or_zero("slow_start", raw.slow_start, Duration::ZERO),
        Duration::ZERO,
    );
    let client_timeouts = errors.or(
        super::client_timeouts::client_timeouts(raw.client_timeouts),
        Default::default(),
    );
    let access_log = errors.or(
        super::access_log::access_log(raw.access_log.as_ref()),
        Default::default(),
    );
    let limits = errors.or(super::limits::limits(raw.limits), Default::default());
    let max_connections = errors.or(super::connections::max_connections(raw.max_connections), 1);
    let store = errors.or(super::store::validate_store(raw.store), Default::default());
    let dns = super::dns::validate_dns(raw.dns).unwrap_or_else(|e| {
        errors.0.extend(e);
        Default::default()
    });

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    Ok(Config {
        server,
        listen,
        strategy,
        health,
        backends,
        timeouts,
        admin,
        state_file: raw.state_file.map(PathBuf::from),
        store,
        tls,
        sticky_cookie,
        sticky_secret: raw.sticky_secret,
        access_log,
        retries,
        dns,
        outlier,
        slow_start,
        client_timeouts,
        limits,
        max_connections,
    })
}

/// Checks `admin.hosts`: each a host name or an IP address, without scheme, port or path.
fn admin_hosts(raw: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let mut hosts = Vec::with_capacity(raw.len());
    for (i, host) in raw.into_iter().enumerate() {
        let name = host.trim().trim_start_matches('[').trim_end_matches(']');
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        let is_name = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !is_ip && !is_name {
            return err(
                format!("admin.hosts[{i}]"),
                format!("invalid host {host:?} (a name such as \"gateway.internal\" or an IP address, without port)"),
            );
        }
        hosts.push(name.to_ascii_lowercase());
    }
    Ok(hosts)
}

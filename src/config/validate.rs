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

/// Checks every Portico key and builds the internal configuration.
pub(crate) fn validate(raw: FileConfig, server: ServerConf) -> Result<Config, ConfigError> {
    let listen = match (raw.listen, raw.port) {
        (Some(_), Some(_)) => return err("port", "give either `listen` or `port`, not both"),
        (Some(l), None) => socket_addr("listen", &l)?,
        (None, Some(p)) => match u16::try_from(p) {
            Ok(port) if port > 0 => SocketAddr::from(([0, 0, 0, 0], port)),
            _ => return err("port", format!("{p} is out of range (1 to 65535)")),
        },
        (None, None) => SocketAddr::from(([0, 0, 0, 0], 8080)),
    };

    let strategy = match raw.strategy.as_deref() {
        None => StrategyKind::RoundRobin,
        Some(s) => StrategyKind::parse(s).ok_or_else(|| ConfigError {
            key: "strategy".into(),
            message: format!(
                "unknown strategy {s:?} (expected one of: {})",
                StrategyKind::ALL.map(StrategyKind::name).join(", ")
            ),
        })?,
    };

    let hc = raw.health_check.unwrap_or_default();
    let path = match hc.path {
        None => None,
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => Some(p),
        Some(p) => {
            return err(
                "health_check.path",
                format!("invalid path {p:?} (must start with '/' and contain no spaces)"),
            )
        }
    };
    let health = HealthConfig {
        interval: duration(
            "health_check_frequency",
            raw.health_check_frequency,
            Duration::from_secs(10),
        )?,
        path,
        timeout: duration("health_check.timeout", hc.timeout, Duration::from_secs(2))?,
        rise: count("health_check.rise", hc.rise, 2, 1000)?,
        fall: count("health_check.fall", hc.fall, 3, 1000)?,
    };

    let mut backends: Vec<BackendSpec> = Vec::with_capacity(raw.backends.len());
    for (i, value) in raw.backends.iter().enumerate() {
        let key = format!("backends[{i}]");
        let spec = backend_entry(&key, value)?;
        if let Some(j) = backends.iter().position(|b| b.url == spec.url) {
            return err(
                key,
                format!("duplicate backend {} (also backends[{j}])", spec.url),
            );
        }
        backends.push(spec);
    }

    let t = raw.timeouts.unwrap_or_default();
    let timeouts = Timeouts {
        connect: duration("timeouts.connect", t.connect, Duration::from_secs(2))?,
        read: duration("timeouts.read", t.read, Duration::from_secs(30))?,
    };

    let a = raw.admin.unwrap_or_default();
    let admin = AdminConfig {
        listen: socket_addr(
            "admin.listen",
            a.listen.as_deref().unwrap_or("127.0.0.1:8081"),
        )?,
        token: match a.token {
            Some(t) if t.trim().is_empty() => {
                return err("admin.token", "must not be empty (omit it to disable auth)")
            }
            t => t,
        },
    };

    let tls = match raw.tls {
        None => None,
        Some(t) => {
            let cert = t.cert.ok_or_else(|| ConfigError {
                key: "tls.cert".into(),
                message: "missing (path to a PEM certificate chain)".into(),
            })?;
            let key = t.key.ok_or_else(|| ConfigError {
                key: "tls.key".into(),
                message: "missing (path to a PEM private key)".into(),
            })?;
            for (k, p) in [("tls.cert", &cert), ("tls.key", &key)] {
                if let Err(e) = std::fs::metadata(p) {
                    return err(k, format!("cannot read {p:?}: {e}"));
                }
            }
            Some(TlsConfig {
                listen: socket_addr("tls.listen", t.listen.as_deref().unwrap_or("0.0.0.0:8443"))?,
                cert: cert.into(),
                key: key.into(),
            })
        }
    };

    let sticky_cookie = raw
        .sticky_cookie
        .unwrap_or_else(|| "portico_backend".into());
    if sticky_cookie.is_empty()
        || !sticky_cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err(
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
                return err(*kb, format!("{b} is already used by `{ka}`"));
            }
        }
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
        tls,
        sticky_cookie,
        sticky_secret: raw.sticky_secret,
        access_log: super::access_log::access_log(raw.access_log.as_ref())?,
        outlier: super::resilience::outlier(raw.outlier_detection)?,
        slow_start: duration_or_zero("slow_start", raw.slow_start, Duration::ZERO)?,
        retries: match raw.retries {
            None => 2,
            Some(n) => match u32::try_from(n) {
                Ok(v) if v <= 16 => v,
                _ => return err("retries", format!("{n} is out of range (0 to 16)")),
            },
        },
    })
}

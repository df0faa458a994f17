//! Portico's configuration: one file holding Pingora's server keys and Portico's keys, parsed
//! into the file types of [`file`] and validated into the [`Config`] the rest of the program uses.

mod duration;
mod file;
mod url;

pub use duration::{format_duration, parse_duration};
pub use url::{BackendUrl, Scheme};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use file::{FileConfig, RawDuration};

/// Default path of the configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "conf/portico.yaml";
/// Largest weight a backend may have (HAProxy's bound): keeps the weighted schedule small.
pub const MAX_WEIGHT: u32 = 256;
/// Default grace period on SIGTERM/SIGQUIT: in-flight requests get this long to finish.
/// Pingora's own default is 300 s, longer than systemd waits; Portico exits as soon as the
/// last in-flight request ends, so a generous bound costs nothing when traffic is short.
pub const DEFAULT_GRACE_PERIOD_SECS: u64 = 30;
/// Default time the runtimes get to stop after the grace period.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// A configuration error: the key (dotted path) and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        key: key.into(),
        message: message.into(),
    })
}

/// How the balancer picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    LeastConn,
    WeightedRoundRobin,
    IpHash,
    Cookie,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 5] = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::WeightedRoundRobin,
        StrategyKind::IpHash,
        StrategyKind::Cookie,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastConn => "least-conn",
            StrategyKind::WeightedRoundRobin => "weighted-round-robin",
            StrategyKind::IpHash => "ip-hash",
            StrategyKind::Cookie => "cookie",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// One backend as configured: its URL and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub url: BackendUrl,
    pub weight: u32,
}

impl BackendSpec {
    /// Validates a weight given for `key`.
    pub fn check_weight(key: &str, weight: i64) -> Result<u32, ConfigError> {
        match u32::try_from(weight) {
            Ok(w) if (1..=MAX_WEIGHT).contains(&w) => Ok(w),
            _ => err(
                key,
                format!("weight {weight} is out of range (1 to {MAX_WEIGHT})"),
            ),
        }
    }
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
    /// HTTP path to GET; `None` means a TCP connect check.
    pub path: Option<String>,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration. Nothing else in Portico reads the raw file.
#[derive(Debug)]
pub struct Config {
    /// Pingora's server configuration, with Portico's defaults where the file is silent.
    pub server: ServerConf,
    pub listen: SocketAddr,
    pub strategy: StrategyKind,
    pub health: HealthConfig,
    pub backends: Vec<BackendSpec>,
    pub timeouts: Timeouts,
    pub admin: AdminConfig,
    pub state_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
    pub sticky_cookie: String,
    pub sticky_secret: Option<String>,
    pub access_log: bool,
    /// How many other backends a request is tried on after a connect failure.
    pub retries: u32,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).or_else(|e| {
            err(
                "",
                format!("cannot read configuration file {}: {e}", path.display()),
            )
        })?;
        Config::from_text(&text)
    }

    /// Parses and validates configuration text (YAML, or JSON).
    pub fn from_text(text: &str) -> Result<Config, ConfigError> {
        let split = file::split(text).or_else(|m| err("", m))?;
        let server = pingora_conf(split.pingora)?;
        let raw = portico_file(split.portico)?;
        validate(raw, server)
    }
}

/// Deserialises Pingora's keys and applies Portico's defaults where the file is silent.
fn pingora_conf(map: serde_yaml::Mapping) -> Result<ServerConf, ConfigError> {
    let has = |k: &str| map.contains_key(k);
    let (set_threads, set_stealing, set_pid, set_sock, set_grace, set_timeout) = (
        has("threads"),
        has("work_stealing"),
        has("pid_file"),
        has("upgrade_sock"),
        has("grace_period_seconds"),
        has("graceful_shutdown_timeout_seconds"),
    );
    let mut conf: ServerConf = deserialize_named(map)?;
    if !set_threads {
        conf.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    if conf.threads == 0 {
        return err("threads", "must be at least 1");
    }
    if !set_stealing {
        conf.work_stealing = default_work_stealing(conf.threads);
    }
    if !set_pid {
        conf.pid_file = "/tmp/portico.pid".into();
    }
    if !set_sock {
        conf.upgrade_sock = "/tmp/portico_upgrade.sock".into();
    }
    if !set_grace {
        conf.grace_period_seconds = Some(DEFAULT_GRACE_PERIOD_SECS);
    }
    if !set_timeout {
        conf.graceful_shutdown_timeout_seconds = Some(DEFAULT_SHUTDOWN_TIMEOUT_SECS);
    }
    conf.validate()
        .or_else(|e| err("", format!("invalid Pingora server configuration: {e}")))
}

/// With one worker thread there is nothing to steal work from: Pingora's no-steal runtime (a
/// current-thread Tokio runtime) then does the same job with less scheduling work per request
/// (BENCHMARKS.md). With more threads Pingora's default (stealing) keeps them evenly loaded.
fn default_work_stealing(threads: usize) -> bool {
    threads > 1
}

/// Deserialises Portico's keys, naming the key when one is unknown.
fn portico_file(map: serde_yaml::Mapping) -> Result<FileConfig, ConfigError> {
    for key in map.keys().filter_map(Value::as_str) {
        if !PORTICO_KEYS.contains(&key) {
            let hint = suggestion(key)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return err(key, format!("unknown key `{key}`{hint}"));
        }
    }
    deserialize_named(map)
}

/// Deserialises `map` as `T`. On failure the error names the key whose value is wrong (one
/// level deep, `section.key`), found by deserialising each entry on its own: serde's own
/// messages say what is wrong but not where.
fn deserialize_named<T: DeserializeOwned>(map: Mapping) -> Result<T, ConfigError> {
    match serde_yaml::from_value::<T>(Value::Mapping(map.clone())) {
        Ok(v) => Ok(v),
        Err(e) => err(culprit::<T>(&map), plain_words(&e.to_string())),
    }
}

/// serde's message in the configuration's words rather than Rust's.
fn plain_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("unknown field", "unknown key"),
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected u8", "expected a non-negative integer"),
    ];
    WORDS.iter().fold(message.to_string(), |m, (rust, plain)| {
        m.replace(rust, plain)
    })
}

/// The first key of `map` (or `key.sub` inside a nested mapping) that `T` refuses alone.
fn culprit<T: DeserializeOwned>(map: &Mapping) -> String {
    let refused = |key: &Value, value: Value| {
        let mut alone = Mapping::new();
        alone.insert(key.clone(), value);
        serde_yaml::from_value::<T>(Value::Mapping(alone)).is_err()
    };
    let name = |k: &Value| k.as_str().unwrap_or("?").to_string();
    for (key, value) in map {
        if !refused(key, value.clone()) {
            continue;
        }
        if let Value::Mapping(inner) = value {
            for (sub, sub_value) in inner {
                let mut one = Mapping::new();
                one.insert(sub.clone(), sub_value.clone());
                if refused(key, Value::Mapping(one)) {
                    return format!("{}.{}", name(key), name(sub));
                }
            }
        }
        return name(key);
    }
    String::new()
}

const PORTICO_KEYS: &[&str] = &[
    "listen",
    "port",
    "strategy",
    "health_check_frequency",
    "health_check",
    "backends",
    "timeouts",
    "admin",
    "state_file",
    "tls",
    "sticky_cookie",
    "sticky_secret",
    "access_log",
    "retries",
];

/// The closest known key (Portico's or Pingora's) to a misspelt one, if any is close.
fn suggestion(key: &str) -> Option<String> {
    let pingora = file::pingora_keys();
    PORTICO_KEYS
        .iter()
        .map(|k| k.to_string())
        .chain(pingora)
        .map(|k| (edit_distance(key, &k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn duration(
    key: &str,
    raw: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = match raw {
        None => return Ok(default),
        Some(RawDuration::Seconds(s)) => Duration::from_secs(s),
        Some(RawDuration::Text(t)) => parse_duration(&t).or_else(|m| err(key, m))?,
    };
    if d.is_zero() {
        return err(key, "must be greater than zero");
    }
    Ok(d)
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

/// Parses one entry of `backends` (a URL string, or `{url, weight}`), for messages at `key`.
pub fn backend_entry(key: &str, value: &Value) -> Result<BackendSpec, ConfigError> {
    let (url, weight) = match value {
        Value::String(s) => (s.as_str(), 1),
        Value::Mapping(m) => {
            for k in m.keys() {
                match k.as_str() {
                    Some("url") | Some("weight") => {}
                    _ => {
                        let name = k.as_str().unwrap_or("?");
                        return err(
                            format!("{key}.{name}"),
                            format!("unknown key `{name}` (a backend has `url` and `weight`)"),
                        );
                    }
                }
            }
            let url = match m.get("url") {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => {
                    return err(
                        format!("{key}.url"),
                        format!("expected a string, found {}", file::kind(other)),
                    )
                }
                None => return err(key, "missing `url`"),
            };
            let weight = match m.get("weight") {
                None => 1,
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(w) => BackendSpec::check_weight(&format!("{key}.weight"), w)?,
                    None => return err(format!("{key}.weight"), format!("invalid weight {n}")),
                },
                Some(other) => {
                    return err(
                        format!("{key}.weight"),
                        format!("expected an integer, found {}", file::kind(other)),
                    )
                }
            };
            (url, weight)
        }
        other => {
            return err(
                key,
                format!(
                    "expected a URL or {{url, weight}}, found {}",
                    file::kind(other)
                ),
            )
        }
    };
    let url = BackendUrl::parse(url).or_else(|m| err(format!("{key}.url"), m))?;
    Ok(BackendSpec { url, weight })
}

/// Checks every Portico key and builds the internal configuration.
fn validate(raw: FileConfig, server: ServerConf) -> Result<Config, ConfigError> {
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
        access_log: raw.access_log.unwrap_or(true),
        retries: match raw.retries {
            None => 2,
            Some(n) => match u32::try_from(n) {
                Ok(v) if v <= 16 => v,
                _ => return err("retries", format!("{n} is out of range (0 to 16)")),
            },
        },
    })
}

/// A backend spec from a URL known to be valid (tests only).
#[cfg(test)]
pub(crate) fn test_spec(url: &str, weight: u32) -> BackendSpec {
    BackendSpec {
        url: BackendUrl::parse(url).expect("valid test URL"),
        weight,
    }
}

#[cfg(test)]
mod tests;

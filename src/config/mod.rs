//! Portico's configuration: one file holding Pingora's server keys and Portico's keys, parsed
//! into the file types of [`file`] and validated into the [`Config`] the rest of the program uses.

mod duration;
mod file;
mod url;

pub use duration::{format_duration, parse_duration};
pub use url::{BackendUrl, Scheme};

mod access_log;
mod backend;
mod client_timeouts;
mod connections;
mod dns;
mod effective;
mod error;
mod limits;
mod parse;
mod resilience;
mod sections;
mod size;
mod store;
mod strategy;
mod validate;

pub use access_log::AccessLogFormat;
pub use backend::{backend_entry, BackendSpec, Protocol};
pub use client_timeouts::ClientTimeouts;
pub use connections::default_max_connections;
pub use dns::{DnsConfig, DEFAULT_DNS_REFRESH};
pub use effective::MASK;
pub use error::ConfigError;
pub use limits::Limits;
pub use sections::{AdminConfig, HealthConfig, Timeouts, TlsConfig};
pub use size::{format_size, parse_size};
pub use store::{EtcdConfig, StoreConfig, DEFAULT_ETCD_TIMEOUT};
pub use strategy::StrategyKind;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pingora::server::configuration::ServerConf;

use error::err;

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
    pub store: StoreConfig,
    pub tls: Option<TlsConfig>,
    pub sticky_cookie: String,
    pub sticky_secret: Option<String>,
    pub access_log: AccessLogFormat,
    /// How many other backends a request is tried on after a backend failed it.
    pub retries: u32,
    pub client_timeouts: ClientTimeouts,
    pub limits: Limits,
    /// Most concurrent client connections across the proxy listeners.
    pub max_connections: usize,
    pub dns: DnsConfig,
    /// Passive health: ejection of backends whose requests keep failing.
    pub outlier: crate::backend::OutlierDetection,
    /// How long a backend that becomes UP takes to ramp to its full share (zero: off).
    pub slow_start: std::time::Duration,
}

impl Config {
    /// Reads and validates the file at `path`; the first error only (see [`Config::load_all`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_all(path).map_err(first)
    }

    /// Reads and validates the file at `path`, reporting every error found.
    pub fn load_all(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                key: String::new(),
                message: format!("cannot read configuration file {}: {e}", path.display()),
            }]
        })?;
        Config::from_text_all(&text)
    }

    /// Parses and validates configuration text (YAML, or JSON); the first error only.
    pub fn from_text(text: &str) -> Result<Config, ConfigError> {
        Config::from_text_all(text).map_err(first)
    }

    /// Parses and validates configuration text (YAML, or JSON), reporting every error found
    /// (Pingora's keys, unknown keys, wrong types, then every Portico key's value).
    pub fn from_text_all(text: &str) -> Result<Config, Vec<ConfigError>> {
        let split = file::split(text)
            .or_else(|m| err("", m))
            .map_err(|e| vec![e])?;
        let pool_set = split.pingora.contains_key("upstream_keepalive_pool_size");
        let server = parse::pingora_conf(split.pingora);
        let raw = parse::portico_file(split.portico);
        match (server, raw) {
            (Ok(server), Ok(raw)) => validate::validate(raw, server).map(|mut config| {
                if !pool_set {
                    config.server.upstream_keepalive_pool_size =
                        default_keepalive_pool(config.max_connections);
                }
                config
            }),
            (server, raw) => Err(server
                .err()
                .into_iter()
                .flatten()
                .chain(raw.err().into_iter().flatten())
                .collect()),
        }
    }
}

/// Idle backend connections kept for reuse when `upstream_keepalive_pool_size` is not set: as
/// many as client connections may be open (`max_connections`, whose default already reserves a
/// file descriptor for each one's backend connection), and never fewer than Pingora's 128.
/// With Pingora's 128, a gateway with more requests in flight than that opened a new backend
/// connection for about half of them (HTTP/2 with 100 streams on 10 connections,
/// BENCHMARKS.md); HAProxy keeps every idle server connection it can.
fn default_keepalive_pool(max_connections: usize) -> usize {
    max_connections.max(128)
}

fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.is_empty() {
        ConfigError {
            key: String::new(),
            message: "invalid configuration".into(),
        }
    } else {
        errors.swap_remove(0)
    }
}

/// A backend spec from a URL known to be valid (tests only).
#[cfg(test)]
pub(crate) fn test_spec(url: &str, weight: u32) -> BackendSpec {
    BackendSpec::new(BackendUrl::parse(url).expect("valid test URL"), weight)
}

#[cfg(test)]
mod tests;

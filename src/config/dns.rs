//! The `dns` section: which servers resolve backend host names (default: the system's
//! resolver configuration) and how often names are resolved again.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::file::RawDuration;
use super::parse_duration;

/// Default time between two resolutions of every backend host name.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

/// How backend host names are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers to ask (UDP, then TCP); empty: `/etc/resolv.conf` (and `/etc/hosts`).
    pub servers: Vec<SocketAddr>,
    /// Names are resolved again this often; zero: only at start-up and when added.
    pub refresh: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            refresh: DEFAULT_DNS_REFRESH,
        }
    }
}

/// The `dns` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    pub servers: Option<Vec<String>>,
    pub refresh: Option<RawDuration>,
}

/// Checks `dns.servers` (each `ip` or `ip:port`, port 53 by default) and `dns.refresh`
/// (a duration; `0` turns refreshing off).
pub(crate) fn validate_dns(raw: Option<FileDns>) -> Result<DnsConfig, Vec<ConfigError>> {
    let raw = raw.unwrap_or_default();
    let mut errors = Vec::new();
    let mut config = DnsConfig::default();
    for (i, text) in raw.servers.unwrap_or_default().iter().enumerate() {
        let text = text.trim();
        let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match parsed {
            Some(addr) => config.servers.push(addr),
            None => errors.push(ConfigError {
                key: format!("dns.servers[{i}]"),
                message: format!(
                    "invalid name server {text:?} (expected ip or ip:port, e.g. \"127.0.0.1:53\")"
                ),
            }),
        }
    }
    match raw.refresh {
        None => {}
        Some(RawDuration::Seconds(s)) => config.refresh = Duration::from_secs(s),
        Some(RawDuration::Text(t)) => match parse_duration(&t) {
            Ok(d) => config.refresh = d,
            Err(message) => errors.push(ConfigError {
                key: "dns.refresh".into(),
                message,
            }),
        },
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn servers_take_port_53_by_default_and_refresh_may_be_zero() {
        let c = Config::from_text("dns: {servers: [\"10.0.0.2\", \"127.0.0.1:5353\"], refresh: 0}")
            .expect("valid");
        assert_eq!(c.dns.servers[0].to_string(), "10.0.0.2:53");
        assert_eq!(c.dns.servers[1].to_string(), "127.0.0.1:5353");
        assert!(c.dns.refresh.is_zero());
        assert_eq!(
            Config::from_text("").expect("valid").dns,
            DnsConfig::default()
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let errors =
            Config::from_text_all("dns: {servers: [\"ns1\"], refresh: soon}").expect_err("invalid");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["dns.servers[0]", "dns.refresh"]);
    }
}

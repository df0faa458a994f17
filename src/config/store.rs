//! The `store` section: where the pool's source of truth lives when it is shared by a fleet
//! (`store.etcd`), as written in the file and as validated.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{err, ConfigError};
use super::file::RawDuration;
use super::parse_duration;

/// Default bound on every etcd request (connect, read, transaction).
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// `store:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStoreSection {
    pub etcd: Option<FileEtcd>,
}

/// `store.etcd:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEtcd {
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<String>,
    pub timeout: Option<RawDuration>,
}

/// The validated `store` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    /// The shared pool lives in etcd (else in `state_file`, or only in memory).
    pub etcd: Option<EtcdConfig>,
}

/// How to reach the etcd cluster that holds the shared pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, one per cluster member.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing `/`; instances with the same prefix share one pool.
    pub prefix: String,
    /// `(username, password)` for etcd's authentication.
    pub auth: Option<(String, String)>,
    /// CA certificate (PEM) that signs the members' certificates, for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// Bound on each request to etcd.
    pub timeout: Duration,
}

/// Checks `store` and builds its validated form; every error names `store.etcd.<key>`.
pub(crate) fn validate_store(raw: Option<FileStoreSection>) -> Result<StoreConfig, ConfigError> {
    let Some(etcd) = raw.and_then(|s| s.etcd) else {
        return Ok(StoreConfig::default());
    };
    let endpoints = etcd.endpoints.unwrap_or_default();
    if endpoints.is_empty() {
        return err(
            "store.etcd.endpoints",
            "missing (one or more URLs such as \"http://127.0.0.1:2379\")",
        );
    }
    for (i, e) in endpoints.iter().enumerate() {
        let rest = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"));
        let valid = rest.is_some_and(|r| {
            let host_port = r.trim_end_matches('/');
            !host_port.is_empty()
                && !host_port.contains('/')
                && host_port
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        });
        if !valid {
            return err(
                format!("store.etcd.endpoints[{i}]"),
                format!("invalid endpoint {e:?} (expected http://host:port or https://host:port)"),
            );
        }
    }
    let prefix = etcd.prefix.unwrap_or_else(|| "/portico/default".into());
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/') || trimmed.is_empty() || prefix.contains(char::is_whitespace) {
        return err(
            "store.etcd.prefix",
            format!("invalid prefix {prefix:?} (a key path such as \"/portico/default\")"),
        );
    }
    let auth = match (etcd.username, etcd.password) {
        (None, None) => None,
        (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
        (Some(_), Some(_)) => return err("store.etcd.username", "must not be empty"),
        (Some(_), None) => return err("store.etcd.password", "missing (username is set)"),
        (None, Some(_)) => return err("store.etcd.username", "missing (password is set)"),
    };
    if let Some(ca) = &etcd.ca_file {
        if let Err(e) = std::fs::metadata(ca) {
            return err("store.etcd.ca_file", format!("cannot read {ca:?}: {e}"));
        }
    }
    if etcd.ca_file.is_none() && endpoints.iter().any(|e| e.starts_with("https://")) {
        return err(
            "store.etcd.ca_file",
            "missing (https:// endpoints need the CA certificate, PEM, that signs etcd's)",
        );
    }
    let timeout = match etcd.timeout {
        None => DEFAULT_ETCD_TIMEOUT,
        Some(RawDuration::Seconds(s)) => Duration::from_secs(s),
        Some(RawDuration::Text(t)) => {
            parse_duration(&t).or_else(|m| err("store.etcd.timeout", m))?
        }
    };
    if timeout.is_zero() {
        return err("store.etcd.timeout", "must be greater than zero");
    }
    Ok(StoreConfig {
        etcd: Some(EtcdConfig {
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            prefix: trimmed.to_string(),
            auth,
            ca_file: etcd.ca_file.map(PathBuf::from),
            timeout,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<StoreConfig, ConfigError> {
        validate_store(Some(serde_yaml::from_str(yaml).expect("yaml")))
    }

    #[test]
    fn defaults_and_normalisation() {
        let c = parse("etcd: {endpoints: [\"http://127.0.0.1:2379/\"], prefix: /a/b/}")
            .expect("valid")
            .etcd
            .expect("etcd");
        assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.prefix, "/a/b");
        assert_eq!(c.timeout, DEFAULT_ETCD_TIMEOUT);
        assert_eq!(c.auth, None);
        assert_eq!(parse("{}").expect("empty"), StoreConfig::default());
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, key) in [
            ("etcd: {}", "store.etcd.endpoints"),
            (
                "etcd: {endpoints: [\"127.0.0.1:2379\"]}",
                "store.etcd.endpoints[0]",
            ),
            (
                "etcd: {endpoints: [\"http://h:x\"]}",
                "store.etcd.endpoints[0]",
            ),
            (
                "etcd: {endpoints: [\"http://h:1\"], prefix: nope}",
                "store.etcd.prefix",
            ),
            (
                "etcd: {endpoints: [\"http://h:1\"], prefix: /}",
                "store.etcd.prefix",
            ),
            (
                "etcd: {endpoints: [\"http://h:1\"], username: u}",
                "store.etcd.password",
            ),
            (
                "etcd: {endpoints: [\"http://h:1\"], timeout: 0s}",
                "store.etcd.timeout",
            ),
            (
                "etcd: {endpoints: [\"http://h:1\"], ca_file: /nonexistent/ca.pem}",
                "store.etcd.ca_file",
            ),
            ("etcd: {endpoints: [\"https://h:1\"]}", "store.etcd.ca_file"),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert_eq!(e.key, key, "{yaml}: {e}");
        }
    }
}

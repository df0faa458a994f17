//! The configuration file as written: serde types for Portico's keys, and the split of one
//! YAML document into Pingora's `ServerConf` keys and Portico's own.

use pingora::server::configuration::ServerConf;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// The top-level keys that are Portico's (the rest belong to Pingora's `ServerConf`).
pub const PORTICO_KEYS: &[&str] = &[
    "listen",
    "port",
    "strategy",
    "health_check_frequency",
    "health_check",
    "backends",
    "timeouts",
    "admin",
    "state_file",
    "store",
    "tls",
    "sticky_cookie",
    "sticky_secret",
    "access_log",
    "retries",
    "client_timeouts",
    "limits",
    "max_connections",
    "dns",
    "outlier_detection",
    "slow_start",
];

/// Portico's keys exactly as they appear in the file. Every field is raw: `validate` turns
/// them into a [`super::Config`] and names the key of anything wrong.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub port: Option<i64>,
    pub strategy: Option<String>,
    pub health_check_frequency: Option<RawDuration>,
    pub health_check: Option<FileHealthCheck>,
    #[serde(default)]
    pub backends: Vec<Value>,
    pub timeouts: Option<FileTimeouts>,
    pub admin: Option<FileAdmin>,
    pub state_file: Option<String>,
    pub store: Option<super::store::FileStoreSection>,
    pub tls: Option<FileTls>,
    pub sticky_cookie: Option<String>,
    pub sticky_secret: Option<String>,
    pub access_log: Option<Value>,
    pub retries: Option<i64>,
    pub client_timeouts: Option<super::client_timeouts::FileClientTimeouts>,
    pub limits: Option<super::limits::FileLimits>,
    pub max_connections: Option<i64>,
    pub dns: Option<super::dns::FileDns>,
    pub outlier_detection: Option<FileOutlier>,
    pub slow_start: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutlier {
    pub consecutive_errors: Option<i64>,
    pub base_ejection_time: Option<RawDuration>,
    pub max_ejection_time: Option<RawDuration>,
    pub max_ejection_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    pub path: Option<String>,
    pub timeout: Option<RawDuration>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub grpc: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect: Option<RawDuration>,
    pub read: Option<RawDuration>,
    pub websocket_idle: Option<RawDuration>,
    pub keepalive: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub listen: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A duration as written: `"10s"` or a bare number of seconds.
#[derive(Debug, Clone)]
pub enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawDurationVisitor)
    }
}

struct RawDurationVisitor;

impl serde::de::Visitor<'_> for RawDurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"500ms\", \"10s\", \"1m\" or a whole number of seconds")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
        Ok(RawDuration::Seconds(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
        u64::try_from(v)
            .map(RawDuration::Seconds)
            .map_err(|_| E::custom(format!("invalid duration {v} (must not be negative)")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawDuration, E> {
        Err(E::custom(format!(
            "invalid duration {v} (a whole number of seconds, or use ms, e.g. \"1500ms\")"
        )))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDuration, E> {
        Ok(RawDuration::Text(v.to_string()))
    }
}

/// One document split in two: the keys Pingora's `ServerConf` knows, and the rest.
pub struct SplitDocument {
    pub pingora: Mapping,
    pub portico: Mapping,
}

/// The top-level keys that belong to Pingora's `ServerConf`, read off its own serialisation so
/// that they follow the Pingora version in use.
pub fn pingora_keys() -> Vec<String> {
    match serde_yaml::to_value(ServerConf::default()) {
        Ok(Value::Mapping(map)) => map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Parses `text` (YAML or JSON) and splits its top level into Pingora's and Portico's keys.
pub fn split(text: &str) -> Result<SplitDocument, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let map = match doc {
        Value::Mapping(map) => map,
        Value::Null => Mapping::new(),
        other => {
            return Err(format!(
                "the top level must be a mapping of keys, found {}",
                kind(&other)
            ))
        }
    };
    let pingora_keys = pingora_keys();
    let mut pingora = Mapping::new();
    let mut portico = Mapping::new();
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            return Err(format!("keys must be strings, found {}", kind(&key)));
        };
        if pingora_keys.iter().any(|k| k == name) {
            pingora.insert(key, value);
        } else {
            portico.insert(key, value);
        }
    }
    Ok(SplitDocument { pingora, portico })
}

/// A short name of a YAML value's type for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

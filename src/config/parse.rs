//! Reading the document: Pingora's keys (with Portico's defaults where the file is silent) and
//! Portico's keys, deserialised with errors that name the key whose value is wrong.

use pingora::server::configuration::ServerConf;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::error::{err, plain_words, suggestion, ConfigError};
use super::file::{FileConfig, PORTICO_KEYS};
use super::{DEFAULT_GRACE_PERIOD_SECS, DEFAULT_SHUTDOWN_TIMEOUT_SECS};

/// Deserialises Pingora's keys and applies Portico's defaults where the file is silent.
pub(crate) fn pingora_conf(map: serde_yaml::Mapping) -> Result<ServerConf, ConfigError> {
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
pub(crate) fn portico_file(map: serde_yaml::Mapping) -> Result<FileConfig, ConfigError> {
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

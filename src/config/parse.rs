//! Reading the document: Pingora's keys (with Portico's defaults where the file is silent) and
//! Portico's keys, deserialised with errors that name the key whose value is wrong.

use pingora::server::configuration::ServerConf;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::error::{err, plain_words, suggestion, ConfigError};
use super::file::{FileConfig, PORTICO_KEYS};
use super::{DEFAULT_GRACE_PERIOD_SECS, DEFAULT_SHUTDOWN_TIMEOUT_SECS};

/// Deserialises Pingora's keys and applies Portico's defaults where the file is silent.
pub(crate) fn pingora_conf(map: serde_yaml::Mapping) -> Result<ServerConf, Vec<ConfigError>> {
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
        return err("threads", "must be at least 1").map_err(|e| vec![e]);
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
        .map_err(|e| vec![e])
}

/// With one worker thread there is nothing to steal work from: Pingora's no-steal runtime (a
/// current-thread Tokio runtime) then does the same job with less scheduling work per request
/// (BENCHMARKS.md). With more threads Pingora's default (stealing) keeps them evenly loaded.
fn default_work_stealing(threads: usize) -> bool {
    threads > 1
}

/// Deserialises Portico's keys, naming every unknown key and every key whose value is wrong.
pub(crate) fn portico_file(mut map: serde_yaml::Mapping) -> Result<FileConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let unknown: Vec<Value> = map
        .keys()
        .filter(|k| k.as_str().is_some_and(|k| !PORTICO_KEYS.contains(&k)))
        .cloned()
        .collect();
    for key in unknown {
        let name = key.as_str().unwrap_or("?").to_string();
        let hint = suggestion(&name)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        errors.push(ConfigError {
            message: format!("unknown key `{name}`{hint}"),
            key: name,
        });
        map.remove(&key);
    }
    match deserialize_named(map) {
        Ok(file) if errors.is_empty() => Ok(file),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Deserialises `map` as `T`. On failure every key whose value is wrong is named (one level
/// deep, `section.key`), each found by deserialising the entries on their own: serde's own
/// messages say what is wrong but not where, and stop at the first.
fn deserialize_named<T: DeserializeOwned>(map: Mapping) -> Result<T, Vec<ConfigError>> {
    match serde_yaml::from_value::<T>(Value::Mapping(map.clone())) {
        Ok(v) => Ok(v),
        Err(e) => {
            let mut found = culprits::<T>(&map);
            if found.is_empty() {
                found.push(ConfigError {
                    key: String::new(),
                    message: plain_words(&e.to_string()),
                });
            }
            Err(found)
        }
    }
}

/// Every key of `map` (or `key.sub` inside a nested mapping) that `T` refuses alone, with
/// serde's message for it.
fn culprits<T: DeserializeOwned>(map: &Mapping) -> Vec<ConfigError> {
    let alone = |key: &Value, value: Value| {
        let mut alone = Mapping::new();
        alone.insert(key.clone(), value);
        serde_yaml::from_value::<T>(Value::Mapping(alone)).err()
    };
    let name = |k: &Value| k.as_str().unwrap_or("?").to_string();
    let mut found = Vec::new();
    for (key, value) in map {
        let Some(whole) = alone(key, value.clone()) else {
            continue;
        };
        let mut inner_found = false;
        if let Value::Mapping(inner) = value {
            for (sub, sub_value) in inner {
                let mut one = Mapping::new();
                one.insert(sub.clone(), sub_value.clone());
                if let Some(e) = alone(key, Value::Mapping(one)) {
                    inner_found = true;
                    found.push(ConfigError {
                        key: format!("{}.{}", name(key), name(sub)),
                        message: plain_words(&e.to_string()),
                    });
                }
            }
        }
        if !inner_found {
            found.push(ConfigError {
                key: name(key),
                message: plain_words(&whole.to_string()),
            });
        }
    }
    found
}

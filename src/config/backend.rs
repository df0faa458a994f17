//! One configured backend (`backends[i]`): its URL and weight, parsed from a URL string or a
//! `{url, weight}` mapping.

use serde_yaml::Value;

use super::error::{err, ConfigError};
use super::{file, BackendUrl, MAX_WEIGHT};

/// One backend as configured (or as the admin API left it): its URL, weight and drain state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub url: BackendUrl,
    pub weight: u32,
    /// Drained by an operator (`PATCH /backends {"state": "drain"}`): stays in the pool and is
    /// probed, but takes no new request. Always `false` from the configuration file.
    pub drained: bool,
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
    Ok(BackendSpec {
        url,
        weight,
        drained: false,
    })
}

//! One configured backend (`backends[i]`): its URL, weight and HTTP protocol, parsed from a URL
//! string or a `{url, weight, protocol}` mapping.

use serde_yaml::Value;

use super::error::{err, ConfigError};
use super::{file, BackendUrl, Scheme, MAX_WEIGHT};

/// The HTTP version Portico speaks to a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (the default for `http://` and `https://`).
    #[default]
    Http1,
    /// HTTP/2: prior knowledge for `h2c://`; for `https://`, offered by ALPN with HTTP/1.1 as
    /// the fallback when the backend does not select `h2`. Streams are multiplexed over pooled
    /// connections.
    H2,
}

impl Protocol {
    /// The name as written in `protocol:` (`h1`, `h2`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::H2 => "h2",
        }
    }

    /// Checks `protocol` (as written, `None` when absent) against `url`:
    /// `h2c://` is HTTP/2 whatever is said (saying `h1` is an error), `https://` takes either,
    /// and `http://` only `h1` (cleartext HTTP/2 is written `h2c://`).
    pub fn for_url(url: &BackendUrl, protocol: Option<&str>) -> Result<Self, String> {
        let wanted = match protocol.map(str::trim) {
            None => None,
            Some(p) if p.eq_ignore_ascii_case("h2") || p.eq_ignore_ascii_case("http/2") => {
                Some(Protocol::H2)
            }
            Some(p)
                if p.eq_ignore_ascii_case("h1")
                    || p.eq_ignore_ascii_case("http/1.1")
                    || p.eq_ignore_ascii_case("http1") =>
            {
                Some(Protocol::Http1)
            }
            Some(p) => {
                return Err(format!(
                    "unknown protocol {p:?} (expected \"h1\" or \"h2\")"
                ))
            }
        };
        match (url.scheme, wanted) {
            (Scheme::H2c, None | Some(Protocol::H2)) => Ok(Protocol::H2),
            (Scheme::H2c, Some(Protocol::Http1)) => Err(format!(
                "{url} is HTTP/2 by its scheme; for HTTP/1.1 write http://{}",
                url.authority()
            )),
            (Scheme::Http, Some(Protocol::H2)) => Err(format!(
                "HTTP/2 over cleartext is written h2c://{} (prior knowledge)",
                url.authority()
            )),
            (_, wanted) => Ok(wanted.unwrap_or_default()),
        }
    }
}

/// One backend as configured: its URL, weight and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub url: BackendUrl,
    pub weight: u32,
    /// Always `H2` for an `h2c://` URL.
    pub protocol: Protocol,
}

impl BackendSpec {
    /// A spec for `url` and `weight` in the protocol its scheme implies (HTTP/2 for `h2c://`,
    /// else HTTP/1.1).
    pub fn new(url: BackendUrl, weight: u32) -> BackendSpec {
        let protocol = match url.scheme {
            Scheme::H2c => Protocol::H2,
            Scheme::Http | Scheme::Https => Protocol::Http1,
        };
        BackendSpec {
            url,
            weight,
            protocol,
        }
    }

    /// Whether requests go to this backend over HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.protocol == Protocol::H2
    }

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

/// Parses one entry of `backends` (a URL string, or `{url, weight, protocol}`), for messages at
/// `key`.
pub fn backend_entry(key: &str, value: &Value) -> Result<BackendSpec, ConfigError> {
    let (url, weight, protocol) = match value {
        Value::String(s) => (s.as_str(), 1, None),
        Value::Mapping(m) => {
            for k in m.keys() {
                match k.as_str() {
                    Some("url") | Some("weight") | Some("protocol") => {}
                    _ => {
                        let name = k.as_str().unwrap_or("?");
                        return err(
                            format!("{key}.{name}"),
                            format!(
                                "unknown key `{name}` (a backend has `url`, `weight` and `protocol`)"
                            ),
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
            let protocol = match m.get("protocol") {
                None => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return err(
                        format!("{key}.protocol"),
                        format!("expected \"h1\" or \"h2\", found {}", file::kind(other)),
                    )
                }
            };
            (url, weight, protocol)
        }
        other => {
            return err(
                key,
                format!(
                    "expected a URL or {{url, weight, protocol}}, found {}",
                    file::kind(other)
                ),
            )
        }
    };
    let url = BackendUrl::parse(url).or_else(|m| err(format!("{key}.url"), m))?;
    let protocol =
        Protocol::for_url(&url, protocol).or_else(|m| err(format!("{key}.protocol"), m))?;
    Ok(BackendSpec {
        url,
        weight,
        protocol,
    })
}

//! `client_timeouts`: how long a client may take to send a request header, stay idle between
//! requests, and stall while sending a request body.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::file::RawDuration;
use super::validate::duration;

/// The client-side timeouts (nginx: `client_header_timeout` 60s, `keepalive_timeout` 75s,
/// `client_body_timeout` 60s; HAProxy: `timeout http-request`, `timeout http-keep-alive`,
/// `timeout client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request header must be complete within this time of its first byte (408 otherwise);
    /// a new connection must send its first byte within it too.
    pub header: Duration,
    /// An idle keep-alive connection is closed after this long (whole seconds, rounded up).
    pub keepalive: Duration,
    /// A request body that stalls this long between two reads ends the request with 408.
    pub body: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            body: Duration::from_secs(30),
        }
    }
}

impl ClientTimeouts {
    /// The keep-alive timeout in whole seconds, rounded up (Pingora counts in seconds, and
    /// zero would mean "forever").
    pub fn keepalive_secs(&self) -> u64 {
        let k = self.keepalive;
        (k.as_secs() + u64::from(k.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileClientTimeouts {
    pub header: Option<RawDuration>,
    pub keepalive: Option<RawDuration>,
    pub body: Option<RawDuration>,
}

/// Checks `client_timeouts`; every key is optional and must be above zero.
pub(crate) fn client_timeouts(
    raw: Option<FileClientTimeouts>,
) -> Result<ClientTimeouts, ConfigError> {
    let raw = raw.unwrap_or_default();
    let default = ClientTimeouts::default();
    Ok(ClientTimeouts {
        header: duration("client_timeouts.header", raw.header, default.header)?,
        keepalive: duration(
            "client_timeouts.keepalive",
            raw.keepalive,
            default.keepalive,
        )?,
        body: duration("client_timeouts.body", raw.body, default.body)?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_text("").expect("valid");
        assert_eq!(c.client_timeouts, super::ClientTimeouts::default());
        let c = Config::from_text("client_timeouts: {header: 2s, keepalive: 1500ms, body: 5}")
            .expect("valid");
        assert_eq!(c.client_timeouts.header, Duration::from_secs(2));
        assert_eq!(c.client_timeouts.keepalive_secs(), 2, "rounded up");
        assert_eq!(c.client_timeouts.body, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("client_timeouts: {header: 0s}", "client_timeouts.header"),
            (
                "client_timeouts: {keepalive: soon}",
                "client_timeouts.keepalive",
            ),
            ("client_timeouts: {body: -1}", "client_timeouts.body"),
            ("client_timeouts: {idle: 1s}", "unknown key"),
        ] {
            let e = Config::from_text(text).map_or_else(|e| e.to_string(), |_| String::new());
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}

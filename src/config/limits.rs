//! `limits`: how large a request header may be (bytes and lines) and how long its target.

use serde::Deserialize;

use super::error::{err, ConfigError};
use super::size::{format_size, RawSize};

/// Pingora reads at most 1 MiB of request header; a larger limit could not be honoured.
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Pingora's header parser holds at most 256 lines.
const MAX_HEADER_LINES: usize = 256;
/// Below this, ordinary browser requests (cookies, user agent) would be refused.
const MIN_HEADER_BYTES: usize = 1024;

/// Request header limits (nginx: `large_client_header_buffers 4 8k`, i.e. 8 KiB a line;
/// HAProxy: `tune.bufsize` 16 KiB for the whole header, `tune.http.maxhdr` 101 lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request header, request line included (431 past it). A backend response
    /// header past it is a 502.
    pub header_bytes: usize,
    /// Most header lines in a request (431 past it).
    pub headers: usize,
    /// Longest request target (414 past it).
    pub uri_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes: 32 * 1024,
            headers: 100,
            uri_bytes: 8 * 1024,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub header_bytes: Option<RawSize>,
    pub headers: Option<i64>,
    pub uri_bytes: Option<RawSize>,
}

fn size(key: &str, raw: Option<RawSize>, default: usize) -> Result<usize, ConfigError> {
    match raw {
        None => Ok(default),
        Some(r) => r.bytes().or_else(|m| err(key, m)),
    }
}

/// Checks `limits`: `header_bytes` from 1 KiB to 1 MiB, `headers` from 1 to 256, `uri_bytes`
/// from 1 byte up to `header_bytes` (the target is part of the header).
pub(crate) fn limits(raw: Option<FileLimits>) -> Result<Limits, ConfigError> {
    let raw = raw.unwrap_or_default();
    let default = Limits::default();
    let header_bytes = size(
        "limits.header_bytes",
        raw.header_bytes,
        default.header_bytes,
    )?;
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&header_bytes) {
        return err(
            "limits.header_bytes",
            format!(
                "{} is out of range ({} to {})",
                format_size(header_bytes),
                format_size(MIN_HEADER_BYTES),
                format_size(MAX_HEADER_BYTES)
            ),
        );
    }
    let headers = match raw.headers {
        None => default.headers,
        Some(n) => match usize::try_from(n) {
            Ok(v) if (1..=MAX_HEADER_LINES).contains(&v) => v,
            _ => {
                return err(
                    "limits.headers",
                    format!("{n} is out of range (1 to {MAX_HEADER_LINES})"),
                )
            }
        },
    };
    let uri_bytes = size(
        "limits.uri_bytes",
        raw.uri_bytes,
        default.uri_bytes.min(header_bytes),
    )?;
    if uri_bytes == 0 || uri_bytes > header_bytes {
        return err(
            "limits.uri_bytes",
            format!(
                "{} is out of range (1 byte to limits.header_bytes, {})",
                format_size(uri_bytes),
                format_size(header_bytes)
            ),
        );
    }
    Ok(Limits {
        header_bytes,
        headers,
        uri_bytes,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(text: &str) -> String {
        Config::from_text(text)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn defaults_and_sizes_in_words_or_bytes() {
        let c = Config::from_text("").expect("valid");
        assert_eq!(c.limits, super::Limits::default());
        let c = Config::from_text("limits: {header_bytes: 16KiB, headers: 50, uri_bytes: 4096}")
            .expect("valid");
        assert_eq!(
            (c.limits.header_bytes, c.limits.headers, c.limits.uri_bytes),
            (16 * 1024, 50, 4096)
        );
        // A header limit below the default URI limit takes the URI limit down with it.
        let c = Config::from_text("limits: {header_bytes: 4KiB}").expect("valid");
        assert_eq!(c.limits.uri_bytes, 4096);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            (
                "limits: {header_bytes: 2MiB}",
                "limits.header_bytes: 2MiB is out of range",
            ),
            (
                "limits: {header_bytes: 12 parsecs}",
                "limits.header_bytes: invalid size",
            ),
            ("limits: {headers: 0}", "limits.headers: 0 is out of range"),
            (
                "limits: {headers: 300}",
                "limits.headers: 300 is out of range",
            ),
            (
                "limits: {uri_bytes: 64KiB}",
                "limits.uri_bytes: 64KiB is out of range",
            ),
            ("limits: {uri: 1}", "unknown key"),
        ] {
            let e = error(text);
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}

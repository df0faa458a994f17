//! The access log (one line per request, in the `access_log` format) and request ids.
//!
//! The `text` line goes through the `log` facade like every other log line (target
//! `portico::access`), so it keeps the logger's timestamp and level prefix. `json` and
//! `combined` lines are meant for log shippers and `goaccess`-style tools, which expect nothing
//! but the record on the line: they are written whole, without a prefix, to the same stream as
//! the log (standard error; the daemon's `error_log` file), and still obey `RUST_LOG` for the
//! `portico::access` target.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use log::{info, log_enabled, Level};
use serde::Serialize;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::config::AccessLogFormat;

/// The log target of access log lines.
pub const TARGET: &str = "portico::access";

/// The header that carries the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest incoming request id kept; a longer one is replaced (so is an empty one). Bounds what
/// a client can make Portico log and forward (Heroku's router allows 200).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The incoming request id if it is usable: 1 to [`MAX_REQUEST_ID_LEN`] visible ASCII
/// characters (no spaces or control characters, so it is safe in any log format and header).
pub fn valid_request_id(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|b| b.is_ascii_graphic());
    // Visible ASCII is valid UTF-8.
    ok.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// A new request id: 32 hex digits, a random 64-bit prefix drawn once per process and a
/// 64-bit counter. Unique within the process without coordination (one atomic increment),
/// and across processes and restarts with overwhelming probability; the same length as a
/// W3C trace id, so tracing tools accept it. Built as the header value it is sent as (no
/// formatted `String` copied into two header values per request).
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| fastrand::u64(..));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&prefix.to_be_bytes());
    raw[8..].copy_from_slice(&n.to_be_bytes());
    let mut id = [0u8; 32];
    // 16 bytes always fit in 32 hex digits: the error case cannot happen.
    let _ = hex::encode_to_slice(raw, &mut id);
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
}

/// What the access log records of one request.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    /// The request target as received (path and query).
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub protocol: &'a str,
    /// 0 when no response was sent.
    pub status: u16,
    /// The backend that answered (or was tried last), if any.
    pub backend: Option<&'a str>,
    /// Response body bytes sent to the client.
    pub bytes_sent: usize,
    /// From the request's arrival to the end of the response.
    pub total: Duration,
    /// From the first attempt to reach a backend to its response header; `None` when no
    /// backend answered.
    pub upstream: Option<Duration>,
    pub request_id: &'a str,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// Writes the record in `format` (nothing for [`AccessLogFormat::Off`]).
pub fn write(format: AccessLogFormat, record: &AccessRecord<'_>) {
    match format {
        AccessLogFormat::Off => {}
        AccessLogFormat::Text => info!(target: TARGET, "{}", text_line(record)),
        AccessLogFormat::Json | AccessLogFormat::Combined => {
            if !log_enabled!(target: TARGET, Level::Info) {
                return;
            }
            let mut line = if format == AccessLogFormat::Json {
                json_line(record)
            } else {
                combined_line(record)
            };
            line.push('\n');
            // One write of the whole line: lines from many threads never interleave. A
            // failed write (stderr closed) must not fail the request.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Portico's own line (unchanged since the first release):
/// `127.0.0.1 "GET /x" 200 http://127.0.0.1:9001 1.234ms`.
pub fn text_line(r: &AccessRecord<'_>) -> String {
    let client = r
        .client
        .map_or_else(|| "-".to_string(), |ip| ip.to_string());
    format!(
        "{client} \"{} {}\" {} {} {:.3}ms",
        r.method,
        r.path,
        r.status,
        r.backend.unwrap_or("-"),
        r.total.as_secs_f64() * 1000.0
    )
}

/// One JSON object (see README, "Access log").
pub fn json_line(r: &AccessRecord<'_>) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        time: String,
        request_id: &'a str,
        client: Option<String>,
        method: &'a str,
        path: &'a str,
        protocol: &'a str,
        status: u16,
        backend: Option<&'a str>,
        bytes_sent: usize,
        duration_ms: f64,
        upstream_ms: Option<f64>,
        referer: Option<&'a str>,
        user_agent: Option<&'a str>,
    }
    let line = Line {
        time: rfc3339(r.time),
        request_id: r.request_id,
        client: r.client.map(|ip| ip.to_string()),
        method: r.method,
        path: r.path,
        protocol: r.protocol,
        status: r.status,
        backend: r.backend,
        bytes_sent: r.bytes_sent,
        duration_ms: millis(r.total),
        upstream_ms: r.upstream.map(millis),
        referer: r.referer,
        user_agent: r.user_agent,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// The Apache/nginx "combined" format:
/// `client - - [06/Dec/2026:11:40:07 +0000] "GET /x HTTP/1.1" 200 123 "referer" "agent"`.
/// Quotes, backslashes and bytes outside visible ASCII in quoted fields are escaped as
/// nginx does (`\x22`), so a client cannot forge a field or a line.
pub fn combined_line(r: &AccessRecord<'_>) -> String {
    let mut line = String::with_capacity(160);
    let client = r
        .client
        .map_or_else(|| "-".to_string(), |ip| ip.to_string());
    let bytes = if r.bytes_sent == 0 {
        "-".to_string()
    } else {
        r.bytes_sent.to_string()
    };
    // Writing to a String cannot fail.
    let _ = write!(
        line,
        "{client} - - [{}] \"{} {} {}\" {} {bytes} \"{}\" \"{}\"",
        clf_time(r.time),
        escape(r.method),
        escape(r.path),
        escape(r.protocol),
        r.status,
        r.referer.map_or_else(|| "-".to_string(), escape),
        r.user_agent.map_or_else(|| "-".to_string(), escape),
    );
    line
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
    out
}

/// `HTTP/1.1` and so on, as logs show it.
pub fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Milliseconds, rounded to the microsecond.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `2026-12-06T11:40:07.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let f =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from(t).format(f).unwrap_or_default()
}

/// The common log format's time: `06/Dec/2026:11:40:07 +0000`.
fn clf_time(t: SystemTime) -> String {
    let f = format_description!("[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000");
    OffsetDateTime::from(t).format(f).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            // 2026-12-06T11:40:07.123Z
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_557_207_123),
            client: Some("127.0.0.1".parse().expect("ip")),
            method: "GET",
            path: "/a?b=1",
            protocol: "HTTP/1.1",
            status: 200,
            backend: Some("http://127.0.0.1:9001"),
            bytes_sent: 42,
            total: Duration::from_micros(1_234_567),
            upstream: Some(Duration::from_micros(1_000_400)),
            request_id: "abc-1",
            referer: None,
            user_agent: Some("curl/8.0 \"x\""),
        }
    }

    #[test]
    fn the_text_line_keeps_its_historic_shape() {
        assert_eq!(
            text_line(&record()),
            "127.0.0.1 \"GET /a?b=1\" 200 http://127.0.0.1:9001 1234.567ms"
        );
        let mut r = record();
        r.client = None;
        r.backend = None;
        r.status = 503;
        assert_eq!(text_line(&r), "- \"GET /a?b=1\" 503 - 1234.567ms");
    }

    #[test]
    fn the_json_line_is_one_object_with_every_field() {
        let line = json_line(&record());
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["time"], "2026-12-06T11:40:07.123Z");
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a?b=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["backend"], "http://127.0.0.1:9001");
        assert_eq!(v["bytes_sent"], 42);
        assert_eq!(v["duration_ms"], 1234.567);
        assert_eq!(v["upstream_ms"], 1000.4);
        assert_eq!(v["request_id"], "abc-1");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "curl/8.0 \"x\"");
    }

    #[test]
    fn the_combined_line_follows_apache_and_escapes_quotes() {
        assert_eq!(
            combined_line(&record()),
            "127.0.0.1 - - [06/Dec/2026:11:40:07 +0000] \"GET /a?b=1 HTTP/1.1\" 200 42 \"-\" \
             \"curl/8.0 \\x22x\\x22\""
        );
        let mut r = record();
        r.bytes_sent = 0;
        r.path = "/\u{7f}\n";
        let line = combined_line(&r);
        assert!(
            line.contains("\"GET /\\x7F\\x0A HTTP/1.1\" 200 - "),
            "{line}"
        );
    }

    #[test]
    fn request_ids_are_kept_only_when_printable_and_bounded() {
        assert_eq!(valid_request_id(b"abc-123_XYZ.42"), Some("abc-123_XYZ.42"));
        assert_eq!(valid_request_id(b""), None);
        assert_eq!(valid_request_id(b"has space"), None);
        assert_eq!(valid_request_id(b"tab\there"), None);
        assert_eq!(valid_request_id("caf\u{e9}".as_bytes()), None);
        let long = vec![b'a'; MAX_REQUEST_ID_LEN];
        assert!(valid_request_id(&long).is_some());
        let longer = vec![b'a'; MAX_REQUEST_ID_LEN + 1];
        assert_eq!(valid_request_id(&longer), None);
    }

    #[test]
    fn generated_request_ids_are_unique_hex_of_fixed_length() {
        let a = new_request_id()
            .to_str()
            .map(str::to_owned)
            .unwrap_or_default();
        let b = new_request_id()
            .to_str()
            .map(str::to_owned)
            .unwrap_or_default();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
            assert!(valid_request_id(id.as_bytes()).is_some());
        }
        // Same process, same prefix: only the counter differs.
        assert_eq!(a[..16], b[..16]);
    }
}

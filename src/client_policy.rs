//! What Portico requires of a client request before it chooses a backend: the per-request
//! session settings (keep-alive, body timeout, pipelining) and the strict HTTP/1.1 checks
//! Pingora leaves to the application. The request-header deadline and size limits are enforced
//! earlier, while Pingora reads the header (`vendor/pingora-core`, see `vendor/PATCHES.md`).

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::server::RequestHeaderLimits;
use pingora::proxy::Session;

use crate::config::{format_size, ClientTimeouts, Limits};

/// The client-facing settings of a proxy listener, fixed at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    pub timeouts: ClientTimeouts,
    pub limits: Limits,
}

/// A request refused before anything is forwarded: the status and the reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse<T>(status: u16, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        status,
        message: message.into(),
    })
}

/// Status-line and header-line framing counted in a header's size (`: ` and CRLF).
const LINE_OVERHEAD: usize = 4;

impl ClientPolicy {
    /// The limits Pingora applies while it reads an HTTP/1.x request header: the deadline from
    /// the first byte, the sizes, and no rewriting of an illegal request line (a 400 instead).
    pub fn header_limits(&self) -> RequestHeaderLimits {
        RequestHeaderLimits {
            timeout: Some(self.timeouts.header),
            max_bytes: self.limits.header_bytes,
            max_headers: self.limits.headers,
            max_uri_bytes: self.limits.uri_bytes,
            escape_illegal_request_line: false,
        }
    }

    /// Applies the per-request settings to the client session: the keep-alive idle timeout
    /// (Pingora keeps an HTTP/1.1 connection forever otherwise), the body stall timeout (not
    /// for upgrade requests), and
    /// pipelining (requests that arrive together are answered in order, not dropped).
    pub fn apply(&self, session: &mut Session) {
        // `None` means the connection closes after this request (client's `Connection: close`,
        // HTTP/1.0, shutting down): leave it so.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.timeouts.keepalive_secs()));
        }
        // Not for an upgrade (WebSocket): once switched, the same timeout would bound the
        // tunnel's idle time, which is not a body stall.
        if !session.is_upgrade_req() {
            session.set_read_timeout(Some(self.timeouts.body));
        }
        session.set_pipelining_enabled(true);
    }

    /// Checks what Pingora accepts but a strict HTTP/1.1 gateway refuses (RFC 9112): a
    /// `Transfer-Encoding` other than exactly `chunked` (501), an HTTP/1.1 request without
    /// exactly one `Host` (400); and, for HTTP/2 requests (whose header Pingora does not
    /// measure against `limits`), the URI and header limits (414, 431). Differing `Content-Length` values are
    /// already a 400 from Pingora; equal ones are merged by [`single_content_length`].
    pub fn check_request(&self, req: &RequestHeader) -> Result<(), Refusal> {
        let te: Vec<&HeaderValue> = req.headers.get_all(TRANSFER_ENCODING).iter().collect();
        match te.as_slice() {
            [] => {}
            [one] if one.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => {}
            _ => {
                let given = te
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ");
                return refuse(
                    501,
                    format!("Transfer-Encoding {given:?} is not supported (only \"chunked\")"),
                );
            }
        }
        if req.version == Version::HTTP_11 {
            match req.headers.get_all(HOST).iter().count() {
                1 => {}
                0 => return refuse(400, "HTTP/1.1 request without Host header"),
                _ => return refuse(400, "more than one Host header"),
            }
        }
        if req.version != Version::HTTP_2 {
            return Ok(());
        }
        let uri_len = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > self.limits.uri_bytes {
            return refuse(
                414,
                format!(
                    "request target longer than {} (limits.uri_bytes)",
                    format_size(self.limits.uri_bytes)
                ),
            );
        }
        if req.headers.len() > self.limits.headers {
            return refuse(
                431,
                format!(
                    "more than {} header lines (limits.headers)",
                    self.limits.headers
                ),
            );
        }
        if header_size(req.headers.iter()) + uri_len > self.limits.header_bytes {
            return refuse(
                431,
                format!(
                    "request header larger than {} (limits.header_bytes)",
                    format_size(self.limits.header_bytes)
                ),
            );
        }
        Ok(())
    }

    /// Whether a backend's response header is within `limits.header_bytes`: a larger one is
    /// answered 502. (Pingora reads up to 1 MiB of it before Portico sees it; the memory is
    /// the backend's doing, held only for this one response.)
    pub fn response_header_fits(&self, resp: &ResponseHeader) -> bool {
        header_size(resp.headers.iter()) <= self.limits.header_bytes
    }

    /// The message for a backend response header over the limit.
    pub fn response_header_message(&self) -> String {
        format!(
            "backend response header larger than {} (limits.header_bytes)",
            format_size(self.limits.header_bytes)
        )
    }
}

/// Bytes a header section takes on the wire (names, values, separators), without the
/// request or status line.
fn header_size<'a>(
    headers: impl Iterator<Item = (&'a http::HeaderName, &'a HeaderValue)>,
) -> usize {
    headers
        .map(|(n, v)| n.as_str().len() + v.len() + LINE_OVERHEAD)
        .sum()
}

/// The one `Content-Length` value to forward when the request carries a list or repeated
/// lines (`5, 5`, or two `Content-Length: 5`): Pingora has already refused them with 400
/// unless every value is equal. `None` when there is nothing to merge.
pub fn single_content_length(req: &RequestHeader) -> Option<HeaderValue> {
    let values: Vec<&HeaderValue> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
    let merge = values.len() > 1 || values.first().is_some_and(|v| v.as_bytes().contains(&b','));
    if !merge {
        return None;
    }
    let first = values
        .first()?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(HeaderValue::from(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> ClientPolicy {
        ClientPolicy {
            timeouts: ClientTimeouts::default(),
            limits: Limits::default(),
        }
    }

    fn request(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/upload", None).expect("valid");
        req.set_version(version);
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("valid header");
        }
        req
    }

    #[test]
    fn only_plain_chunked_transfer_encoding_passes() {
        let p = policy();
        let ok = request(
            Version::HTTP_11,
            &[("Host", "x"), ("Transfer-Encoding", "Chunked ")],
        );
        assert_eq!(p.check_request(&ok), Ok(()));
        for te in [
            vec!["identity, chunked"],
            vec!["gzip", "chunked"],
            vec!["chunked, chunked"],
        ] {
            let mut h = vec![("Host", "x")];
            h.extend(te.iter().map(|v| ("Transfer-Encoding", *v)));
            let r = p.check_request(&request(Version::HTTP_11, &h));
            assert_eq!(r.map_err(|r| r.status), Err(501), "{te:?}");
        }
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let p = policy();
        let none = request(Version::HTTP_11, &[]);
        assert_eq!(p.check_request(&none).map_err(|r| r.status), Err(400));
        let two = request(Version::HTTP_11, &[("Host", "a"), ("Host", "b")]);
        assert_eq!(p.check_request(&two).map_err(|r| r.status), Err(400));
        // HTTP/1.0 predates Host.
        assert_eq!(p.check_request(&request(Version::HTTP_10, &[])), Ok(()));
    }

    #[test]
    fn limits_apply_to_requests_pingora_did_not_measure() {
        let mut p = policy();
        p.limits.headers = 2;
        let r = request(Version::HTTP_2, &[("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(p.check_request(&r).map_err(|r| r.status), Err(431));
        let p = policy();
        let big = "v".repeat(p.limits.header_bytes);
        let r = request(Version::HTTP_2, &[("a", big.as_str())]);
        assert_eq!(p.check_request(&r).map_err(|r| r.status), Err(431));
        let long = format!("/{}", "a".repeat(p.limits.uri_bytes));
        let mut r = RequestHeader::build("GET", long.as_bytes(), None).expect("valid");
        r.set_version(Version::HTTP_2);
        assert_eq!(p.check_request(&r).map_err(|r| r.status), Err(414));
    }

    #[test]
    fn equal_content_lengths_merge_into_one() {
        let r = request(Version::HTTP_11, &[("Content-Length", "5, 5")]);
        assert_eq!(single_content_length(&r), Some(HeaderValue::from(5u64)));
        let r = request(
            Version::HTTP_11,
            &[("Content-Length", "5"), ("Content-Length", "5")],
        );
        assert_eq!(single_content_length(&r), Some(HeaderValue::from(5u64)));
        let r = request(Version::HTTP_11, &[("Content-Length", "5")]);
        assert_eq!(single_content_length(&r), None);
    }

    #[test]
    fn response_headers_are_measured() {
        let mut p = policy();
        p.limits.header_bytes = 1024;
        let mut resp = ResponseHeader::build(200, None).expect("valid");
        resp.insert_header("X-Small", "1").expect("valid");
        assert!(p.response_header_fits(&resp));
        resp.insert_header("X-Big", "v".repeat(1024))
            .expect("valid");
        assert!(!p.response_header_fits(&resp));
    }

    #[test]
    fn header_limits_refuse_rather_than_rewrite() {
        let l = policy().header_limits();
        assert_eq!(l.timeout, Some(Duration::from_secs(10)));
        assert_eq!(l.max_bytes, 32 * 1024);
        assert!(!l.escape_illegal_request_line);
    }
}

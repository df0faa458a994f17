//! The gRPC health probe: one `grpc.health.v1.Health/Check` call over HTTP/2 (the standard
//! health protocol of gRPC servers); the backend passes when it answers `SERVING`.
//!
//! The messages are the two of `grpc/health/v1/health.proto`, declared with prost's derive
//! (no protoc at build time). The five-byte gRPC message framing (compressed flag, big-endian
//! length) is written here by hand: the gRPC crates frame messages inside their own client
//! stack (tonic's channel), while this probe must go through Pingora's connector so that it
//! uses the backend's own peer (address, TLS, SNI, certificate checks) like HTTP probes do.

use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector as HttpConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use prost::Message;

/// The method every gRPC health service serves.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The error type of a probe the backend answered, but not with `SERVING`; its context is the
/// reason `/status` and the log show.
pub const GRPC_HEALTH: ErrorType = ErrorType::Custom("gRPC health check");

/// Largest answer read: a `HealthCheckResponse` is a few bytes.
const MAX_RESPONSE: usize = 16 * 1024;

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckRequest {
    /// Empty: the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

impl ServingStatus {
    /// The name in the proto (`NOT_SERVING`), for reasons.
    pub fn name(self) -> &'static str {
        match self {
            ServingStatus::Unknown => "UNKNOWN",
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        }
    }
}

/// One message in gRPC's length-prefixed framing (uncompressed).
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    // A health request is a few bytes; the length always fits.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with room for `len` bytes cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// The first message of a gRPC response body, decoded.
pub fn unframe<M: Message + Default>(body: &[u8]) -> std::result::Result<M, String> {
    let Some((&flag, rest)) = body.split_first() else {
        return Err("empty response".into());
    };
    if flag != 0 {
        return Err("compressed response (none was offered)".into());
    }
    let (len, rest) = match rest.split_first_chunk::<4>() {
        Some((len, rest)) => (u32::from_be_bytes(*len) as usize, rest),
        None => return Err("truncated message header".into()),
    };
    let payload = rest.get(..len).ok_or("truncated message")?;
    M::decode(payload).map_err(|e| format!("undecodable message: {e}"))
}

/// Calls `Health/Check` on `peer` (which must allow HTTP/2) on a fresh connection and fails
/// unless the answer is `SERVING` with gRPC status 0. `authority` is the `:authority` sent.
pub async fn check(connector: &HttpConnector, peer: &HttpPeer, authority: &str) -> Result<()> {
    let mut peer = peer.clone();
    // One stream per connection: the connection is not pooled and closes with the session, as
    // HTTP probes close theirs; every probe tests a new connection.
    peer.options.max_h2_streams = 1;
    let (session, _) = connector.get_http_session(&peer).await?;
    let HttpSession::H2(mut h2) = session else {
        return Error::e_explain(GRPC_HEALTH, "the backend did not negotiate HTTP/2");
    };
    h2.read_timeout = peer.options.read_timeout;
    h2.write_timeout = peer.options.write_timeout;
    let mut req = RequestHeader::build("POST", CHECK_PATH.as_bytes(), None)?;
    req.insert_header("Host", authority)?;
    req.insert_header("Content-Type", "application/grpc")?;
    req.insert_header("TE", "trailers")?;
    req.insert_header("User-Agent", super::probe::USER_AGENT)?;
    h2.write_request_header(Box::new(req), false)?;
    let body = frame(&HealthCheckRequest::default());
    h2.write_request_body(body, true).await?;
    h2.read_response_header().await?;
    let (status, header_grpc) = match h2.response_header() {
        Some(resp) => (resp.status.as_u16(), grpc_status(&resp.headers)),
        None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
    };
    if status != 200 {
        return Error::e_explain(
            ErrorType::CustomCode("health check status", status),
            "gRPC health check",
        );
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = h2.read_response_body().await? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Error::e_explain(GRPC_HEALTH, "answer too large");
        }
        body.extend_from_slice(&chunk);
    }
    let trailer_grpc = h2.read_trailers().await?.and_then(|t| grpc_status(&t));
    // A "trailers-only" answer (an error before any message) carries the status in its headers.
    match trailer_grpc.or(header_grpc) {
        Some((0, _)) => {}
        Some((code, message)) => {
            let detail = if message.is_empty() {
                String::new()
            } else {
                format!(": {message}")
            };
            return Error::e_explain(GRPC_HEALTH, format!("gRPC status {code}{detail}"));
        }
        None => return Error::e_explain(GRPC_HEALTH, "no grpc-status in the answer"),
    }
    let answer: HealthCheckResponse =
        unframe(&body).or_else(|e| Error::e_explain(GRPC_HEALTH, e))?;
    match ServingStatus::try_from(answer.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Error::e_explain(GRPC_HEALTH, other.name()),
        Err(_) => Error::e_explain(GRPC_HEALTH, format!("serving status {}", answer.status)),
    }
}

/// `grpc-status` (and `grpc-message`) from a header or trailer block, if present.
fn grpc_status(headers: &http::HeaderMap) -> Option<(u32, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_named() {
        let framed = frame(&HealthCheckResponse {
            status: ServingStatus::NotServing as i32,
        });
        assert_eq!(&framed[..], &[0, 0, 0, 0, 2, 0x08, 0x02]);
        let back: HealthCheckResponse = unframe(&framed).expect("decodes");
        assert_eq!(back.status, ServingStatus::NotServing as i32);
        assert_eq!(&frame(&HealthCheckRequest::default())[..], &[0, 0, 0, 0, 0]);
        for (bad, why) in [
            (&[][..], "empty"),
            (&[1, 0, 0, 0, 0][..], "compressed"),
            (&[0, 0, 0][..], "truncated message header"),
            (&[0, 0, 0, 0, 9, 8][..], "truncated message"),
        ] {
            let e = unframe::<HealthCheckResponse>(bad).expect_err("refused");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn failed_checks_read_as_short_reasons() {
        let t = std::time::Duration::from_secs(1);
        let reason = |e: Box<Error>| super::super::probe_reason(&e, t);
        assert_eq!(
            reason(Error::explain(GRPC_HEALTH, "NOT_SERVING")),
            "gRPC health check: NOT_SERVING"
        );
        assert_eq!(
            reason(Error::explain(
                GRPC_HEALTH,
                "gRPC status 12: unknown service"
            )),
            "gRPC health check: gRPC status 12: unknown service"
        );
    }

    #[test]
    fn grpc_status_reads_code_and_message() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", "12".parse().expect("value"));
        h.insert("grpc-message", "unknown service".parse().expect("value"));
        assert_eq!(grpc_status(&h), Some((12, "unknown service".into())));
    }
}

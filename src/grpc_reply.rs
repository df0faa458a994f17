//! Portico's own error answers to gRPC calls (no backend, backend failed or silent): a
//! trailers-only response, HTTP 200 with `grpc-status` and `grpc-message`, as gRPC clients
//! expect. A JSON body with a 5xx status is read by them as a malformed message (tonic reports
//! `INTERNAL: invalid compression flag`), hiding the real cause.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;

/// What gRPC's `grpc-message` percent-encodes: every byte outside printable ASCII, and `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Whether `req` is a gRPC call (`content-type: application/grpc`, `application/grpc+proto`,
/// ...).
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim().to_ascii_lowercase();
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// The gRPC status code an HTTP status stands for, per gRPC's "HTTP to gRPC status code
/// mapping": 502, 503, 504 and 429 are `UNAVAILABLE` (14), so clients retry them as such.
pub fn grpc_code(http: u16) -> u32 {
    match http {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// The trailers-only answer standing for HTTP status `http` with `message`.
pub fn answer(http: u16, message: &str) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header("Content-Type", "application/grpc")?;
    resp.insert_header("grpc-status", grpc_code(http).to_string())?;
    resp.insert_header(
        "grpc-message",
        utf8_percent_encode(message, GRPC_MESSAGE).to_string(),
    )?;
    // HTTP/1.1 clients (no gRPC client speaks it, but a curl might) see an empty body.
    resp.insert_header("Content-Length", "0")?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(content_type: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/pkg.Svc/Call", None).expect("valid");
        if let Some(ct) = content_type {
            r.insert_header("Content-Type", ct).expect("valid");
        }
        r
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        assert!(is_grpc(&req(Some("application/grpc"))));
        assert!(is_grpc(&req(Some("application/grpc+proto"))));
        assert!(is_grpc(&req(Some("Application/GRPC"))));
        assert!(!is_grpc(&req(Some("application/grpc-web"))));
        assert!(!is_grpc(&req(Some("application/json"))));
        assert!(!is_grpc(&req(None)));
    }

    #[test]
    fn answers_are_trailers_only_with_the_mapped_code_and_an_encoded_message() {
        let a = answer(503, "no backend available: 100% gone").expect("valid");
        assert_eq!(a.status.as_u16(), 200);
        assert_eq!(a.headers["grpc-status"], "14");
        assert_eq!(
            a.headers["grpc-message"],
            "no backend available: 100%25 gone"
        );
        assert_eq!(a.headers["content-type"], "application/grpc");
        assert_eq!(grpc_code(504), 14);
        assert_eq!(grpc_code(400), 13);
        assert_eq!(grpc_code(500), 2);
    }
}

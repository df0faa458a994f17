//! The admin HTTP service (a second Pingora service, default 127.0.0.1:8081): a thin
//! `ServeHttp` adapter that reads the request (body capped in size and time) and hands it to
//! [`routes`].

pub mod guard;
pub mod routes;

use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub use guard::AdminGuard;
pub use routes::{AdminApi, AdminRequest, AdminResponse, MAX_BODY};

/// How long a client may take to send a whole request body; a slower one gets 408 and the
/// connection is closed (each connection is its own task, so a slow one blocks nobody else).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a body over [`MAX_BODY`] is read and thrown away before the connection is
/// closed on the client.
const DISCARD_LIMIT: usize = 1024 * 1024;

/// What reading the body gave.
enum Body {
    Complete(Vec<u8>),
    /// Over [`MAX_BODY`] (by its `Content-Length` or by what arrived); not kept.
    TooLarge,
    TimedOut,
    Failed(String),
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let text = |name: &str| {
            header
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut req = AdminRequest {
            method: header.method.clone(),
            path: header.uri.path().to_string(),
            query: header.uri.query().map(str::to_owned),
            authorization: text("authorization"),
            content_type: text("content-type"),
            body: None,
            host: text("host"),
            origin: text("origin"),
            local_ip: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        };
        let declared = text("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let resp = match read_body(session, declared).await {
            Body::Complete(body) => {
                req.body = Some(body);
                self.handle(req).await
            }
            // A transport limit, answered whoever asks and wherever: nothing over it is read.
            Body::TooLarge => {
                AdminResponse::error(413, format!("request body over {} KiB", MAX_BODY / 1024))
            }
            Body::TimedOut => AdminResponse::error(
                408,
                format!(
                    "request body not received within {}s",
                    BODY_TIMEOUT.as_secs()
                ),
            ),
            Body::Failed(e) => AdminResponse::error(400, format!("cannot read request body: {e}")),
        };
        to_http(resp, header_is_head(session))
    }
}

fn header_is_head(session: &ServerSession) -> bool {
    session.req_header().method == http::Method::HEAD
}

fn to_http(resp: AdminResponse, is_head: bool) -> Response<Vec<u8>> {
    let body = if is_head { Vec::new() } else { resp.body };
    let mut builder = Response::builder()
        .status(resp.status)
        .header("Content-Type", resp.content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store");
    if let Some(allow) = resp.allow {
        builder = builder.header("Allow", allow);
    }
    if resp.www_authenticate {
        builder = builder.header("WWW-Authenticate", "Bearer realm=\"portico\"");
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

/// Reads the whole body within [`BODY_TIMEOUT`]. Past [`MAX_BODY`] the rest is read and
/// thrown away, up to [`DISCARD_LIMIT`] more, so that the client can read the 413 (closing on
/// unread data would reset the connection); a body declared larger than that is refused
/// before anything is read. Whenever the body is not complete, the connection is closed after
/// the answer. Nothing is kept beyond [`MAX_BODY`].
async fn read_body(session: &mut ServerSession, declared: Option<u64>) -> Body {
    if declared.is_some_and(|n| n > (MAX_BODY + DISCARD_LIMIT) as u64) {
        session.set_keepalive(None);
        return Body::TooLarge;
    }
    let mut too_large = false;
    let read = async {
        let mut body = Vec::new();
        let mut discarded = 0;
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if too_large => {
                    discarded += chunk.len();
                    if discarded > DISCARD_LIMIT {
                        return Body::TooLarge;
                    }
                }
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_BODY => {
                    too_large = true;
                    body = Vec::new();
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) if too_large => return Body::TooLarge,
                Ok(None) => return Body::Complete(body),
                Err(e) => return Body::Failed(e.to_string()),
            }
        }
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(body) => body,
        Err(_) if too_large => Body::TooLarge,
        Err(_) => Body::TimedOut,
    };
    if !matches!(body, Body::Complete(_)) {
        session.set_keepalive(None);
    }
    body
}

//! The admin HTTP service (a second Pingora service, default 127.0.0.1:8081): a thin
//! `ServeHttp` adapter that reads the request (body capped) and hands it to [`routes`].

pub mod routes;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

pub use routes::{AdminApi, AdminRequest, AdminResponse, MAX_BODY};

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
        };
        req.body = read_body(session).await;
        let is_head = req.method == http::Method::HEAD;
        let resp = self.handle(req).await;
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
}

/// Reads the whole body, or `None` once it passes [`MAX_BODY`] (the rest is not read: the
/// connection is closed after the 413).
async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    session.set_keepalive(None);
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => {
                session.set_keepalive(None);
                return Some(body);
            }
        }
    }
}

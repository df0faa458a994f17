//! `--demo`: three small origins on 127.0.0.1:9001-9003, each answering with its own name,
//! so that balancing can be watched with curl on a fresh machine.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

/// Ports of the demo origins.
pub const DEMO_PORTS: [u16; 3] = [9001, 9002, 9003];

/// One demo origin: answers every request with its name.
pub struct DemoOrigin {
    name: String,
}

#[async_trait]
impl ServeHttp for DemoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let _ = session.drain_request_body().await;
        let body = format!("{}\n", self.name).into_bytes();
        Response::builder()
            .status(200)
            .header("Content-Type", "text/plain")
            .header("Content-Length", body.len())
            .header("X-Demo-Origin", self.name.as_str())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

/// The three demo origin services, ready to add to the server.
pub fn services() -> Vec<Service<DemoOrigin>> {
    DEMO_PORTS
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("demo-origin-{}", i + 1);
            let mut svc = Service::new(name.clone(), DemoOrigin { name });
            svc.add_tcp(&format!("127.0.0.1:{port}"));
            svc
        })
        .collect()
}

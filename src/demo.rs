//! `--demo`: three small origins on 127.0.0.1:9001-9003, each answering with its own name,
//! so that balancing can be watched with curl on a fresh machine.
//!
//! Each origin is a Pingora listening service wrapped in [`DemoService`], which declares
//! itself ready only once its socket accepts connections: the health checker depends on the
//! three, so its first round (which the proxy waits for) never finds them closed.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use log::warn;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::listening::Service;
use pingora::services::{Service as ServiceTrait, ServiceReadyNotifier, ServiceWithDependents};

/// Ports of the demo origins.
pub const DEMO_PORTS: [u16; 3] = [9001, 9002, 9003];

/// For tests only: `PORTICO_DEMO_PORTS=p1,p2,p3` moves the demo origins, so that test runs do
/// not depend on 9001-9003 being free on a shared machine.
pub const PORTS_ENV: &str = "PORTICO_DEMO_PORTS";

/// The demo origins' ports: [`DEMO_PORTS`], or those of [`PORTS_ENV`].
pub fn ports() -> Result<[u16; 3], String> {
    let Ok(text) = std::env::var(PORTS_ENV) else {
        return Ok(DEMO_PORTS);
    };
    let parsed: Vec<u16> = text
        .split(',')
        .map(|p| p.trim().parse::<u16>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{PORTS_ENV}={text:?}: expected three ports, e.g. 9001,9002,9003"))?;
    match parsed[..] {
        [a, b, c] if a > 0 && b > 0 && c > 0 => Ok([a, b, c]),
        _ => Err(format!(
            "{PORTS_ENV}={text:?}: expected three ports, e.g. 9001,9002,9003"
        )),
    }
}

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

/// How long a demo origin waits for its own socket before declaring itself ready anyway
/// (then the first health round may find it closed, as before; it is logged).
const BIND_DEADLINE: Duration = Duration::from_secs(10);
/// How often it checks meanwhile.
const BIND_POLL: Duration = Duration::from_millis(5);

/// One demo origin's listening service, ready (for its dependents) once it accepts
/// connections. Pingora's listening services declare themselves ready before they bind.
pub struct DemoService {
    inner: Service<DemoOrigin>,
    addr: SocketAddr,
}

#[async_trait]
impl ServiceWithDependents for DemoService {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let addr = self.addr;
        let name = ServiceTrait::name(&self.inner).to_string();
        // Connecting is the one way to see a socket in the listening state: the kernel
        // accepts into the backlog from `listen()` on, before Pingora's first `accept()`.
        let announce = async move {
            let deadline = tokio::time::Instant::now() + BIND_DEADLINE;
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if tokio::time::Instant::now() >= deadline {
                    warn!("{name}: not listening on {addr} after {BIND_DEADLINE:?}");
                    break;
                }
                tokio::time::sleep(BIND_POLL).await;
            }
            ready.notify_ready();
        };
        let serve = ServiceTrait::start_service(&mut self.inner, fds, shutdown, listeners_per_fd);
        futures::join!(serve, announce);
    }

    fn name(&self) -> &str {
        ServiceTrait::name(&self.inner)
    }

    fn threads(&self) -> Option<usize> {
        ServiceTrait::threads(&self.inner)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        ServiceTrait::listen_addresses(&self.inner)
    }
}

/// The three demo origin services on `ports`, ready to add to the server.
pub fn services(ports: [u16; 3]) -> Vec<DemoService> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let name = format!("demo-origin-{}", i + 1);
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let mut inner = Service::new(name.clone(), DemoOrigin { name });
            inner.add_tcp(&addr.to_string());
            DemoService { inner, addr }
        })
        .collect()
}

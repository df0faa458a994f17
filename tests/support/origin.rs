//! Origin servers for tests: real HTTP/1.1 servers (hyper) on 127.0.0.1, each on its own port.
//!
//! Routes: `/health` answers with the settable health status; `/slow?ms=N` waits N ms;
//! `/echo` answers JSON with method, path, query, headers and body length; `/upload` reads
//! the body streaming and answers its length; `/download?bytes=N` streams N bytes; `/upgrade`
//! with an `Upgrade` header switches protocols and echoes raw bytes; anything
//! else answers the origin's name (after the settable delay). Requests other than `/health`
//! are counted; a request whose connection closes before its answer counts as cancelled.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Shared counters and knobs of one origin.
#[derive(Default)]
pub struct OriginState {
    pub requests: AtomicU64,
    pub health_checks: AtomicU64,
    pub in_progress: AtomicI64,
    pub cancelled: AtomicU64,
    pub completed: AtomicU64,
    pub health_status: AtomicU16,
    /// The status of ordinary answers (not `/health`); 200 unless set.
    pub status: AtomicU16,
    pub delay_ms: AtomicU64,
}

pub struct Origin {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
    task: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin on a port no other test is given (see [`super::free_port`]).
    pub async fn start(name: &str) -> Origin {
        Self::serve_on(name, super::local_listener().await)
    }

    /// Starts an origin on `port`, e.g. to restart one that was stopped.
    pub async fn start_on(name: &str, port: u16) -> Origin {
        Self::start_at(name, std::net::Ipv4Addr::LOCALHOST, port).await
    }

    /// Starts an origin on `ip:port` (another loopback address, e.g. 127.0.0.2, on Linux).
    pub async fn start_at(name: &str, ip: std::net::Ipv4Addr, port: u16) -> Origin {
        let listener = TcpListener::bind((ip, port)).await.expect("bind origin");
        Self::serve_on(name, listener)
    }

    fn serve_on(name: &str, listener: TcpListener) -> Origin {
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(OriginState::default());
        state.health_status.store(200, Ordering::SeqCst);
        state.status.store(200, Ordering::SeqCst);
        let name = name.to_string();
        let task = tokio::spawn(serve(listener, name.clone(), state.clone()));
        Origin {
            name,
            addr,
            state,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn cancelled(&self) -> u64 {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    pub fn in_progress(&self) -> i64 {
        self.state.in_progress.load(Ordering::SeqCst)
    }

    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    /// Answers ordinary requests with `status` from now on (`/health` is unaffected).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops accepting and drops every connection (the port is closed).
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, name: String, state: Arc<OriginState>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (name, state) = (name.clone(), state.clone());
        conns.spawn(async move {
            let svc = service_fn(move |req| handle(req, name.clone(), state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

/// Counts a request as cancelled if dropped before `done()`.
struct Tracker {
    state: Arc<OriginState>,
    done: bool,
}

impl Tracker {
    fn new(state: &Arc<OriginState>) -> Tracker {
        state.in_progress.fetch_add(1, Ordering::SeqCst);
        Tracker {
            state: state.clone(),
            done: false,
        }
    }
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.state.in_progress.fetch_sub(1, Ordering::SeqCst);
        if self.done {
            self.state.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(
    req: Request<Incoming>,
    name: String,
    state: Arc<OriginState>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = state.health_status.load(Ordering::SeqCst);
        let mut resp = Response::new(full(format!("{name} health {status}\n")));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        return Ok(resp);
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let tracker = Tracker::new(&state);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let resp = match path.as_str() {
        "/upgrade" if req.headers().contains_key(hyper::header::UPGRADE) => {
            // Switches protocols and then echoes every byte back on the raw connection.
            let protocol = req.headers()[hyper::header::UPGRADE].clone();
            tokio::spawn(async move {
                if let Ok(upgraded) = hyper::upgrade::on(req).await {
                    let mut io = TokioIo::new(upgraded);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            let mut resp = Response::new(full(Bytes::new()));
            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut().insert(
                hyper::header::CONNECTION,
                "upgrade".parse().expect("static"),
            );
            resp.headers_mut().insert(hyper::header::UPGRADE, protocol);
            resp
        }
        "/hop-reply" => {
            // A reply carrying every kind of hop-by-hop header, for the gateway to strip.
            let mut resp = Response::new(full(format!("{name}\n")));
            for (k, v) in [
                ("connection", "keep-alive, X-Private"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic realm=\"origin\""),
                ("trailer", "X-Checksum"),
                ("x-kept", "yes"),
            ] {
                resp.headers_mut()
                    .insert(k, v.parse().expect("static header"));
            }
            resp
        }
        "/close-reply" => {
            // The backend ends its own connection: none of the client's business.
            let mut resp = Response::new(full(format!("{name}\n")));
            resp.headers_mut()
                .insert("connection", "close".parse().expect("static header"));
            resp
        }
        "/slow" => {
            let ms = query_u64(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("{name}\n")))
        }
        "/echo" => {
            let method = req.method().to_string();
            let query = req.uri().query().map(str::to_owned);
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                    )
                })
                .collect();
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let len = body.map(|b| b.len()).unwrap_or(0);
            let doc = serde_json::json!({
                "origin": name, "method": method, "path": path, "query": query,
                "headers": headers, "body_len": len,
            });
            let mut resp = Response::new(full(doc.to_string()));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().expect("static"));
            resp.headers_mut()
                .insert("x-origin-reply", "yes".parse().expect("static"));
            resp
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                    // The body broke off: the request was cancelled, not completed.
                    Err(_) => return Ok(Response::new(full("incomplete upload\n"))),
                }
            }
            Response::new(full(total.to_string()))
        }
        "/download" => {
            let n = query_u64(&req, "bytes").unwrap_or(0);
            const CHUNK: u64 = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
            let stream = futures_util::stream::iter((0..n.div_ceil(CHUNK)).map(move |i| {
                let len = CHUNK.min(n - i * CHUNK) as usize;
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
            }));
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert("content-length", n.to_string().parse().expect("number"));
            resp
        }
        _ => {
            let mut resp = Response::new(full(format!("{name}\n")));
            resp.headers_mut()
                .insert("x-origin", name.parse().expect("ascii name"));
            let status = state.status.load(Ordering::SeqCst);
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
            resp
        }
    };
    tracker.done();
    Ok(resp)
}

/// Accepts connections and never answers (holds them open until stopped).
pub struct SilentOrigin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentOrigin {
    pub async fn start() -> SilentOrigin {
        let listener = super::local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        SilentOrigin { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

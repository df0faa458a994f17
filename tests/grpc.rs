//! gRPC through Portico: h2c clients and h2c backends (real tonic peers), calls balanced per
//! HTTP/2 stream, server streaming, statuses and trailers as the backend sent them, the gRPC
//! health check; and HTTP/1.1 and h2c requests on the same listener.

mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;

use support::{client, eventually, local_listener, Gateway, GatewayBuilder, Origin};

/// The request of the test service `test.Echo` (declared by hand: no protoc).
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    message: String,
    /// Non-zero: end the call with this gRPC status code, with `message` as its message.
    #[prost(int32, tag = "2")]
    fail_code: i32,
    /// `Stream`: how many replies before the end.
    #[prost(uint32, tag = "3")]
    count: u32,
    /// Wait until the origin is released before answering.
    #[prost(bool, tag = "4")]
    hold: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(string, tag = "1")]
    message: String,
    /// The origin that answered.
    #[prost(string, tag = "2")]
    server: String,
    #[prost(uint32, tag = "3")]
    seq: u32,
}

/// `test.Echo`: `Say` (unary) and `Stream` (server streaming), written as tonic's codegen
/// would write them.
#[derive(Clone)]
struct EchoService {
    name: Arc<str>,
    calls: Arc<AtomicU64>,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl EchoService {
    async fn wait_if_held(&self, req: &EchoRequest) {
        if req.hold {
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
    }

    fn failure(&self, req: &EchoRequest) -> Status {
        let mut status = Status::new(Code::from(req.fail_code), req.message.clone());
        status
            .metadata_mut()
            .insert("x-failed-by", self.name.parse().expect("ascii name"));
        status
    }
}

impl tonic::server::NamedService for EchoService {
    const NAME: &'static str = "test.Echo";
}

impl<B> tonic::codegen::Service<http::Request<B>> for EchoService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        let codec = tonic_prost::ProstCodec::default;
        match req.uri().path() {
            "/test.Echo/Say" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(codec());
                Ok(grpc.unary(Say(this), req).await)
            }),
            "/test.Echo/Stream" => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(codec());
                Ok(grpc.server_streaming(Streamer(this), req).await)
            }),
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                response
                    .headers_mut()
                    .insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                Ok(response)
            }),
        }
    }
}

struct Say(EchoService);

impl tonic::server::UnaryService<EchoRequest> for Say {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let req = request.into_inner();
            svc.wait_if_held(&req).await;
            if req.fail_code != 0 {
                return Err(svc.failure(&req));
            }
            Ok(Response::new(EchoReply {
                message: req.message,
                server: svc.name.to_string(),
                seq: 0,
            }))
        })
    }
}

struct Streamer(EchoService);

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

impl tonic::server::ServerStreamingService<EchoRequest> for Streamer {
    type Response = EchoReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let req = request.into_inner();
            let server = svc.name.to_string();
            let message = req.message.clone();
            let replies = (0..req.count).map(move |seq| {
                Ok(EchoReply {
                    message: format!("{message} #{seq}"),
                    server: server.clone(),
                    seq,
                })
            });
            let end = (req.fail_code != 0).then(|| Err(svc.failure(&req)));
            let stream: ReplyStream = Box::pin(futures_util::stream::iter(replies.chain(end)));
            Ok(Response::new(stream))
        })
    }
}

/// A tonic server on its own port: `test.Echo` and `grpc.health.v1.Health` over h2c, or over
/// TLS (ALPN `h2`) with a certificate for `localhost`.
struct GrpcOrigin {
    name: String,
    addr: std::net::SocketAddr,
    tls: bool,
    calls: Arc<AtomicU64>,
    health: tonic_health::server::HealthReporter,
    release: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcOrigin {
    async fn start(name: &str) -> GrpcOrigin {
        Self::start_with(name, None).await
    }

    /// A gRPC server over TLS with `cert`, whose URL is `https://localhost:<port>`.
    async fn start_tls(name: &str, cert: &TestCert) -> GrpcOrigin {
        Self::start_with(name, Some(cert)).await
    }

    async fn start_with(name: &str, tls: Option<&TestCert>) -> GrpcOrigin {
        let mut server = Server::builder();
        if let Some(cert) = tls {
            let identity = tonic::transport::Identity::from_pem(&cert.cert_pem, &cert.key_pem);
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .expect("server TLS config");
        }
        let listener = local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let (health, health_service) = tonic_health::server::health_reporter();
        let (release, gate) = tokio::sync::watch::channel(false);
        let calls = Arc::new(AtomicU64::new(0));
        let echo = EchoService {
            name: name.into(),
            calls: calls.clone(),
            gate,
        };
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(s, _)| s);
            Some((next, l))
        });
        let task = tokio::spawn(async move {
            let served = server
                .add_service(health_service)
                .add_service(echo)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                eprintln!("gRPC origin stopped: {e}");
            }
        });
        GrpcOrigin {
            name: name.to_string(),
            addr,
            tls: tls.is_some(),
            calls,
            health,
            release,
            task,
        }
    }

    /// The backend URL Portico is given.
    fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("h2c://{}", self.addr)
        }
    }

    /// `test.Echo` calls received (health checks not counted).
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn set_serving(&self, status: ServingStatus) {
        self.health.set_service_status("", status).await;
    }

    /// Lets every held call answer.
    fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test CA's certificate (PEM, for `ca_file`) and a `localhost` server certificate it signed.
struct TestCert {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl TestCert {
    fn new() -> TestCert {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
        TestCert {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The `ca_file` line for a gateway, with the CA written under `dir`.
    fn ca_file_yaml(&self, dir: &std::path::Path) -> String {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write ca");
        format!("ca_file: {}\n", path.display())
    }

    /// An HTTPS origin that offers only HTTP/1.1 by ALPN and answers with the HTTP version
    /// of the request it got.
    async fn http1_origin(&self) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert pem");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .expect("key pem");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("origin cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        let version = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(version)),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (addr, task)
    }
}

/// A gateway over `origins` with gRPC health checks.
async fn gateway(origins: &[&GrpcOrigin]) -> Gateway {
    let mut b = GatewayBuilder {
        health_path: None,
        health_grpc: true,
        ..GatewayBuilder::default()
    };
    for o in origins {
        b = b.backend(o.url());
    }
    let gw = b.start().await;
    for o in origins {
        assert!(
            gw.wait_alive(&o.url(), true, Duration::from_secs(10)).await,
            "{} never passed its gRPC health check; log:\n{}",
            o.name,
            gw.log()
        );
    }
    gw
}

/// One HTTP/2 connection (prior knowledge, as gRPC clients connect) to the gateway.
async fn channel(gw: &Gateway) -> Channel {
    Channel::from_shared(gw.url(""))
        .expect("uri")
        .connect()
        .await
        .expect("h2c connection to the gateway")
}

fn path(method: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(method)
}

async fn say(ch: &Channel, req: EchoRequest) -> Result<Response<EchoReply>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
    grpc.unary(
        Request::new(req),
        path("/test.Echo/Say"),
        tonic_prost::ProstCodec::default(),
    )
    .await
}

fn message(text: &str) -> EchoRequest {
    EchoRequest {
        message: text.into(),
        ..EchoRequest::default()
    }
}

/// Every reply and the status that ended the stream.
async fn stream(ch: &Channel, req: EchoRequest) -> (Vec<EchoReply>, Result<(), Status>) {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.expect("channel ready");
    let response = grpc
        .server_streaming(
            Request::new(req),
            path("/test.Echo/Stream"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    let mut replies = Vec::new();
    let mut stream = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return (replies, Err(status)),
    };
    loop {
        match stream.message().await {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => return (replies, Ok(())),
            Err(status) => return (replies, Err(status)),
        }
    }
}

#[tokio::test]
async fn unary_calls_on_one_connection_are_balanced_per_call() {
    let (a, b) = (GrpcOrigin::start("a").await, GrpcOrigin::start("b").await);
    let gw = gateway(&[&a, &b]).await;
    let ch = channel(&gw).await;
    let mut by_server = std::collections::HashMap::<String, u32>::new();
    for i in 0..20 {
        let text = format!("hello {i}");
        let reply = say(&ch, message(&text))
            .await
            .unwrap_or_else(|s| panic!("call {i} failed: {s:?}; log:\n{}", gw.log()))
            .into_inner();
        assert_eq!(reply.message, text);
        *by_server.entry(reply.server).or_default() += 1;
    }
    // Round-robin per call: one connection, yet both backends answer half the calls.
    assert_eq!(by_server.get("a"), Some(&10), "{by_server:?}");
    assert_eq!(by_server.get("b"), Some(&10), "{by_server:?}");
    assert_eq!((a.calls(), b.calls()), (10, 10));
}

#[tokio::test]
async fn concurrent_calls_count_as_streams_in_flight() {
    let (a, b) = (GrpcOrigin::start("a").await, GrpcOrigin::start("b").await);
    let gw = gateway(&[&a, &b]).await;
    let ch = channel(&gw).await;
    let held = EchoRequest {
        hold: true,
        ..message("held")
    };
    let calls: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn({
                let (ch, req) = (ch.clone(), held.clone());
                async move { say(&ch, req).await }
            })
        })
        .collect();
    let in_flight = || async {
        let status = gw.status().await;
        let per_backend: Vec<u64> = status["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| b["current_connections"].as_u64().expect("count"))
            .collect();
        per_backend
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            in_flight().await == vec![3, 3]
        })
        .await,
        "six calls on one connection are not six streams in flight, 3 per backend: {:?}",
        in_flight().await
    );
    a.release();
    b.release();
    for call in calls {
        let reply = call.await.expect("task").expect("held call answered");
        assert_eq!(reply.into_inner().message, "held");
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            in_flight().await == vec![0, 0]
        })
        .await,
        "{:?}",
        in_flight().await
    );
}

#[tokio::test]
async fn a_server_stream_of_1000_messages_arrives_whole_and_in_order() {
    let a = GrpcOrigin::start("a").await;
    let gw = gateway(&[&a]).await;
    let ch = channel(&gw).await;
    let (replies, end) = stream(
        &ch,
        EchoRequest {
            count: 1000,
            ..message("part")
        },
    )
    .await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(replies.len(), 1000);
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.seq as usize, i);
        assert_eq!(r.message, format!("part #{i}"));
    }

    // A stream that ends in an error: the status comes in the trailers, after the messages.
    let (replies, end) = stream(
        &ch,
        EchoRequest {
            count: 10,
            fail_code: Code::ResourceExhausted as i32,
            ..message("quota spent after 10")
        },
    )
    .await;
    assert_eq!(replies.len(), 10);
    let status = end.expect_err("the stream ends with the backend's status");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "quota spent after 10");
    assert_eq!(
        status
            .metadata()
            .get("x-failed-by")
            .map(|v| v.to_str().ok()),
        Some(Some("a")),
        "custom trailer lost: {:?}",
        status.metadata()
    );
}

#[tokio::test]
async fn an_error_status_reaches_the_client_as_sent() {
    let a = GrpcOrigin::start("a").await;
    let gw = gateway(&[&a]).await;
    let ch = channel(&gw).await;
    let text = "no such order: 42 (ünïcode ✓, 100% sure)";
    let status = say(
        &ch,
        EchoRequest {
            fail_code: Code::NotFound as i32,
            ..message(text)
        },
    )
    .await
    .expect_err("the backend fails the call");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), text);
    assert_eq!(
        status
            .metadata()
            .get("x-failed-by")
            .map(|v| v.to_str().ok()),
        Some(Some("a"))
    );
    // The connection and the backend are still fine.
    let ok = say(&ch, message("after")).await.expect("next call");
    assert_eq!(ok.into_inner().message, "after");
    assert_eq!(gw.backend(&a.url()).await.expect("listed")["alive"], true);
}

#[tokio::test]
async fn a_backend_whose_health_service_says_not_serving_is_taken_out() {
    let (a, b) = (GrpcOrigin::start("a").await, GrpcOrigin::start("b").await);
    let gw = gateway(&[&a, &b]).await;
    a.set_serving(ServingStatus::NotServing).await;
    assert!(
        gw.wait_alive(&a.url(), false, Duration::from_secs(10))
            .await,
        "NOT_SERVING backend still alive; log:\n{}",
        gw.log()
    );
    let entry = gw.backend(&a.url()).await.expect("listed");
    let reason = entry["last_change_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("NOT_SERVING"), "{entry}");
    assert_eq!(entry["protocol"], "h2");
    assert!(gw.log().contains(&format!("backend {} is DOWN", a.url())));

    let ch = channel(&gw).await;
    let before = a.calls();
    for _ in 0..6 {
        let reply = say(&ch, message("x")).await.expect("call").into_inner();
        assert_eq!(reply.server, "b");
    }
    assert_eq!(a.calls(), before);

    a.set_serving(ServingStatus::Serving).await;
    assert!(
        gw.wait_alive(&a.url(), true, Duration::from_secs(10)).await,
        "SERVING again, yet still down"
    );
}

#[tokio::test]
async fn http1_and_h2c_requests_share_the_listener() {
    let origin = Origin::start("plain").await;
    let gw = GatewayBuilder::default()
        .backend(origin.url())
        .start()
        .await;
    let h1 = client()
        .get(gw.url("/hello"))
        .send()
        .await
        .expect("HTTP/1.1 request");
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.text().await.expect("body"), "plain\n");

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = h2.get(gw.url("/hello")).send().await.expect("h2c request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "plain\n");

    // A request shorter than the HTTP/2 preface (24 bytes) is answered at once: telling the
    // protocols apart does not wait for bytes that will never come.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect");
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
        .await
        .expect("an 18-byte request was not answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(answer.ends_with("plain\n"), "{answer}");
    assert_eq!(origin.requests(), 3);
}

/// Adds `url` with `protocol: h2` through the admin API; returns the backend as answered.
async fn add_h2_backend(gw: &Gateway, url: &str) -> serde_json::Value {
    let added = client()
        .post(gw.admin("/backends"))
        .json(&serde_json::json!({"url": url, "protocol": "h2"}))
        .send()
        .await
        .expect("POST /backends");
    assert_eq!(added.status(), 201);
    let backend: serde_json::Value = added.json().await.expect("JSON");
    assert_eq!(backend["protocol"], "h2");
    assert!(
        gw.wait_alive(url, true, Duration::from_secs(10)).await,
        "{url} never came up; log:\n{}",
        gw.log()
    );
    backend
}

#[tokio::test]
async fn an_https_backend_with_protocol_h2_carries_grpc_and_is_stored_so() {
    let cert = TestCert::new();
    let files = tempfile::tempdir().expect("tempdir");
    let state = files.path().join("state.json");
    let origin = GrpcOrigin::start_tls("tls", &cert).await;
    let gw = GatewayBuilder {
        health_path: None,
        health_grpc: true,
        state_file: Some(state.clone()),
        extra: cert.ca_file_yaml(files.path()),
        ..GatewayBuilder::default()
    }
    .start()
    .await;
    add_h2_backend(&gw, &origin.url()).await;
    let ch = channel(&gw).await;
    let (replies, end) = stream(
        &ch,
        EchoRequest {
            count: 100,
            ..message("over TLS")
        },
    )
    .await;
    assert!(end.is_ok(), "{end:?}; log:\n{}", gw.log());
    assert_eq!(replies.len(), 100);
    assert!(replies.iter().all(|r| r.server == "tls"));
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state file")).expect("JSON");
    assert_eq!(stored["backends"][0]["url"], origin.url());
    assert_eq!(stored["backends"][0]["protocol"], "h2");
}

#[tokio::test]
async fn an_https_backend_that_declines_h2_is_spoken_to_in_http1() {
    let cert = TestCert::new();
    let files = tempfile::tempdir().expect("tempdir");
    let (addr, _task) = cert.http1_origin().await;
    let url = format!("https://localhost:{}", addr.port());
    let gw = GatewayBuilder {
        extra: cert.ca_file_yaml(files.path()),
        ..GatewayBuilder::default()
    }
    .start()
    .await;
    add_h2_backend(&gw, &url).await;
    for _ in 0..3 {
        let r = client()
            .get(gw.url("/version"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.expect("body"), "HTTP/1.1");
    }
}

#[tokio::test]
async fn a_call_with_no_backend_available_fails_as_unavailable() {
    let gw = GatewayBuilder::default().start().await;
    let ch = channel(&gw).await;
    let status = say(&ch, message("anyone?"))
        .await
        .expect_err("no backend to answer");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "no backend available");
    // Counted as the 503 it stands for, though it went out as a gRPC answer.
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.log().contains("/test.Echo/Say\" 503 - ")
        })
        .await,
        "access log:\n{}",
        gw.log()
    );
}

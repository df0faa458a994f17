//! TLS: the HTTPS listener (rustls, HTTP/1.1 and HTTP/2 via ALPN) with a certificate from a
//! CA generated in the test, HTTPS backends verified against `ca_file` with SNI from the URL,
//! and `-t` refusing bad certificate, key or CA files.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A certificate authority generated for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM and DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn(name);
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-signed ca");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA.
    fn issue(&self, names: &[&str]) -> Leaf {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name = dn(names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("signed leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write pem");
    path
}

/// The `tls:` block for a listener on `port` with these files.
fn tls_yaml(port: u16, cert: &Path, key: &Path) -> String {
    format!(
        "tls:\n  listen: \"127.0.0.1:{port}\"\n  cert: {}\n  key: {}\n",
        cert.display(),
        key.display()
    )
}

/// A client that trusts only `ca_pem` and reaches `localhost` at 127.0.0.1:`port`.
fn tls_client(ca_pem: &str, port: u16, http1_only: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca pem");
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .no_proxy()
        .timeout(Duration::from_secs(20));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("tls client")
}

/// An HTTPS origin (tokio-rustls + hyper, HTTP/1.1) that records the SNI of every handshake
/// and counts requests other than `/health`.
struct TlsOrigin {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl TlsOrigin {
    async fn start(leaf: &Leaf) -> TlsOrigin {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert_der.clone()], key)
            .expect("origin cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let sni = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (requests.clone(), sni.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (config, r, s) = (config.clone(), r.clone(), s.clone());
                tokio::spawn(async move {
                    // Record the SNI from the ClientHello, before the certificate is judged.
                    let lazy = tokio_rustls::LazyConfigAcceptor::new(
                        rustls::server::Acceptor::default(),
                        tcp,
                    );
                    let Ok(start) = lazy.await else {
                        return;
                    };
                    let name = start.client_hello().server_name().map(str::to_owned);
                    s.lock().expect("sni list").push(name);
                    let Ok(tls) = start.into_stream(config.clone()).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let r = r.clone();
                        async move {
                            if req.uri().path() != "/health" {
                                r.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                "tls-origin\n",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsOrigin {
            addr,
            requests,
            sni,
            task,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn sni(&self) -> Vec<Option<String>> {
        self.sni.lock().expect("sni list").clone()
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn port_open(port: u16) -> bool {
    eventually(DEADLINE, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

/// A gateway with a TLS listener (certificate for `localhost` and 127.0.0.1 from a test CA) in
/// front of one plain origin, started with `rust_log` when given; the TLS port is open.
struct TlsGateway {
    ca: Ca,
    origin: Origin,
    gw: Gateway,
    tls_port: u16,
    _files: tempfile::TempDir,
}

async fn tls_gateway(rust_log: Option<&str>) -> TlsGateway {
    let ca = Ca::new("Portico Test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let files = tempfile::tempdir().expect("tempdir");
    let cert = write(files.path(), "cert.pem", &leaf.cert_pem);
    let key = write(files.path(), "key.pem", &leaf.key_pem);
    let origin = Origin::start("plain").await;
    let tls_port = free_port();
    let mut builder = GatewayBuilder::default().backend(origin.url());
    builder.extra = tls_yaml(tls_port, &cert, &key);
    builder.rust_log = rust_log.map(str::to_owned);
    let gw = builder.start().await;
    assert!(
        port_open(tls_port).await,
        "TLS port closed; log:\n{}",
        gw.log()
    );
    TlsGateway {
        ca,
        origin,
        gw,
        tls_port,
        _files: files,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http1_and_http2_to_a_client_trusting_the_test_ca() {
    let TlsGateway {
        ca,
        origin,
        gw,
        tls_port,
        _files,
    } = tls_gateway(None).await;

    let url = format!("https://localhost:{tls_port}/echo");
    let h1 = tls_client(&ca.pem(), tls_port, true)
        .get(&url)
        .send()
        .await
        .expect("HTTP/1.1 over TLS");
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    let echo: serde_json::Value = h1.json().await.expect("echo json");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["origin"], "plain");

    let h2 = tls_client(&ca.pem(), tls_port, false)
        .get(&url)
        .send()
        .await
        .expect("HTTP/2 over TLS");
    assert_eq!(h2.status(), 200);
    assert_eq!(
        h2.version(),
        reqwest::Version::HTTP_2,
        "ALPN did not pick h2"
    );
    let echo: serde_json::Value = h2.json().await.expect("echo json");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    let plain: serde_json::Value = client()
        .get(gw.url("/echo"))
        .send()
        .await
        .expect("plain request")
        .json()
        .await
        .expect("echo json");
    assert_eq!(plain["headers"]["x-forwarded-proto"], "http");

    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], tls_port)))
        .no_proxy()
        .build()
        .expect("client");
    assert!(
        stranger.get(&url).send().await.is_err(),
        "a client that does not trust the test CA must fail the handshake"
    );
    assert_eq!(origin.requests(), 3);
}

/// Starts a gateway over one HTTPS backend `https://localhost:<port>`, with `ca_file` when given.
async fn gateway_over_https_backend(origin: &TlsOrigin, ca_file: Option<&Path>) -> Gateway {
    let mut builder =
        GatewayBuilder::default().backend(format!("https://localhost:{}", origin.addr.port()));
    if let Some(ca) = ca_file {
        builder.extra = format!("ca_file: {}\n", ca.display());
    }
    builder.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backend_with_a_certificate_from_an_untrusted_ca_is_refused() {
    let rogue = Ca::new("Rogue CA");
    let origin = TlsOrigin::start(&rogue.issue(&["localhost", "127.0.0.1"])).await;
    let trusted = Ca::new("Trusted CA");
    let files = tempfile::tempdir().expect("tempdir");
    let ca_file = write(files.path(), "ca.pem", &trusted.pem());
    let gw = gateway_over_https_backend(&origin, Some(&ca_file)).await;
    let url = format!("https://localhost:{}", origin.addr.port());

    let probed = eventually(DEADLINE, || async {
        !origin.sni().is_empty()
            && gw
                .backend(&url)
                .await
                .is_some_and(|b| b["last_change_reason"].is_string())
    })
    .await;
    assert!(probed, "backend never probed; log:\n{}", gw.log());
    let b = gw.backend(&url).await.expect("backend listed");
    assert_eq!(b["alive"], false, "{b}");
    let sni = origin.sni();
    assert!(
        sni.iter().all(|s| s.as_deref() == Some("localhost")),
        "SNI seen by the backend: {sni:?}"
    );
    let reason = b["last_change_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("TLS") && reason.contains("certificate"),
        "reason: {reason}"
    );

    for _ in 0..5 {
        let r = client().get(gw.url("/")).send().await.expect("request");
        assert!(r.status().is_server_error(), "status {}", r.status());
        let body = r.text().await.expect("body");
        assert!(!body.contains("tls-origin"), "origin answer leaked: {body}");
    }
    assert_eq!(origin.requests(), 0, "the untrusted backend served traffic");
    assert!(gw.log().contains("is DOWN"), "log:\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backend_trusted_through_ca_file_serves_with_sni_from_the_url() {
    let ca = Ca::new("Backend CA");
    let origin = TlsOrigin::start(&ca.issue(&["localhost"])).await;
    let files = tempfile::tempdir().expect("tempdir");
    let ca_file = write(files.path(), "ca.pem", &ca.pem());
    let gw = gateway_over_https_backend(&origin, Some(&ca_file)).await;
    let url = format!("https://localhost:{}", origin.addr.port());

    assert!(
        gw.wait_alive(&url, true, DEADLINE).await,
        "trusted HTTPS backend never UP: {:?}; log:\n{}",
        gw.backend(&url).await,
        gw.log()
    );
    for _ in 0..5 {
        let r = client().get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.expect("body"), "tls-origin\n");
    }
    assert_eq!(origin.requests(), 5);
    let sni = origin.sni();
    assert!(!sni.is_empty());
    assert!(
        sni.iter().all(|s| s.as_deref() == Some("localhost")),
        "SNI seen by the backend: {sni:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backend_by_ip_is_verified_against_the_ip() {
    // The certificate names only `localhost`: a backend reached as https://127.0.0.1 must be
    // refused even though its CA is trusted (verification is not skipped for IP addresses).
    let ca = Ca::new("Backend CA");
    let origin = TlsOrigin::start(&ca.issue(&["localhost"])).await;
    let files = tempfile::tempdir().expect("tempdir");
    let ca_file = write(files.path(), "ca.pem", &ca.pem());
    let url = format!("https://127.0.0.1:{}", origin.addr.port());
    let mut builder = GatewayBuilder::default().backend(url.clone());
    builder.extra = format!("ca_file: {}\n", ca_file.display());
    let gw = builder.start().await;

    let probed = eventually(DEADLINE, || async {
        gw.backend(&url)
            .await
            .is_some_and(|b| b["last_change_reason"].is_string())
    })
    .await;
    assert!(probed, "backend never probed; log:\n{}", gw.log());
    assert_eq!(gw.backend(&url).await.expect("listed")["alive"], false);
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert!(r.status().is_server_error());
    assert_eq!(origin.requests(), 0);
    let sni = origin.sni();
    assert!(!sni.is_empty(), "the backend saw no handshake");
    assert!(
        sni.iter().all(Option::is_none),
        "no SNI is sent for an IP address: {sni:?}"
    );
}

/// `portico -t` on a configuration whose `tls:` block or `ca_file` uses these files.
fn check_with(extra: String) -> (bool, String) {
    // One backend: `-t` refuses a configuration with no backends and no store.
    let builder = GatewayBuilder {
        extra,
        ..Default::default()
    }
    .backend("http://127.0.0.1:9");
    let out = builder.check();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_refuses_missing_or_invalid_certificate_key_and_ca_files() {
    let ca = Ca::new("Check CA");
    let leaf = ca.issue(&["localhost"]);
    let other = ca.issue(&["localhost"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cert = write(d, "cert.pem", &leaf.cert_pem);
    let key = write(d, "key.pem", &leaf.key_pem);
    let other_key = write(d, "other-key.pem", &other.key_pem);
    let garbage = write(d, "garbage.pem", "this is not PEM\n");
    let missing = d.join("missing.pem");
    let port = free_port();

    let (ok, text) = check_with(tls_yaml(port, &cert, &key));
    assert!(ok, "a valid certificate and key must pass -t: {text}");

    let cases = [
        ("missing cert", tls_yaml(port, &missing, &key), "tls.cert"),
        ("missing key", tls_yaml(port, &cert, &missing), "tls.key"),
        ("garbage cert", tls_yaml(port, &garbage, &key), "tls.cert"),
        ("garbage key", tls_yaml(port, &cert, &garbage), "tls.key"),
        ("key as cert", tls_yaml(port, &key, &key), "tls.cert"),
        ("cert as key", tls_yaml(port, &cert, &cert), "tls.key"),
        (
            "key of another cert",
            tls_yaml(port, &cert, &other_key),
            "tls.key",
        ),
        (
            "garbage ca_file",
            format!("ca_file: {}\n", garbage.display()),
            "ca_file",
        ),
        (
            "missing ca_file",
            format!("ca_file: {}\n", missing.display()),
            "ca_file",
        ),
    ];
    for (what, extra, key_name) in cases {
        let (ok, text) = check_with(extra);
        assert!(!ok, "{what}: -t accepted it: {text}");
        assert!(
            text.contains(key_name),
            "{what}: message does not name {key_name}: {text}"
        );
    }
}

/// A handshake with `openssl s_client` sending `sni` as the server name; whether it completed.
fn handshake_with_sni(port: u16, sni: &str) -> bool {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-brief", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", sni])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client (package openssl)");
    String::from_utf8_lossy(&out.stderr).contains("CONNECTION ESTABLISHED")
}

/// Starts a TLS gateway with `rust_log`, makes three handshakes that send an IP address as
/// SNI (as `wrk https://127.0.0.1` does), and returns the gateway's log.
async fn log_after_ip_sni(rust_log: Option<&str>) -> String {
    let TlsGateway { gw, tls_port, .. } = tls_gateway(rust_log).await;
    for _ in 0..3 {
        assert!(
            handshake_with_sni(tls_port, "127.0.0.1"),
            "handshake failed; log:\n{}",
            gw.log()
        );
    }
    gw.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_an_ip_address_as_sni_do_not_fill_the_log() {
    const WARNING: &str = "ignoring IP address presented as hostname";
    // The tests' default RUST_LOG is `info`: rustls stays quiet.
    let quiet = log_after_ip_sni(None).await;
    assert!(!quiet.contains(WARNING), "log:\n{quiet}");
    // Named in RUST_LOG, its warnings are there: the handshakes did send an IP as SNI. (rustls
    // logs it, unbuffered, while it reads the ClientHello: before the server answers, so before
    // `s_client` reports the connection; the log is complete when it is read.)
    let named = log_after_ip_sni(Some("info,rustls=warn")).await;
    assert!(named.contains(WARNING), "log:\n{named}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_abandon_the_handshake_are_not_logged_as_errors() {
    use tokio::io::AsyncWriteExt;
    // The listener's module at debug, so that the lines are there to inspect.
    let TlsGateway { gw, tls_port, .. } =
        tls_gateway(Some("info,pingora_core::services::listening=debug")).await;
    for garbage in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
            .await
            .expect("connect");
        s.write_all(garbage).await.expect("write");
        drop(s);
    }
    const LINE: &str = "Downstream handshake error";
    assert!(
        eventually(Duration::from_secs(10), || async {
            gw.log().matches(LINE).count() >= 2
        })
        .await,
        "log:\n{}",
        gw.log()
    );
    // Client behaviour, logged at debug: not shown at the default `info`, and never as errors.
    let log = gw.log();
    for line in log.lines().filter(|l| l.contains(LINE)) {
        assert!(line.contains(" DEBUG "), "{line}");
    }
}

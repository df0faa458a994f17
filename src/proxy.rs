//! The proxy: Pingora's `ProxyHttp` phases as Portico uses them. Selection goes to the
//! [`Balancer`]; the request context owns the backend [`Lease`], so in-flight accounting ends
//! with the request whatever way it ends.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorSource;

use crate::access_log::{self, AccessRecord, REQUEST_ID_HEADER};
use crate::backend::Observation;
use crate::backend::{Lease, Tried};
use crate::balancer::{Balancer, LoadBalancer, RequestKey};
use crate::client_policy::{single_content_length, ClientPolicy};
use crate::config::{format_duration, AccessLogFormat, StrategyKind};
use crate::control::{Phase, PhaseCell};
use crate::grpc_reply;
use crate::health::probe_reason;
use crate::metrics::Metrics;

/// Headers that describe one hop and are never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// The proxy's settings from the configuration, shared by the listeners. A reload swaps them
/// whole ([`SharedSettings`]); each request reads them once per phase, lock-free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    pub retries: u32,
    pub access_log: AccessLogFormat,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Replaces `read_timeout`, on both sides, for a WebSocket upgrade request.
    pub websocket_idle: Duration,
    pub sticky_cookie: String,
    /// Client timeouts and limits.
    pub client: ClientPolicy,
}

/// The proxy settings in force, swapped by a configuration reload.
pub type SharedSettings = Arc<ArcSwap<ProxySettings>>;

pub struct Proxy {
    balancer: Arc<Balancer>,
    metrics: Arc<Metrics>,
    settings: SharedSettings,
    /// This listener terminates TLS (for `X-Forwarded-Proto` and the cookie's `Secure`).
    tls: bool,
    /// The process's phase (owned by `Control`, set by the lifecycle code).
    phase: Arc<PhaseCell>,
}

impl Proxy {
    pub fn new(
        balancer: Arc<Balancer>,
        metrics: Arc<Metrics>,
        settings: SharedSettings,
        tls: bool,
        phase: Arc<PhaseCell>,
    ) -> Proxy {
        Proxy {
            phase,
            balancer,
            metrics,
            settings,
            tls,
        }
    }
}

/// What Portico keeps for one request.
pub struct RequestCtx {
    lease: Option<Lease>,
    tried: Tried,
    /// When the request arrived (the access log's wall-clock time is derived from it).
    started: Instant,
    /// When the current backend was picked (its latency sample runs from here).
    picked: Instant,
    /// The current backend's failure has been counted (each failure counts once).
    failure_counted: bool,
    set_cookie: bool,
    /// The client's `X-Request-Id` if valid, else a new one (set in `early_request_filter`).
    request_id: Option<HeaderValue>,
    /// The request id is the client's, sent once: the backend's request has it already.
    id_in_request: bool,
    /// The settings as they were when the request arrived: one read of the reloadable
    /// settings per request, and a reload never changes them half-way through one.
    settings: Arc<ProxySettings>,
    /// The strategy that picked is `p2c-ewma`, the only reader of latency samples.
    sample_latency: bool,
    /// When the first backend was picked, and how long until a backend's response header
    /// (read only when something uses them: [`RequestCtx::timed`]).
    upstream_started: Option<Instant>,
    upstream_time: Option<Duration>,
    /// The HTTP status a gRPC error answer stood for (it went out as 200 with `grpc-status`):
    /// what metrics and the access log count.
    answered: Option<u16>,
}

impl RequestCtx {
    /// Whether something reads the upstream timings (latency samples or the access log): only
    /// then is the clock read at the pick and at the response header.
    fn timed(&self) -> bool {
        self.sample_latency || self.settings.access_log.enabled()
    }

    /// Adds the request id (when there is one yet) to a response Portico sends.
    fn tag(&self, resp: &mut ResponseHeader) -> Result<()> {
        match &self.request_id {
            Some(id) => resp.insert_header(REQUEST_ID_HEADER, id.clone()),
            None => Ok(()),
        }
    }

    /// Counts the current backend's failure once: in its error counter and toward outlier
    /// ejection (`eject`: false for a refusal, which takes it DOWN instead).
    fn count_failure(&mut self, balancer: &Balancer, eject: bool) {
        if self.failure_counted {
            return;
        }
        if let Some(lease) = &self.lease {
            self.failure_counted = true;
            lease.backend().count_error();
            if eject {
                balancer.report_failure(lease.backend());
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        // One clock read here and one at the end; at the pick and the response header only
        // when something uses them (`timed`); the wall-clock time only for an access log line.
        let now = Instant::now();
        RequestCtx {
            lease: None,
            tried: Tried::default(),
            started: now,
            picked: now,
            failure_counted: false,
            set_cookie: false,
            request_id: None,
            id_in_request: false,
            settings: self.settings.load_full(),
            sample_latency: false,
            upstream_started: None,
            upstream_time: None,
            answered: None,
        }
    }

    /// Keeps the client's `X-Request-Id` when it is usable, else makes a new one: it goes to
    /// the backend, back to the client (refusals included) and into the access log.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let headers = &session.req_header().headers;
        let incoming = headers
            .get(REQUEST_ID_HEADER)
            .filter(|v| access_log::valid_request_id(v.as_bytes()).is_some());
        // The client's one valid id is already in the request the backend gets: it need not be
        // inserted again (two or more are replaced by the first).
        ctx.id_in_request =
            incoming.is_some() && headers.get_all(REQUEST_ID_HEADER).iter().count() == 1;
        // A header value is shared, not copied, each time it is inserted below.
        ctx.request_id = Some(incoming.cloned().unwrap_or_else(access_log::new_request_id));
        Ok(())
    }

    /// No response compression module: Portico passes bodies through as the backend sent them.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Applies the client policy (keep-alive and body timeouts, pipelining) and refuses, with
    /// a JSON error and nothing forwarded, a request a strict HTTP/1.1 gateway must not pass
    /// on (see [`ClientPolicy::check_request`]).
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let settings = &ctx.settings;
        settings.client.apply(session);
        let Err(refusal) = settings.client.check_request(session.req_header()) else {
            return Ok(false);
        };
        // The request body, if any, is not read: the connection cannot be reused.
        session.set_keepalive(None);
        let body = Bytes::from(format!(
            "{{\"error\": {}}}\n",
            json_string(&refusal.message)
        ));
        let mut resp = json_header(refusal.status, body.len())?;
        ctx.tag(&mut resp)?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    /// Picks a ready backend not tried yet by this request. On a retry the previous lease is
    /// released and remembered. No ready backend: a 503 error, or a 502 when backends were
    /// tried and failed (answered in `fail_to_proxy`). During a graceful upgrade's hand-over
    /// the client connection is not kept alive.
    ///
    /// Each HTTP/2 stream (each gRPC call) is one request here, so balancing and the lease are
    /// per call. A WebSocket upgrade keeps its lease, and so counts in `current_connections`,
    /// until the upgraded connection ends (Pingora runs the whole tunnel inside this request);
    /// it waits `timeouts.websocket_idle` instead of `timeouts.read` on both sides, and goes to
    /// the backend over HTTP/1.1 (Pingora does not speak WebSockets over HTTP/2, RFC 8441).
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if self.phase.get() == Phase::HandingOver {
            session.set_keepalive(None);
        }
        if let Some(previous) = ctx.lease.take() {
            ctx.tried.insert(previous.backend().id);
        }
        // The strategy may change with a reload: read it once here. Should it change before
        // the pick, the pick still succeeds (without the cookie or address it would have used).
        let kind = self.balancer.kind();
        let cookie_mode = kind == StrategyKind::Cookie;
        ctx.sample_latency = kind == StrategyKind::P2cEwma;
        let settings = &ctx.settings;
        let cookie = if cookie_mode {
            find_cookie(session.req_header(), &settings.sticky_cookie)
        } else {
            None
        };
        let key = RequestKey {
            // Only `ip-hash` hashes the client's address: only then is it looked up.
            client_ip: if kind == StrategyKind::IpHash {
                client_ip(session)
            } else {
                None
            },
            cookie,
        };
        let Some(lease) = self.balancer.next_valid_peer(&key, &ctx.tried) else {
            if ctx.tried.is_empty() {
                return Error::e_explain(HTTPStatus(503), "no backend available");
            }
            return Error::e_explain(HTTPStatus(502), "every backend tried failed");
        };
        if ctx.timed() {
            let now = Instant::now();
            ctx.picked = now;
            ctx.upstream_started.get_or_insert(now);
        }
        ctx.failure_counted = false;
        let backend = lease.backend();
        ctx.set_cookie = cookie_mode && cookie != Some(backend.cookie_token.as_str());
        let mut peer = backend.peer();
        if is_websocket(session.req_header()) {
            peer.options.read_timeout = Some(settings.websocket_idle);
            peer.options.set_http_version(1, 1);
            session.set_read_timeout(Some(settings.websocket_idle));
        }
        ctx.lease = Some(lease);
        Ok(peer)
    }

    /// Adds `X-Forwarded-For` (appended), `-Proto`, `-Host` and `X-Request-Id`. Hop-by-hop
    /// request headers, and those the `Connection` header names, are already gone: Pingora's
    /// default upstream request policy (`HttpUpstreamRequestPolicy`) strips them before this
    /// phase and forwards `Connection`/`Upgrade` only for a WebSocket upgrade.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = ctx.request_id.as_ref().filter(|_| !ctx.id_in_request) {
            req.insert_header(REQUEST_ID_HEADER, id.clone())?;
        }
        if let Some(ip) = client_ip(session) {
            let forwarded = forwarded_for(req, ip);
            req.insert_header("X-Forwarded-For", forwarded)?;
        }
        let proto = if self.tls { "https" } else { "http" };
        req.insert_header("X-Forwarded-Proto", http::HeaderValue::from_static(proto))?;
        let host = req
            .headers
            .get("host")
            .cloned()
            .or_else(|| req.uri.authority().and_then(|a| a.as_str().parse().ok()));
        if let Some(host) = host {
            req.insert_header("X-Forwarded-Host", host)?;
        }
        // `Content-Length: 5, 5` (or the line twice) goes on as one value: a lenient backend
        // must not be left to interpret a list.
        if let Some(length) = single_content_length(req) {
            req.insert_header(http::header::CONTENT_LENGTH, length)?;
        }
        Ok(())
    }

    /// Refuses a backend response header over `limits.header_bytes` (a 502); records the
    /// backend's latency (to the response header) and whether the answer is a failure (5xx,
    /// toward outlier ejection); drops hop-by-hop headers from the backend's response (not
    /// from a 101 upgrade); notes the upstream time for the access log.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = ctx.timed().then(Instant::now);
        if let (Some(now), Some(started)) = (now, ctx.upstream_started) {
            ctx.upstream_time = Some(now.saturating_duration_since(started));
        }
        let client = ctx.settings.client;
        if !client.response_header_fits(resp) {
            return Err(
                Error::explain(InvalidHTTPHeader, client.response_header_message()).into_up(),
            );
        }
        let failed = resp.status.is_server_error();
        if let Some(lease) = &ctx.lease {
            let backend = lease.backend();
            // Only `p2c-ewma` reads the latency estimate: no sample (a clock read, an `exp`
            // and two shared writes) for the other strategies. After a reload to `p2c-ewma`
            // the estimates start empty, as for a new backend.
            if let Some(now) = now.filter(|_| ctx.sample_latency) {
                backend.observe_latency(now.saturating_duration_since(ctx.picked));
            }
            if !failed {
                self.balancer.report_success(backend);
            }
        }
        if failed {
            // Counts once, on the lease's backend (nothing without a lease).
            ctx.count_failure(&self.balancer, true);
        }
        if resp.status.as_u16() != 101 && needs_hop_by_hop_strip(&resp.headers) {
            strip_hop_by_hop(
                resp.headers.get_all("connection").iter().cloned().collect(),
                |h| {
                    let _ = resp.remove_header(h);
                },
            );
        }
        Ok(())
    }

    /// Returns the request id to the client, and sets the sticky cookie when the `cookie`
    /// strategy chose a backend the client did not name.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.tag(resp)?;
        if ctx.set_cookie {
            if let Some(lease) = &ctx.lease {
                let secure = if self.tls { "; Secure" } else { "" };
                let value = format!(
                    "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
                    ctx.settings.sticky_cookie,
                    lease.backend().cookie_token
                );
                resp.append_header("Set-Cookie", value)?;
            }
        }
        Ok(())
    }

    /// A backend that refuses the connection is marked DOWN at once; other connect failures
    /// (timeouts, unreachable) count toward its outlier ejection. The request is retried on
    /// another backend while the `retries` budget lasts.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let refused = matches!(e.etype(), ConnectRefused);
        ctx.count_failure(&self.balancer, !refused);
        if refused {
            if let Some(lease) = &ctx.lease {
                let reason = probe_reason(&e, ctx.settings.connect_timeout);
                self.balancer
                    .set_backend_status(lease.backend(), Observation::Refused(reason));
            }
        }
        e.set_retry(self.may_retry(ctx));
        e
    }

    /// A failure after the connection was made (the backend closed or reset it, sent garbage,
    /// or timed out). Replaces Pingora's default, which retries a failed reused connection up
    /// to 16 times whatever `retries` says: here every kind of upstream failure shares the one
    /// `retries` budget, counts once on the backend that failed, and is retried only when it is
    /// safe: nothing was sent to the client yet, the method is idempotent (a POST whose body
    /// reached a backend is never sent to a second one), the request body is still buffered,
    /// and the failure is not a timeout (retrying a slow backend's requests doubles the wait).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if matches!(e.esource(), ErrorSource::Downstream) || websocket_went_idle(session, &e) {
            e.set_retry(false);
            return e;
        }
        ctx.count_failure(&self.balancer, true);
        let safe = session.response_written().is_none()
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && !matches!(e.etype(), ReadTimedout | WriteTimedout);
        e.set_retry(safe && self.may_retry(ctx));
        e
    }

    /// Answers errors with a short JSON body: 503 when no backend is available, 504 when the
    /// backend stayed silent past `timeouts.read`, 502 for other backend failures. A gRPC call
    /// gets the same as a trailers-only gRPC answer instead (`grpc-status` 14, UNAVAILABLE,
    /// for those three), counted in metrics and the access log as the HTTP status it stands for.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, message) = match (e.etype(), e.esource()) {
            (HTTPStatus(503), _) => (503, "no backend available".to_string()),
            (HTTPStatus(502), _) => (502, "every backend tried failed".to_string()),
            (HTTPStatus(code), _) => (*code, "request failed".to_string()),
            (ReadTimedout, ErrorSource::Upstream) => (
                504,
                format!(
                    "backend did not answer within {}",
                    format_duration(ctx.settings.read_timeout)
                ),
            ),
            (
                ConnectRefused | ConnectTimedout | ConnectNoRoute | ConnectError,
                ErrorSource::Upstream,
            ) => (502, "cannot connect to a backend".to_string()),
            (_, ErrorSource::Upstream) => (502, "backend failed".to_string()),
            (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => {
                (0, String::new())
            }
            (ReadTimedout, ErrorSource::Downstream) => (408, "request timed out".to_string()),
            (_, ErrorSource::Downstream) => (400, "bad request".to_string()),
            _ => (500, "internal error".to_string()),
        };
        if code >= 500
            && code != 503
            && matches!(e.esource(), ErrorSource::Upstream)
            && !websocket_went_idle(session, e)
        {
            // Counted at its source already, unless it failed somewhere Portico has no hook.
            ctx.count_failure(&self.balancer, true);
        }
        if code > 0 && session.response_written().is_none() {
            // Pingora closes the client connection after a failed request: say so.
            session.set_keepalive(None);
            if grpc_reply::is_grpc(session.req_header()) {
                if let Ok(mut resp) = grpc_reply::answer(code, &message) {
                    let _ = ctx.tag(&mut resp);
                    let _ = session.write_response_header(Box::new(resp), true).await;
                }
                ctx.answered = Some(code);
                return FailToProxy {
                    error_code: code,
                    can_reuse_downstream: false,
                };
            }
            let body = Bytes::from(format!("{{\"error\": {}}}\n", json_string(&message)));
            if let Ok(mut resp) = json_header(code, body.len()) {
                let _ = ctx.tag(&mut resp);
                let _ = session.write_response_header(Box::new(resp), false).await;
                let _ = session.write_response_body(Some(body), true).await;
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Counts the request in the metrics and writes the access log line when enabled.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = ctx
            .answered
            .unwrap_or_else(|| session.response_written().map_or(0, |r| r.status.as_u16()));
        let elapsed = ctx.started.elapsed();
        self.metrics.observe(status, elapsed);
        if let Some(lease) = &ctx.lease {
            self.metrics.observe_backend(lease.backend(), elapsed);
        }
        let format = ctx.settings.access_log;
        if format.enabled() {
            // None: the request failed before `early_request_filter` (e.g. a malformed header).
            let request_id = ctx
                .request_id
                .get_or_insert_with(access_log::new_request_id)
                .to_str()
                .unwrap_or("-");
            let req = session.req_header();
            let header = |name: http::header::HeaderName| {
                req.headers.get(name).and_then(|v| v.to_str().ok())
            };
            // The URI as received: origin form (`/a?b`), absolute form for a proxy request.
            let uri = req.uri.to_string();
            let record = AccessRecord {
                // Arrival in wall-clock time: now, less the time the request took.
                time: SystemTime::now()
                    .checked_sub(elapsed)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                client: client_ip(session),
                method: req.method.as_str(),
                path: &uri,
                protocol: access_log::protocol_name(req.version),
                status,
                backend: ctx.lease.as_ref().map(|l| l.backend().name.as_str()),
                bytes_sent: session.body_bytes_sent(),
                total: elapsed,
                upstream: ctx.upstream_time,
                request_id,
                referer: header(http::header::REFERER),
                user_agent: header(http::header::USER_AGENT),
            };
            access_log::write(format, &record);
        }
    }

    /// Keeps Pingora's error log for real failures; a client that went away is not one, nor
    /// a WebSocket closed for silence.
    fn suppress_error_log(&self, session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // A downstream `H2Error` is an HTTP/2 client resetting its stream or closing its
        // connection mid-response (h2load at the end of a run: hundreds of lines).
        (matches!(e.esource(), ErrorSource::Downstream)
            && matches!(
                e.etype(),
                ReadError | WriteError | ConnectionClosed | H2Error
            ))
            || websocket_went_idle(session, e)
    }
}

impl Proxy {
    /// Whether the `retries` budget allows another attempt: `tried` holds the backends that
    /// failed before the current one, so attempts = 1 + retries.
    fn may_retry(&self, ctx: &RequestCtx) -> bool {
        ctx.tried.len() < ctx.settings.retries as usize
    }
}

/// Whether `e` ended an established WebSocket that stayed silent for `timeouts.websocket_idle`:
/// the bound doing its job, not a failure of the backend (it must not count toward ejection).
fn websocket_went_idle(session: &Session, e: &Error) -> bool {
    session.as_ref().was_upgraded() && matches!(e.etype(), ReadTimedout | WriteTimedout)
}

/// Whether `req` asks for a WebSocket (`Upgrade: websocket` on HTTP/1.1): the only upgrade
/// Pingora's upstream request policy forwards.
fn is_websocket(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req
            .headers
            .get_all(http::header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The `X-Forwarded-For` value to send: every incoming one (several header lines are joined in
/// order, as RFC 9110 allows), then the client's address.
fn forwarded_for(req: &RequestHeader, ip: IpAddr) -> String {
    // Room for one incoming hop and an IPv6 address: usually no reallocation.
    let mut value = String::with_capacity(64);
    for prev in req.headers.get_all("x-forwarded-for") {
        if let Ok(prev) = prev.to_str() {
            let prev = prev.trim();
            if !prev.is_empty() {
                value.push_str(prev);
                value.push_str(", ");
            }
        }
    }
    // Writing to a String cannot fail.
    let _ = write!(value, "{ip}");
    value
}

/// Whether a response carries hop-by-hop headers Portico must remove. Nearly every response
/// carries only `Connection: keep-alive` (or `close`), which Pingora itself replaces (HTTP/1)
/// or drops (HTTP/2) when it writes the response: that needs no work, and one scan of the
/// names costs less than the ten removals it saves.
fn needs_hop_by_hop_strip(headers: &http::HeaderMap) -> bool {
    headers.iter().any(|(name, value)| {
        if name == http::header::CONNECTION {
            !only_persistence_tokens(value)
        } else {
            HOP_BY_HOP.contains(&name.as_str())
        }
    })
}

/// Whether a `Connection` value names nothing but `keep-alive` and `close`.
fn only_persistence_tokens(value: &http::HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').all(|t| {
            let t = t.trim();
            t.is_empty() || t.eq_ignore_ascii_case("keep-alive") || t.eq_ignore_ascii_case("close")
        })
    })
}

/// Calls `remove` for every hop-by-hop header and every header the `Connection` header lists.
fn strip_hop_by_hop(connection: Vec<http::HeaderValue>, mut remove: impl FnMut(&str)) {
    for v in &connection {
        if let Ok(list) = v.to_str() {
            for name in list.split(',') {
                let name = name.trim();
                if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                    remove(name);
                }
            }
        }
    }
    for h in HOP_BY_HOP {
        remove(h);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if any.
pub fn find_cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A response header for a JSON body of `len` bytes.
pub fn json_header(code: u16, len: usize) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", len.to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    Ok(resp)
}

/// `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("valid");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("valid header");
        }
        req
    }

    #[test]
    fn finds_the_named_cookie_among_others() {
        let req = request(&[("Cookie", "a=1; portico_backend=abc"), ("Cookie", "b=2")]);
        assert_eq!(find_cookie(&req, "portico_backend"), Some("abc"));
        assert_eq!(find_cookie(&req, "b"), Some("2"));
        assert_eq!(find_cookie(&req, "portico"), None);
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut req = request(&[
            ("Connection", "keep-alive, X-Secret"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret", "1"),
            ("TE", "trailers"),
            ("Accept", "*/*"),
        ]);
        let conn = req.headers.get_all("connection").iter().cloned().collect();
        strip_hop_by_hop(conn, |h| {
            let _ = req.remove_header(h);
        });
        let left: Vec<&str> = req.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn forwarded_for_appends_the_client_to_every_incoming_value() {
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        assert_eq!(forwarded_for(&request(&[]), ip), "10.0.0.9");
        let req = request(&[
            ("X-Forwarded-For", "203.0.113.7, 198.51.100.2"),
            ("X-Forwarded-For", " 192.0.2.1 "),
            ("X-Forwarded-For", ""),
        ]);
        assert_eq!(
            forwarded_for(&req, ip),
            "203.0.113.7, 198.51.100.2, 192.0.2.1, 10.0.0.9"
        );
    }

    #[test]
    fn hop_by_hop_work_is_seen_by_name_and_connection_tokens() {
        let needs = |h: &[(&str, &str)]| needs_hop_by_hop_strip(&request(h).headers);
        assert!(!needs(&[("Accept", "*/*")]));
        // Pingora rewrites these itself.
        assert!(!needs(&[("Connection", "keep-alive"), ("Accept", "*/*")]));
        assert!(!needs(&[("Connection", "Close")]));
        assert!(!needs(&[("Connection", "Keep-Alive, close")]));
        // Anything else is Portico's to strip.
        assert!(needs(&[("TE", "trailers")]));
        assert!(needs(&[
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5")
        ]));
        assert!(needs(&[("Connection", "X-Secret"), ("X-Secret", "1")]));
        assert!(needs(&[("Connection", "keep-alive, X-Secret")]));
        assert!(needs(&[
            ("Connection", "keep-alive"),
            ("Connection", "X-Secret")
        ]));
        assert!(needs(&[("Proxy-Connection", "keep-alive")]));
    }

    #[test]
    fn only_websocket_upgrades_count_as_websockets() {
        assert!(is_websocket(&request(&[("Upgrade", "websocket")])));
        assert!(is_websocket(&request(&[("Upgrade", "foo, WebSocket")])));
        assert!(!is_websocket(&request(&[("Upgrade", "h2c")])));
        assert!(!is_websocket(&request(&[])));
    }

    #[test]
    fn json_errors_are_valid_json() {
        let s = json_string("quote \" and \\ slash");
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid json");
        assert_eq!(v, "quote \" and \\ slash");
    }
}

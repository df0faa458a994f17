//! The admin API's routing: one match on (method, path) dispatching to small handlers that
//! build a response. No socket here: the `ServeHttp` adapter in `mod.rs` feeds it.

use std::time::UNIX_EPOCH;

use http::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::guard::{AdminGuard, Caller};
use crate::backend::Backend;
use crate::balancer::PoolError;
use crate::config::{BackendSpec, BackendUrl, Protocol};
use crate::control::{Control, ControlError};
use crate::metrics::Metrics;

/// Largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// A request as the router sees it.
#[derive(Debug, Default)]
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// `None` when the body was larger than [`MAX_BODY`].
    pub body: Option<Vec<u8>>,
    pub host: Option<String>,
    pub origin: Option<String>,
    /// The local address the client connected to.
    pub local_ip: Option<std::net::IpAddr>,
}

/// A response: status, body and the few headers the API sets.
#[derive(Debug)]
pub struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub allow: Option<&'static str>,
    pub www_authenticate: bool,
}

impl AdminResponse {
    /// `value` as pretty JSON with `status`.
    pub fn json(status: u16, value: &Value) -> AdminResponse {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        AdminResponse {
            status,
            content_type: "application/json",
            body,
            allow: None,
            www_authenticate: false,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl std::fmt::Display) -> AdminResponse {
        AdminResponse::json(status, &json!({ "error": message.to_string() }))
    }
}

/// What the handlers need. With `token` set, every request but `GET /healthz` needs
/// `Authorization: Bearer <token>` (compared in constant time), else 401. Every request
/// first passes the `guard` (its `Host` and, for writes, its `Origin`).
pub struct AdminApi {
    pub control: std::sync::Arc<Control>,
    pub metrics: std::sync::Arc<Metrics>,
    pub token: Option<String>,
    pub guard: AdminGuard,
}

impl AdminApi {
    /// Routes one request: one match on (method, path). Errors are `{"error": ...}` with
    /// 400 (bad JSON, fields or URL), 401, 403 (write from a foreign browser origin), 404 (no
    /// such path or backend), 405 (with `Allow`), 409 (duplicate, or changed concurrently), 413
    /// (body over [`MAX_BODY`]), 415 (a body that is not said to be JSON), 421 (foreign
    /// `Host`), 500 (the store failed the write; the message says whether the change was made)
    /// or 503 (store unavailable, or frozen during upgrade or shutdown: nothing changed).
    pub async fn handle(&self, req: AdminRequest) -> AdminResponse {
        let caller = Caller {
            method: req.method.clone(),
            host: req.host.as_deref(),
            origin: req.origin.as_deref(),
            local_ip: req.local_ip,
        };
        if let Err(refused) = self.guard.check(&caller) {
            return refused;
        }
        let path = req.path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        let public = path == "/healthz" && is_read(&req.method);
        if !public && !self.authorized(&req) {
            let mut r = AdminResponse::error(401, "missing or wrong bearer token");
            r.www_authenticate = true;
            return r;
        }
        match (path, &req.method) {
            ("/healthz", m) if is_read(m) => AdminResponse::json(200, &json!({"status": "ok"})),
            ("/status", m) if is_read(m) => self.status(),
            ("/metrics", m) if is_read(m) => AdminResponse {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.metrics.render(),
                allow: None,
                www_authenticate: false,
            },
            ("/backends", m) if is_read(m) => self.list(),
            ("/backends", &Method::POST) => self.add(&req).await,
            ("/backends", &Method::DELETE) => self.remove(&req).await,
            ("/healthz" | "/status" | "/metrics", _) => not_allowed("GET, HEAD"),
            ("/backends", _) => not_allowed("GET, HEAD, POST, DELETE"),
            _ => AdminResponse::error(404, format!("no such endpoint: {}", req.path)),
        }
    }

    fn authorized(&self, req: &AdminRequest) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .authorization
            .as_deref()
            .map(str::trim)
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, t)| t.trim());
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    fn status(&self) -> AdminResponse {
        let balancer = self.control.balancer();
        let snap = balancer.snapshot();
        let backends = by_url(&snap.backends);
        let active = backends.iter().filter(|b| b["alive"] == true).count();
        let draining: Vec<Value> = balancer
            .draining()
            .iter()
            .map(|b| backend_json(b))
            .collect();
        AdminResponse::json(
            200,
            &json!({
                "total_backends": backends.len(),
                "active_backends": active,
                "strategy": balancer.kind().name(),
                "backends": backends,
                "draining": draining,
                "store": self.control.store_status(),
            }),
        )
    }

    fn list(&self) -> AdminResponse {
        let snap = self.control.balancer().snapshot();
        AdminResponse::json(200, &Value::Array(by_url(&snap.backends)))
    }

    async fn add(&self, req: &AdminRequest) -> AdminResponse {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AddBody {
            url: String,
            weight: Option<i64>,
            protocol: Option<String>,
        }
        let body = match json_body(req) {
            Ok(Some(b)) => b,
            Ok(None) => return AdminResponse::error(400, "missing JSON body {\"url\": ...}"),
            Err(r) => return r,
        };
        let parsed: AddBody = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return AdminResponse::error(400, format!("invalid JSON body: {e}")),
        };
        let url = match BackendUrl::parse(&parsed.url) {
            Ok(u) => u,
            Err(e) => return AdminResponse::error(400, e),
        };
        let weight = match BackendSpec::check_weight("weight", parsed.weight.unwrap_or(1)) {
            Ok(w) => w,
            Err(e) => return AdminResponse::error(400, e),
        };
        let protocol = match Protocol::for_url(&url, parsed.protocol.as_deref()) {
            Ok(p) => p,
            Err(e) => return AdminResponse::error(400, format!("protocol: {e}")),
        };
        match self
            .control
            .add(BackendSpec {
                url,
                weight,
                protocol,
            })
            .await
        {
            Ok(b) => AdminResponse::json(201, &backend_json(&b)),
            Err(e) => control_error(e),
        }
    }

    async fn remove(&self, req: &AdminRequest) -> AdminResponse {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RemoveBody {
            url: String,
        }
        let from_query = req.query.as_deref().and_then(|q| query_param(q, "url"));
        let text = match (from_query, json_body(req)) {
            (_, Err(r)) => return r,
            (Some(u), Ok(None)) => u,
            (None, Ok(Some(body))) => match serde_json::from_slice::<RemoveBody>(&body) {
                Ok(b) => b.url,
                Err(e) => return AdminResponse::error(400, format!("invalid JSON body: {e}")),
            },
            (Some(_), Ok(Some(_))) => {
                return AdminResponse::error(400, "give the URL in the body or in ?url=, not both")
            }
            (None, Ok(None)) => {
                return AdminResponse::error(400, "missing backend: {\"url\": ...} or ?url=...")
            }
        };
        let url = match BackendUrl::parse(&text) {
            Ok(u) => u,
            Err(e) => return AdminResponse::error(400, e),
        };
        match self.control.remove(&url).await {
            Ok(b) => AdminResponse::json(200, &json!({"removed": backend_json(&b)})),
            Err(e) => control_error(e),
        }
    }
}

fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

fn not_allowed(allow: &'static str) -> AdminResponse {
    let mut r = AdminResponse::error(405, format!("method not allowed (allowed: {allow})"));
    r.allow = Some(allow);
    r
}

/// The body if there is one, checked for size and content type.
fn json_body(req: &AdminRequest) -> Result<Option<Vec<u8>>, AdminResponse> {
    let Some(body) = &req.body else {
        return Err(AdminResponse::error(
            413,
            format!("request body over {} KiB", MAX_BODY / 1024),
        ));
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    // A body must say it is JSON: a browser sends a cross-site form or text/plain `POST`
    // without asking first, but never one marked application/json.
    let mime = req
        .content_type
        .as_deref()
        .map(|ct| ct.split(';').next().unwrap_or("").trim());
    match mime {
        Some(m) if m.eq_ignore_ascii_case("application/json") => Ok(Some(body.clone())),
        Some(m) => Err(AdminResponse::error(
            415,
            format!("content type {m:?} is not supported; send application/json"),
        )),
        None => Err(AdminResponse::error(
            415,
            "a request body needs Content-Type: application/json",
        )),
    }
}

fn control_error(e: ControlError) -> AdminResponse {
    let status = match &e {
        ControlError::Pool(PoolError::Duplicate(_)) => 409,
        ControlError::Pool(PoolError::NotFound(_)) => 404,
        ControlError::Invalid(_) => 400,
        ControlError::Conflict(_) => 409,
        ControlError::Store(_) => 500,
        ControlError::Unavailable(_) | ControlError::Frozen => 503,
    };
    AdminResponse::error(status, e)
}

/// One entry per backend URL, in pool order: a name's endpoints are summed up in one entry
/// (`alive` when any endpoint is, connections, requests and errors added up) that lists them
/// under `endpoints` (`address`, `alive`, `current_connections`).
pub fn by_url(backends: &[std::sync::Arc<Backend>]) -> Vec<Value> {
    let mut urls: Vec<&crate::config::BackendUrl> = Vec::new();
    for b in backends {
        if !urls.contains(&&b.url) {
            urls.push(&b.url);
        }
    }
    urls.into_iter()
        .filter_map(|url| {
            let members: Vec<&std::sync::Arc<Backend>> =
                backends.iter().filter(|b| &b.url == url).collect();
            // The entry's health fields come from a ready endpoint when there is one.
            let lead = members
                .iter()
                .find(|b| b.is_ready())
                .or_else(|| members.first())?;
            let mut entry = backend_json(lead);
            let sum = |f: fn(&Backend) -> u64| members.iter().map(|b| f(b)).sum::<u64>();
            entry["alive"] = json!(members.iter().any(|b| b.is_ready()));
            entry["current_connections"] = json!(sum(Backend::in_flight));
            entry["requests"] = json!(sum(Backend::requests));
            entry["errors"] = json!(sum(Backend::errors));
            entry["endpoints"] = members
                .iter()
                .filter(|b| b.resolved)
                .map(|b| {
                    json!({
                        "address": b.addr.to_string(),
                        "alive": b.is_ready(),
                        "current_connections": b.in_flight(),
                        "health": b.health_state().name(),
                    })
                })
                .collect();
            Some(entry)
        })
        .collect()
}

/// One backend endpoint as `/status` shows it.
pub fn backend_json(b: &Backend) -> Value {
    let record = b.health();
    let unix = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    json!({
        "url": b.name,
        "alive": b.is_ready(),
        "current_connections": b.in_flight(),
        "weight": b.weight(),
        "protocol": b.protocol.name(),
        "health": record.tracker.health().name(),
        "last_change": unix(record.changed_at),
        "last_change_reason": record.reason,
        "last_probe": record.last_probe.map(unix),
        "requests": b.requests(),
        "errors": b.errors(),
        "effective_weight": b.effective_weight(),
        "consecutive_errors": b.consecutive_errors(),
        "ejected": record.ejected_until.is_some(),
        "ejections": record.ejections,
    })
}

/// The decoded value of `name` in a query string (`application/x-www-form-urlencoded`).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Compares in constant time (`subtle`), so timing does not reveal how much of a token
/// matched; a length mismatch is not a secret worth hiding (the token's length is fixed by
/// the operator), so it ends the comparison at once.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests;

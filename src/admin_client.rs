//! `portico admin`: a client of a running gateway's admin API. It finds the API (and its token)
//! in the same configuration file the gateway reads, or takes `--admin URL --token T`, sends
//! one request and prints the answer: a table for `status`, one line for a change, and one line
//! on standard error with exit code 1 when the gateway is unreachable or refuses.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{AdminAction, AdminArgs};
use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// The environment variable that may hold the admin token (keeps it out of `ps`).
pub const TOKEN_ENV: &str = "PORTICO_ADMIN_TOKEN";
/// The admin address when neither `--admin` nor a configuration file gives one.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:8081";
/// Bound on one exchange with the admin API (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong, as one line for standard error.
#[derive(Debug, thiserror::Error)]
pub enum AdminCliError {
    #[error("configuration {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid --admin {0:?} (expected http://host:port)")]
    BadAddress(String),
    #[error("cannot reach the admin API at {base}: {message}")]
    Unreachable { base: String, message: String },
    #[error("{method} {path}: {status} {message}")]
    Refused {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    Answer(String),
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub token: Option<String>,
}

/// Runs one `portico admin` command; prints the result or one error line.
pub fn run(args: &AdminArgs) -> ExitCode {
    let result = target(args).and_then(|t| execute(&t, &args.action));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portico admin: {e}");
            ExitCode::from(1)
        }
    }
}

/// The admin API's address and token from the arguments, the environment and the file.
pub fn target(args: &AdminArgs) -> Result<Target, AdminCliError> {
    let env_token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let flag_token = args.token.clone().or(env_token);
    if let Some(url) = &args.admin {
        return Ok(Target {
            base: admin_base(url)?,
            token: flag_token,
        });
    }
    let path = match &args.conf {
        Some(p) => p.clone(),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
        None => {
            return Ok(Target {
                base: DEFAULT_ADMIN.to_string(),
                token: flag_token,
            })
        }
    };
    let config = Config::load(&path).map_err(|e| AdminCliError::Config {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(Target {
        base: format!("http://{}", connect_addr(config.admin.listen)),
        token: flag_token.or(config.admin.token),
    })
}

/// The address to connect to for a listen address: a wildcard means this machine.
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// `--admin` as a base URL: `http://host:port` (a bare `host:port` gets `http://`).
fn admin_base(text: &str) -> Result<String, AdminCliError> {
    let text = text.trim().trim_end_matches('/');
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let rest = with_scheme.strip_prefix("http://");
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => Ok(with_scheme),
        _ => Err(AdminCliError::BadAddress(text.to_string())),
    }
}

/// Sends the action's request and renders the answer.
pub fn execute(target: &Target, action: &AdminAction) -> Result<String, AdminCliError> {
    let client = Client::new(target);
    match action {
        AdminAction::Status { json } => {
            let status = client.send("GET", "/status", None)?;
            if *json {
                let mut text = serde_json::to_string_pretty(&status).unwrap_or_default();
                text.push('\n');
                Ok(text)
            } else {
                status_table(&status)
            }
        }
        AdminAction::Add { url, weight } => {
            let mut body = json!({ "url": url });
            if let Some(w) = weight {
                body["weight"] = json!(w);
            }
            let b = client.send("POST", "/backends", Some(&body))?;
            Ok(format!(
                "added {} (weight {})\n",
                text(&b["url"], url),
                b["weight"]
            ))
        }
        AdminAction::Remove { url } => {
            client.send("DELETE", "/backends", Some(&json!({ "url": url })))?;
            Ok(format!("removed {url}\n"))
        }
        AdminAction::Drain { url } => {
            let body = json!({ "url": url, "state": "drain" });
            client.send("PATCH", "/backends", Some(&body))?;
            Ok(format!("draining {url}: it gets no new requests\n"))
        }
        AdminAction::Enable { url } => {
            let body = json!({ "url": url, "state": "enabled" });
            client.send("PATCH", "/backends", Some(&body))?;
            Ok(format!("enabled {url}\n"))
        }
        AdminAction::Weight { url, weight } => {
            let body = json!({ "url": url, "weight": weight });
            client.send("PATCH", "/backends", Some(&body))?;
            Ok(format!("{url}: weight {weight}\n"))
        }
    }
}

fn text<'a>(v: &'a Value, default: &'a str) -> &'a str {
    v.as_str().unwrap_or(default)
}

/// One blocking HTTP/1.1 client (ureq: small, no async runtime needed for one request).
struct Client<'a> {
    target: &'a Target,
    agent: ureq::Agent,
}

impl<'a> Client<'a> {
    fn new(target: &'a Target) -> Self {
        let agent = ureq::Agent::config_builder()
            // The admin API is local or on a management network: never via a proxy from the
            // environment.
            .proxy(None)
            .timeout_global(Some(TIMEOUT))
            // 4xx/5xx carry the API's `{"error": ...}`: read them as answers.
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client { target, agent }
    }

    /// Sends `method path` with a JSON body (with `Content-Type: application/json`), returns
    /// the JSON answer of a 2xx, or the API's error message.
    fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminCliError> {
        let url = format!("{}{path}", self.target.base);
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(token) = &self.target.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let sent = match body {
            Some(body) => request
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .map(|r| self.agent.run(r)),
            None => request.body(()).map(|r| self.agent.run(r)),
        };
        let mut response = sent
            .map_err(|e| AdminCliError::BadAddress(format!("{url}: {e}")))?
            .map_err(|e| AdminCliError::Unreachable {
                base: self.target.base.clone(),
                message: unreachable_reason(&e),
            })?;
        let status = response.status();
        let text =
            response
                .body_mut()
                .read_to_string()
                .map_err(|e| AdminCliError::Unreachable {
                    base: self.target.base.clone(),
                    message: format!("reading the answer: {e}"),
                })?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return value.ok_or_else(|| {
                AdminCliError::Answer(format!(
                    "{method} {path}: the answer is not JSON (is {} Portico's admin API?)",
                    self.target.base
                ))
            });
        }
        let message = value
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let first = text.lines().next().unwrap_or("").trim();
                if first.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    first.chars().take(200).collect()
                }
            });
        Err(AdminCliError::Refused {
            method,
            path: path.to_string(),
            status: status.as_u16(),
            message,
        })
    }
}

/// ureq's error, reduced to the part an operator acts on.
fn unreachable_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::Timeout(_) => format!("no answer within {}s", TIMEOUT.as_secs()),
        other => other.to_string(),
    }
}

/// The `status` table: one row per backend (and per removed backend still draining).
pub fn status_table(status: &Value) -> Result<String, AdminCliError> {
    let backends = status["backends"]
        .as_array()
        .ok_or_else(|| AdminCliError::Answer("GET /status: no \"backends\" list".into()))?;
    let removed = status["draining"].as_array().map_or(&[][..], |v| &v[..]);
    let header = ["URL", "HEALTH", "IN-FLIGHT", "REQUESTS", "ERRORS", "WEIGHT"];
    let mut rows: Vec<[String; 6]> = Vec::new();
    let number = |v: &Value| match v {
        Value::Number(n) => n.to_string(),
        _ => "-".to_string(),
    };
    for (b, is_removed) in backends
        .iter()
        .map(|b| (b, false))
        .chain(removed.iter().map(|b| (b, true)))
    {
        rows.push([
            b["url"].as_str().unwrap_or("?").to_string(),
            health_cell(b, is_removed),
            number(&b["current_connections"]),
            number(&b["requests"]),
            number(&b["errors"]),
            number(&b["weight"]),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "strategy {}, {} of {} backends active",
        status["strategy"].as_str().unwrap_or("?"),
        number(&status["active_backends"]),
        number(&status["total_backends"]),
    );
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text columns (URL, health) to the left, numbers to the right.
            match i {
                0 => {
                    let _ = write!(l, "{cell:<w$}");
                }
                1 => {
                    let _ = write!(l, "  {cell:<w$}");
                }
                _ => {
                    let _ = write!(l, "  {cell:>w$}");
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    Ok(out)
}

/// `up`, `down`, `pending`, with `draining` when an operator drained it (or it was removed
/// and still has requests in flight).
fn health_cell(b: &Value, removed: bool) -> String {
    let health = b["health"]
        .as_str()
        .unwrap_or(if b["alive"] == true { "up" } else { "down" });
    let drained = removed
        || b["draining"] == true
        || b["state"].as_str().is_some_and(|s| s.starts_with("drain"));
    if removed {
        format!("{health},removed")
    } else if drained {
        format!("{health},draining")
    } else {
        health.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_connect_to_loopback() {
        let a = |s: &str| connect_addr(s.parse().expect("addr")).to_string();
        assert_eq!(a("0.0.0.0:8081"), "127.0.0.1:8081");
        assert_eq!(a("[::]:8081"), "[::1]:8081");
        assert_eq!(a("10.1.2.3:9000"), "10.1.2.3:9000");
    }

    #[test]
    fn admin_addresses_get_a_scheme_and_lose_a_trailing_slash() {
        assert_eq!(
            admin_base("127.0.0.1:8081").expect("ok"),
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            admin_base("http://localhost:8081/").expect("ok"),
            "http://localhost:8081"
        );
        assert!(admin_base("https://x:1").is_err());
        assert!(admin_base("http://x:1/status").is_err());
        assert!(admin_base("").is_err());
    }

    #[test]
    fn the_status_table_has_a_row_per_backend_with_aligned_columns() {
        let status = json!({
            "total_backends": 2, "active_backends": 1, "strategy": "round-robin",
            "backends": [
                {"url": "http://127.0.0.1:9001", "alive": true, "health": "up",
                 "current_connections": 3, "requests": 120, "errors": 2, "weight": 5},
                {"url": "http://10.0.0.2:80", "alive": false, "health": "down",
                 "current_connections": 0, "requests": 7, "errors": 7, "weight": 1,
                 "state": "drain"},
            ],
            "draining": [
                {"url": "http://10.0.0.9:80", "health": "up", "current_connections": 1,
                 "requests": 4, "errors": 0, "weight": 1},
            ],
        });
        let table = status_table(&status).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "strategy round-robin, 1 of 2 backends active");
        assert_eq!(
            lines[1],
            "URL                    HEALTH         IN-FLIGHT  REQUESTS  ERRORS  WEIGHT"
        );
        assert_eq!(
            lines[2],
            "http://127.0.0.1:9001  up                     3       120       2       5"
        );
        assert!(lines[3].contains("down,draining"), "{table}");
        assert!(lines[4].contains("up,removed"), "{table}");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_document_without_backends_is_an_error() {
        assert!(status_table(&json!({"error": "x"})).is_err());
    }
}

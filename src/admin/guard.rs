//! Who may talk to the admin API: the `Host` a request names (against DNS rebinding) and the
//! browser `Origin` a write comes from (against cross-site requests). Pure; the router calls
//! [`AdminGuard::check`] before anything else.
//!
//! Why both: a web page can make a browser send a "simple" cross-site `POST` (no preflight)
//! to `127.0.0.1:8081`; the browser then sends a foreign `Origin`. A DNS-rebinding page
//! instead talks to the admin API under its own name, so its requests carry a foreign
//! `Host` (and look same-origin to the browser). Tools such as curl send neither a foreign
//! `Host` nor an `Origin` and are not affected.

use std::net::{IpAddr, SocketAddr};

use http::Method;

use super::routes::AdminResponse;

/// The names the admin listener answers to.
#[derive(Debug, Clone)]
pub struct AdminGuard {
    listen: SocketAddr,
    /// `admin.hosts`: lower case, without port.
    hosts: Vec<String>,
}

/// What the guard looks at in a request.
#[derive(Debug, Default, Clone)]
pub struct Caller<'a> {
    pub method: Method,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// The local address the client connected to (the listener may be on `0.0.0.0`).
    pub local_ip: Option<IpAddr>,
}

impl AdminGuard {
    pub fn new(listen: SocketAddr, hosts: Vec<String>) -> AdminGuard {
        AdminGuard { listen, hosts }
    }

    /// `Ok` when the request may proceed; otherwise the answer: 421 for a `Host` that is not
    /// one of the admin listener's names (loopback names and addresses, the listener's
    /// address, the address the client connected to, `admin.hosts`; any port), 403 for a
    /// write (any method but GET, HEAD, OPTIONS) whose `Origin` is not the admin API's own
    /// (`http://` or `https://` followed by the request's `Host`). A request without `Host`
    /// (HTTP/1.0) or without `Origin` (not a browser) passes those checks.
    pub fn check(&self, caller: &Caller<'_>) -> Result<(), AdminResponse> {
        if let Some(host) = caller.host {
            if !self.is_own_host(host, caller.local_ip) {
                return Err(AdminResponse::error(
                    421,
                    format!(
                        "host {host:?} is not a name of this admin API \
                         (use 127.0.0.1 or localhost, or list the name in admin.hosts)"
                    ),
                ));
            }
        }
        let read = matches!(caller.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if let (false, Some(origin)) = (read, caller.origin) {
            let same_origin = caller.host.is_some_and(|host| {
                ["http://", "https://"].iter().any(|scheme| {
                    origin
                        .strip_prefix(scheme)
                        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
                })
            });
            if !same_origin {
                return Err(AdminResponse::error(
                    403,
                    format!("cross-origin request from {origin:?} refused"),
                ));
            }
        }
        Ok(())
    }

    fn is_own_host(&self, host: &str, local_ip: Option<IpAddr>) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        let name = name.trim_end_matches('.');
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback()
                || (ip == self.listen.ip() && !ip.is_unspecified())
                || Some(ip) == local_ip;
        }
        self.hosts.iter().any(|h| h == name)
    }
}

/// The host part of a `Host` value: without port, and without the brackets of an IPv6 address.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> AdminGuard {
        AdminGuard::new(
            "127.0.0.1:8081".parse().expect("addr"),
            vec!["gateway.internal".into()],
        )
    }

    fn caller<'a>(method: Method, host: Option<&'a str>, origin: Option<&'a str>) -> Caller<'a> {
        Caller {
            method,
            host,
            origin,
            local_ip: "10.1.2.3".parse().ok(),
        }
    }

    fn status(r: Result<(), AdminResponse>) -> u16 {
        r.map_or_else(|e| e.status, |()| 200)
    }

    #[test]
    fn own_names_pass_and_foreign_hosts_are_misdirected() {
        let g = guard();
        for host in [
            "127.0.0.1:8081",
            "localhost:8081",
            "LOCALHOST",
            "app.localhost",
            "[::1]:8081",
            "127.0.0.2",
            "10.1.2.3:8081",
            "gateway.internal:8081",
            "Gateway.Internal.",
        ] {
            assert_eq!(
                status(g.check(&caller(Method::GET, Some(host), None))),
                200,
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:8081",
            "10.9.9.9",
            "localhost.evil",
        ] {
            assert_eq!(
                status(g.check(&caller(Method::GET, Some(host), None))),
                421,
                "{host}"
            );
        }
        assert_eq!(status(g.check(&caller(Method::GET, None, None))), 200);
    }

    #[test]
    fn writes_from_a_foreign_origin_are_forbidden() {
        let g = guard();
        let host = Some("127.0.0.1:8081");
        for origin in ["http://evil.example", "null", "http://127.0.0.1:3000"] {
            let c = caller(Method::POST, host, Some(origin));
            assert_eq!(status(g.check(&c)), 403, "{origin}");
            let c = caller(Method::DELETE, host, Some(origin));
            assert_eq!(status(g.check(&c)), 403, "{origin}");
            // Reads are protected by the browser itself (no CORS header is ever sent).
            let c = caller(Method::GET, host, Some(origin));
            assert_eq!(status(g.check(&c)), 200, "{origin}");
        }
        // The status page served by the admin listener itself.
        let c = caller(Method::POST, host, Some("http://127.0.0.1:8081"));
        assert_eq!(status(g.check(&c)), 200);
        // curl and friends send no Origin.
        assert_eq!(status(g.check(&caller(Method::POST, host, None))), 200);
    }
}

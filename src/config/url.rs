//! Backend URLs: `http://host:port` or `https://host:port`, parsed, normalised and resolved.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// The scheme Portico speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// A validated backend URL. Its text form (`Display`) is normalised: lower-case scheme and host,
/// explicit port, no trailing slash; two URLs naming the same backend compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    pub scheme: Scheme,
    /// Host name or IP literal as written (IPv6 without brackets), lower-cased.
    pub host: String,
    pub port: u16,
}

impl BackendUrl {
    /// Parses `text`. Accepts `http(s)://host[:port][/]`; the port defaults to 80 or 443.
    /// Paths, queries, fragments and user info are refused: Portico forwards the client's path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid backend URL {text:?}: {why}"));
        let trimmed = text.trim();
        let (scheme, rest) = if let Some(rest) = strip_prefix_ci(trimmed, "http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = strip_prefix_ci(trimmed, "https://") {
            (Scheme::Https, rest)
        } else {
            return bad("expected http://host:port or https://host:port");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return bad("a backend URL has no path, query or fragment");
        }
        if authority.contains('@') {
            return bad("user info is not supported");
        }
        let (host, port_text) = if let Some(after) = authority.strip_prefix('[') {
            let Some((host, after)) = after.split_once(']') else {
                return bad("unclosed '[' in IPv6 host");
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return bad("invalid IPv6 address");
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return bad("expected ':port' after the IPv6 address"),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return bad("missing host");
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return bad("host has characters that are not allowed");
        }
        let port = match port_text {
            None => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            },
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return bad("port must be a number from 1 to 65535"),
            },
        };
        Ok(BackendUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `host:port` as used in the `Host` header of probes and as TLS SNI (host part).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the host to a socket address (the first one the resolver gives).
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self))?
            .next()
            .ok_or_else(|| format!("cannot resolve {}: no address", self))
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_port_and_slash() {
        let u = BackendUrl::parse("HTTP://LocalHost:9001/").unwrap();
        assert_eq!(u.to_string(), "http://localhost:9001");
        assert_eq!(BackendUrl::parse("https://a.example").unwrap().port, 443);
        assert_eq!(BackendUrl::parse("http://a").unwrap().port, 80);
        let v6 = BackendUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn refuses_what_is_not_a_backend() {
        for bad in [
            "",
            "localhost:9001",
            "ftp://a:1",
            "http://",
            "http://:80",
            "http://a:0",
            "http://a:65536",
            "http://a:port",
            "http://a:1/path",
            "http://a:1?q",
            "http://u@a:1",
            "http://[::1:80",
            "http://a b:1",
        ] {
            let err = BackendUrl::parse(bad).unwrap_err();
            assert!(err.contains("invalid backend URL"), "{bad}: {err}");
        }
    }
}

//! Backend URLs: `http://host:port`, `https://host:port` or `h2c://host:port`, parsed,
//! normalised and resolved.
//!
//! Hand-written rather than on the `url` crate: a backend URL is a scheme and an authority and
//! nothing else, and `url` would still leave every check here to do. It parses `h2c://` as a
//! non-special scheme (opaque host: no lower-casing, no IPv4 normalisation, no default port),
//! accepts paths, queries and user info that Portico must refuse, and its errors ("relative URL
//! without a base") name neither the URL nor the fix.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// The scheme Portico speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    /// HTTP/2 over cleartext with prior knowledge (RFC 9113 section 3.3), as gRPC servers speak.
    H2c,
}

impl Scheme {
    /// The scheme as written in a normalised URL.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::H2c => "h2c",
        }
    }

    /// The port a URL without one names: 443 for `https`, 80 for the cleartext schemes.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http | Scheme::H2c => 80,
        }
    }
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
    /// Parses `text`. Accepts `http(s)://host[:port][/]` and `h2c://host[:port][/]`; the port
    /// defaults to 443 for `https`, else 80.
    /// Paths, queries, fragments and user info are refused: Portico forwards the client's path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("invalid backend URL {text:?}: {why}"));
        let trimmed = text.trim();
        let Some((scheme, rest)) = [Scheme::Http, Scheme::Https, Scheme::H2c]
            .into_iter()
            .find_map(|s| Some((s, strip_prefix_ci(trimmed, &format!("{}://", s.name()))?)))
        else {
            return bad("expected http://host:port, https://host:port or h2c://host:port");
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
            None => scheme.default_port(),
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
        write!(f, "{}://{}", self.scheme.name(), self.authority())
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
        let h2c = BackendUrl::parse("H2C://Grpc.Local:50051/").unwrap();
        assert_eq!(h2c.scheme, Scheme::H2c);
        assert_eq!(h2c.to_string(), "h2c://grpc.local:50051");
        assert!(!h2c.is_tls());
    }

    #[test]
    fn refuses_what_is_not_a_backend() {
        for bad in [
            "",
            "localhost:9001",
            "ftp://a:1",
            "h2://a:1",
            "h2c://a:1/path",
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

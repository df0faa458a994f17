//! The Pingora peer of one backend: address, TLS and SNI, timeouts, and the HTTP version
//! (HTTP/1.1, HTTP/2 by ALPN with HTTP/1.1 fallback, or HTTP/2 with prior knowledge).

use std::net::SocketAddr;

use pingora::upstreams::peer::HttpPeer;

use crate::config::{BackendSpec, Scheme, Timeouts};

/// Concurrent streams Portico opens on one HTTP/2 connection to a backend before it opens
/// another. Pingora's default is 1 (one request per connection, like HTTP/1.1), which would
/// defeat multiplexing; 100 is the minimum RFC 9113 asks servers to allow, so no backend refuses
/// it, and a busy backend still gets its load over several connections.
pub const MAX_H2_STREAMS: usize = 100;

/// The peer requests to `spec` use: connects to `addr` within `timeouts.connect`, waits up to
/// `timeouts.read` for each read, verifies the certificate and host name of `https` backends,
/// and speaks the backend's protocol. Pingora's HTTP/2 connector pools the connections of HTTP/2
/// peers and multiplexes streams over them; each stream is one request through Portico's
/// balancer, so balancing and in-flight counts are per call, not per connection.
pub fn peer_for(spec: &BackendSpec, addr: SocketAddr, timeouts: &Timeouts) -> HttpPeer {
    let tls = spec.url.is_tls();
    // Always the URL's host: Pingora skips certificate verification when the SNI is
    // empty. For an IP address rustls sends no SNI and checks the certificate's IP SAN.
    let sni = if tls {
        spec.url.host.clone()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    set_timeouts(&mut peer, timeouts);
    peer.options.verify_cert = true;
    peer.options.verify_hostname = true;
    if spec.is_h2() {
        match spec.url.scheme {
            // Cleartext: no ALPN to negotiate with, so HTTP/2 only (prior knowledge).
            Scheme::H2c | Scheme::Http => peer.options.set_http_version(2, 2),
            // ALPN offers h2 and http/1.1; a backend that picks http/1.1 gets HTTP/1.1.
            Scheme::Https => peer.options.set_http_version(2, 1),
        }
        peer.options.max_h2_streams = MAX_H2_STREAMS;
    }
    peer
}

/// Sets the connect, read and pool idle timeouts of `peer` (also when a reload changes them).
pub fn set_timeouts(peer: &mut HttpPeer, timeouts: &Timeouts) {
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.total_connection_timeout = Some(timeouts.connect * 2);
    peer.options.read_timeout = Some(timeouts.read);
    // Without it a pooled connection stays until the backend closes it: with a pool as large
    // as `max_connections`, a burst would leave its connections open for good.
    peer.options.idle_timeout = Some(timeouts.keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_spec, Protocol};
    use pingora::protocols::ALPN;
    use std::time::Duration;

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(7),
            websocket_idle: Duration::from_secs(60),
            keepalive: Duration::from_secs(9),
        }
    }

    fn peer(url: &str, protocol: Protocol) -> HttpPeer {
        let mut spec = test_spec(url, 1);
        spec.protocol = protocol;
        peer_for(&spec, ([127, 0, 0, 1], 1).into(), &timeouts())
    }

    #[test]
    fn the_protocol_decides_the_http_versions_offered() {
        let h1 = peer("https://a.example", Protocol::Http1);
        assert_eq!(h1.options.alpn, ALPN::H1);
        assert_eq!(h1.sni, "a.example");
        let alpn = peer("https://a.example", Protocol::H2);
        assert_eq!(alpn.options.alpn, ALPN::H2H1);
        assert_eq!(alpn.options.max_h2_streams, MAX_H2_STREAMS);
        let h2c = peer("h2c://127.0.0.1:50051", Protocol::H2);
        assert_eq!(h2c.options.alpn, ALPN::H2);
        assert!(h2c.sni.is_empty());
        assert_eq!(h2c.options.read_timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn pooled_connections_are_closed_after_the_keepalive_timeout() {
        let h1 = peer("http://127.0.0.1:9001", Protocol::Http1);
        assert_eq!(h1.options.idle_timeout, Some(Duration::from_secs(9)));
    }
}

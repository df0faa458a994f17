//! The plain (cleartext) listener's application: HTTP/1.1 and h2c (HTTP/2 with prior
//! knowledge, as gRPC clients connect) on one port, told apart by the connection's first bytes.
//!
//! Why not Pingora's own switch (`HttpServerOptions { h2c: true }`)? It reads exactly 24 bytes
//! (the length of the HTTP/2 preface) before deciding, with no timeout: an HTTP/1 request
//! shorter than that (`GET / HTTP/1.0\r\n\r\n`, HAProxy's default health check
//! `OPTIONS / HTTP/1.0\r\n\r\n`) would never be answered, and a client that connects and sends
//! nothing would hold its connection forever. Here the bytes are read only until they stop
//! matching the preface (the first byte, for any HTTP/1 method), within the bound Pingora puts
//! on the first request of an HTTP/1 connection; then they are put back and the connection
//! goes to one of two proxies built from the same [`crate::proxy::Proxy`] logic: one with h2c
//! on (its own 24-byte read is then served from the bytes put back), one without.

use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use crate::serve::Serve;

/// The client connection preface of HTTP/2 (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to send enough bytes to tell HTTP/1 from HTTP/2: Pingora's
/// bound on the first request of an HTTP/1 connection (its default keep-alive timeout).
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(60);

/// What a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    Http1,
    H2c,
}

/// Serves HTTP/1.1 with `http1` and h2c with `h2c` (a proxy whose server options enable h2c).
pub struct PlainListener<A> {
    http1: Arc<A>,
    h2c: Arc<A>,
}

impl<A> PlainListener<A> {
    pub fn new(http1: A, h2c: A) -> Self {
        PlainListener {
            http1: Arc::new(http1),
            h2c: Arc::new(h2c),
        }
    }
}

/// Reads `stream`'s first bytes until they match the HTTP/2 preface or stop matching it, then
/// puts them back. `None` when the client closed first.
pub async fn sniff(stream: &mut TcpStream) -> std::io::Result<Option<Speaks>> {
    let mut buf = [0u8; PREFACE.len()];
    let mut len = 0;
    let speaks = loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(None);
        }
        len += n;
        if buf[..len] != PREFACE[..len] {
            break Speaks::Http1;
        }
        if len == PREFACE.len() {
            break Speaks::H2c;
        }
    };
    stream.rewind(&buf[..len]);
    Ok(Some(speaks))
}

impl<A: Serve> Serve for PlainListener<A> {
    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Plain listeners hand over Pingora's TCP stream; anything else keeps Pingora's own
        // (blocking) preface check.
        if !stream.as_any().is::<TcpStream>() {
            return self.h2c.serve(stream, shutdown).await;
        }
        let mut tcp = stream.into_any().downcast::<TcpStream>().ok()?;
        let app = match tokio::time::timeout(FIRST_BYTES_TIMEOUT, sniff(&mut tcp)).await {
            Ok(Ok(Some(Speaks::H2c))) => &self.h2c,
            Ok(Ok(Some(Speaks::Http1))) => &self.http1,
            // Closed, failed or silent before saying anything: nothing to answer.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
        };
        app.serve(tcp, shutdown).await
    }

    async fn stop(&self) {
        self.http1.stop().await;
        self.h2c.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Writes `sent` from a client and sniffs the server side; returns the verdict and what
    /// the server then reads back.
    async fn sniffed(sent: &[u8], close: bool) -> (Option<Speaks>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        client.write_all(sent).await.expect("write");
        if close {
            client.shutdown().await.expect("shutdown");
        }
        let mut server = TcpStream::from(server);
        let verdict = tokio::time::timeout(Duration::from_secs(5), sniff(&mut server))
            .await
            .expect("decided without waiting for more bytes")
            .expect("read");
        let mut back = vec![0u8; sent.len()];
        if verdict.is_some() {
            server.read_exact(&mut back).await.expect("bytes put back");
        }
        drop(client);
        (verdict, back)
    }

    #[tokio::test]
    async fn short_http1_requests_are_told_apart_at_once_and_kept_whole() {
        for request in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"OPTIONS / HTTP/1.0\r\n\r\n",
            b"POST /upload HTTP/1.1\r\nHost: a\r\n\r\n",
            // Matches the preface's first bytes, then differs.
            b"PRIVATE / HTTP/1.1\r\n\r\n",
        ] {
            let (verdict, back) = sniffed(request, false).await;
            assert_eq!(verdict, Some(Speaks::Http1), "{request:?}");
            assert_eq!(back, request);
        }
    }

    #[tokio::test]
    async fn the_preface_means_h2c_and_is_kept_whole() {
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        let (verdict, back) = sniffed(&sent, false).await;
        assert_eq!(verdict, Some(Speaks::H2c));
        assert_eq!(back, sent);
    }

    #[tokio::test]
    async fn a_client_that_closes_early_gets_nothing() {
        assert_eq!(sniffed(b"", true).await.0, None);
        assert_eq!(sniffed(b"PRI * HT", true).await.0, None);
    }
}

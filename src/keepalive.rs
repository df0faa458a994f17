//! The plain-HTTP proxy listener's connection loop: a keep-alive HTTP/1 connection waits for its
//! next request in a small future of Portico's, and enters Pingora's per-request state machine
//! only once the request's first byte has arrived.
//!
//! Why not Pingora's own loop (`impl ServerApp for T: HttpServerApp`): it calls
//! `HttpServerApp::process_new_http` *before* the request is read, and that future, boxed by
//! `async_trait`, inlines the whole proxy state machine (every phase, the `Session`, the
//! request context: ~9 KiB in a release build), plus a 4 KiB header buffer allocated before
//! the first read. Every idle keep-alive connection held all of it. Here an idle connection
//! holds the stream and a future of a few hundred bytes (BENCHMARKS.md, "Memory per idle
//! connection"). Everything else is Pingora's loop, line for line: the same session set-up, the
//! same reuse of the stream and of its persistent settings.
//!
//! The wait reads the next request's first bytes into the connection's read buffer without
//! consuming them (`Stream::fill_read_buf`, vendor patch 3), so the session then finds the
//! whole head in one read. Only plain HTTP/1 goes through it: a TLS stream has no such buffer
//! to fill (there is no way to wait for a TLS record without reading it), and HTTP/2 or custom
//! protocols are handed to Pingora's loop whole.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Peek, Stream};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use crate::serve::Serve;

/// How long a connection may wait between two requests when nothing else is configured:
/// Pingora's keep-alive default (Portico passes `client_timeouts.keepalive`).
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// The first request's keep-alive time in Pingora's loop (`set_keepalive(Some(60))`), unless a
/// header timeout is set.
const FIRST_REQUEST_SECS: u64 = 60;

/// Size of the L4 read buffer under each plain-HTTP client connection (Pingora's default is
/// 64 KiB, held for the life of the connection). The wait for a request reads its first byte
/// through this buffer, which takes in the whole request head in the same `read` when it fits:
/// 1 KiB is nginx's `client_header_buffer_size` default, enough for most request heads; a
/// longer head costs one more `read`. Bodies bypass the buffer (Pingora reads them in chunks
/// larger than it).
pub const READ_BUFFER: usize = 1024;

/// Wraps an HTTP app (Pingora's `HttpProxy`) with the lean keep-alive loop.
pub struct LeanKeepalive<A> {
    app: Arc<A>,
    keepalive: Duration,
    /// Set, and every waiting connection woken, when the service stops listening.
    closing: AtomicBool,
    wake: Notify,
}

impl<A> LeanKeepalive<A> {
    pub fn new(app: A, keepalive: Duration) -> Self {
        LeanKeepalive {
            app: Arc::new(app),
            keepalive,
            closing: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// Waits until the connection has bytes to read, which stay in its read buffer for the
    /// session's first read. False when it closed, failed, stayed silent for the keep-alive
    /// time (the time Pingora's session would wait too), or the service is stopping: the
    /// connection then ends without a response, as Pingora ends an idle one.
    async fn wait_for_request(&self, stream: &mut L4Stream, keepalive: Duration) -> bool {
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        // Under load the next request is often here already: then no timer and no waiter.
        if let Some(ready) = wait_readable(stream).now_or_never() {
            return ready;
        }
        let stopping = self.wake.notified();
        tokio::pin!(stopping);
        // Registered before the flag is read again, so a stop in between is not missed.
        stopping.as_mut().enable();
        if self.closing.load(Ordering::Acquire) {
            return false;
        }
        let wait = pingora::prelude::timeout(keepalive, wait_readable(stream));
        tokio::select! {
            biased;
            ready = wait => ready.unwrap_or(false),
            _ = stopping => false,
        }
    }
}

/// Whether bytes arrived (false: closed or failed). They are read into the stream's read
/// buffer (`fill_read_buf`, vendor patch 3), not consumed; a stream without a read buffer is
/// peeked instead (Pingora's `try_peek` puts the byte back).
async fn wait_readable(stream: &mut L4Stream) -> bool {
    match stream.fill_read_buf().await {
        Some(filled) => matches!(filled, Ok(n) if n > 0),
        None => stream.try_peek(&mut [0u8; 1]).await.is_ok(),
    }
}

impl<A> Serve for LeanKeepalive<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let options = self.app.server_options();
        let h2c_or_custom = options.is_some_and(|o| o.h2c || o.force_custom);
        // Only Pingora's plain TCP stream has the read buffer the wait fills; TLS (no way to
        // wait for a record without reading it), HTTP/2 and anything else take Pingora's loop.
        if h2c_or_custom || !stream.as_any().is::<L4Stream>() {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        let mut stream = stream.into_any().downcast::<L4Stream>().ok()?;
        // As Pingora's loop (with Portico's vendored header-limits patch) sets up sessions.
        let header_limits = options
            .map(|o| o.h1_request_header_limits)
            .unwrap_or_default();
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // With pipelining the next request may be read already: no wait then.
            let pipelined = persistent
                .as_ref()
                .is_some_and(|p| p.has_pipelined_prefix());
            let wait = persistent
                .as_ref()
                .and_then(|p| p.keepalive_timeout())
                .map_or(self.keepalive, Duration::from_secs);
            if !pipelined && !self.wait_for_request(&mut stream, wait).await {
                return None;
            }
            // The session (680 bytes) is built and moved into Pingora's boxed future inside
            // this block, so that it takes no room in this future's own state.
            let request = {
                let mut session = ServerSession::new_http1(stream);
                session.set_request_header_limits(header_limits);
                if first {
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    } else {
                        // Pingora's 60 s, or the header timeout rounded up to whole seconds.
                        let first_byte = header_limits.timeout.map_or(FIRST_REQUEST_SECS, |t| {
                            t.as_secs() + u64::from(t.subsec_nanos() > 0)
                        });
                        session.set_keepalive(Some(first_byte));
                    }
                    session.set_keepalive_reuses_remaining(
                        options.and_then(|o| o.keepalive_request_limit),
                    );
                    first = false;
                } else if let Some(settings) = persistent.take() {
                    // Keep-alive time, reuses left, pipelining and its bytes already read,
                    // and the user context of the previous request.
                    settings.apply_to_session(&mut session);
                }
                self.app.process_new_http(session, shutdown)
            };
            let reused = request.await?;
            let (next, settings) = reused.consume();
            // The same stream comes back: the downcast is a type check, not a copy.
            stream = next.into_any().downcast::<L4Stream>().ok()?;
            persistent = settings;
        }
    }

    async fn stop(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake.notify_waiters();
        self.app.http_cleanup().await;
    }
}

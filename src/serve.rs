//! Connection handlers stacked without a boxed future per layer: the proxy listener's cap,
//! protocol sniffing and keep-alive loop each wrap the next as a [`Serve`], whose future is
//! inlined into the one above, so a connection's task polls through plain calls.
//!
//! Pingora's `ServerApp` is an `async_trait`: every layer built on it allocates its future
//! and is polled through a pointer on each wake-up of the connection (measured at ~0.5 % of
//! CPU per request for two wrapper layers, BENCHMARKS.md). Only the outermost layer is a
//! `ServerApp` (Pingora calls it), and [`App`] puts a Pingora application at the bottom.

use std::future::Future;
use std::sync::Arc;

use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// Serves one client connection, as `ServerApp::process_new` does; `stop` is its `cleanup`.
pub trait Serve: Send + Sync + 'static {
    /// Serves `stream` until it ends; returns it when it may be reused (as Pingora's apps do).
    fn serve(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> impl Future<Output = Option<Stream>> + Send;

    /// The service stops listening (Pingora's `cleanup`).
    fn stop(&self) -> impl Future<Output = ()> + Send;
}

/// A Pingora application at the bottom of a stack of [`Serve`] layers.
pub struct App<A>(pub Arc<A>);

impl<A: ServerApp + Send + Sync + 'static> Serve for App<A> {
    async fn serve(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        self.0.process_new(stream, shutdown).await
    }

    async fn stop(&self) {
        self.0.cleanup().await;
    }
}

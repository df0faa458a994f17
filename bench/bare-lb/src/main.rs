//! The round-robin load balancer of Pingora's quick-start guide, pointed at plain-HTTP upstreams.
//! Run: `BARE_LISTEN=127.0.0.1:6188 BARE_UPSTREAMS=127.0.0.1:9001,127.0.0.1:9002 bare-lb -c conf.yaml`.
//! The benchmark's floor for what Pingora costs; with `--features tuned` (and `--profile tuned`)
//! the same proxy with Portico's build levers.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;

pub struct LB(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for LB {
    type CTX = ();
    fn new_ctx(&self) {}

    #[cfg(feature = "tuned")]
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let upstream = self.0.select(b"", 256).unwrap();
        Ok(Box::new(HttpPeer::new(upstream, false, String::new())))
    }
}

#[cfg(feature = "tuned")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let listen = std::env::var("BARE_LISTEN").unwrap_or_else(|_| "127.0.0.1:6188".into());
    let upstreams = std::env::var("BARE_UPSTREAMS").expect("BARE_UPSTREAMS=host:port,...");

    let mut my_server = Server::new(Some(Opt::parse_args())).unwrap();
    my_server.bootstrap();
    let upstreams = LoadBalancer::try_from_iter(upstreams.split(',')).unwrap();
    let mut lb = http_proxy_service(&my_server.configuration, LB(Arc::new(upstreams)));
    lb.add_tcp(&listen);
    my_server.add_service(lb);
    my_server.run_forever();
}

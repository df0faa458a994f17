//! Backend host names: resolving them (A and AAAA, with hickory-resolver, against the
//! configured name servers or the system's) and, in [`refresh`], resolving them again every
//! `dns.refresh` so that the pool follows DNS.

pub mod refresh;

pub use refresh::DnsRefresher;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::config::ConnectionConfig;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::DnsConfig;

/// Bound on one lookup, whatever the resolver's own retries: a silent name server must not
/// hold an admin request or a refresh round for long.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the resolver waits for one answer before asking again.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a "no such name" answer is believed: short, so that a name that appears is seen at
/// the next refresh.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Resolves backend host names. Cheap to share; answers are cached for their TTL.
pub struct Resolver {
    inner: Result<TokioResolver, String>,
}

/// Whether `host` (as in a backend URL) is an IP address rather than a name.
pub fn is_literal(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

impl Resolver {
    /// A resolver asking `config.servers`, or those of `/etc/resolv.conf` when there are none.
    /// Never fails: a resolver that cannot be built answers every lookup with the reason.
    pub fn new(config: &DnsConfig) -> Resolver {
        Resolver {
            inner: build(config),
        }
    }

    /// Every address of `host` (IPv4 first), or why there is none. An IP literal is its own
    /// answer. Bounded by [`LOOKUP_TIMEOUT`].
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let resolver = self.inner.as_ref().map_err(Clone::clone)?;
        // A trailing dot: the name is absolute, no search domain is tried.
        let fqdn = format!("{host}.");
        let answer = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(fqdn.as_str()))
            .await
            .map_err(|_| format!("no answer within {}s", LOOKUP_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        let mut addrs: Vec<IpAddr> = answer.iter().collect();
        addrs.sort_by_key(|ip| (ip.is_ipv6(), *ip));
        addrs.dedup();
        if addrs.is_empty() {
            return Err("no address".into());
        }
        Ok(addrs)
    }

    /// Looks up every name of `hosts` once, concurrently, on a runtime of its own (start-up
    /// runs before Pingora starts its runtimes). IP literals are answered without asking.
    pub fn lookup_blocking(
        config: &DnsConfig,
        hosts: &[String],
    ) -> HashMap<String, Result<Vec<IpAddr>, String>> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let why = format!("cannot start the resolver: {e}");
                return hosts
                    .iter()
                    .map(|h| (h.clone(), Err(why.clone())))
                    .collect();
            }
        };
        runtime.block_on(async {
            // Built on this runtime and dropped with it: its background tasks live here.
            let resolver = Resolver::new(config);
            let lookups = hosts.iter().map(|h| {
                let resolver = &resolver;
                async move { (h.clone(), resolver.lookup(h).await) }
            });
            futures::future::join_all(lookups)
                .await
                .into_iter()
                .collect()
        })
    }
}

fn build(config: &DnsConfig) -> Result<TokioResolver, String> {
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let servers = config
            .servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    opts.negative_max_ttl = Some(NEGATIVE_TTL);
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_answer_themselves_and_a_dead_server_gives_a_reason() {
        // A UDP port nobody listens on: the lookup fails (refused or timed out), it never hangs.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dead = socket.local_addr().expect("addr");
        drop(socket);
        let r = Resolver::new(&DnsConfig {
            servers: vec![dead],
            refresh: Duration::from_secs(1),
        });
        assert_eq!(
            r.lookup("127.0.0.9").await,
            Ok(vec!["127.0.0.9".parse().expect("ip")])
        );
        assert!(r.lookup("backend.invalid").await.is_err());
        assert!(is_literal("::1") && !is_literal("backend.test"));
    }
}

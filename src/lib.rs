//! Portico: a load-balancing HTTP gateway on Pingora. [`build`] wires a validated
//! [`config::Config`] into a Pingora `Server`; `main.rs` and the tests share that seam.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod keepalive;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod store;
pub mod tls;

use std::sync::Arc;

use log::info;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApi;
use crate::balancer::{strategy, Balancer};
use crate::config::{BackendSpec, Config};
use crate::control::Control;
use crate::health::{HealthChecker, Prober};
use crate::keepalive::LeanKeepalive;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxySettings};
use crate::store::{FileStore, PoolStore};

/// A start-up failure, with what failed and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// How the process was asked to run (from the command line).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions {
    pub upgrade: bool,
    pub daemon: bool,
    pub demo: bool,
}

/// Everything built from the configuration before any socket is bound.
pub struct Prepared {
    pub config: Config,
    pub balancer: Arc<Balancer>,
    pub prober: Arc<Prober>,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
}

/// Loads the stored pool (if any), resolves every backend and checks TLS files: everything
/// `portico -t` checks. Binds nothing.
pub fn prepare(config: Config) -> Result<Prepared, BuildError> {
    let store: Option<Box<dyn PoolStore>> = config
        .state_file
        .as_ref()
        .map(|p| Box::new(FileStore::new(p)) as Box<dyn PoolStore>);
    let specs: Vec<BackendSpec> = match &store {
        None => config.backends.clone(),
        Some(store) => match store.load().map_err(|e| BuildError(e.to_string()))? {
            Some(specs) => {
                info!(
                    "{}: {} backends (the state file wins over `backends` in the configuration)",
                    store.describe(),
                    specs.len()
                );
                specs
            }
            None => config.backends.clone(),
        },
    };
    if let Some(tls) = &config.tls {
        tls::tls_settings(tls)?;
    }
    tls::check_ca_file(config.server.ca_file.as_deref())?;
    let balancer = Arc::new(Balancer::new(
        strategy(config.strategy),
        config.health.rise,
        config.health.fall,
    ));
    let prober =
        Arc::new(Prober::new(&config.health).with_ca_file(config.server.ca_file.as_deref()));
    let cookie_key = match &config.sticky_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => format!("portico-sticky:{}", config.sticky_cookie).into_bytes(),
    };
    let control = Arc::new(Control::new(
        balancer.clone(),
        prober.clone(),
        store,
        config.timeouts.clone(),
        cookie_key,
    ));
    control
        .seed(&specs)
        .map_err(|e| BuildError(format!("backends: {e}")))?;
    let metrics =
        Arc::new(Metrics::new(balancer.clone()).map_err(|e| BuildError(format!("metrics: {e}")))?);
    Ok(Prepared {
        config,
        balancer,
        prober,
        control,
        metrics,
    })
}

/// Builds the Pingora server: health checker, proxy (HTTP and optional TLS), admin API,
/// lifecycle watcher and, with `--demo`, the demo origins. The proxy starts taking traffic
/// only after the health checker's first round.
pub fn build(config: Config, opts: RunOptions) -> Result<Server, BuildError> {
    let mut p = prepare(config)?;
    if !opts.upgrade {
        check_listeners_free(&p.config, opts.demo)?;
    }
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        nocapture: false,
        test: false,
        conf: None,
    };
    let server_conf = std::mem::take(&mut p.config.server);
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);

    let phases = server.watch_execution_phase();
    let conf = &p.config;

    let checker = HealthChecker::new(p.balancer.clone(), p.prober.clone(), conf.health.interval);
    let health = server.add_service(background_service("health checker", checker));
    // Bootstrap (with `-u`: receive the listening sockets; with `-d` and
    // `daemon_wait_for_ready`: release the waiting parent) runs after the first health round,
    // in the daemon, so the old process is asked to hand over only once this one is ready.
    let boot = server.bootstrap_as_a_service();
    boot.add_dependency(&health);
    // With `-u` the old process took admin changes until it handed its sockets over: reload
    // the stored pool before serving.
    let boot = if opts.upgrade {
        let resync = control::StoreResync::new(p.control.clone());
        let resync = server.add_service(background_service("pool resync", resync));
        resync.add_dependency(&boot);
        resync
    } else {
        boot
    };

    let settings = |tls: bool| ProxySettings {
        retries: conf.retries,
        access_log: conf.access_log,
        connect_timeout: conf.timeouts.connect,
        read_timeout: conf.timeouts.read,
        sticky_cookie: conf.sticky_cookie.clone(),
        tls,
    };
    // Idle keep-alive connections wait in Portico's small loop, not in Pingora's per-request
    // future, over a small read buffer (keepalive.rs).
    let app = pingora::proxy::http_proxy(
        &server.configuration,
        Proxy::new(p.balancer.clone(), p.metrics.clone(), settings(false)),
    );
    let mut proxy = Service::new(
        "proxy".to_string(),
        LeanKeepalive::new(app, keepalive::KEEPALIVE),
    );
    proxy.add_listener(
        ListenerConfig::tcp(conf.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(keepalive::READ_BUFFER)),
    );
    server.add_service(proxy).add_dependency(&boot);

    if let Some(tls) = &conf.tls {
        let mut https = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            Proxy::new(p.balancer.clone(), p.metrics.clone(), settings(true)),
            "proxy-tls",
        );
        https.add_tls_with_settings(&tls.listen.to_string(), None, tls::tls_settings(tls)?);
        server.add_service(https).add_dependency(&boot);
    }

    let api = AdminApi {
        control: p.control.clone(),
        metrics: p.metrics.clone(),
        token: conf.admin.token.clone(),
    };
    let mut admin = Service::new("admin".to_string(), api);
    admin.add_tcp(&conf.admin.listen.to_string());
    server.add_service(admin).add_dependency(&boot);

    let pid_file = server.configuration.pid_file.clone().into();
    let lifecycle = lifecycle::Lifecycle::new(p.control.clone(), phases, pid_file);
    server.add_service(background_service("lifecycle", lifecycle));

    if opts.demo {
        for origin in demo::services() {
            let handle = server.add_service(origin);
            // Fresh start: the demo origins must be up for the first health round. Upgrade:
            // their sockets come from the old process, so they wait for the hand-over.
            if opts.upgrade {
                handle.add_dependency(&boot);
            }
        }
    }
    Ok(server)
}

/// Fails when a listen address is already taken (Pingora would panic in a worker thread and
/// leave the process half up). Skipped with `-u`: the sockets then come from the old process.
fn check_listeners_free(conf: &Config, demo: bool) -> Result<(), BuildError> {
    let mut addrs = vec![("listen", conf.listen), ("admin.listen", conf.admin.listen)];
    if let Some(tls) = &conf.tls {
        addrs.push(("tls.listen", tls.listen));
    }
    if demo {
        for port in demo::DEMO_PORTS {
            addrs.push(("--demo", std::net::SocketAddr::from(([127, 0, 0, 1], port))));
        }
    }
    for (key, addr) in addrs {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        };
        let bound = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)
        });
        if let Err(e) = bound {
            return Err(BuildError(format!("{key}: cannot listen on {addr}: {e}")));
        }
    }
    Ok(())
}

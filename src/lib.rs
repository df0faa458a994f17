//! Portico: a load-balancing HTTP gateway on Pingora. [`build`] wires a validated
//! [`config::Config`] into a Pingora `Server`; `main.rs` and the tests share that seam.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod admin_client;
pub mod backend;
pub mod balancer;
pub mod cli;
pub mod client_policy;
pub mod config;
pub mod connection_limit;
pub mod control;
pub mod demo;
pub mod dns;
pub mod grpc_reply;
pub mod health;
pub mod keepalive;
pub mod lifecycle;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod peer;
pub mod preflight;
pub mod proxy;
pub mod reload;
pub mod serve;
pub mod signals;
pub mod store;
pub mod tls;

use std::sync::Arc;

use arc_swap::ArcSwap;
use log::info;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApi;
use crate::balancer::{strategy, Balancer, Replanner};
use crate::client_policy::ClientPolicy;
use crate::config::Config;
use crate::connection_limit::{ConnectionCounter, ConnectionLimit};
use crate::control::Control;
use crate::health::{HealthChecker, Prober};
use crate::keepalive::LeanKeepalive;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxySettings, SharedSettings};
use crate::serve::App;
use crate::store::{Entry, EtcdStore, FileStore, Loaded, Store, StoredPool};

/// A start-up failure, with what failed and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// How the process was asked to run (from the command line).
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub upgrade: bool,
    pub daemon: bool,
    pub demo: bool,
    /// The configuration file, re-read on `SIGHUP`; `None` for a built-in configuration.
    pub config_path: Option<std::path::PathBuf>,
}

/// Everything built from the configuration before any socket is bound.
pub struct Prepared {
    pub config: Config,
    pub balancer: Arc<Balancer>,
    pub prober: Arc<Prober>,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
    /// Problems that do not stop start-up (a backend name that does not resolve yet).
    pub warnings: Vec<String>,
}

/// Loads the pool from its store (without writing anything: an empty etcd prefix is not
/// seeded), resolves every backend and checks TLS files: everything `portico -t` checks.
/// Binds nothing.
pub fn prepare(config: Config) -> Result<Prepared, BuildError> {
    prepare_with(config, false)
}

/// The store the configuration names: etcd (with `state_file` as its local cache), else the
/// state file, else none (the pool lives in memory only).
fn open_store(config: &Config) -> Option<Arc<dyn Store>> {
    let file = config
        .state_file
        .as_ref()
        .map(|p| FileStore::new(p).with_initial(config.backends.clone()));
    match (&config.store.etcd, file) {
        (Some(etcd), cache) => Some(Arc::new(EtcdStore::new(etcd.clone(), cache))),
        (None, Some(file)) => Some(Arc::new(file)),
        (None, None) => None,
    }
}

/// Where the process's pool comes from: its store (seeding an empty etcd prefix from
/// `backends` when `seed`), else the configuration. Runs the store's client on a runtime of
/// its own, on a thread of its own (Pingora's runtimes do not exist yet, and a caller may be
/// inside a runtime), and drops its connections afterwards: they belong to that runtime.
fn load_pool(
    config: &Config,
    store: Option<&Arc<dyn Store>>,
    seed: bool,
) -> Result<Loaded, BuildError> {
    let Some(store) = store else {
        return Ok(Loaded {
            pool: StoredPool {
                revision: 0,
                backends: config
                    .backends
                    .iter()
                    .map(|spec| Entry {
                        spec: spec.clone(),
                        revision: 0,
                    })
                    .collect(),
            },
            origin: "the configuration's `backends`".into(),
            synced: true,
        });
    };
    let loaded = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| BuildError(format!("cannot start a runtime: {e}")))?;
                let loaded = runtime.block_on(store.bootstrap(&config.backends, seed));
                store.disconnect();
                loaded.map_err(|e| BuildError(e.to_string()))
            })
            .join()
            .map_err(|_| BuildError("loading the pool failed".into()))?
    })?;
    info!(
        "pool: {} backends from {}",
        loaded.pool.backends.len(),
        loaded.origin
    );
    Ok(loaded)
}

fn prepare_with(config: Config, seed: bool) -> Result<Prepared, BuildError> {
    let store = open_store(&config);
    let loaded = load_pool(&config, store.as_ref(), seed)?;
    if let Some(tls) = &config.tls {
        tls::tls_settings(tls)?;
    }
    tls::check_ca_file(config.server.ca_file.as_deref())?;
    let balancer = Arc::new(
        Balancer::new(
            strategy(config.strategy),
            config.health.rise,
            config.health.fall,
        )
        .with_resilience(config.outlier.clone(), config.slow_start),
    );
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
    let specs = loaded.pool.specs();
    // Host names are looked up now, all at once; one that does not resolve is no reason to
    // refuse to start: its backend starts DOWN and the DNS refresh retries it.
    let names: Vec<String> = specs
        .iter()
        .map(|s| s.url.host.clone())
        .filter(|h| !dns::is_literal(h))
        .collect();
    let answers = if names.is_empty() {
        Default::default()
    } else {
        dns::Resolver::lookup_blocking(&config.dns, &names)
    };
    let mut warnings = Vec::new();
    for spec in &specs {
        if let Some(Err(why)) = answers.get(&spec.url.host) {
            warnings.push(format!(
                "backends: cannot resolve {} ({why}); {} starts DOWN and is retried every \
                 dns.refresh",
                spec.url.host, spec.url
            ));
        }
    }
    control.set_resolver(dns::Resolver::new(&config.dns));
    control
        .start(&loaded, &answers)
        .map_err(|e| BuildError(format!("backends: {e}")))?;
    let metrics =
        Arc::new(Metrics::new(balancer.clone()).map_err(|e| BuildError(format!("metrics: {e}")))?);
    Ok(Prepared {
        config,
        balancer,
        prober,
        control,
        metrics,
        warnings,
    })
}

/// Builds the Pingora server: health checker, store watch, proxy (HTTP and optional TLS),
/// admin API, lifecycle watcher and, with `--demo`, the demo origins. The proxy starts taking
/// traffic only after the health checker's first round. Returns the server and the arguments
/// to run it with: their signal watch begins a graceful upgrade's hand-over (no admin change
/// acknowledged from then on) before Pingora sends the listening sockets.
pub fn build(config: Config, opts: RunOptions) -> Result<(Server, RunArgs), BuildError> {
    let mut p = prepare_with(config, true)?;
    for w in &p.warnings {
        log::warn!("{w}");
    }
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
    // Before the server keys move into Pingora: the reloader compares against all of them.
    let in_force = p.config.effective(false);
    let error_log = p.config.server.error_log.clone().filter(|_| opts.daemon);
    let server_conf = std::mem::take(&mut p.config.server);
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);

    let phases = server.watch_execution_phase();
    let conf = &p.config;

    server.add_service(background_service(
        "balancer replanner",
        Replanner::new(p.balancer.clone()),
    ));
    let checker = HealthChecker::new(p.balancer.clone(), p.prober.clone(), conf.health.interval);
    let health_interval = checker.interval_handle();
    let health = server.add_service(background_service("health checker", checker));
    let demo_origins: Vec<_> = if opts.demo {
        demo::services(demo::ports().map_err(BuildError)?)
            .into_iter()
            .map(|origin| server.add_service(origin))
            .collect()
    } else {
        Vec::new()
    };
    // Fresh start: the demo origins listen before the first health round (each is ready
    // once its socket accepts), so the demo answers from its first request. Upgrade: their
    // sockets come from the old process, so they wait for the hand-over (below).
    if !opts.upgrade {
        for origin in &demo_origins {
            health.add_dependency(origin);
        }
    }
    // Bootstrap (with `-u`: receive the listening sockets; with `-d` and
    // `daemon_wait_for_ready`: release the waiting parent) runs after the first health round,
    // in the daemon, so the old process is asked to hand over only once this one is ready.
    let boot = server.bootstrap_as_a_service();
    boot.add_dependency(&health);
    if opts.upgrade {
        for origin in &demo_origins {
            origin.add_dependency(&boot);
        }
    }
    // With `-u` the old process took admin changes until it handed its sockets over: reload
    // the stored pool before serving.
    if p.control.store().is_some() {
        let watch = control::StoreWatch::new(p.control.clone());
        server.add_service(background_service("store watch", watch));
    }
    let boot = if opts.upgrade {
        let resync = control::StoreResync::new(p.control.clone());
        let resync = server.add_service(background_service("pool resync", resync));
        resync.add_dependency(&boot);
        resync
    } else {
        boot
    };

    let policy = ClientPolicy {
        timeouts: conf.client_timeouts,
        limits: conf.limits,
    };
    let settings: SharedSettings = Arc::new(ArcSwap::from_pointee(proxy_settings(conf)));
    // One cap for the HTTP and HTTPS listeners together.
    let connections = ConnectionCounter::new(conf.max_connections);
    let server_conf = server.configuration.clone();
    let http_proxy = |tls: bool, h2c: bool| {
        let mut proxy = pingora::proxy::http_proxy(
            &server_conf,
            Proxy::new(
                p.balancer.clone(),
                p.metrics.clone(),
                settings.clone(),
                tls,
                p.control.phase_cell(),
            ),
        );
        let mut options = server_options(&policy);
        options.h2c = h2c;
        proxy.server_options = Some(options);
        proxy
    };
    // HTTP/1.1 and h2c (gRPC clients' HTTP/2 with prior knowledge) on the same port: the
    // listener reads the first bytes and hands the connection to one of two proxies.
    // Idle HTTP/1 keep-alive connections wait in Portico's small loop, not in Pingora's
    // per-request future, over a small read buffer (keepalive.rs; h2c goes to Pingora's loop).
    let keepalive = std::time::Duration::from_secs(policy.timeouts.keepalive_secs());
    let lean = |h2c: bool| LeanKeepalive::new(http_proxy(false, h2c), keepalive);
    let mut proxy = Service::new(
        "proxy".to_string(),
        ConnectionLimit::new(
            listener::PlainListener::new(lean(false), lean(true)),
            connections.clone(),
        ),
    );
    proxy.add_listener(
        ListenerConfig::tcp(conf.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(keepalive::READ_BUFFER)),
    );
    server.add_service(proxy).add_dependency(&boot);

    if let Some(tls) = &conf.tls {
        let mut https = Service::new(
            "proxy-tls".to_string(),
            ConnectionLimit::new(App(Arc::new(http_proxy(true, false))), connections.clone()),
        );
        https.add_tls_with_settings(&tls.listen.to_string(), None, tls::tls_settings(tls)?);
        server.add_service(https).add_dependency(&boot);
    }

    let api = AdminApi {
        control: p.control.clone(),
        metrics: p.metrics.clone(),
        token: conf.admin.token.clone(),
        guard: admin::AdminGuard::new(conf.admin.listen, conf.admin.hosts.clone()),
    };
    // The admin API reads request headers under the same limits as the proxy.
    let mut api = pingora::apps::http_app::HttpServer::new_app(api);
    api.server_options = Some(server_options(&policy));
    let mut admin = Service::new("admin".to_string(), api);
    admin.add_tcp(&conf.admin.listen.to_string());
    server.add_service(admin).add_dependency(&boot);

    let refresher = dns::DnsRefresher::new(p.control.clone(), conf.dns.refresh);
    let dns_refresh = refresher.interval_handle();
    server
        .add_service(background_service("dns refresh", refresher))
        .add_dependency(&boot);

    let reloader = opts.config_path.clone().map(|path| {
        let live = reload::Live {
            balancer: p.balancer.clone(),
            prober: p.prober.clone(),
            control: p.control.clone(),
            settings: settings.clone(),
            health_interval,
            dns_refresh,
        };
        Arc::new(reload::Reloader::new(path, in_force, live))
    });
    let signals = signals::Signals::new(reloader, error_log);
    server.add_service(background_service("signals", signals));

    let pid_file = server.configuration.pid_file.clone().into();
    let lifecycle = lifecycle::Lifecycle::new(p.control.clone(), phases, pid_file);
    server.add_service(background_service("lifecycle", lifecycle));

    let run_args = RunArgs {
        shutdown_signal: Box::new(lifecycle::HandOverSignals::new(p.control.clone())),
    };
    Ok((server, run_args))
}

/// Pingora's per-listener HTTP options: the request-header limits of `policy`.
fn server_options(policy: &ClientPolicy) -> pingora::apps::HttpServerOptions {
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h1_request_header_limits = policy.header_limits();
    options
}

/// The proxy's settings from `conf` (at start-up and on every reload).
pub fn proxy_settings(conf: &Config) -> ProxySettings {
    ProxySettings {
        retries: conf.retries,
        access_log: conf.access_log,
        connect_timeout: conf.timeouts.connect,
        read_timeout: conf.timeouts.read,
        websocket_idle: conf.timeouts.websocket_idle,
        sticky_cookie: conf.sticky_cookie.clone(),
        client: ClientPolicy {
            timeouts: conf.client_timeouts,
            limits: conf.limits,
        },
    }
}

/// Fails when a listen address is already taken (Pingora would panic in a worker thread and
/// leave the process half up). Skipped with `-u`: the sockets then come from the old process.
fn check_listeners_free(conf: &Config, demo: bool) -> Result<(), BuildError> {
    let mut addrs = vec![("listen", conf.listen), ("admin.listen", conf.admin.listen)];
    if let Some(tls) = &conf.tls {
        addrs.push(("tls.listen", tls.listen));
    }
    if demo {
        for port in demo::ports().map_err(BuildError)? {
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

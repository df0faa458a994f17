//! Configuration reload in place (`SIGHUP`): the file is read and validated again; a valid
//! file's reloadable keys are applied to the running parts without closing any connection,
//! the others are reported as taking effect at the next upgrade; an invalid file changes
//! nothing. One log line says what changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use serde_yaml::{Mapping, Value};
use tokio::sync::watch;

use crate::balancer::{strategy, Balancer};
use crate::config::Config;
use crate::control::Control;
use crate::health::Prober;
use crate::proxy::SharedSettings;

/// Keys applied in place by a reload. Every other key (the listeners, TLS, the admin API, the
/// state file, the sticky secret, Pingora's server keys) needs new sockets, threads or
/// cookies and takes effect at the next upgrade.
pub const RELOADABLE: &[&str] = &[
    "strategy",
    "health_check_frequency",
    "health_check",
    "timeouts",
    "retries",
    "access_log",
    "sticky_cookie",
    "backends",
    "dns",
    "outlier_detection",
    "slow_start",
];

/// The running parts a reload changes.
pub struct Live {
    pub balancer: Arc<Balancer>,
    pub prober: Arc<Prober>,
    pub control: Arc<Control>,
    pub settings: SharedSettings,
    pub health_interval: Arc<watch::Sender<Duration>>,
    /// `dns.refresh` of the running DNS refresh loop.
    pub dns_refresh: Arc<watch::Sender<Duration>>,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Keys applied in place.
    pub applied: Vec<String>,
    /// Keys that changed but wait for the next upgrade.
    pub deferred: Vec<String>,
    /// The file's errors: nothing was changed.
    pub errors: Vec<String>,
}

/// Re-reads the configuration file and applies it; reloads are serialised.
pub struct Reloader {
    path: PathBuf,
    live: Live,
    /// The configuration in force, as [`Config::effective`] (secrets unmasked). Keys that wait
    /// for an upgrade keep their old value here, so that every reload reports them.
    current: tokio::sync::Mutex<Mapping>,
}

impl Reloader {
    /// A reloader of `path`, whose configuration in force is `current` (as
    /// [`Config::effective`] without masking).
    pub fn new(path: PathBuf, current: Mapping, live: Live) -> Reloader {
        Reloader {
            path,
            live,
            current: tokio::sync::Mutex::new(current),
        }
    }

    /// Reads the file, and applies it when valid. Logs the outcome (one line for what changed,
    /// one per error).
    pub async fn reload(&self) -> Outcome {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load_all(&path)).await;
        let config = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                self.log_refusal(&errors);
                return Outcome {
                    errors,
                    ..Outcome::default()
                };
            }
            Err(e) => {
                let errors = vec![format!("cannot read the file: {e}")];
                self.log_refusal(&errors);
                return Outcome {
                    errors,
                    ..Outcome::default()
                };
            }
        };
        let mut current = self.current.lock().await;
        let next = config.effective(false);
        let mut outcome = Outcome::default();
        let keys: Vec<Value> = current
            .keys()
            .chain(next.keys().filter(|k| !current.contains_key(*k)))
            .cloned()
            .collect();
        for key in keys {
            let (old, new) = (current.get(&key), next.get(&key));
            if old == new {
                continue;
            }
            let name = key.as_str().unwrap_or("?").to_string();
            if RELOADABLE.contains(&name.as_str()) {
                match new {
                    Some(v) => current.insert(key.clone(), v.clone()),
                    None => current.remove(&key),
                };
                outcome.applied.push(name);
            } else {
                outcome.deferred.push(name);
            }
        }
        self.apply(&config, &outcome.applied).await;
        let shown = |keys: &[String]| keys.join(", ");
        if outcome.applied.is_empty() {
            info!(
                "configuration {} reloaded: nothing to change",
                self.path.display()
            );
        } else {
            info!(
                "configuration {} reloaded: changed {}",
                self.path.display(),
                shown(&outcome.applied)
            );
        }
        if !outcome.deferred.is_empty() {
            warn!(
                "configuration {}: {} changed; takes effect at the next upgrade",
                self.path.display(),
                shown(&outcome.deferred)
            );
        }
        outcome
    }

    fn log_refusal(&self, errors: &[String]) {
        for e in errors {
            error!("configuration {}: {e}", self.path.display());
        }
        warn!(
            "configuration {} not reloaded ({} errors); nothing changed",
            self.path.display(),
            errors.len()
        );
    }

    /// Applies the keys named in `changed` from `config` to the running parts.
    async fn apply(&self, config: &Config, changed: &[String]) {
        let has = |key: &str| changed.iter().any(|k| k == key);
        let live = &self.live;
        if has("timeouts") {
            live.control.set_timeouts(&config.timeouts);
        }
        if has("health_check") {
            live.prober.reconfigure(&config.health);
            live.balancer
                .set_rise_fall(config.health.rise, config.health.fall);
        }
        if has("health_check_frequency") {
            live.health_interval.send_replace(config.health.interval);
        }
        if has("outlier_detection") || has("slow_start") {
            live.balancer
                .set_resilience(config.outlier.clone(), config.slow_start);
        }
        if has("strategy") {
            live.balancer.set_strategy(strategy(config.strategy));
        }
        if ["timeouts", "retries", "access_log", "sticky_cookie"]
            .iter()
            .any(|k| has(k))
        {
            live.settings.store(Arc::new(crate::proxy_settings(config)));
        }
        if has("dns") {
            live.control
                .set_resolver(crate::dns::Resolver::new(&config.dns));
            live.dns_refresh.send_replace(config.dns.refresh);
        }
        if has("backends") {
            match live.control.store() {
                Some(store) => warn!(
                    "configuration {}: `backends` not re-applied: {} holds the pool (the store \
                     wins; change it through the admin API)",
                    self.path.display(),
                    store.describe()
                ),
                None => match live.control.apply(&config.backends).await {
                    Ok(n) => info!("backends: {n} added or removed by the reload"),
                    Err(e) => error!("backends: not all applied by the reload: {e}"),
                },
            }
        }
    }
}

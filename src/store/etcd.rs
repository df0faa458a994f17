//! The etcd store (`store.etcd`): the pool shared by every instance that uses the same prefix.
//!
//! Layout under the prefix (documented in README, "Running several instances"):
//! - `<prefix>/backends/<url, percent-encoded>` -> a [`BackendRecord`] as JSON. One key per
//!   backend, so that a write is conditioned on that backend alone: an add on the key's absence,
//!   a remove on the key's `mod_revision` as last applied. Writes about different backends on
//!   different instances never conflict.
//! - `<prefix>/seeded` -> `{"at": <unix seconds>}`, written in the same transaction as the
//!   first pool: an empty prefix is seeded from `backends:` exactly once, even when the
//!   operator later removes every backend.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use log::warn;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::{
    BackendRecord, Basis, Change, CommitError, Entry, Event, EventStream, FileStore, Loaded, Store,
    StoreError, StoredPool,
};
use crate::config::{BackendSpec, EtcdConfig};

/// The pool in etcd, with an optional local cache file (`state_file`) used only when etcd is
/// unreachable at start-up.
pub struct EtcdStore {
    config: EtcdConfig,
    cache: Option<FileStore>,
    /// The connection, made on first use and dropped after a failure (the next call
    /// reconnects). A `Client` is a cheap handle; clones share the connection.
    client: Mutex<Option<Client>>,
}

impl EtcdStore {
    /// A store for `config`; `cache` keeps a copy of the last pool applied.
    pub fn new(config: EtcdConfig, cache: Option<FileStore>) -> EtcdStore {
        EtcdStore {
            config,
            cache,
            client: Mutex::new(None),
        }
    }

    /// The key of the backend with `url`.
    pub fn backend_key(&self, url: &str) -> String {
        format!(
            "{}{}",
            self.backends_prefix(),
            utf8_percent_encode(url, NON_ALPHANUMERIC)
        )
    }

    fn backends_prefix(&self) -> String {
        format!("{}/backends/", self.config.prefix)
    }

    fn seeded_key(&self) -> String {
        format!("{}/seeded", self.config.prefix)
    }

    fn timeout(&self) -> Duration {
        self.config.timeout
    }

    fn endpoints(&self) -> String {
        self.config.endpoints.join(", ")
    }

    async fn connect(&self) -> Result<Client, String> {
        if let Some(c) = self.lock().clone() {
            return Ok(c);
        }
        let t = self.timeout();
        let mut options = ConnectOptions::new()
            .with_timeout(t)
            .with_connect_timeout(t)
            .with_keep_alive(t, t)
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &self.config.auth {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(ca) = &self.config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            options =
                options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
        }
        let connect = Client::connect(self.config.endpoints.clone(), Some(options));
        let client = bounded(t, connect).await?;
        *self.lock() = Some(client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decodes one backend key-value pair.
    fn entry(&self, kv: &KeyValue) -> Result<Entry, StoreError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let record: BackendRecord = serde_json::from_slice(kv.value())
            .map_err(|e| StoreError(format!("etcd key {key}: not a backend record: {e}")))?;
        if self.backend_key(&record.url) != key {
            // A record under another URL's key would let two keys name one backend.
            return Err(StoreError(format!(
                "etcd key {key}: holds backend {} (expected key {})",
                record.url,
                self.backend_key(&record.url)
            )));
        }
        let spec = record
            .into_spec()
            .map_err(|e| StoreError(format!("etcd key {key}: {e}")))?;
        Ok(Entry {
            spec,
            revision: revision(kv.mod_revision()),
        })
    }

    /// The stored pool, and whether the prefix was ever seeded or written.
    async fn read(&self) -> Result<(StoredPool, bool), String> {
        let mut client = self.connect().await?;
        let get = client.get(
            format!("{}/", self.config.prefix),
            Some(GetOptions::new().with_prefix()),
        );
        let resp = bounded(self.timeout(), get)
            .await
            .inspect_err(|_| self.disconnect())?;
        let header_revision = resp.header().map_or(0, |h| revision(h.revision()));
        let backends_prefix = self.backends_prefix();
        let mut seeded = false;
        let mut backends = Vec::new();
        for kv in resp.kvs() {
            if kv.key() == self.seeded_key().as_bytes() {
                seeded = true;
            } else if kv.key().starts_with(backends_prefix.as_bytes()) {
                backends.push(self.entry(kv).map_err(|e| e.0)?);
            }
        }
        let used = seeded || !backends.is_empty();
        let pool = StoredPool {
            revision: header_revision,
            backends,
        };
        Ok((pool, used))
    }

    /// Writes `initial` and the seeded marker if the marker is absent; returns whether it did.
    async fn seed(&self, initial: &[BackendSpec]) -> Result<(bool, u64), String> {
        let mut client = self.connect().await?;
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut puts = vec![TxnOp::put(
            self.seeded_key(),
            serde_json::json!({ "at": at }).to_string(),
            None,
        )];
        for spec in initial {
            let record = serde_json::to_string(&BackendRecord::from_spec(spec))
                .map_err(|e| format!("cannot encode {}: {e}", spec.url))?;
            puts.push(TxnOp::put(
                self.backend_key(&spec.url.to_string()),
                record,
                None,
            ));
        }
        let txn = Txn::new()
            .when([Compare::version(self.seeded_key(), CompareOp::Equal, 0)])
            .and_then(puts);
        let resp = bounded(self.timeout(), client.txn(txn))
            .await
            .inspect_err(|_| self.disconnect())?;
        let rev = resp.header().map_or(0, |h| revision(h.revision()));
        Ok((resp.succeeded(), rev))
    }

    async fn bootstrap_online(
        &self,
        initial: &[BackendSpec],
        seed: bool,
    ) -> Result<(StoredPool, String), String> {
        let here = format!("etcd {} prefix {}", self.endpoints(), self.config.prefix);
        if seed {
            let (seeded, rev) = self.seed(initial).await?;
            if seeded {
                let pool = StoredPool {
                    revision: rev,
                    backends: initial
                        .iter()
                        .map(|spec| Entry {
                            spec: spec.clone(),
                            revision: rev,
                        })
                        .collect(),
                };
                return Ok((pool, format!("{here} (empty: seeded from `backends`)")));
            }
        }
        match self.read().await? {
            (pool, true) => {
                let origin = format!("{here} (revision {})", pool.revision);
                Ok((pool, origin))
            }
            (_, false) => {
                let pool = StoredPool {
                    revision: 0,
                    backends: initial
                        .iter()
                        .map(|spec| Entry {
                            spec: spec.clone(),
                            revision: 0,
                        })
                        .collect(),
                };
                Ok((
                    pool,
                    format!("{here} (empty: would be seeded from `backends`)"),
                ))
            }
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn describe(&self) -> String {
        format!("etcd {} prefix {}", self.endpoints(), self.config.prefix)
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoints": self.config.endpoints,
            "prefix": self.config.prefix,
            "cache": self.cache.as_ref().map(|c| c.path().display().to_string()),
        })
    }

    async fn bootstrap(&self, initial: &[BackendSpec], seed: bool) -> Result<Loaded, StoreError> {
        let unreachable = match self.bootstrap_online(initial, seed).await {
            Ok((pool, origin)) => {
                if seed {
                    self.remember(&pool).await;
                }
                return Ok(Loaded {
                    pool,
                    origin,
                    synced: true,
                });
            }
            Err(e) => e,
        };
        let Some(cache) = &self.cache else {
            return Err(StoreError(format!(
                "store.etcd: cannot reach etcd at {} ({unreachable}); start etcd, or set \
                 `state_file` so that Portico can start from its cached copy of the pool",
                self.endpoints()
            )));
        };
        if seed {
            cache.clean_leftovers();
        }
        match cache.read()? {
            Some(pool) => Ok(Loaded {
                origin: format!(
                    "the cache {} (revision {}): etcd at {} is unreachable ({unreachable}); \
                     admin changes are refused until it is back",
                    cache.path().display(),
                    pool.revision,
                    self.endpoints()
                ),
                pool,
                synced: false,
            }),
            None => Err(StoreError(format!(
                "store.etcd: cannot reach etcd at {} ({unreachable}), and the cache {} holds \
                 no pool yet",
                self.endpoints(),
                cache.path().display()
            ))),
        }
    }

    /// A prefix that holds neither backends nor the seeded marker was wiped (or never seeded):
    /// that is refused rather than applied as an empty pool, which would take every backend
    /// out of traffic on every instance. Restarting an instance seeds it again.
    async fn load(&self) -> Result<StoredPool, StoreError> {
        match self.read().await.map_err(StoreError)? {
            (pool, true) => Ok(pool),
            (_, false) => Err(StoreError(format!(
                "etcd prefix {} holds no pool (never seeded, or wiped); keeping the pool \
                 applied; restart an instance to seed it from `backends`",
                self.config.prefix
            ))),
        }
    }

    async fn commit(&self, basis: Basis, change: &Change) -> Result<u64, CommitError> {
        let key = self.backend_key(&change.url().to_string());
        let txn = match change {
            Change::Add(spec) => {
                let record = serde_json::to_string(&BackendRecord::from_spec(spec))
                    .map_err(|e| CommitError::Failed(format!("cannot encode {}: {e}", spec.url)))?;
                Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, record, None)])
            }
            Change::Remove(_) => {
                let Some(applied) = basis.key_revision else {
                    return Err(CommitError::Conflict);
                };
                let applied = i64::try_from(applied).map_err(|_| CommitError::Conflict)?;
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        applied,
                    )])
                    .and_then([TxnOp::delete(key, None)])
            }
        };
        let mut client = self.connect().await.map_err(CommitError::Unavailable)?;
        let resp = match tokio::time::timeout(self.timeout(), client.txn(txn)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                self.disconnect();
                return Err(CommitError::Unavailable(e.to_string()));
            }
            Err(_) => {
                self.disconnect();
                return Err(CommitError::Unavailable(format!(
                    "no answer from etcd within {:?} (the change may still be applied: \
                     check /status before retrying)",
                    self.timeout()
                )));
            }
        };
        if !resp.succeeded() {
            return Err(CommitError::Conflict);
        }
        Ok(resp.header().map_or(0, |h| revision(h.revision())))
    }

    async fn watch(&self, from: u64) -> Result<Option<EventStream>, StoreError> {
        let mut client = self.connect().await.map_err(StoreError)?;
        let start = i64::try_from(from.saturating_add(1)).unwrap_or(i64::MAX);
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        // The whole prefix: the seeded marker's deletion means the prefix was wiped.
        let watch = client.watch(format!("{}/", self.config.prefix), Some(options));
        let stream = bounded(self.timeout(), watch)
            .await
            .inspect_err(|_| self.disconnect())
            .map_err(StoreError)?;
        let decoder = EtcdStore::new(self.config.clone(), None);
        let events = futures::stream::unfold(
            (stream, decoder, false),
            |(mut stream, store, done)| async move {
                if done {
                    return None;
                }
                let item = match stream.message().await {
                    Ok(Some(resp)) if resp.canceled() => Err(StoreError(format!(
                        "etcd cancelled the watch: {} (compacted at revision {})",
                        resp.cancel_reason(),
                        resp.compact_revision()
                    ))),
                    Ok(Some(resp)) => store.decode(resp.events()),
                    Ok(None) => Err(StoreError("etcd closed the watch".into())),
                    Err(e) => Err(StoreError(format!("etcd watch failed: {e}"))),
                };
                let done = item.is_err();
                Some((item, (stream, store, done)))
            },
        );
        Ok(Some(events.boxed()))
    }

    async fn remember(&self, pool: &StoredPool) {
        let Some(cache) = &self.cache else {
            return;
        };
        let (cache, pool) = (cache.clone(), pool.clone());
        let saved = tokio::task::spawn_blocking(move || cache.save(&pool)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("cannot update the cache of the etcd pool: {e}"),
            Err(e) => warn!("cannot update the cache of the etcd pool: {e}"),
        }
    }

    fn disconnect(&self) {
        *self.lock() = None;
    }
}

impl EtcdStore {
    /// One watch response's events about backends. A batch that deletes the seeded marker
    /// (the prefix was wiped, e.g. `etcdctl del --prefix`) is refused as a whole: applying it
    /// would take every backend out of traffic; the resync that follows refuses it too.
    fn decode(&self, events: &[etcd_client::Event]) -> Result<Vec<Event>, StoreError> {
        let seeded = self.seeded_key();
        let backends = self.backends_prefix();
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            if kv.key() == seeded.as_bytes() && ev.event_type() == EventType::Delete {
                return Err(StoreError(format!(
                    "etcd prefix {} was wiped (its seeded marker deleted); keeping the pool \
                     applied",
                    self.config.prefix
                )));
            }
            if !kv.key().starts_with(backends.as_bytes()) {
                continue;
            }
            out.push(match ev.event_type() {
                EventType::Put => Event::Put(self.entry(kv)?),
                EventType::Delete => self.deleted(kv)?,
            });
        }
        Ok(out)
    }

    /// A delete event: the URL is recovered from the key (the value is gone).
    fn deleted(&self, kv: &KeyValue) -> Result<Event, StoreError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let encoded = key.strip_prefix(&self.backends_prefix()).unwrap_or(&key);
        let url = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .map_err(|e| StoreError(format!("etcd key {key}: {e}")))?;
        let url = crate::config::BackendUrl::parse(&url)
            .map_err(|e| StoreError(format!("etcd key {key}: {e}")))?;
        Ok(Event::Delete {
            url,
            revision: revision(kv.mod_revision()),
        })
    }
}

/// etcd's revisions are positive `i64`s.
fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

/// Runs `call`, failing with a message after `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> EtcdStore {
        EtcdStore::new(
            EtcdConfig {
                endpoints: vec!["http://127.0.0.1:1".into()],
                prefix: "/p".into(),
                auth: None,
                ca_file: None,
                timeout: Duration::from_millis(200),
            },
            None,
        )
    }

    #[test]
    fn keys_encode_the_url_and_decode_back() {
        let s = store();
        let key = s.backend_key("http://127.0.0.1:9001");
        assert_eq!(key, "/p/backends/http%3A%2F%2F127%2E0%2E0%2E1%3A9001");
        let kv_key = key.clone();
        let encoded = kv_key.strip_prefix(&s.backends_prefix()).expect("prefix");
        let decoded = percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .expect("utf8");
        assert_eq!(decoded, "http://127.0.0.1:9001");
    }

    #[tokio::test]
    async fn unreachable_etcd_without_a_cache_refuses_with_a_clear_message() {
        let e = store()
            .bootstrap(&[], true)
            .await
            .expect_err("nothing listens on port 1");
        assert!(
            e.0.contains("cannot reach etcd at http://127.0.0.1:1"),
            "{e}"
        );
        assert!(e.0.contains("state_file"), "{e}");
    }
}

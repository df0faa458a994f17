//! The pool's source of truth behind one revisioned interface, [`Store`]: a local file
//! ([`FileStore`], `state_file`, the single-machine default) or etcd ([`EtcdStore`],
//! `store.etcd`, shared by a fleet). Every write is conditioned on what the writer last applied,
//! so a writer that is behind never overwrites a change it has not seen.

mod etcd;
mod file;

pub use etcd::EtcdStore;
pub use file::FileStore;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::config::{BackendSpec, BackendUrl, Protocol};

/// A failure to read the store; the message names the store and the cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// One backend as stored (a JSON object in the file's list, or the value of its etcd key).
/// Unknown fields are refused rather than dropped, so that a record written by a newer Portico
/// is never silently rewritten without its new fields. To add a field: add it here with
/// `#[serde(default, skip_serializing_if = ...)]` (older records stay valid) and carry it in
/// [`BackendRecord::from_spec`] and [`BackendRecord::into_spec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendRecord {
    pub url: String,
    pub weight: u32,
    /// `"h2"` for an HTTP/2 backend; absent for HTTP/1.1 (and in records written before it
    /// existed, which therefore load unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl BackendRecord {
    /// The record of `spec`.
    pub fn from_spec(spec: &BackendSpec) -> BackendRecord {
        BackendRecord {
            url: spec.url.to_string(),
            weight: spec.weight,
            protocol: spec.is_h2().then(|| spec.protocol.name().to_string()),
        }
    }

    /// The spec this record describes, checked like a configured backend.
    pub fn into_spec(self) -> Result<BackendSpec, String> {
        let url = BackendUrl::parse(&self.url)?;
        let weight = BackendSpec::check_weight("weight", i64::from(self.weight))
            .map_err(|e| e.to_string())?;
        let protocol = Protocol::for_url(&url, self.protocol.as_deref())
            .map_err(|e| format!("protocol: {e}"))?;
        Ok(BackendSpec {
            url,
            weight,
            protocol,
        })
    }
}

/// One stored backend and the store revision at which it was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub spec: BackendSpec,
    pub revision: u64,
}

/// The whole stored pool as of `revision` (every change up to it included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPool {
    pub revision: u64,
    pub backends: Vec<Entry>,
}

impl StoredPool {
    /// The backends' specs, in stored order.
    pub fn specs(&self) -> Vec<BackendSpec> {
        self.backends.iter().map(|e| e.spec.clone()).collect()
    }
}

/// One change to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Adds a backend (refused when its URL is stored already).
    Add(BackendSpec),
    /// Removes the backend with this URL.
    Remove(BackendUrl),
}

impl Change {
    /// The URL the change is about.
    pub fn url(&self) -> &BackendUrl {
        match self {
            Change::Add(spec) => &spec.url,
            Change::Remove(url) => url,
        }
    }
}

/// What a conditional write is conditioned on: what the writer last applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basis {
    /// The store revision the writer's pool is at (the file store compares it).
    pub revision: u64,
    /// The revision of the backend's own record as last applied, `None` when the writer has
    /// no such backend (etcd compares it: per-backend conditions let unrelated writes on other
    /// instances proceed).
    pub key_revision: Option<u64>,
}

/// Why a conditional write was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The store changed since the basis (another writer): nothing written; resync and retry.
    #[error("the stored pool changed since it was last read")]
    Conflict,
    /// The store cannot be reached: nothing written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused or failed the write: nothing written.
    #[error("{0}")]
    Failed(String),
    /// The change is in the store (visible at `revision`) but its durability is not confirmed
    /// (e.g. the directory fsync after the rename failed). Apply it: it is not undone.
    #[error("{message}")]
    Uncertain { revision: u64, message: String },
}

/// A change another writer made, as the store's watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Entry),
    Delete { url: BackendUrl, revision: u64 },
}

/// Events in revision order; an error ends the watch (resync, then watch again).
pub type EventStream = BoxStream<'static, Result<Vec<Event>, StoreError>>;

/// The pool a process starts from, and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub pool: StoredPool,
    /// For the log: "etcd ... (seeded from `backends`)", "state file ...", ...
    pub origin: String,
    /// False when the pool is a local cache (the store was unreachable): writes are refused
    /// until a resync succeeds.
    pub synced: bool,
}

/// Where the pool lives. Implementations are cheap to share (`Arc<dyn Store>`); every method
/// is bounded in time.
#[async_trait]
pub trait Store: Send + Sync {
    /// `"file"` or `"etcd"`, for `/status`.
    fn kind(&self) -> &'static str;

    /// Names the store in messages ("state file /var/lib/portico/state.json").
    fn describe(&self) -> String;

    /// Static facts for `/status` (path; endpoints and prefix).
    fn info(&self) -> serde_json::Value;

    /// The pool to start from. With `seed`, an empty store is seeded from `initial` once,
    /// atomically (the first instance wins); without it nothing is written (`portico -t`).
    async fn bootstrap(&self, initial: &[BackendSpec], seed: bool) -> Result<Loaded, StoreError>;

    /// The whole stored pool now.
    async fn load(&self) -> Result<StoredPool, StoreError>;

    /// Writes `change` if the store still matches `basis`; returns the new revision. Returns
    /// only once the store has committed it durably (or [`CommitError::Uncertain`]).
    async fn commit(&self, basis: Basis, change: &Change) -> Result<u64, CommitError>;

    /// Changes made after `revision` by other writers, or `None` when the store has no other
    /// writers to watch (the file: only one process writes it at a time).
    async fn watch(&self, revision: u64) -> Result<Option<EventStream>, StoreError>;

    /// Keeps a local copy of `pool` where the store has one (etcd's cache file). Best effort.
    async fn remember(&self, _pool: &StoredPool) {}

    /// Drops connections made so far (they belong to the runtime that made them).
    fn disconnect(&self) {}
}

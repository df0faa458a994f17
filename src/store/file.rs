//! The file store (`state_file`): the pool as one JSON file with a revision counter, replaced
//! atomically (temporary file, fsync, rename, directory fsync) under an advisory lock, so that
//! two processes of a graceful upgrade never interleave a read-modify-write. Also etcd's local
//! cache of the last pool it applied.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::{
    BackendRecord, Basis, Change, CommitError, Entry, EventStream, Loaded, Store, StoreError,
    StoredPool,
};
use crate::config::BackendSpec;

/// `{"version": 1, "revision": N, "backends": [...]}`; files written before revisions existed
/// have none and load as revision 0.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    #[serde(default)]
    revision: u64,
    backends: Vec<BackendRecord>,
}

const STATE_VERSION: u32 = 1;

/// How a write failed: before the rename nothing changed; after it the new content is in place.
#[derive(Debug)]
enum WriteError {
    NotWritten(String),
    WrittenNotSynced(String),
}

/// The pool as a JSON file. A crash at any point leaves either the old or the new file, never
/// a mix; a temporary file left by a crashed process is removed at the next start. A missing
/// file is the configured `backends` at revision 0. The directory must exist (the systemd
/// unit's `StateDirectory=` creates it); a write into a missing one fails and changes nothing.
#[derive(Clone)]
pub struct FileStore {
    path: PathBuf,
    /// The pool while the file does not exist (the configuration's `backends`).
    initial: Vec<BackendSpec>,
    /// fsync of the directory after the rename (a seam for tests of its failure).
    sync_dir: fn(&Path) -> io::Result<()>,
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FileStore {
    /// A store at `path` (nothing is read or written until used).
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore {
            path: path.into(),
            initial: Vec::new(),
            sync_dir: fsync_dir,
        }
    }

    /// Sets the pool that a missing file stands for.
    pub fn with_initial(mut self, initial: Vec<BackendSpec>) -> FileStore {
        self.initial = initial;
        self
    }

    /// Where the pool is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory that holds the file (and its temporary and lock siblings).
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into())
    }

    fn tmp_prefix(&self) -> String {
        format!(".{}.tmp.", self.name())
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("state file {}: {what}: {e}", self.path.display())
    }

    /// Reads the stored pool (`None`: no file).
    pub fn read(&self) -> Result<Option<StoredPool>, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError(self.fail("cannot read", e))),
        };
        let doc: StateDoc = serde_json::from_str(&text)
            .map_err(|e| StoreError(self.fail("corrupt (not valid state JSON)", e)))?;
        if doc.version != STATE_VERSION {
            return Err(StoreError(self.fail("unsupported version", doc.version)));
        }
        let mut backends: Vec<Entry> = Vec::with_capacity(doc.backends.len());
        for (i, record) in doc.backends.into_iter().enumerate() {
            let spec = record
                .into_spec()
                .map_err(|e| StoreError(self.fail(&format!("backends[{i}]"), e)))?;
            if backends.iter().any(|e| e.spec.url == spec.url) {
                let dup = format!("duplicate {}", spec.url);
                return Err(StoreError(self.fail(&format!("backends[{i}]"), dup)));
            }
            backends.push(Entry {
                spec,
                revision: doc.revision,
            });
        }
        Ok(Some(StoredPool {
            revision: doc.revision,
            backends,
        }))
    }

    /// The stored pool, or the initial one at revision 0 when there is no file.
    fn current(&self) -> Result<StoredPool, StoreError> {
        Ok(self.read()?.unwrap_or_else(|| StoredPool {
            revision: 0,
            backends: self
                .initial
                .iter()
                .map(|spec| Entry {
                    spec: spec.clone(),
                    revision: 0,
                })
                .collect(),
        }))
    }

    /// Replaces the file with `pool`, atomically.
    fn write(&self, pool: &StoredPool) -> Result<(), WriteError> {
        let doc = StateDoc {
            version: STATE_VERSION,
            revision: pool.revision,
            backends: pool
                .backends
                .iter()
                .map(|e| BackendRecord::from_spec(&e.spec))
                .collect(),
        };
        let mut text = serde_json::to_vec_pretty(&doc)
            .map_err(|e| WriteError::NotWritten(self.fail("cannot encode", e)))?;
        text.push(b'\n');
        let dir = self.dir();
        let tmp = dir.join(format!("{}{}", self.tmp_prefix(), std::process::id()));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(WriteError::NotWritten(self.fail("cannot write", e)));
        }
        // The rename is done: the new content is what every reader sees from now on, even if
        // the directory entry may not yet survive a power loss.
        (self.sync_dir)(&dir).map_err(|e| {
            WriteError::WrittenNotSynced(self.fail(
                "the change is written but the directory fsync failed, so it may not survive \
                 a power loss",
                e,
            ))
        })
    }

    /// Holds an exclusive advisory lock on `.<name>.lock` beside the file until dropped.
    fn lock(&self) -> Result<File, String> {
        let lock_path = self.dir().join(format!(".{}.lock", self.name()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.fail("cannot open the lock file", e))?;
        file.lock()
            .map_err(|e| self.fail("cannot lock the lock file", e))?;
        Ok(file)
    }

    /// Writes `change` if the file is still at `basis.revision`.
    pub fn commit_now(&self, basis: Basis, change: &Change) -> Result<u64, CommitError> {
        let _lock = self.lock().map_err(CommitError::Failed)?;
        let mut pool = self.current().map_err(|e| CommitError::Failed(e.0))?;
        if pool.revision != basis.revision {
            return Err(CommitError::Conflict);
        }
        let position = pool
            .backends
            .iter()
            .position(|e| &e.spec.url == change.url());
        pool.revision += 1;
        match (change, position) {
            (Change::Add(spec), None) => pool.backends.push(Entry {
                spec: spec.clone(),
                revision: pool.revision,
            }),
            (Change::Remove(_), Some(i)) => {
                pool.backends.remove(i);
            }
            _ => return Err(CommitError::Conflict),
        }
        match self.write(&pool) {
            Ok(()) => Ok(pool.revision),
            Err(WriteError::NotWritten(m)) => Err(CommitError::Failed(m)),
            Err(WriteError::WrittenNotSynced(message)) => Err(CommitError::Uncertain {
                revision: pool.revision,
                message,
            }),
        }
    }

    /// Writes `pool` whatever the file holds (etcd's cache: the file is a copy, not the truth).
    pub fn save(&self, pool: &StoredPool) -> Result<(), StoreError> {
        let _lock = self.lock().map_err(StoreError)?;
        self.write(pool).map_err(|e| match e {
            WriteError::NotWritten(m) | WriteError::WrittenNotSynced(m) => StoreError(m),
        })
    }

    /// Removes temporary files left beside the state file by a process that died while
    /// writing (`kill -9`, power loss). A live process's file is left alone: during a graceful
    /// upgrade the old process may be writing one.
    pub fn clean_leftovers(&self) {
        let prefix = self.tmp_prefix();
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(&prefix) else {
                continue;
            };
            let alive = pid.parse::<u32>().is_ok_and(|pid| {
                pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
            });
            if !alive {
                match fs::remove_file(entry.path()) {
                    Ok(()) => info!(
                        "removed {} left by a crashed process",
                        entry.path().display()
                    ),
                    Err(e) => warn!("cannot remove {}: {e}", entry.path().display()),
                }
            }
        }
    }
}

#[async_trait]
impl Store for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }

    fn info(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path.display().to_string() })
    }

    async fn bootstrap(&self, _initial: &[BackendSpec], seed: bool) -> Result<Loaded, StoreError> {
        if seed {
            self.clean_leftovers();
        }
        let stored = self.read()?;
        let origin = match &stored {
            Some(p) => format!(
                "{} (revision {}; the state file wins over `backends` in the configuration)",
                self.describe(),
                p.revision
            ),
            None => format!(
                "the configuration's `backends` ({} not written yet)",
                self.describe()
            ),
        };
        Ok(Loaded {
            pool: self.current()?,
            origin,
            synced: true,
        })
    }

    async fn load(&self) -> Result<StoredPool, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.current())
            .await
            .map_err(|e| StoreError(format!("cannot read the pool: {e}")))?
    }

    async fn commit(&self, basis: Basis, change: &Change) -> Result<u64, CommitError> {
        let this = self.clone();
        let change = change.clone();
        tokio::task::spawn_blocking(move || this.commit_now(basis, &change))
            .await
            .map_err(|e| CommitError::Failed(format!("cannot save the pool: {e}")))?
    }

    async fn watch(&self, _revision: u64) -> Result<Option<EventStream>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_spec as spec;
    use crate::config::Protocol;

    fn add(url: &str) -> Change {
        Change::Add(spec(url, 1))
    }

    fn at(revision: u64) -> Basis {
        Basis {
            revision,
            key_revision: None,
        }
    }

    #[test]
    fn round_trips_with_a_revision_and_missing_is_the_initial_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path().join("state.json"))
            .with_initial(vec![spec("http://127.0.0.1:1", 1)]);
        assert!(store.read().expect("readable").is_none());
        assert_eq!(store.current().expect("initial").specs().len(), 1);
        assert_eq!(
            store.commit_now(at(0), &add("https://a.example:8443")),
            Ok(1)
        );
        let pool = store.read().expect("readable").expect("written");
        assert_eq!(pool.revision, 1);
        assert_eq!(
            pool.specs(),
            [
                spec("http://127.0.0.1:1", 1),
                spec("https://a.example:8443", 1)
            ]
        );
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".tmp.")),
            "temporary file left behind: {names:?}"
        );
    }

    #[test]
    fn writes_from_a_stale_revision_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path().join("state.json"));
        assert_eq!(store.commit_now(at(0), &add("http://127.0.0.1:1")), Ok(1));
        assert!(matches!(
            store.commit_now(at(0), &add("http://127.0.0.1:2")),
            Err(CommitError::Conflict)
        ));
        assert!(matches!(
            store.commit_now(at(1), &add("http://127.0.0.1:1")),
            Err(CommitError::Conflict)
        ));
        let url = spec("http://127.0.0.1:1", 1).url;
        assert_eq!(store.commit_now(at(1), &Change::Remove(url)), Ok(2));
        assert_eq!(store.read().expect("read").expect("file").backends, []);
    }

    #[test]
    fn a_failed_directory_fsync_reports_the_change_as_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileStore::new(dir.path().join("state.json"));
        store.sync_dir = |_| Err(io::Error::other("injected"));
        match store.commit_now(at(0), &add("http://127.0.0.1:1")) {
            Err(CommitError::Uncertain { revision, message }) => {
                assert_eq!(revision, 1);
                assert!(message.contains("written"), "{message}");
            }
            other => panic!("expected Uncertain, got {other:?}"),
        }
        assert_eq!(store.read().expect("read").expect("file").revision, 1);
    }

    #[test]
    fn a_missing_directory_fails_the_write_with_the_path_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("state.json");
        let store = FileStore::new(&path);
        assert!(store.read().expect("nothing stored yet").is_none());
        match store.commit_now(at(0), &add("http://127.0.0.1:1")) {
            Err(CommitError::Failed(m)) => assert!(m.contains(&path.display().to_string()), "{m}"),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path().join("state.json"));
        // No process has pid 4194305 (above Linux's pid_max ceiling).
        let dead = dir.path().join(".state.json.tmp.4194305");
        let live = dir
            .path()
            .join(format!(".state.json.tmp.{}", std::process::id()));
        fs::write(&dead, "partial").expect("write");
        fs::write(&live, "partial").expect("write");
        store.clean_leftovers();
        assert!(!dead.exists(), "a dead process's temporary file was kept");
        assert!(live.exists(), "a live process's temporary file was removed");
    }

    #[test]
    fn corrupt_files_are_refused_with_the_path_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        for bad in [
            "{not json",
            r#"{"version": 9, "backends": []}"#,
            r#"{"version": 1, "backends": [{"url": "ftp://x:1", "weight": 1}]}"#,
            r#"{"version": 1, "backends": [{"url": "http://x:1", "weight": 0}]}"#,
            r#"{"version": 1, "backends": [{"url": "http://x:1", "weight": 1, "new": 1}]}"#,
            r#"{"version": 1, "backends": [{"url": "http://x:1", "weight": 1, "protocol": "h2"}]}"#,
            r#"{"version": 1, "backends": [{"url": "https://x:1", "weight": 1, "protocol": "h3"}]}"#,
        ] {
            fs::write(&path, bad).expect("write");
            let e = FileStore::new(&path).read().expect_err(bad).to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn files_without_protocol_load_as_http1_and_h2_is_written_only_for_http2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            r#"{"version": 1, "backends": [{"url": "https://x:1", "weight": 3}]}"#,
        )
        .expect("write");
        let store = FileStore::new(&path);
        let loaded = store.read().expect("old format loads").expect("stored");
        assert_eq!(loaded.specs(), vec![spec("https://x:1", 3)]);
        assert_eq!(loaded.backends[0].spec.protocol, Protocol::Http1);

        let mut h2 = spec("https://y:2", 1);
        h2.protocol = Protocol::H2;
        let c2 = spec("h2c://127.0.0.1:50051", 1);
        store
            .commit_now(at(0), &Change::Add(h2.clone()))
            .expect("saved");
        store
            .commit_now(at(1), &Change::Add(c2.clone()))
            .expect("saved");
        let doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("json");
        assert!(doc["backends"][0].get("protocol").is_none(), "{doc}");
        assert_eq!(doc["backends"][1]["protocol"], "h2");
        let reloaded = store.read().expect("read").expect("stored").specs();
        assert_eq!(reloaded, vec![spec("https://x:1", 3), h2, c2]);
    }

    #[test]
    fn files_without_a_revision_load_as_revision_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        fs::write(
            &path,
            r#"{"version": 1, "backends": [{"url": "http://x:1", "weight": 2}]}"#,
        )
        .expect("write");
        let pool = FileStore::new(&path).read().expect("read").expect("file");
        assert_eq!(pool.revision, 0);
        assert_eq!(pool.specs(), [spec("http://x:1", 2)]);
    }
}

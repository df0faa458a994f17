//! Persistence of the pool as the admin API leaves it, behind a small [`PoolStore`] interface
//! (a file today; a shared cluster store such as etcd is planned beside it).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{BackendSpec, BackendUrl, Protocol};

/// A failure to read or write the stored pool; the message names the store and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where the pool survives restarts and upgrades.
pub trait PoolStore: Send + Sync {
    /// The stored pool, or `None` when nothing was stored yet.
    fn load(&self) -> Result<Option<Vec<BackendSpec>>, StoreError>;
    /// Stores `backends` durably; returns only once a crash can no longer lose them.
    fn save(&self, backends: &[BackendSpec]) -> Result<(), StoreError>;
    /// Names the store in messages ("state file /var/lib/portico/state.json").
    fn describe(&self) -> String;
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    backends: Vec<StateBackend>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBackend {
    url: String,
    weight: u32,
    /// `"h2"` for an HTTP/2 backend; absent for HTTP/1.1 (and in files written before it
    /// existed, which therefore load unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
}

const STATE_VERSION: u32 = 1;

/// The pool as a JSON file (`{"version": 1, "backends": [{"url", "weight", "protocol"?}]}`), replaced
/// atomically: temporary file beside it, fsync, rename, fsync of the directory. A crash at any
/// point leaves either the old or the new file, never a mix. A missing file loads as `None`;
/// unreadable or invalid content is an error naming the file. The directory must exist (the
/// systemd unit's `StateDirectory=` creates it); a save into a missing one fails.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (nothing is read or written until [`PoolStore::load`] or `save`).
    pub fn new(path: impl Into<PathBuf>) -> FileStore {
        FileStore { path: path.into() }
    }

    /// Where the pool is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory that holds the file (and its temporary sibling).
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("state file {}: {what}: {e}", self.path.display()))
    }
}

impl PoolStore for FileStore {
    fn load(&self) -> Result<Option<Vec<BackendSpec>>, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fail("cannot read", e)),
        };
        let doc: StateDoc = serde_json::from_str(&text)
            .map_err(|e| self.fail("corrupt (not valid state JSON)", e))?;
        if doc.version != STATE_VERSION {
            return Err(self.fail("unsupported version", doc.version));
        }
        let mut specs: Vec<BackendSpec> = Vec::with_capacity(doc.backends.len());
        for (i, b) in doc.backends.into_iter().enumerate() {
            let url =
                BackendUrl::parse(&b.url).map_err(|e| self.fail(&format!("backends[{i}]"), e))?;
            let weight = BackendSpec::check_weight("weight", i64::from(b.weight))
                .map_err(|e| self.fail(&format!("backends[{i}]"), e))?;
            let protocol = Protocol::for_url(&url, b.protocol.as_deref())
                .map_err(|e| self.fail(&format!("backends[{i}].protocol"), e))?;
            if specs.iter().any(|s| s.url == url) {
                return Err(self.fail(&format!("backends[{i}]"), format!("duplicate {url}")));
            }
            specs.push(BackendSpec {
                url,
                weight,
                protocol,
            });
        }
        Ok(Some(specs))
    }

    fn save(&self, backends: &[BackendSpec]) -> Result<(), StoreError> {
        let doc = StateDoc {
            version: STATE_VERSION,
            backends: backends
                .iter()
                .map(|b| StateBackend {
                    url: b.url.to_string(),
                    weight: b.weight,
                    protocol: b.is_h2().then(|| b.protocol.name().to_string()),
                })
                .collect(),
        };
        let mut text =
            serde_json::to_vec_pretty(&doc).map_err(|e| self.fail("cannot encode", e))?;
        text.push(b'\n');
        let dir = self.dir();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.fail("cannot write", e)
        })
    }

    fn describe(&self) -> String {
        format!("state file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_spec as spec;

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::new(dir.path().join("state.json"));
        assert!(store.load().expect("readable").is_none());
        let mut h2 = spec("https://b.example", 2);
        h2.protocol = Protocol::H2;
        let pool = vec![
            spec("http://127.0.0.1:1", 1),
            spec("https://a.example:8443", 7),
            spec("h2c://127.0.0.1:50051", 1),
            h2,
        ];
        store.save(&pool).expect("saved");
        assert_eq!(store.load().expect("readable"), Some(pool));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn a_missing_directory_fails_the_save_with_the_path_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("state.json");
        let store = FileStore::new(&path);
        assert!(store.load().expect("nothing stored yet").is_none());
        let e = store.save(&[]).expect_err("no directory");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
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
            r#"{"version": 1, "backends": [{"url": "http://x:1", "weight": 1, "protocol": "h2"}]}"#,
            r#"{"version": 1, "backends": [{"url": "https://x:1", "weight": 1, "protocol": "h3"}]}"#,
        ] {
            fs::write(&path, bad).expect("write");
            let e = FileStore::new(&path).load().expect_err(bad).to_string();
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
        let loaded = store.load().expect("old format loads").expect("stored");
        assert_eq!(loaded, vec![spec("https://x:1", 3)]);
        assert_eq!(loaded[0].protocol, Protocol::Http1);

        let mut h2 = spec("https://y:2", 1);
        h2.protocol = Protocol::H2;
        store.save(&[spec("http://x:1", 1), h2]).expect("saved");
        let doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("read")).expect("json");
        assert!(doc["backends"][0].get("protocol").is_none(), "{doc}");
        assert_eq!(doc["backends"][1]["protocol"], "h2");
    }
}

//! Unit tests of the write side against a real file store and a scripted one.

use std::sync::Mutex as StdMutex;

use async_trait::async_trait;

use super::testing::control;
use super::*;
use crate::config::test_spec as spec;
use crate::store::{EventStream, FileStore, StoreError};

fn pool(c: &Control) -> Vec<BackendSpec> {
    let mut specs: Vec<BackendSpec> = c
        .balancer()
        .snapshot()
        .backends
        .iter()
        .map(|b| b.spec())
        .collect();
    specs.sort_by_key(|s| s.url.to_string());
    specs
}

fn file_control(path: &std::path::Path) -> Arc<Control> {
    control(Some(Arc::new(FileStore::new(path))))
}

async fn started(c: &Control) {
    let store = c.store().expect("store").clone();
    let loaded = store.bootstrap(&[], true).await.expect("bootstrap");
    c.start(&loaded, &Default::default()).expect("started");
}

#[tokio::test]
async fn resync_makes_the_pool_match_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let c = file_control(&path);
    assert_eq!(c.resync().await.expect("nothing stored"), 0);
    c.seed(
        &[spec("http://127.0.0.1:1", 1), spec("http://127.0.0.1:2", 1)],
        &Default::default(),
    )
    .expect("seeded");
    // Another process wrote the file: 2 (new weight) and 3 replace 1 and 2.
    let other = FileStore::new(&path);
    let basis = |revision| Basis {
        revision,
        key_revision: None,
    };
    other
        .commit_now(basis(0), &Change::Add(spec("http://127.0.0.1:2", 3)))
        .expect("written");
    other
        .commit_now(basis(1), &Change::Add(spec("http://127.0.0.1:3", 1)))
        .expect("written");
    assert_eq!(c.resync().await.expect("resynced"), 4);
    assert_eq!(
        pool(&c),
        [spec("http://127.0.0.1:2", 3), spec("http://127.0.0.1:3", 1)]
    );
    assert_eq!(c.resync().await.expect("resynced"), 0);
    assert_eq!(c.applied_revision().await, 2);
}

#[tokio::test]
async fn refused_changes_leave_pool_and_store_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let c = control(Some(Arc::new(
        FileStore::new(&path).with_initial(vec![spec("http://127.0.0.1:1", 1)]),
    )));
    started(&c).await;
    assert!(matches!(
        c.add(spec("http://127.0.0.1:1", 2)).await,
        Err(ControlError::Pool(PoolError::Duplicate(_)))
    ));
    assert!(matches!(
        c.remove(&spec("http://127.0.0.1:2", 1).url).await,
        Err(ControlError::Pool(PoolError::NotFound(_)))
    ));
    assert!(!path.exists(), "a refused change was stored");
    c.remove(&spec("http://127.0.0.1:1", 1).url)
        .await
        .expect("removed");
    let stored = FileStore::new(&path).read().expect("read").expect("file");
    assert_eq!(stored.backends, []);
    c.begin_hand_over().await;
    assert_eq!(c.phase(), Phase::HandingOver);
    assert!(matches!(
        c.add(spec("http://127.0.0.1:5", 1)).await,
        Err(ControlError::Frozen)
    ));
    assert!(pool(&c).is_empty());
}

#[tokio::test]
async fn a_write_behind_the_store_resyncs_first_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let a = file_control(&path);
    let b = file_control(&path);
    started(&a).await;
    started(&b).await;
    a.add(spec("http://127.0.0.1:1", 1))
        .await
        .expect("added on a");
    // b has not seen a's change: its write is refused by the store, b resyncs and retries.
    b.add(spec("http://127.0.0.1:2", 1))
        .await
        .expect("added on b");
    assert_eq!(
        pool(&b),
        [spec("http://127.0.0.1:1", 1), spec("http://127.0.0.1:2", 1)]
    );
    // The same URL on a (still behind): a resyncs, then finds the duplicate.
    assert!(matches!(
        a.add(spec("http://127.0.0.1:2", 1)).await,
        Err(ControlError::Pool(PoolError::Duplicate(_)))
    ));
    let stored = FileStore::new(&path).read().expect("read").expect("file");
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.specs().len(), 2);
}

/// A store whose pool is set by the test; commits succeed at the next revision (with an
/// unconfirmed durability when `uncertain` is set).
struct Scripted {
    pool: StdMutex<StoredPool>,
    uncertain: std::sync::atomic::AtomicBool,
    /// Reads fail (the store cannot be reached).
    unreachable: std::sync::atomic::AtomicBool,
}

fn scripted(pool: StoredPool) -> Arc<Scripted> {
    Arc::new(Scripted {
        pool: StdMutex::new(pool),
        uncertain: std::sync::atomic::AtomicBool::new(false),
        unreachable: std::sync::atomic::AtomicBool::new(false),
    })
}

#[async_trait]
impl Store for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn describe(&self) -> String {
        "scripted store".into()
    }
    fn info(&self) -> Value {
        json!({})
    }
    async fn bootstrap(&self, _: &[BackendSpec], _: bool) -> Result<Loaded, StoreError> {
        Ok(Loaded {
            pool: self.load().await?,
            origin: "script".into(),
            synced: true,
        })
    }
    async fn load(&self) -> Result<StoredPool, StoreError> {
        if self.unreachable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError("scripted store: unreachable".into()));
        }
        Ok(self.pool.lock().expect("pool").clone())
    }
    async fn commit(&self, _: Basis, _: &Change) -> Result<u64, CommitError> {
        let mut pool = self.pool.lock().expect("pool");
        pool.revision += 1;
        if self.uncertain.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CommitError::Uncertain {
                revision: pool.revision,
                message: "written, fsync failed".into(),
            });
        }
        Ok(pool.revision)
    }
    async fn watch(&self, _: u64) -> Result<Option<EventStream>, StoreError> {
        Ok(None)
    }
}

fn entry(url: &str, revision: u64) -> Entry {
    Entry {
        spec: spec(url, 1),
        revision,
    }
}

#[tokio::test]
async fn a_failed_resync_changes_nothing_and_blocks_writes() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = scripted(StoredPool {
        revision: 1,
        backends: vec![entry("http://127.0.0.1:1", 1)],
    });
    let c = control(Some(store.clone()));
    started(&c).await;
    *store.pool.lock().expect("pool") = StoredPool {
        revision: 3,
        backends: vec![entry("http://127.0.0.1:2", 2)],
    };
    store.unreachable.store(true, SeqCst);
    assert!(matches!(
        c.resync().await,
        Err(ControlError::Unavailable(_))
    ));
    assert_eq!(pool(&c), [spec("http://127.0.0.1:1", 1)], "partly applied");
    assert!(matches!(
        c.add(spec("http://127.0.0.1:9", 1)).await,
        Err(ControlError::Unavailable(_))
    ));
    assert_eq!(c.store_status()["synced"], false);
    // Once the store answers again, the next write resyncs first and goes through.
    store.unreachable.store(false, SeqCst);
    *store.pool.lock().expect("pool") = StoredPool {
        revision: 4,
        backends: vec![entry("http://127.0.0.1:2", 2)],
    };
    c.add(spec("http://127.0.0.1:9", 1)).await.expect("added");
    assert_eq!(
        pool(&c),
        [spec("http://127.0.0.1:2", 1), spec("http://127.0.0.1:9", 1)]
    );
}

#[tokio::test]
async fn a_stored_name_that_does_not_resolve_here_is_a_down_placeholder() {
    let store = scripted(StoredPool {
        revision: 1,
        backends: vec![entry("http://127.0.0.1:1", 1)],
    });
    let c = control(Some(store.clone()));
    started(&c).await;
    *store.pool.lock().expect("pool") = StoredPool {
        revision: 2,
        backends: vec![
            entry("http://127.0.0.1:1", 1),
            entry("http://portico-test.invalid:80", 2),
        ],
    };
    assert_eq!(c.resync().await.expect("resynced"), 1);
    let placeholder = c
        .balancer()
        .find(&spec("http://portico-test.invalid:80", 1).url)
        .expect("in the pool");
    assert!(!placeholder.resolved && !placeholder.is_ready());
    assert_eq!(c.store_status()["synced"], true);
    c.add(spec("http://127.0.0.1:9", 1))
        .await
        .expect("writes go on");
}

#[tokio::test]
async fn watched_events_apply_once_and_in_order() {
    let store = scripted(StoredPool {
        revision: 5,
        backends: vec![entry("http://127.0.0.1:1", 5)],
    });
    let c = control(Some(store));
    started(&c).await;
    let url = |u: &str| spec(u, 1).url;
    c.apply_events(vec![
        // Already reflected by the load at revision 5.
        Event::Delete {
            url: url("http://127.0.0.1:1"),
            revision: 4,
        },
        Event::Put(entry("http://127.0.0.1:2", 6)),
        Event::Delete {
            url: url("http://127.0.0.1:2"),
            revision: 7,
        },
        Event::Put(entry("http://127.0.0.1:3", 8)),
    ])
    .await
    .expect("applied");
    assert_eq!(
        pool(&c),
        [spec("http://127.0.0.1:1", 1), spec("http://127.0.0.1:3", 1)]
    );
    // A replay of an old event changes nothing.
    c.apply_events(vec![Event::Put(entry("http://127.0.0.1:2", 6))])
        .await
        .expect("applied");
    assert_eq!(pool(&c).len(), 2);
    assert_eq!(c.applied_revision().await, 8);
}

#[tokio::test]
async fn a_change_written_without_confirmed_durability_is_applied_and_said_so() {
    let store = scripted(StoredPool::default());
    let c = control(Some(store.clone()));
    started(&c).await;
    store
        .uncertain
        .store(true, std::sync::atomic::Ordering::SeqCst);
    match c.add(spec("http://127.0.0.1:1", 1)).await {
        Err(ControlError::Store(m)) => assert!(m.contains("made and applied"), "{m}"),
        other => panic!(
            "expected a Store error, got {:?}",
            other.map(|b| b.name.clone())
        ),
    }
    assert_eq!(pool(&c), [spec("http://127.0.0.1:1", 1)], "not applied");
}

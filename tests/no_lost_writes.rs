//! No acknowledged change is lost: a client adds unique backends as fast as it can (retrying
//! 503s and dropped connections) through three graceful upgrades, with the file store and with
//! etcd, and across a `kill -9`; every add answered 201 is afterwards in `/status` and in the
//! store.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

/// Graceful upgrades performed while the client writes.
const UPGRADES: usize = 3;
/// Acknowledged adds required between two upgrades (proof that the new process takes writes),
/// at full speed and with every change held in flight.
const PROGRESS: usize = 15;
const PROGRESS_HELD: usize = 2;
/// With `held`, every change the gateways (debug builds) commit waits this long after its
/// phase check, so that one is in flight whenever a hand-over begins and still in flight when
/// the new process receives the sockets: Pingora's new process polls for them once a second,
/// so a shorter hold would let an unprotected write land before the new process reads the
/// store, and hide the race these tests are about.
const COMMIT_DELAY_MS: &str = "2500";

/// What the writer saw.
#[derive(Default)]
struct Writes {
    acked: Mutex<Vec<String>>,
    unexpected: Mutex<Vec<String>>,
}

impl Writes {
    fn acked(&self) -> Vec<String> {
        self.acked.lock().expect("acked").clone()
    }
}

/// Adds a new unique backend after another through `admin` until `stop`: each one is
/// retried on 503 (frozen during a hand-over, store unavailable) and on connection errors
/// until it is answered 201 (acknowledged) or 409 (an earlier attempt made it; its answer was
/// lost, so it was never acknowledged). Connections are not reused, so each attempt goes to
/// whichever process accepts it.
fn writer(
    admin: String,
    stop: Arc<AtomicBool>,
    writes: Arc<Writes>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        while !stop.load(Ordering::SeqCst) {
            let url = format!("http://127.0.0.1:{}", free_port());
            while !stop.load(Ordering::SeqCst) {
                let sent = http.post(&admin).json(&json!({ "url": url })).send().await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(201) => {
                        writes.acked.lock().expect("acked").push(url.clone());
                        break;
                    }
                    Ok(409) => break,
                    Ok(503) | Err(_) => tokio::task::yield_now().await,
                    Ok(other) => {
                        writes
                            .unexpected
                            .lock()
                            .expect("unexpected")
                            .push(format!("{url}: {other}"));
                        break;
                    }
                }
            }
        }
    })
}

async fn pool(gw: &Gateway) -> BTreeSet<String> {
    gw.status().await["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["url"].as_str().expect("url").to_string())
        .collect()
}

fn file_urls(path: &Path) -> BTreeSet<String> {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("state file")).expect("JSON");
    doc["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["url"].as_str().expect("url").to_string())
        .collect()
}

async fn wait_acked(writes: &Writes, at_least: usize, gw: &Gateway) {
    let reached = eventually(Duration::from_secs(30), || async {
        writes.acked().len() >= at_least
    })
    .await;
    assert!(
        reached,
        "the writer got only {} adds acknowledged (wanted {at_least}); log:\n{}",
        writes.acked().len(),
        gw.log()
    );
}

/// Runs the writer through [`UPGRADES`] upgrades (with every change held in flight when
/// `held`); returns the last gateway and the writes.
async fn upgrades_under_writes(mut builder: GatewayBuilder, held: bool) -> (Gateway, Arc<Writes>) {
    let progress = if held {
        builder.env.push((
            "PORTICO_TEST_COMMIT_DELAY_MS".into(),
            COMMIT_DELAY_MS.into(),
        ));
        PROGRESS_HELD
    } else {
        PROGRESS
    };
    let mut gw = builder.start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Writes::default());
    let task = writer(gw.admin("/backends"), stop.clone(), writes.clone());
    wait_acked(&writes, progress, &gw).await;
    for round in 1..=UPGRADES {
        let before = writes.acked().len();
        let mut new = gw.upgrade().await;
        let status = gw.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "upgrade {round}: old process exit {status:?}; log:\n{}",
            gw.log()
        );
        wait_acked(&writes, before + progress, &new).await;
        // Everything acknowledged so far, by either process, is in the new one's pool (not
        // only after a later restart reloads the store).
        let acked = writes.acked();
        let lost = missing(&acked, &pool(&new).await);
        assert!(
            lost.is_empty(),
            "upgrade {round}: acknowledged adds missing: {lost:?}"
        );
        std::mem::swap(&mut gw, &mut new);
    }
    stop.store(true, Ordering::SeqCst);
    task.await.expect("writer");
    let unexpected = writes.unexpected.lock().expect("unexpected").clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    (gw, writes)
}

fn missing(acked: &[String], present: &BTreeSet<String>) -> Vec<String> {
    acked
        .iter()
        .filter(|u| !present.contains(*u))
        .cloned()
        .collect()
}

async fn with_the_file_store(held: bool) {
    let state = tempfile::tempdir().expect("tempdir");
    let path = state.path().join("pool.json");
    let builder = GatewayBuilder {
        state_file: Some(path.clone()),
        access_log: false,
        ..GatewayBuilder::default()
    };
    let (gw, writes) = upgrades_under_writes(builder, held).await;
    let acked = writes.acked();
    let in_status = pool(&gw).await;
    let in_file = file_urls(&path);
    eprintln!(
        "file store (held: {held}): {} adds acknowledged over {UPGRADES} upgrades",
        acked.len()
    );
    assert_eq!(
        missing(&acked, &in_status),
        Vec::<String>::new(),
        "lost from /status"
    );
    assert_eq!(
        missing(&acked, &in_file),
        Vec::<String>::new(),
        "lost from the file"
    );
    assert_eq!(in_status, in_file, "the pool and the file disagree");
    let store = &gw.status().await["store"];
    assert_eq!(store["kind"], "file", "{store}");
    assert_eq!(store["path"], path.display().to_string(), "{store}");
    assert_eq!(store["synced"], true, "{store}");
}

async fn with_etcd(held: bool) {
    let etcd = Etcd::start().await;
    let builder = GatewayBuilder {
        extra: etcd.store_yaml("/t/upgrades"),
        access_log: false,
        ..GatewayBuilder::default()
    };
    let (gw, writes) = upgrades_under_writes(builder, held).await;
    let acked = writes.acked();
    let in_status = pool(&gw).await;
    let in_etcd: BTreeSet<String> = etcd.urls("/t/upgrades").await.into_iter().collect();
    eprintln!(
        "etcd (held: {held}): {} adds acknowledged over {UPGRADES} upgrades",
        acked.len()
    );
    assert_eq!(
        missing(&acked, &in_status),
        Vec::<String>::new(),
        "lost from /status"
    );
    assert_eq!(
        missing(&acked, &in_etcd),
        Vec::<String>::new(),
        "lost from etcd"
    );
    assert_eq!(in_status, in_etcd, "the pool and etcd disagree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_add_is_lost_across_three_upgrades_with_the_file_store() {
    with_the_file_store(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_add_in_flight_at_a_hand_over_is_lost_with_the_file_store() {
    with_the_file_store(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_add_is_lost_across_three_upgrades_with_etcd() {
    with_etcd(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_add_in_flight_at_a_hand_over_is_lost_with_etcd() {
    with_etcd(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_add_is_lost_to_kill_9_and_leftovers_are_cleaned() {
    let state = tempfile::tempdir().expect("tempdir");
    let path = state.path().join("pool.json");
    let builder = GatewayBuilder {
        state_file: Some(path.clone()),
        access_log: false,
        ..GatewayBuilder::default()
    };
    let gw = builder.clone().start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Writes::default());
    let task = writer(gw.admin("/backends"), stop.clone(), writes.clone());
    wait_acked(&writes, PROGRESS, &gw).await;
    gw.signal(Signal::SIGKILL);
    stop.store(true, Ordering::SeqCst);
    task.await.expect("writer");
    drop(gw);

    // What a process killed while writing leaves behind (no process has this pid).
    let leftover = state.path().join(".pool.json.tmp.4194305");
    std::fs::write(&leftover, "{\"version\": 1, \"backe").expect("write leftover");
    let gw = builder.start().await;
    let acked = writes.acked();
    assert_eq!(
        missing(&acked, &pool(&gw).await),
        Vec::<String>::new(),
        "lost from /status"
    );
    assert_eq!(
        missing(&acked, &file_urls(&path)),
        Vec::<String>::new(),
        "lost from the file"
    );
    assert!(
        !leftover.exists(),
        "a crashed process's temporary file was kept"
    );
}

//! Production operations against the real binary: graceful upgrade under load with zero failed
//! requests, graceful shutdown with a slow request in flight, `-t` on the shipped
//! configurations, daemon mode and its pid file, the access log and `RUST_LOG`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::gateway::check_file;
use support::*;

/// Concurrent keep-alive clients of the load generator.
const LOAD_CLIENTS: usize = 12;
/// Consecutive upgrades performed under load.
const UPGRADES: usize = 3;

/// What the load generator saw.
#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, for the assertion message.
    errors: Mutex<Vec<String>>,
}

impl LoadStats {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 10 {
            errors.push(what);
        }
    }
}

/// Continuous GETs from `LOAD_CLIENTS` tasks, each with its own keep-alive client (reqwest
/// does not retry a request that was sent), until `stop` is set.
fn start_load(
    url: String,
    stop: Arc<AtomicBool>,
    stats: Arc<LoadStats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..LOAD_CLIENTS)
        .map(|_| {
            let (url, stop, stats) = (url.clone(), stop.clone(), stats.clone());
            tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::SeqCst) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => {
                                stats.ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => stats.fail(format!("body: {e:?}")),
                        },
                        Ok(r) => stats.fail(format!("status {}", r.status())),
                        Err(e) => stats.fail(format!("request: {e:?}")),
                    }
                }
            })
        })
        .collect()
}

async fn add_backend(gw: &Gateway, url: &str) {
    let r = client()
        .post(gw.admin("/backends"))
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .expect("POST /backends");
    assert_eq!(r.status(), 201, "POST /backends: {:?}", r.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrades_under_load_fail_no_request_and_keep_the_pool() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let state = tempfile::tempdir().expect("tempdir");
    let builder = GatewayBuilder {
        state_file: Some(state.path().join("pool.json")),
        access_log: false,
        ..GatewayBuilder::default()
    }
    .backend(a.url());
    let mut gw = builder.start().await;
    add_backend(&gw, &b.url()).await;
    assert!(gw.wait_alive(&b.url(), true, Duration::from_secs(10)).await);

    let (stop, stats) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(LoadStats::default()),
    );
    let load = start_load(gw.url("/"), stop.clone(), stats.clone());
    let progressed = |min: u64| {
        let stats = stats.clone();
        async move {
            eventually(Duration::from_secs(20), || {
                let n = stats.ok.load(Ordering::SeqCst);
                async move { n >= min }
            })
            .await
        }
    };
    assert!(progressed(200).await, "load did not get going");

    for round in 1..=UPGRADES {
        let before = stats.ok.load(Ordering::SeqCst);
        let mut new = gw.upgrade().await;
        let status = gw.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "upgrade {round}: old process exit {status:?}; log:\n{}",
            gw.log()
        );
        // The new process serves: traffic keeps flowing after the old one is gone.
        assert!(
            progressed(before + 200).await,
            "upgrade {round}: no traffic after the old process exited; log:\n{}",
            new.log()
        );
        assert!(new.child.try_wait().expect("try_wait").is_none());
        std::mem::swap(&mut gw, &mut new);
        drop(new);
    }
    let b_before = b.requests();
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.requests() > b_before
        })
        .await,
        "the backend added through the admin API gets no traffic after the upgrades"
    );

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }
    let backend = gw.backend(&b.url()).await;
    assert!(
        backend.is_some_and(|b| b["alive"] == true),
        "admin-added backend missing after {UPGRADES} upgrades: {}",
        gw.status().await
    );

    gw.signal(Signal::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM exit {status:?}; log:\n{}",
        gw.log()
    );
    let (ok, failed) = (
        stats.ok.load(Ordering::SeqCst),
        stats.failed.load(Ordering::SeqCst),
    );
    eprintln!("upgrade proof: {UPGRADES} upgrades, {ok} requests succeeded, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed, first: {:?}",
        ok + failed,
        stats.errors.lock().unwrap_or_else(|p| p.into_inner())
    );
    assert!(
        ok >= 1000,
        "too little load to prove anything: {ok} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_and_exits_zero() {
    let origin = Origin::start("slow").await;
    let mut gw = GatewayBuilder {
        grace_period: 10,
        ..GatewayBuilder::default()
    }
    .backend(origin.url())
    .start()
    .await;
    let url = gw.url("/slow?ms=1500");
    let slow = tokio::spawn(async move {
        let r = client().get(url).send().await?;
        let status = r.status();
        r.text().await.map(|body| (status, body))
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            origin.in_progress() == 1
        })
        .await,
        "the slow request did not reach the origin"
    );
    let signalled = Instant::now();
    gw.signal(Signal::SIGTERM);

    // New connections are not served once shutdown started.
    let refused = eventually(Duration::from_secs(5), || async {
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("client");
        fresh.get(gw.url("/")).send().await.is_err()
    })
    .await;
    assert!(refused, "a new request was still served after SIGTERM");

    let (status, _) = slow.await.expect("task").expect("slow request failed");
    assert_eq!(status, 200);
    let exit = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit {exit:?}; log:\n{}",
        gw.log()
    );
    // The process leaves as soon as the request is done (1.5 s), not after sleeping out the
    // 10 s grace period.
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "exit took {:?}",
        signalled.elapsed()
    );
    assert!(gw.log().contains("all in-flight requests finished"));
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn shipped_configurations_pass_the_check() {
    for rel in ["conf/portico.yaml", "deploy/portico.yaml"] {
        let out = check_file(&repo_file(rel));
        let err = String::from_utf8_lossy(&out.stderr);
        // `-t` also checks the machine: the production example's directories (/run/portico,
        // /var/log/portico, ...) exist only where systemd made them. Those are the only
        // complaints allowed here.
        if rel.starts_with("deploy/") && !out.status.success() {
            let problems: Vec<&str> = err.lines().filter(|l| l.contains(rel)).collect();
            assert!(!problems.is_empty(), "{rel}: {err}");
            for line in problems {
                assert!(
                    line.contains("does not exist") || line.contains("no such user"),
                    "portico -t -c {rel}: {err}"
                );
            }
            continue;
        }
        assert!(
            out.status.success(),
            "portico -t -c {rel}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
    }
}

/// The state of a process from /proc (`None` when it is gone; `Z` for a zombie).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.trim_start().chars().next()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn is_running(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z')
}

/// Polls until `pid` has exited (gone or a zombie) or `deadline` passes; returns whether it did.
async fn exits_within(pid: i32, deadline: Duration) -> bool {
    eventually(deadline, || async { !is_running(pid) }).await
}

/// Kills a daemon that a failed test would otherwise leave behind.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_writes_its_pid_file_and_removes_it_on_sigterm() {
    let origin = Origin::start("d").await;
    let logs = tempfile::tempdir().expect("tempdir");
    let error_log = logs.path().join("error.log");
    let builder = GatewayBuilder {
        args: vec!["-d".into()],
        extra: format!(
            "daemon_wait_for_ready: true\nerror_log: {}\n",
            error_log.display()
        ),
        ..GatewayBuilder::default()
    }
    .backend(origin.url());
    let mut gw = builder.start().await;
    // With daemon_wait_for_ready the launching process exits 0 once the daemon is ready.
    let launcher = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(
        launcher.is_some_and(|s| s.success()),
        "launcher exit {launcher:?}; log:\n{}",
        gw.log()
    );
    let pid_file = gw.dir.path().join("portico.pid");
    let pid = read_pid(&pid_file);
    let _guard = KillOnDrop(pid);
    assert_ne!(pid, gw.pid().as_raw(), "the pid file names the launcher");
    assert!(is_running(pid), "daemon not running");

    let r = client()
        .get(gw.url("/daemon-check"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);

    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("signal daemon");
    let gone = exits_within(pid, Duration::from_secs(15)).await;
    assert!(gone, "daemon still running after SIGTERM");
    assert!(!pid_file.exists(), "pid file left behind");
    // The daemon's stderr goes to error_log, and Portico's own log lines with it.
    let log = std::fs::read_to_string(&error_log).unwrap_or_default();
    assert!(
        log.contains("GET /daemon-check"),
        "no access line in error_log:\n{log}"
    );
    assert!(
        log.contains("all in-flight requests finished"),
        "error_log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request_and_can_be_turned_off() {
    let origin = Origin::start("logged").await;
    let on = GatewayBuilder::default()
        .backend(origin.url())
        .start()
        .await;
    let off = GatewayBuilder {
        access_log: false,
        ..GatewayBuilder::default()
    }
    .backend(origin.url())
    .start()
    .await;
    let http = client();
    for gw in [&on, &off] {
        for i in 0..3 {
            let r = http.get(gw.url(&format!("/logged/{i}?q=1"))).send().await;
            assert_eq!(r.expect("request").status(), 200);
        }
    }
    let backend = origin.url();
    let lines = || {
        on.log()
            .lines()
            .filter(|l| l.contains("portico::access"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || {
            let n = lines().len();
            async move { n >= 3 }
        })
        .await,
        "log:\n{}",
        on.log()
    );
    let lines = lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (i, line) in lines.iter().enumerate() {
        // client, method, path, status, backend, duration; timestamped and levelled.
        assert!(line.contains("INFO"), "{line}");
        assert!(line.contains("127.0.0.1 "), "{line}");
        assert!(line.contains(&format!("\"GET /logged/{i}?q=1\"")), "{line}");
        assert!(line.contains(" 200 "), "{line}");
        assert!(line.contains(&backend), "{line}");
        assert!(line.trim_end().ends_with("ms"), "{line}");
        assert!(is_timestamped(line), "no timestamp: {line}");
    }
    assert!(on.log().contains("INFO"));
    assert_eq!(off.log_count("portico::access"), 0, "{}", off.log());
}

/// Whether a log line starts with a `[YYYY-MM-DDT...` timestamp.
fn is_timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11
        && b[0] == b'['
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5] == b'-'
        && b[11] == b'T'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_warn_hides_info_lines() {
    let mut origin = Origin::start("quiet").await;
    let mut builder = GatewayBuilder::default().backend(origin.url());
    builder.rust_log = Some("warn".into());
    let gw = builder.start().await;
    let r = client()
        .get(gw.url("/quiet"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    origin.stop();
    assert!(
        eventually(Duration::from_secs(10), || async {
            gw.log().contains("is DOWN")
        })
        .await,
        "warnings must still be logged; log:\n{}",
        gw.log()
    );
    let log = gw.log();
    assert!(log.contains("WARN"), "{log}");
    assert!(
        !log.contains("INFO"),
        "info lines with RUST_LOG=warn:\n{log}"
    );
    assert!(!log.contains("portico::access"), "{log}");
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

/// What `systemctl reload portico` does with deploy/portico.service: `portico -u -d` returns
/// once the new daemon is ready, then the old main pid gets SIGQUIT; the pid file names the
/// new daemon, which serves, and removes the pid file on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reload_the_systemd_way_hands_over_to_a_new_daemon() {
    let origin = Origin::start("r").await;
    let builder = GatewayBuilder {
        args: vec!["-d".into()],
        extra: "daemon_wait_for_ready: true\n".into(),
        ..GatewayBuilder::default()
    }
    .backend(origin.url());
    let mut gw = builder.start().await;
    let launched = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(launched.is_some_and(|s| s.success()), "{}", gw.log());
    let pid_file = gw.dir.path().join("portico.pid");
    let old = read_pid(&pid_file);
    let _old_guard = KillOnDrop(old);

    let dir = std::mem::replace(&mut gw.dir, tempfile::tempdir().expect("tempdir"));
    let args = ["-u".to_string(), "-d".to_string()];
    let mut reload = Gateway::spawn(dir, gw.config.clone(), gw.port, gw.admin_port, &args);
    let ready = reload.wait_exit(Duration::from_secs(30)).await;
    assert!(
        ready.is_some_and(|s| s.success()),
        "`portico -u -d` exit {ready:?}; log:\n{}",
        reload.log()
    );
    let new = read_pid(&pid_file);
    let _new_guard = KillOnDrop(new);
    assert_ne!(
        new, old,
        "the pid file must name the new daemon before the old one exits"
    );

    kill(Pid::from_raw(old), Signal::SIGQUIT).expect("SIGQUIT old daemon");
    let old_gone = exits_within(old, Duration::from_secs(30)).await;
    assert!(old_gone, "old daemon still running; log:\n{}", reload.log());
    assert_eq!(
        read_pid(&pid_file),
        new,
        "the old daemon touched the pid file"
    );
    assert!(is_running(new), "new daemon died");
    let r = client().get(reload.url("/after-reload")).send().await;
    assert_eq!(r.expect("request to the new daemon").status(), 200);

    kill(Pid::from_raw(new), Signal::SIGTERM).expect("SIGTERM new daemon");
    let new_gone = exits_within(new, Duration::from_secs(15)).await;
    assert!(new_gone, "new daemon still running after SIGTERM");
    assert!(!pid_file.exists(), "pid file left behind");
}

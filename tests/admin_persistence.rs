//! The state file against the real binary: runtime changes survive a restart, an upgrade and
//! `kill -9`; a change that cannot be stored is refused and not applied; a corrupt state file
//! stops start-up naming it.

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use support::admin_api::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_state_file_keeps_runtime_changes() {
    let (a, b, c) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    );
    let state = tempfile::tempdir().expect("state dir");
    let state_file = state.path().join("state.json");
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(b.url());
    builder.state_file = Some(state_file.clone());

    let mut first = builder.clone().start().await;
    assert!(!first.log().contains("wins over"), "no state file yet");
    let (code, _) = add(&first, json!({"url": c.url(), "weight": 4})).await;
    assert_eq!(code, 201);
    let (code, _) = delete_by_query(&first, &a.url()).await;
    assert_eq!(code, 200);
    let mut expected = vec![(b.url(), 1), (c.url(), 4)];
    expected.sort();
    assert_eq!(pool(&first).await, expected);
    first.signal(Signal::SIGTERM);
    assert!(
        first.wait_exit(DEADLINE).await.is_some(),
        "did not stop on SIGTERM"
    );

    let second = builder.start().await;
    assert_eq!(pool(&second).await, expected);
    assert!(
        second.log().contains("wins over `backends`"),
        "the log does not say the state file wins:\n{}",
        second.log()
    );
    assert!(second.log().contains(&state_file.display().to_string()));
    assert!(second.wait_alive(&c.url(), true, DEADLINE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_stored_is_refused_and_not_applied() {
    let (a, b) = (Origin::start("a").await, Origin::start("b").await);
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().join("lib");
    std::fs::create_dir(&state_dir).expect("mkdir");
    let state_file = state_dir.join("state.json");
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.state_file = Some(state_file.clone());
    let gw = builder.start().await;
    let before = pool(&gw).await;
    std::fs::remove_dir(&state_dir).expect("rmdir");

    let (code, body) = add(&gw, json!({"url": b.url()})).await;
    assert_eq!(code, 500, "{body}");
    let message = body["error"].as_str().expect("error message");
    assert!(
        message.contains(&state_file.display().to_string()),
        "{message}"
    );
    let (code, _) = delete_by_query(&gw, &a.url()).await;
    assert_eq!(code, 500);
    assert_eq!(pool(&gw).await, before);
    assert_eq!(b.requests(), 0);
    let (status, _) = proxied(&client(), &gw).await;
    assert_eq!(status, 200);

    // Once the directory is back, changes are stored again.
    std::fs::create_dir(&state_dir).expect("mkdir again");
    let (code, _) = add(&gw, json!({"url": b.url()})).await;
    assert_eq!(code, 201);
    assert!(std::fs::read_to_string(&state_file)
        .expect("stored")
        .contains(&b.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_an_upgrade_waits_survive_it() {
    let (a, b, c) = (
        Origin::start("a").await,
        Origin::start("b").await,
        Origin::start("c").await,
    );
    let state = tempfile::tempdir().expect("state dir");
    let mut builder = GatewayBuilder::default().backend(a.url()).backend(b.url());
    builder.state_file = Some(state.path().join("state.json"));
    let mut old = builder.start().await;
    let (code, _) = add(&old, json!({"url": c.url()})).await;
    assert_eq!(code, 201);

    // `portico -u` starts (and loads the state file), then waits for the sockets...
    let mut new = old.spawn_upgrade().await;
    // ...while the old process still takes admin changes.
    let (code, _) = delete_by_query(&old, &a.url()).await;
    assert_eq!(code, 200);
    let (code, _) = add(
        &old,
        json!({"url": format!("http://localhost:{}", a.addr.port()), "weight": 2}),
    )
    .await;
    assert_eq!(code, 201);
    let expected = pool(&old).await;
    old.hand_over(&mut new).await;
    assert!(
        old.wait_exit(Duration::from_secs(30)).await.is_some(),
        "old process stayed"
    );

    // The new process serves the pool as the old one left it.
    assert_eq!(pool(&new).await, expected, "log:\n{}", new.log());
    assert!(
        new.wait_alive(
            &format!("http://localhost:{}", a.addr.port()),
            true,
            DEADLINE
        )
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_adds_loses_nothing_acknowledged() {
    const ADDERS: u16 = 3;
    const ENOUGH: usize = 30;
    let a = Origin::start("a").await;
    let state = tempfile::tempdir().expect("state dir");
    let state_file = state.path().join("state.json");
    let mut builder = GatewayBuilder::default().backend(a.url());
    builder.state_file = Some(state_file.clone());
    builder.access_log = false;
    let gw = Arc::new(builder.clone().start().await);

    // Backends that refuse connections: they are stored like any other (and probed DOWN).
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut adders = Vec::new();
    for t in 0..ADDERS {
        let (gw, acked) = (gw.clone(), acked.clone());
        adders.push(tokio::spawn(async move {
            let http = client();
            for i in 0..1000u16 {
                let url = format!("http://127.0.0.1:{}", 20_000 + t * 1000 + i);
                let resp = http
                    .post(gw.admin("/backends"))
                    .json(&json!({ "url": url }))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 201 => acked.lock().expect("acked").push(url),
                    Ok(r) => panic!("{url}: {}", r.status()),
                    Err(_) => return, // the process died mid-call: not acknowledged
                }
            }
        }));
    }
    let enough = eventually(Duration::from_secs(60), || async {
        acked.lock().expect("acked").len() >= ENOUGH
    })
    .await;
    assert!(enough, "adds too slow");
    gw.signal(Signal::SIGKILL);
    for t in adders {
        t.await.expect("adder");
    }
    let acked = acked.lock().expect("acked").clone();

    let text = std::fs::read_to_string(&state_file).expect("state file exists");
    let doc: Value = serde_json::from_str(&text).expect("state file is valid JSON");
    let stored: Vec<&str> = doc["backends"]
        .as_array()
        .expect("backends list")
        .iter()
        .map(|b| b["url"].as_str().expect("url"))
        .collect();
    for url in &acked {
        assert!(
            stored.contains(&url.as_str()),
            "{url} was acknowledged but not stored"
        );
    }

    let next = builder.start().await;
    let loaded: Vec<String> = pool(&next).await.into_iter().map(|(u, _)| u).collect();
    for url in &acked {
        assert!(loaded.contains(url), "{url} acknowledged but not loaded");
    }
    assert_eq!(loaded.len(), stored.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("dir");
    let state_file = dir.path().join("state.json");
    let corrupt = "{\"version\": 1, \"backends\": [{\"url\": \"http://127.0.0.1:1\"";
    std::fs::write(&state_file, corrupt).expect("write state");
    let mut builder = GatewayBuilder::default().backend("http://127.0.0.1:9");
    builder.state_file = Some(state_file.clone());
    let config = dir.path().join("portico.yaml");
    std::fs::write(&config, builder.yaml(dir.path(), free_port(), free_port())).expect("config");

    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(support::gateway::BIN)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(&stderr_path).expect("stderr file"),
        ))
        .spawn()
        .expect("spawn");
    let mut exit = None;
    let exited = eventually(DEADLINE, || {
        let done = child.try_wait().ok().flatten();
        exit = exit.or(done);
        async move { done.is_some() }
    })
    .await;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("portico started with a corrupt state file");
    }
    let status = exit.expect("exit status");
    assert!(!status.success(), "exit status {status}");
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    assert!(
        stderr.contains(&state_file.display().to_string()),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&state_file).expect("state"),
        corrupt
    );

    let check = support::gateway::check_file(&config);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains(&state_file.display().to_string()));
}

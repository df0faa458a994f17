//! The configuration contract against the real binary: `portico -t` refuses every mistake
//! with the key and value named, accepts the shipped examples, takes every `-c` spelling,
//! runs from JSON, and fails fast when its address is taken.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::gateway::{check_file, BIN};
use support::*;

const SOON: Duration = Duration::from_secs(10);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Writes `text` to a fresh temporary file named `name` and runs `portico -t -c` on it.
fn check_text(name: &str, text: &str) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write config");
    check_file(&path)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// What is wrong with a refusal, if anything: it must exit non-zero (not by a signal) with
/// every needle on stderr and no panic text.
fn refusal_problem(case: &str, out: &Output, needles: &[&str]) -> Option<String> {
    let err = stderr(out);
    if out.status.success() {
        return Some(format!("{case}: accepted; stderr {err:?}"));
    }
    if out.status.code().is_none() {
        return Some(format!("{case}: killed by a signal; stderr {err:?}"));
    }
    if let Some(n) = needles.iter().find(|n| !err.contains(*n)) {
        return Some(format!("{case}: stderr lacks {n:?}: {err:?}"));
    }
    ["panicked", "backtrace", "RUST_BACKTRACE"]
        .iter()
        .find(|bad| err.contains(*bad))
        .map(|bad| format!("{case}: {bad} in stderr: {err:?}"))
}

fn assert_refused(case: &str, out: &Output, needles: &[&str]) {
    if let Some(problem) = refusal_problem(case, out, needles) {
        panic!("{problem}");
    }
}

const VALID: &str = "listen: \"127.0.0.1:18080\"\nstrategy: least-conn\n\
health_check_frequency: 2s\nbackends:\n  - http://127.0.0.1:9001\n  - url: http://127.0.0.1:9002\n    weight: 3\n\
timeouts: {connect: 1s, read: 10s}\nadmin: {listen: \"127.0.0.1:18081\"}\n";

#[test]
fn valid_config_passes() {
    let out = check_text("ok.yaml", VALID);
    assert!(out.status.success(), "stderr {:?}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn every_mistake_fails_with_key_and_value_named() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "misspelt key",
            "strategi: round-robin\n",
            &["strategi", "strategy"],
        ),
        ("unknown key", "colour: blue\n", &["colour"]),
        (
            "bad duration",
            "health_check_frequency: 10 parsecs\n",
            &["health_check_frequency", "10 parsecs"],
        ),
        (
            "bad nested duration",
            "timeouts: {read: soon}\n",
            &["timeouts.read", "soon"],
        ),
        (
            "bad URL",
            "backends: [\"localhost:9001\"]\n",
            &["backends[0]", "localhost:9001"],
        ),
        (
            "bad URL scheme",
            "backends: [\"ftp://127.0.0.1:21\"]\n",
            &["backends[0]", "ftp://127.0.0.1:21"],
        ),
        (
            "duplicate backend",
            "backends: [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9001/\"]\n",
            &["backends[1]", "duplicate", "http://127.0.0.1:9001"],
        ),
        (
            "unknown strategy",
            "strategy: fastest\n",
            &["strategy", "fastest"],
        ),
        ("port out of range", "port: 70000\n", &["port", "70000"]),
        ("port zero", "port: 0\n", &["port", "0"]),
        (
            "listen port out of range",
            "listen: \"0.0.0.0:99999\"\n",
            &["listen", "0.0.0.0:99999"],
        ),
        (
            "backend port out of range",
            "backends: [\"http://127.0.0.1:65536\"]\n",
            &["backends[0]", "http://127.0.0.1:65536"],
        ),
        (
            "weight zero",
            "backends: [{url: \"http://127.0.0.1:9001\", weight: 0}]\n",
            &["backends[0].weight", "0"],
        ),
        (
            "weight not a number",
            "backends: [{url: \"http://127.0.0.1:9001\", weight: heavy}]\n",
            &["backends[0].weight"],
        ),
        (
            "negative weight",
            "backends: [{url: \"http://127.0.0.1:9001\", weight: -2}]\n",
            &["backends[0].weight", "-2"],
        ),
        (
            "nested unknown key",
            "timeouts: {conect: 1s}\n",
            &["timeouts", "conect"],
        ),
        (
            "nested unknown key in health_check",
            "health_check: {rize: 2}\n",
            &["health_check", "rize"],
        ),
        (
            "nested unknown key in a backend",
            "backends: [{url: \"http://127.0.0.1:9001\", wieght: 2}]\n",
            &["backends[0].wieght"],
        ),
        (
            "bad admin address",
            "admin: {listen: \"localhost\"}\n",
            &["admin.listen", "localhost"],
        ),
        (
            "bad Pingora key value",
            "threads: many\n",
            &["threads", "many"],
        ),
        ("not YAML", "backends: [unclosed\n", &["YAML"]),
        (
            "backends not a list",
            "backends: http://127.0.0.1:9001\n",
            &["backends", "http://127.0.0.1:9001"],
        ),
        (
            "listen not an address",
            "listen: 8080\n",
            &["listen", "8080"],
        ),
        ("retries out of range", "retries: 99\n", &["retries", "99"]),
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(case, text, needles)| {
            refusal_problem(case, &check_text("bad.yaml", text), needles)
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn json_mistakes_are_named_too() {
    let out = check_text(
        "bad.json",
        r#"{"strategy": "round-robin", "backends": ["http://127.0.0.1:9001"], "timeouts": {"read": "1 fortnight"}}"#,
    );
    assert_refused("json bad duration", &out, &["timeouts.read", "1 fortnight"]);
}

#[test]
fn missing_file_is_named() {
    let out = Command::new(BIN)
        .args(["-t", "-c", "/nonexistent/portico.yaml"])
        .output()
        .expect("run");
    assert_refused("missing file", &out, &["/nonexistent/portico.yaml"]);
}

#[test]
fn shipped_configs_pass() {
    for rel in ["conf/portico.yaml", "conf/config.json"] {
        let out = check_file(&repo_file(rel));
        assert!(out.status.success(), "{rel}: {}", stderr(&out));
    }
}

#[test]
fn shipped_json_matches_shipped_yaml() {
    let yaml: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_file("conf/portico.yaml")).expect("read yaml"),
    )
    .expect("yaml parses");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("conf/config.json")).expect("read json"),
    )
    .expect("json parses");
    assert_eq!(yaml, json);
}

#[test]
fn every_spelling_of_the_config_flag_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, VALID).expect("write");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "strategy: fastest\n").expect("write");
    let (g, b) = (good.display().to_string(), bad.display().to_string());
    let forms: Vec<Vec<String>> = vec![
        vec![format!("--config={g}")],
        vec!["--config".into(), g.clone()],
        vec!["--conf".into(), g.clone()],
        vec![format!("--conf={g}")],
        vec!["-c".into(), g.clone()],
    ];
    for form in forms {
        let out = Command::new(BIN)
            .arg("-t")
            .args(&form)
            .output()
            .expect("run");
        assert!(out.status.success(), "{form:?}: {}", stderr(&out));
        // The same spelling with the bad file must read that file (and refuse it).
        let bad_form: Vec<String> = form.iter().map(|a| a.replace(&g, &b)).collect();
        let out = Command::new(BIN)
            .arg("-t")
            .args(&bad_form)
            .output()
            .expect("run");
        assert_refused(&format!("{bad_form:?}"), &out, &["strategy", "fastest"]);
    }
}

#[test]
fn the_seed_command_runs_from_the_repository_root() {
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-t", "--config=conf/config.json"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_config_runs_and_proxies() {
    let origin = Origin::start("json-origin").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let doc = serde_json::json!({
        "threads": 1,
        "pid_file": dir.path().join("portico.pid"),
        "upgrade_sock": dir.path().join("upgrade.sock"),
        "grace_period_seconds": 1,
        "graceful_shutdown_timeout_seconds": 1,
        "listen": format!("127.0.0.1:{port}"),
        "strategy": "round-robin",
        "health_check_frequency": "300ms",
        "health_check": {"path": "/health", "timeout": "500ms", "rise": 1, "fall": 1},
        "backends": [{"url": origin.url(), "weight": 1}],
        "timeouts": {"connect": "1s", "read": "5s"},
        "admin": {"listen": format!("127.0.0.1:{admin_port}")},
    });
    let config = dir.path().join("portico.json");
    std::fs::write(&config, doc.to_string()).expect("write");
    let gw = Gateway::spawn(dir, config, port, admin_port, &[]);
    gw.wait_ready().await;
    let r = client().get(gw.url("/")).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "json-origin\n");
    assert_eq!(origin.requests(), 1);
}

/// Runs the binary until it exits or `deadline` passes (then kills it); returns its output
/// and how long it ran.
fn run_bounded(args: &[&str], deadline: Duration) -> (Option<Output>, Duration) {
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return (Some(out), start.elapsed());
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_taken_port_fails_fast_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, text) in [
        (
            "listen",
            format!(
                "listen: \"{addr}\"\nadmin: {{listen: \"127.0.0.1:{}\"}}\n",
                free_port()
            ),
        ),
        (
            "admin.listen",
            format!(
                "listen: \"127.0.0.1:{}\"\nadmin: {{listen: \"{addr}\"}}\n",
                free_port()
            ),
        ),
    ] {
        let path = dir.path().join("taken.yaml");
        let text = format!(
            "pid_file: {}\nupgrade_sock: {}\n{text}backends: []\n",
            dir.path().join("p.pid").display(),
            dir.path().join("u.sock").display()
        );
        std::fs::write(&path, text).expect("write");
        let path = path.display().to_string();
        let (out, took) = run_bounded(&["-c", &path], SOON);
        let out = out.unwrap_or_else(|| panic!("{key}: still running after {took:?}"));
        assert_refused(key, &out, &[key, &addr.to_string()]);
    }
}

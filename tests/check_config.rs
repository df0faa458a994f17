//! `portico -t` reports every problem at once (errors in the file and what start-up needs from
//! the machine), `-T` prints the effective configuration, `--version` the version.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::gateway::{check_file, BIN};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// The files Portico writes, all in `dir` (so the check passes on the machine's side).
fn files_in(dir: &Path) -> String {
    format!(
        "pid_file: {}\nupgrade_sock: {}\n",
        dir.join("p.pid").display(),
        dir.join("u.sock").display()
    )
}

#[test]
fn three_errors_are_all_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{}strategy: fastest\ntimeouts: {{connect: 0s}}\nretries: 99\nbackends: [http://127.0.0.1:9]\n",
        files_in(dir.path())
    );
    let out = check_file(&write(dir.path(), "bad.yaml", &text));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("bad.yaml: ")).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains("strategy: unknown strategy \"fastest\""),
        "{err}"
    );
    assert!(
        lines[1].contains("timeouts.connect: must be greater than zero"),
        "{err}"
    );
    assert!(lines[2].contains("retries: 99 is out of range"), "{err}");
}

#[test]
fn wrong_types_and_unknown_keys_are_all_printed_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "strategy: 5\nbogus: 1\nhealth_check: {rize: 1, timeout: []}\n";
    let out = check_file(&write(dir.path(), "bad.yaml", text));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "bogus: unknown key",
        "strategy: invalid type",
        "health_check.rize: unknown key",
        "health_check.timeout: invalid type",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
}

#[test]
fn start_up_needs_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let text = format!(
        "pid_file: {m}/p.pid\nupgrade_sock: {d}/u.sock\nerror_log: {m}/error.log\n\
         state_file: {m}/state.json\nuser: no-such-user-portico\ngroup: no-such-group-portico\n",
        m = missing.display(),
        d = dir.path().display()
    );
    let out = check_file(&write(dir.path(), "needs.yaml", &text));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in ["pid_file:", "error_log:", "state_file:", "user:", "group:"] {
        assert!(
            err.lines().any(|l| l.contains(&format!(": {key} "))),
            "{key} not reported: {err}"
        );
    }
    assert!(!err.contains("upgrade_sock:"), "{err}");
}

#[test]
fn an_empty_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check_file(&write(dir.path(), "empty.yaml", ""));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no backends and no store"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dump_output_is_a_configuration_the_check_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{}strategy: weighted-round-robin\nadmin: {{token: s3cret}}\nsticky_secret: hush\n\
         backends:\n  - http://127.0.0.1:9001\n  - {{url: http://127.0.0.1:9002, weight: 3}}\n",
        files_in(dir.path())
    );
    let path = write(dir.path(), "in.yaml", &text);
    let out = Command::new(BIN)
        .arg("-T")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run -T");
    assert!(out.status.success(), "{}", stderr(&out));
    let dumped = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        !dumped.contains("s3cret") && !dumped.contains("hush"),
        "{dumped}"
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&dumped).expect("YAML");
    // Defaults are filled in.
    assert_eq!(doc["health_check_frequency"], "10s", "{dumped}");
    assert_eq!(doc["timeouts"]["read"], "30s", "{dumped}");
    assert_eq!(doc["backends"][1]["weight"], 3, "{dumped}");
    let again = write(dir.path(), "dumped.yaml", &dumped);
    let out = check_file(&again);
    assert!(out.status.success(), "{}\n{dumped}", stderr(&out));
    // And dumping the dump changes nothing but the masked secrets.
    let out = Command::new(BIN)
        .arg("-T")
        .arg("-c")
        .arg(&again)
        .output()
        .expect("run -T");
    assert_eq!(String::from_utf8_lossy(&out.stdout), dumped);
}

#[test]
fn version_is_printed() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        text.trim(),
        format!("portico {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_name_is_a_warning_not_an_error() {
    let dns = support::dns::DnsServer::start("known.test", support::dns::Answer::NoSuchName).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{}dns: {{servers: [\"{}\"]}}\nbackends: [http://unknown.test:8080]\n",
        files_in(dir.path()),
        dns.addr
    );
    let path = write(dir.path(), "dns.yaml", &text);
    let out = tokio::task::spawn_blocking(move || check_file(&path))
        .await
        .expect("check");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("cannot resolve unknown.test"),
        "{err}"
    );
}

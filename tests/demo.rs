//! `--demo` always works: in fresh starts of the real binary with the shipped configuration,
//! the very first request through the proxy is answered 200 by a demo origin (the origins
//! listen before the first health round, which the proxy waits for).
//!
//! Each start runs on free ports: the proxy and admin ports and the backends in a temporary
//! copy of conf/portico.yaml, the demo origins moved there with `PORTICO_DEMO_PORTS` (for
//! tests; 9001-9003 may be held by someone's `portico --demo` on a shared machine).

mod support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use support::gateway::BIN;
use support::*;

/// Fresh starts checked.
const STARTS: usize = 20;
/// conf/portico.yaml with the proxy and admin on `port`/`admin_port`, the three backends on
/// `demo` instead of 9001-9003, and the pid file and upgrade socket in `dir`; everything else
/// (health checking every 5 s, rise 2) as shipped.
fn demo_config(dir: &std::path::Path, port: u16, admin_port: u16, demo: [u16; 3]) -> String {
    let shipped = include_str!("../conf/portico.yaml");
    let mut out = String::new();
    let mut replaced = 0;
    for line in shipped.lines() {
        let mut line = line.to_string();
        for (shipped_port, demo_port) in [9001, 9002, 9003].iter().zip(demo) {
            let from = format!("http://127.0.0.1:{shipped_port}");
            if line.contains(&from) {
                line = line.replace(&from, &format!("http://127.0.0.1:{demo_port}"));
                replaced += 1;
            }
        }
        let key = line.split(':').next().unwrap_or("");
        let new = match key {
            "listen" => format!("listen: \"127.0.0.1:{port}\""),
            "  listen" => format!("  listen: \"127.0.0.1:{admin_port}\""),
            "pid_file" => format!("pid_file: {}", dir.join("portico.pid").display()),
            "upgrade_sock" => format!("upgrade_sock: {}", dir.join("upgrade.sock").display()),
            _ => {
                out.push_str(&line);
                out.push('\n');
                continue;
            }
        };
        replaced += 1;
        out.push_str(&new);
        out.push('\n');
    }
    assert_eq!(replaced, 7, "conf/portico.yaml changed shape:\n{shipped}");
    out
}

/// `portico -c config --demo` with the demo origins on `demo`.
fn spawn_demo(
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    port: u16,
    admin_port: u16,
    demo: [u16; 3],
) -> Gateway {
    let ports = demo.map(|p| p.to_string()).join(",");
    Gateway::spawn_with_env(
        dir,
        config,
        port,
        admin_port,
        &["--demo".to_string()],
        Some("info"),
        &[("PORTICO_DEMO_PORTS".to_string(), ports)],
    )
}

#[tokio::test]
async fn the_demo_answers_its_first_request_in_every_fresh_start() {
    let http = client();
    for start in 1..=STARTS {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin_port) = (free_port(), free_port());
        let demo = [free_port(), free_port(), free_port()];
        let config = dir.path().join("portico.yaml");
        fs::write(&config, demo_config(dir.path(), port, admin_port, demo)).expect("write");
        let mut gw = spawn_demo(dir, config, port, admin_port, demo);
        // Ready = the admin API answers and the proxy port accepts; no request went through
        // the proxy yet.
        gw.wait_ready().await;
        let resp = http
            .get(gw.url("/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("start {start}: request failed: {e}\n{}", gw.log()));
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!(
            status,
            200,
            "start {start}: the first request got {status} {body}; log:\n{}",
            gw.log()
        );
        assert!(body.starts_with("demo-origin-"), "start {start}: {body}");
        // No demo origin was ever found closed (that first verdict is what made the demo
        // answer 503 for its first ten seconds).
        assert_eq!(
            gw.log_count(" is DOWN"),
            0,
            "start {start}: a demo origin was probed before it listened; log:\n{}",
            gw.log()
        );
        // The mechanism, from Pingora's start-up log: the race above is rarely lost on an idle
        // machine (it was under load), so check that the first health round waits for the
        // three origins to accept connections.
        let waits = gw.log().lines().any(|l| {
            l.contains("Service 'BG health checker' will wait for dependencies")
                && (1..=3).all(|i| l.contains(&format!("\"demo-origin-{i}\"")))
        });
        assert!(
            waits,
            "start {start}: health checker not ordered after the demo origins; log:\n{}",
            gw.log()
        );
        // SIGKILL: the ports are free for the next start as soon as the process is gone.
        let _ = gw.child.kill();
        assert!(
            gw.wait_exit(Duration::from_secs(10)).await.is_some(),
            "start {start}: still running"
        );
    }
}

#[tokio::test]
async fn a_bad_demo_ports_variable_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portico.yaml");
    let demo = [free_port(), free_port(), free_port()];
    fs::write(
        &config,
        demo_config(dir.path(), free_port(), free_port(), demo),
    )
    .expect("write");
    for bad in ["9001,9002", "a,b,c", "1,2,3,4", "0,1,2"] {
        let out = Command::new(BIN)
            .arg("-c")
            .arg(&config)
            .arg("--demo")
            .env("PORTICO_DEMO_PORTS", bad)
            .output()
            .expect("run portico");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
        assert!(err.contains("PORTICO_DEMO_PORTS"), "{bad}: {err}");
    }
}

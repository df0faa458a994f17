//! A real single-member `etcd` (Debian package `etcd-server`) for tests: client and peer URLs
//! on free loopback ports, a temporary data directory, and stop/restart on the same ports and
//! data to simulate outages. Killed when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{eventually, free_port};

/// The binary from `etcd-server` (override with `PORTICO_TEST_ETCD`).
fn etcd_binary() -> String {
    std::env::var("PORTICO_TEST_ETCD").unwrap_or_else(|_| "etcd".into())
}

/// A running (or stopped) etcd member.
pub struct Etcd {
    pub client_port: u16,
    pub peer_port: u16,
    dir: TempDir,
    child: Option<Child>,
    starts: usize,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Etcd {
        let mut etcd = Etcd {
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            starts: 0,
        };
        etcd.restart().await;
        etcd
    }

    /// The client URL, for `store.etcd.endpoints`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The YAML of a `store:` section for `prefix` (and a short request timeout, so that
    /// refusals during an outage are quick).
    pub fn store_yaml(&self, prefix: &str) -> String {
        format!(
            "store:\n  etcd:\n    endpoints: [\"{}\"]\n    prefix: \"{prefix}\"\n    timeout: 1s\n",
            self.endpoint()
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("etcd-{}.log", self.starts))
    }

    /// Everything the current (or last) etcd process printed.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts etcd again on the same ports and data (after [`Etcd::stop`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        self.starts += 1;
        let log = fs::File::create(self.log_path()).expect("etcd log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_binary())
            .arg("--name=portico-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=portico-test={peer}"))
            .arg("--logger=zap")
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{}` ({e}): install the Debian package etcd-server",
                    etcd_binary()
                )
            });
        self.child = Some(child);
        let health = format!("{}/health", self.endpoint());
        let http = super::client();
        let up = eventually(Duration::from_secs(20), || {
            let (http, health) = (http.clone(), health.clone());
            async move {
                match http.get(&health).send().await {
                    Ok(r) => r.text().await.is_ok_and(|t| t.contains("\"true\"")),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(up, "etcd did not become healthy; log:\n{}", self.log());
    }

    /// Kills etcd (an outage: clients see their connections drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client of this etcd.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("connect to etcd")
    }

    /// The backend records under `prefix` (`<prefix>/backends/...`), as JSON values.
    pub async fn backends(&self, prefix: &str) -> Vec<serde_json::Value> {
        let mut client = self.client().await;
        let resp = client
            .get(
                format!("{prefix}/backends/"),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("read etcd");
        resp.kvs()
            .iter()
            .map(|kv| serde_json::from_slice(kv.value()).expect("backend record is JSON"))
            .collect()
    }

    /// The URLs stored under `prefix`, sorted.
    pub async fn urls(&self, prefix: &str) -> Vec<String> {
        let mut urls: Vec<String> = self
            .backends(prefix)
            .await
            .iter()
            .map(|b| b["url"].as_str().expect("url").to_string())
            .collect();
        urls.sort();
        urls
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Launches the real `portico` binary with a temporary configuration and free ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use super::{client, eventually, free_port};

pub const BIN: &str = env!("CARGO_BIN_EXE_portico");

/// Builds a configuration for a test gateway. Defaults are fast: probes every 300 ms with a
/// 500 ms timeout, rise 1, fall 1, a 3 s grace period.
#[derive(Clone)]
pub struct GatewayBuilder {
    pub strategy: String,
    pub backends: Vec<(String, u32)>,
    pub health_frequency: String,
    pub health_path: Option<String>,
    /// `health_check.grpc`: HTTP/2 backends get the gRPC health check.
    pub health_grpc: bool,
    pub health_timeout: String,
    pub rise: u32,
    pub fall: u32,
    pub connect_timeout: String,
    pub read_timeout: String,
    /// `timeouts.websocket_idle`; `None` leaves Portico's default.
    pub websocket_idle: Option<String>,
    /// `timeouts.keepalive` (idle backend connections); `None` leaves Portico's default.
    pub backend_keepalive: Option<String>,
    pub grace_period: u64,
    pub token: Option<String>,
    pub state_file: Option<PathBuf>,
    pub access_log: bool,
    pub threads: u32,
    /// Appended verbatim to the YAML (extra keys, e.g. `tls:`).
    pub extra: String,
    pub args: Vec<String>,
    /// `RUST_LOG` for the process (default: the test's own, else `info`).
    pub rust_log: Option<String>,
    /// Extra environment of the process (and of the processes that upgrade it).
    pub env: Vec<(String, String)>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder {
            strategy: "round-robin".into(),
            backends: Vec::new(),
            health_frequency: "300ms".into(),
            health_path: Some("/health".into()),
            health_grpc: false,
            health_timeout: "500ms".into(),
            rise: 1,
            fall: 1,
            connect_timeout: "1s".into(),
            read_timeout: "5s".into(),
            websocket_idle: None,
            backend_keepalive: None,
            grace_period: 3,
            token: None,
            state_file: None,
            access_log: true,
            threads: 2,
            extra: String::new(),
            args: Vec::new(),
            rust_log: None,
            env: Vec::new(),
        }
    }
}

impl GatewayBuilder {
    pub fn backend(mut self, url: impl Into<String>) -> Self {
        self.backends.push((url.into(), 1));
        self
    }

    pub fn weighted(mut self, url: impl Into<String>, weight: u32) -> Self {
        self.backends.push((url.into(), weight));
        self
    }

    pub fn strategy(mut self, s: &str) -> Self {
        self.strategy = s.into();
        self
    }

    /// The YAML for ports `port`/`admin_port` and files under `dir`.
    pub fn yaml(&self, dir: &Path, port: u16, admin_port: u16) -> String {
        let mut y = format!(
            "threads: {}\npid_file: {}\nupgrade_sock: {}\ngrace_period_seconds: {}\n\
             graceful_shutdown_timeout_seconds: 1\nlisten: \"127.0.0.1:{port}\"\n\
             strategy: {}\nhealth_check_frequency: {}\nhealth_check:\n",
            self.threads,
            dir.join("portico.pid").display(),
            dir.join("upgrade.sock").display(),
            self.grace_period,
            self.strategy,
            self.health_frequency,
        );
        if let Some(p) = &self.health_path {
            y += &format!("  path: {p}\n");
        }
        if self.health_grpc {
            y += "  grpc: true\n";
        }
        y += &format!(
            "  timeout: {}\n  rise: {}\n  fall: {}\n",
            self.health_timeout, self.rise, self.fall
        );
        y += &format!(
            "timeouts:\n  connect: {}\n  read: {}\n",
            self.connect_timeout, self.read_timeout
        );
        if let Some(idle) = &self.websocket_idle {
            y += &format!("  websocket_idle: {idle}\n");
        }
        if let Some(keepalive) = &self.backend_keepalive {
            y += &format!("  keepalive: {keepalive}\n");
        }
        y += &format!("admin:\n  listen: \"127.0.0.1:{admin_port}\"\n");
        if let Some(t) = &self.token {
            y += &format!("  token: {t}\n");
        }
        if let Some(s) = &self.state_file {
            y += &format!("state_file: {}\n", s.display());
        }
        y += &format!("access_log: {}\n", self.access_log);
        if self.backends.is_empty() {
            y += "backends: []\n";
        } else {
            y += "backends:\n";
            for (url, w) in &self.backends {
                y += &format!("  - url: {url}\n    weight: {w}\n");
            }
        }
        y += &self.extra;
        y
    }

    /// Starts the gateway and waits until it serves (admin `/healthz` and the proxy port).
    pub async fn start(self) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.path().join("portico.yaml");
        fs::write(&config, self.yaml(dir.path(), port, admin_port)).expect("write config");
        let mut gw = Gateway::spawn_with_env(
            dir,
            config,
            port,
            admin_port,
            &self.args,
            self.rust_log.as_deref(),
            &self.env,
        );
        gw.env = self.env;
        gw.wait_ready().await;
        gw
    }

    /// Runs `portico -t` on this configuration.
    pub fn check(&self) -> Output {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("portico.yaml");
        fs::write(&config, self.yaml(dir.path(), free_port(), free_port())).expect("write");
        check_file(&config)
    }
}

/// Runs `portico -t -c path`.
pub fn check_file(path: &Path) -> Output {
    Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(path)
        .output()
        .expect("run portico -t")
}

/// A running `portico` process; killed when dropped.
pub struct Gateway {
    pub dir: TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub child: Child,
    pub log_path: PathBuf,
    /// Extra environment, passed on to `portico -u` by [`Gateway::spawn_upgrade`].
    pub env: Vec<(String, String)>,
}

impl Gateway {
    /// Spawns `portico -c config` with output to a log file in `dir`.
    pub fn spawn(
        dir: TempDir,
        config: PathBuf,
        port: u16,
        admin_port: u16,
        args: &[String],
    ) -> Gateway {
        Self::spawn_with_log_level(dir, config, port, admin_port, args, None)
    }

    /// Like [`Gateway::spawn`], with `RUST_LOG` set to `rust_log` when given.
    pub fn spawn_with_log_level(
        dir: TempDir,
        config: PathBuf,
        port: u16,
        admin_port: u16,
        args: &[String],
        rust_log: Option<&str>,
    ) -> Gateway {
        Self::spawn_with_env(dir, config, port, admin_port, args, rust_log, &[])
    }

    /// Like [`Gateway::spawn_with_log_level`], with extra environment variables.
    pub fn spawn_with_env(
        dir: TempDir,
        config: PathBuf,
        port: u16,
        admin_port: u16,
        args: &[String],
        rust_log: Option<&str>,
        env: &[(String, String)],
    ) -> Gateway {
        let rust_log = rust_log
            .map(str::to_owned)
            .unwrap_or_else(|| std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()));
        let n = fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0);
        let log_path = dir.path().join(format!("portico-{n}.log"));
        let log = fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().expect("dup log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn portico");
        Gateway {
            dir,
            config,
            port,
            admin_port,
            child,
            log_path,
            env: env.to_vec(),
        }
    }

    /// Waits until the admin API answers and the proxy port accepts connections.
    pub async fn wait_ready(&self) {
        let admin = self.admin("/healthz");
        let http = client();
        let port = self.port;
        let ready = eventually(Duration::from_secs(20), || {
            let (http, admin) = (http.clone(), admin.clone());
            async move {
                // Portico's own answer, not just any 200 from whatever holds the port.
                let admin_ok = match http.get(&admin).send().await {
                    Ok(r) if r.status() == 200 => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v == serde_json::json!({"status": "ok"})),
                    _ => false,
                };
                admin_ok
                    && tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
            }
        })
        .await;
        assert!(ready, "gateway did not become ready; log:\n{}", self.log());
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        client()
            .get(self.admin("/status"))
            .send()
            .await
            .expect("status request")
            .json()
            .await
            .expect("status JSON")
    }

    /// The `/status` entry of the backend with this URL, if present.
    pub async fn backend(&self, url: &str) -> Option<Value> {
        let status = self.status().await;
        status["backends"]
            .as_array()?
            .iter()
            .find(|b| b["url"] == url)
            .cloned()
    }

    /// Waits until the backend's `alive` flag equals `alive`.
    pub async fn wait_alive(&self, url: &str, alive: bool, deadline: Duration) -> bool {
        eventually(deadline, || async {
            self.backend(url).await.is_some_and(|b| b["alive"] == alive)
        })
        .await
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal portico");
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Graceful upgrade (`portico -u`), as an operator or systemd's `ExecReload` performs it.
impl Gateway {
    /// The upgrade socket of this gateway's configuration (see `GatewayBuilder::yaml`).
    pub fn upgrade_sock(&self) -> PathBuf {
        self.dir.path().join("upgrade.sock")
    }

    /// Starts `portico -u` on the same configuration, ports and directory, waits until it
    /// listens on the upgrade socket, sends `SIGQUIT` to this (old) process and waits until the
    /// listening sockets have been handed over. Returns the new gateway; this one keeps its
    /// child (to be waited for with `wait_exit`) and an empty directory of its own, since the
    /// shared directory moves to the new gateway.
    pub async fn upgrade(&mut self) -> Gateway {
        let mut new = self.spawn_upgrade().await;
        self.hand_over(&mut new).await;
        new
    }

    /// The first half of [`Gateway::upgrade`]: starts `portico -u` and waits until it waits
    /// for the sockets on the upgrade socket (this process still serves meanwhile).
    pub async fn spawn_upgrade(&mut self) -> Gateway {
        let sock = self.upgrade_sock();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let new = Gateway::spawn_with_env(
            dir,
            self.config.clone(),
            self.port,
            self.admin_port,
            &["-u".to_string()],
            None,
            &self.env,
        );
        let listening = eventually(Duration::from_secs(20), || {
            let exists = sock.exists();
            async move { exists }
        })
        .await;
        assert!(
            listening,
            "`portico -u` did not open {}; log:\n{}",
            sock.display(),
            new.log()
        );
        new
    }

    /// The second half of [`Gateway::upgrade`]: `SIGQUIT` to this process, then waits until
    /// `new` has taken the sockets and is still running.
    pub async fn hand_over(&self, new: &mut Gateway) {
        let sock = new.upgrade_sock();
        self.signal(Signal::SIGQUIT);
        let handed_over = eventually(Duration::from_secs(20), || {
            let gone = !sock.exists();
            async move { gone }
        })
        .await;
        assert!(
            handed_over,
            "sockets were not handed over; new log:\n{}",
            new.log()
        );
        if let Ok(Some(status)) = new.child.try_wait() {
            panic!("`portico -u` exited with {status}; log:\n{}", new.log());
        }
    }
}

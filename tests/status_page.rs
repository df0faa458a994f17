//! The status page (`GET /` on the admin listener) in a real browser: headless Chromium,
//! driven over the DevTools protocol, loads the page from a running gateway with a token set,
//! is given the token by keyboard, shows every backend with its health, shows a killed
//! backend DOWN within 3 s, drains it with its Drain button, sets a weight, adds and removes a
//! backend, keeps its layout still while numbers change, and fits a phone's width.
//! Screenshots go to `target/status-page.png`, `target/status-page-mobile.png` and
//! `target/status-page-dark.png`.
//!
//! Needs Chromium (Debian package `chromium`; `.ci/run` and `quickstart.sh` install it), or
//! its path in `CHROMIUM`.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use support::*;

const TOKEN: &str = "page-s3cret";

/// A headless Chromium of its own (fresh profile, DevTools on a port it picks itself); the
/// whole process group is killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `ws://127.0.0.1:<port>/devtools/browser/<id>`
    ws_url: String,
}

impl Browser {
    fn launch() -> Browser {
        let exe = chromium();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads stderr to the end, so that Chromium never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
            }
        });
        let ws_url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{} did not open its DevTools port", exe.display()));
        Browser {
            child,
            _profile: profile,
            ws_url,
        }
    }

    /// The DevTools HTTP endpoint (`http://127.0.0.1:<port>`).
    fn http_base(&self) -> String {
        let rest = self.ws_url.trim_start_matches("ws://");
        let host = rest.split('/').next().unwrap_or(rest);
        format!("http://{host}")
    }

    /// A connection to the browser's page (the `about:blank` it started with).
    async fn page(&self) -> Cdp {
        let list: Value = client()
            .get(format!("{}/json/list", self.http_base()))
            .send()
            .await
            .expect("DevTools /json/list")
            .json()
            .await
            .expect("target list");
        let page = list
            .as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("no page target: {list}"));
        let ws = page["webSocketDebuggerUrl"].as_str().expect("page ws url");
        let (socket, _) = tokio_tungstenite::connect_async(ws)
            .await
            .expect("connect to the page's DevTools socket");
        Cdp { socket, next: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The Chromium binary: `CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the status page test needs Chromium and found none on the PATH: install the Debian \
         package `chromium` (`apt-get install -y chromium`; .ci/run and quickstart.sh do) or \
         set CHROMIUM=/path/to/chromium"
    );
}

/// A minimal DevTools protocol client for one page: a command and its answer, events skipped.
/// Hand-written (about 30 lines over a WebSocket) because the crates that wrap the protocol
/// (`chromiumoxide`, `headless_chrome`) generate thousands of types from the protocol schema
/// and would dominate the test build for the five commands used here.
struct Cdp {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(frame) = self.socket.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["id"] == id {
                    return v;
                }
            }
            panic!("DevTools socket closed during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"));
        if let Some(e) = answer.get("error") {
            panic!("{method} failed: {e}");
        }
        answer["result"].clone()
    }

    /// Evaluates `expr` in the page and returns its value (JSON-serialisable values only).
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("page threw while evaluating {expr:?}: {e}");
        }
        r["result"]["value"].clone()
    }

    async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let data = r["data"].as_str().expect("screenshot data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PNG");
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        std::fs::create_dir_all(&dir).expect("target dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Sends one key press (down and up) to the focused element.
    async fn press(&mut self, key: &str, code: u32) {
        for kind in ["keyDown", "keyUp"] {
            let mut params = json!({"type": kind, "key": key, "code": key,
                "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code});
            if kind == "keyDown" && key == "Enter" {
                params["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", params).await;
        }
    }

    /// Clicks the middle of the element `selector` selects, as a mouse would.
    async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center', inline: 'nearest'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                sel = json!(selector)
            ))
            .await;
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("nothing on the page matches {selector}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Polls `expr` until it evaluates to `true` or `deadline` passes (an exception, as while
    /// the page is still loading, counts as not yet).
    async fn wait_for(&mut self, expr: &str, deadline: Duration) -> bool {
        let start = Instant::now();
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (_) {{ return false; }} }})()");
        loop {
            if self.eval(&guarded).await == json!(true) {
                return true;
            }
            if start.elapsed() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the page shows per backend: url -> (health badge text, draining badge shown,
/// drain button text).
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('#rows tr')].map(tr => ({\
    url: tr.dataset.url, \
    health: tr.querySelector('.badge.health').textContent, \
    draining: getComputedStyle(tr.querySelector('.badge.drain')).display !== 'none', \
    button: tr.querySelector('.drain-button').textContent})))";

async fn rows(page: &mut Cdp) -> Vec<Value> {
    let text = page.eval(ROWS).await;
    serde_json::from_str(text.as_str().unwrap_or("[]")).expect("rows JSON")
}

fn row_of<'a>(rows: &'a [Value], url: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["url"] == url)
}

/// The `/status` entry of `url`, with the token.
async fn entry(gw: &Gateway, url: &str) -> Option<Value> {
    status(gw).await["backends"]
        .as_array()?
        .iter()
        .find(|b| b["url"] == url)
        .cloned()
}

/// `/status` with the token.
async fn status(gw: &Gateway) -> Value {
    client()
        .get(gw.admin("/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_health_live_and_drains_with_its_button() {
    let a = Origin::start("a").await;
    let mut b = Origin::start("b").await;
    let c = Origin::start("c").await;
    let gw = GatewayBuilder {
        token: Some(TOKEN.into()),
        health_frequency: "200ms".into(),
        ..GatewayBuilder::default()
    }
    .backend(a.url())
    .backend(b.url())
    .backend(c.url())
    .start()
    .await;
    // Steady traffic all along, so that rates and sparklines have something to show.
    let target = gw.url("/");
    let traffic = tokio::spawn(async move {
        let http = client();
        loop {
            let _ = http.get(&target).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let browser = tokio::task::spawn_blocking(Browser::launch)
        .await
        .expect("launch");
    let mut page = browser.page().await;
    page.viewport(1280, 900, false).await;
    page.call("Page.navigate", json!({"url": gw.admin("/")}))
        .await;

    // The page itself needs no token; its data does, so it asks, with the focus on the field.
    assert!(
        page.wait_for(
            "!document.getElementById('token-form').hidden && \
             document.activeElement === document.getElementById('token')",
            Duration::from_secs(10),
        )
        .await,
        "the page did not ask for the token (focused); body: {}",
        page.eval("document.body.innerText").await
    );
    page.call("Input.insertText", json!({"text": TOKEN})).await;
    page.press("Enter", 13).await;

    let every_backend_up = "(() => { const rows = [...document.querySelectorAll('#rows tr')]; \
        return rows.length === 3 && rows.every(r => \
        r.querySelector('.badge.health').textContent === 'UP'); })()";
    assert!(
        page.wait_for(every_backend_up, Duration::from_secs(10))
            .await,
        "not every backend shown UP: {:?}",
        rows(&mut page).await
    );
    let shown = rows(&mut page).await;
    for origin in [&a, &b, &c] {
        let row = row_of(&shown, &origin.url()).expect("every backend has a row");
        assert_eq!(row["health"], "UP");
        assert_eq!(row["draining"], false);
        assert_eq!(row["button"], "Drain");
    }
    assert_eq!(
        page.eval("document.getElementById('t-strategy').textContent")
            .await,
        "round-robin"
    );
    assert!(
        page.wait_for(
            "document.getElementById('t-backends').textContent === '3' && \
             document.getElementById('t-active').textContent === '3'",
            Duration::from_secs(5)
        )
        .await
    );

    // Killed mid-test: DOWN on the page within 3 s (probes every 200 ms, the page polls
    // every second).
    let b_url = b.url();
    b.stop();
    let killed = Instant::now();
    let down = format!(
        "(() => {{ const r = document.querySelector('#rows tr[data-url=\"{b_url}\"]'); \
         return !!r && r.querySelector('.badge.health').textContent === 'DOWN'; }})()"
    );
    assert!(
        page.wait_for(&down, Duration::from_secs(3)).await,
        "{b_url} not shown DOWN within 3 s: {:?}",
        rows(&mut page).await
    );
    assert!(killed.elapsed() <= Duration::from_secs(3));

    // Its Drain button drains it (the page sends the token it was given).
    page.click(&format!("#rows tr[data-url=\"{b_url}\"] .drain-button"))
        .await;
    let drained = eventually(Duration::from_secs(5), || async {
        entry(&gw, &b_url)
            .await
            .is_some_and(|x| x["draining"] == true)
    })
    .await;
    assert!(
        drained,
        "the Drain button did not drain {b_url}: {}; page says {:?}",
        status(&gw).await,
        page.eval("document.getElementById('message').textContent")
            .await
    );
    let draining_shown = format!(
        "(() => {{ const r = document.querySelector('#rows tr[data-url=\"{b_url}\"]'); \
         return !!r && getComputedStyle(r.querySelector('.badge.drain')).display !== 'none' && \
         r.querySelector('.drain-button').textContent === 'Enable'; }})()"
    );
    assert!(
        page.wait_for(&draining_shown, Duration::from_secs(5)).await,
        "the page does not show {b_url} draining: {:?}",
        rows(&mut page).await
    );
    // The others still take traffic and say so.
    for url in [a.url(), c.url()] {
        let shown = rows(&mut page).await;
        let row = row_of(&shown, &url).expect("row");
        assert_eq!(
            (row["health"].clone(), row["draining"].clone()),
            (json!("UP"), json!(false))
        );
    }

    assert!(
        page.wait_for(
            "[...document.querySelectorAll('#rows tr .spark polyline')]\
             .some(p => (p.getAttribute('points') || '').split(' ').length >= 3) && \
             !['-', '0.0'].includes(document.getElementById('t-rps').textContent)",
            Duration::from_secs(5)
        )
        .await,
        "no traffic shown: {}",
        page.eval("document.getElementById('t-rps').textContent")
            .await
    );

    // A new weight, typed into the row's field and sent with Enter.
    let a_row = format!("#rows tr[data-url=\"{}\"]", a.url());
    page.eval(&format!(
        "document.querySelector('{a_row} .weight input').select()"
    ))
    .await;
    page.call("Input.insertText", json!({"text": "3"})).await;
    page.press("Enter", 13).await;
    let reweighed = eventually(Duration::from_secs(5), || async {
        entry(&gw, &a.url()).await.is_some_and(|e| e["weight"] == 3)
    })
    .await;
    assert!(
        reweighed,
        "weight not set: {:?}",
        entry(&gw, &a.url()).await
    );

    // The add form, by keyboard: URL, weight, Enter.
    let d = Origin::start("d").await;
    page.eval("document.getElementById('add-url').focus()")
        .await;
    page.call("Input.insertText", json!({"text": d.url()}))
        .await;
    page.eval("document.getElementById('add-weight').select()")
        .await;
    page.call("Input.insertText", json!({"text": "2"})).await;
    page.press("Enter", 13).await;
    let added = eventually(Duration::from_secs(5), || async {
        entry(&gw, &d.url()).await.is_some_and(|e| e["weight"] == 2)
    })
    .await;
    assert!(
        added,
        "not added; page says {:?}",
        page.eval("document.getElementById('message').textContent")
            .await
    );
    let d_row = format!("#rows tr[data-url=\"{}\"]", d.url());
    let d_up = format!("document.querySelector('{d_row} .badge.health').textContent === 'UP'");
    assert!(
        page.wait_for(&d_up, Duration::from_secs(5)).await,
        "added backend not shown UP: {:?}",
        rows(&mut page).await
    );

    // Remove takes two presses (no blocking dialog).
    page.click(&format!("{d_row} .remove-button")).await;
    assert!(
        entry(&gw, &d.url()).await.is_some(),
        "removed on the first press"
    );
    page.click(&format!("{d_row} .remove-button")).await;
    let removed = eventually(Duration::from_secs(5), || async {
        entry(&gw, &d.url()).await.is_none()
    })
    .await;
    assert!(removed, "the second press did not remove {}", d.url());
    let gone = format!("!document.querySelector('{d_row}')");
    assert!(page.wait_for(&gone, Duration::from_secs(5)).await);

    // No layout shift while the numbers change: every cell keeps its box across updates.
    let geometry = "JSON.stringify([...document.querySelectorAll('#rows tr, #t-rps')].map(e => \
        [e, ...(e.cells || [])].map(c => { const r = c.getBoundingClientRect(); \
        return [r.left, r.top, r.width, r.height].map(Math.round); })))";
    let before = page.eval(geometry).await;
    let rps_before = page
        .eval("document.querySelector('#rows tr').cells[3].textContent")
        .await;
    for _ in 0..2 {
        let stamp = page
            .eval("document.getElementById('conn').textContent")
            .await;
        let next = format!("document.getElementById('conn').textContent !== {stamp}");
        assert!(
            page.wait_for(&next, Duration::from_secs(5)).await,
            "the page stopped polling"
        );
    }
    assert_eq!(
        page.eval(geometry).await,
        before,
        "the layout moved between updates"
    );
    eprintln!(
        "first row req/s {rps_before} -> {}",
        page.eval("document.querySelector('#rows tr').cells[3].textContent")
            .await
    );

    // Latency quantiles come from the per-backend histogram when the gateway exports one.
    let metrics = client()
        .get(gw.admin("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let p50 = format!(
        "document.querySelector('#rows tr[data-url=\"{}\"] .p50').textContent",
        a.url()
    );
    if metrics.contains("portico_backend_request_duration_seconds_bucket{") {
        let timed = format!("/\\d/.test({p50})");
        assert!(
            page.wait_for(&timed, Duration::from_secs(5)).await,
            "no p50 shown for a backend with traffic: {}",
            page.eval(&p50).await
        );
    } else {
        assert_eq!(page.eval(&p50).await, "-");
    }

    let shot = page.screenshot("status-page.png").await;
    eprintln!("screenshot: {}", shot.display());

    // A phone: every backend still readable without scrolling sideways.
    page.viewport(390, 844, true).await;
    assert!(
        page.wait_for(
            "document.documentElement.scrollWidth <= window.innerWidth",
            Duration::from_secs(5)
        )
        .await,
        "the page is wider than a phone: {} > {}",
        page.eval("document.documentElement.scrollWidth").await,
        page.eval("window.innerWidth").await
    );
    let shot = page.screenshot("status-page-mobile.png").await;
    eprintln!("screenshot: {}", shot.display());
    // And in a dark colour scheme, for people to look at.
    page.viewport(1280, 900, false).await;
    page.call(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    )
    .await;
    let shot = page.screenshot("status-page-dark.png").await;
    eprintln!("screenshot: {}", shot.display());
    traffic.abort();
}

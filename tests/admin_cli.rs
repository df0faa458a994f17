//! `portico admin` against the real binary: the round trip (add, weight, drain, enable, remove,
//! status) checked against `/status`, the token read from the configuration file, and one
//! error line with exit code 1 when the gateway is unreachable or refuses. The exact requests
//! (`PATCH /backends` bodies, `Content-Type`, bearer token) are checked on a small recording
//! admin server.

mod support;

use std::convert::Infallible;
use std::process::Output;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::gateway::BIN;
use support::*;

/// Runs `portico admin <args>`.
async fn admin(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("admin")
        .args(args)
        .env_remove("PORTICO_ADMIN_TOKEN")
        .output()
        .await
        .expect("run portico admin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns standard output.
fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts exit code 1 with exactly one line on standard error (returned) and nothing on
/// standard output.
fn fails_with_one_line(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("portico admin: "), "{err}");
    assert_eq!(stdout(o), "");
    err
}

#[tokio::test]
async fn add_remove_and_status_round_trip_through_the_configuration_file() {
    let a = Origin::start("cli-a").await;
    let b = Origin::start("cli-b").await;
    let gw = GatewayBuilder {
        token: Some("cli-secret".into()),
        ..GatewayBuilder::default()
    }
    .backend(a.url())
    .start()
    .await;
    let conf = gw.config.to_str().expect("utf-8 path").to_owned();
    let status = || async {
        client()
            .get(gw.admin("/status"))
            .bearer_auth("cli-secret")
            .send()
            .await
            .expect("status")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    let entry = |s: &Value, url: &str| {
        s["backends"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["url"] == url).cloned())
    };

    // add: the token comes from admin.token in the same file.
    let out = ok(&admin(&["-c", &conf, "add", &b.url(), "--weight", "3"]).await);
    assert_eq!(out, format!("added {} (weight 3)\n", b.url()));
    let s = status().await;
    let added = entry(&s, &b.url()).expect("added backend in /status");
    assert_eq!(added["weight"], 3);

    // status: a table with every backend, its health and weight.
    let up = eventually(std::time::Duration::from_secs(5), || async {
        entry(&status().await, &b.url()).is_some_and(|e| e["alive"] == true)
    })
    .await;
    assert!(up, "{}", status().await);
    let table = ok(&admin(&["--config", &conf, "status"]).await);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("strategy round-robin, 2 of 2"),
        "{table}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["URL", "HEALTH", "IN-FLIGHT", "REQUESTS", "ERRORS", "WEIGHT"]
    );
    for (url, weight) in [(a.url(), "1"), (b.url(), "3")] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(&format!("{url} ")))
            .unwrap_or_else(|| panic!("no row for {url}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "up", "{row}");
        assert_eq!(cells[5], weight, "{row}");
    }
    // status --json: the document /status serves.
    let json: Value = serde_json::from_str(&ok(&admin(&["-c", &conf, "status", "--json"]).await))
        .expect("--json prints JSON");
    assert_eq!(json["total_backends"], 2);
    assert_eq!(json["backends"], status().await["backends"]);

    // remove
    let out = ok(&admin(&["-c", &conf, "remove", &b.url()]).await);
    assert_eq!(out, format!("removed {}\n", b.url()));
    let s = status().await;
    assert!(entry(&s, &b.url()).is_none(), "{s}");
    assert_eq!(s["total_backends"], 1);

    // The server's refusal, on one line: removing it again (404), a duplicate (409), a bad
    // URL (400), a wrong token (401).
    let err = fails_with_one_line(&admin(&["-c", &conf, "remove", &b.url()]).await);
    assert!(err.contains("404"), "{err}");
    assert!(err.contains(&b.url()), "{err}");
    let err = fails_with_one_line(&admin(&["-c", &conf, "add", &a.url()]).await);
    assert!(err.contains("409"), "{err}");
    let err = fails_with_one_line(&admin(&["-c", &conf, "add", "ftp://nope"]).await);
    assert!(err.contains("400"), "{err}");
    let admin_url = gw.admin("");
    let err =
        fails_with_one_line(&admin(&["--admin", &admin_url, "--token", "wrong", "status"]).await);
    assert!(err.contains("401") && err.contains("token"), "{err}");
    // --admin with the right token works without the file.
    ok(&admin(&["--admin", &admin_url, "--token", "cli-secret", "status"]).await);
}

#[tokio::test]
async fn an_unreachable_gateway_is_one_line_and_exit_code_1() {
    // A port nobody listens on.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    for action in [
        vec!["status"],
        vec!["add", "http://127.0.0.1:1"],
        vec!["drain", "http://127.0.0.1:1"],
    ] {
        let mut args = vec!["--admin", url.as_str()];
        args.extend(action);
        let err = fails_with_one_line(&admin(&args).await);
        assert!(err.contains("cannot reach"), "{err}");
        assert!(err.contains(&url), "{err}");
    }
    // A configuration file that does not exist or does not check: one line too.
    let err = fails_with_one_line(&admin(&["-c", "/nonexistent/portico.yaml", "status"]).await);
    assert!(err.contains("/nonexistent/portico.yaml"), "{err}");
}

/// One request as the recording admin server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Value,
}

/// A stand-in admin API on a free port: records every request and answers each with the
/// next of `answers` (status, JSON body).
async fn recording_admin(answers: Vec<(u16, Value)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = local_listener().await;
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log, answers) = (log.clone(), answers.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (log, answers) = (log.clone(), answers.clone());
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let mut seen = Seen {
                            method: req.method().to_string(),
                            path: req.uri().to_string(),
                            content_type: header("content-type"),
                            authorization: header("authorization"),
                            body: Value::Null,
                        };
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        seen.body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        log.lock().expect("lock").push(seen);
                        let (status, doc) = answers
                            .lock()
                            .expect("lock")
                            .next()
                            .unwrap_or((500, json!({"error": "no answer left"})));
                        let resp = Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(doc.to_string())))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn drain_enable_and_weight_send_patch_requests_with_a_json_body_and_the_token() {
    let url = "http://10.0.0.5:8080";
    let (base, seen) = recording_admin(vec![
        (200, json!({"url": url, "weight": 1})),
        (200, json!({"url": url, "weight": 1})),
        (200, json!({"url": url, "weight": 7})),
        (
            404,
            json!({"error": "backend http://10.9.9.9:80 is not in the pool"}),
        ),
        (
            415,
            json!({"error": "content type \"text/plain\" is not supported"}),
        ),
    ])
    .await;
    let with = |args: &[&str]| {
        let mut all = vec!["--admin", base.as_str(), "--token", "t0k"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&args).await
    };
    assert_eq!(
        ok(&run(with(&["drain", url])).await),
        format!("draining {url}: it gets no new requests\n")
    );
    assert_eq!(
        ok(&run(with(&["enable", url])).await),
        format!("enabled {url}\n")
    );
    assert_eq!(
        ok(&run(with(&["weight", url, "7"])).await),
        format!("{url}: weight 7\n")
    );
    let err = fails_with_one_line(&run(with(&["drain", "http://10.9.9.9:80"])).await);
    assert_eq!(
        err,
        "portico admin: PATCH /backends: 404 backend http://10.9.9.9:80 is not in the pool\n"
    );
    let err = fails_with_one_line(&run(with(&["weight", url, "2"])).await);
    assert!(err.contains("415"), "{err}");

    let seen = seen.lock().expect("lock").clone();
    let bodies: Vec<&Value> = seen.iter().map(|s| &s.body).collect();
    assert_eq!(
        bodies,
        [
            &json!({"url": url, "state": "drain"}),
            &json!({"url": url, "state": "enabled"}),
            &json!({"url": url, "weight": 7}),
            &json!({"url": "http://10.9.9.9:80", "state": "drain"}),
            &json!({"url": url, "weight": 2}),
        ]
    );
    for s in &seen {
        assert_eq!(s.method, "PATCH");
        assert_eq!(s.path, "/backends");
        assert_eq!(s.content_type.as_deref(), Some("application/json"), "{s:?}");
        assert_eq!(s.authorization.as_deref(), Some("Bearer t0k"), "{s:?}");
    }

    // add and remove send JSON bodies with the content type too; status sends no body.
    let (base, seen) = recording_admin(vec![
        (201, json!({"url": url, "weight": 2})),
        (200, json!({"removed": {"url": url}})),
        (200, json!({"strategy": "x", "backends": []})),
    ])
    .await;
    let base = base.as_str();
    ok(&admin(&["--admin", base, "add", url, "--weight", "2"]).await);
    ok(&admin(&["--admin", base, "remove", url]).await);
    ok(&admin(&["--admin", base, "status"]).await);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, json!({"url": url, "weight": 2}));
    assert_eq!(seen[1].method, "DELETE");
    assert_eq!(seen[1].body, json!({"url": url}));
    for s in &seen[..2] {
        assert_eq!(s.content_type.as_deref(), Some("application/json"), "{s:?}");
        assert_eq!(s.authorization, None, "no token given, none sent");
    }
    assert_eq!(seen[2].method, "GET");
    assert_eq!(seen[2].path, "/status");
    assert_eq!(seen[2].content_type, None);
}

/// The full round trip against the gateway itself: drain, weight and enable through
/// `PATCH /backends`, each as `/status` shows it (a drained backend has `"draining": true`).
#[tokio::test]
async fn drain_weight_and_enable_change_the_gateway_as_status_shows() {
    let a = Origin::start("patch-a").await;
    let b = Origin::start("patch-b").await;
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    let conf = gw.config.to_str().expect("utf-8 path").to_owned();
    let b_url = b.url();
    let entry = || async {
        gw.backend(&b_url)
            .await
            .expect("backend b stays in the pool")
    };
    ok(&admin(&["-c", &conf, "weight", &b_url, "5"]).await);
    assert_eq!(entry().await["weight"], 5);
    ok(&admin(&["-c", &conf, "drain", &b_url]).await);
    assert_eq!(entry().await["draining"], true, "{}", entry().await);
    let table = ok(&admin(&["-c", &conf, "status"]).await);
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{b_url} ")))
        .unwrap_or_else(|| panic!("no row for {b_url}:\n{table}"));
    assert!(row.contains("draining"), "{table}");
    // A drained backend gets no new requests.
    let before = b.requests();
    for _ in 0..4 {
        let r = client().get(gw.url("/")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(b.requests(), before, "a drained backend got requests");
    ok(&admin(&["-c", &conf, "enable", &b_url]).await);
    assert_eq!(entry().await["draining"], false, "{}", entry().await);
    ok(&admin(&["-c", &conf, "remove", &b_url]).await);
    assert!(gw.backend(&b_url).await.is_none());
}

//! The access log formats (`json`, `combined`) and request ids, against the real binary: one
//! JSON object per request carrying the id the client sent (or a generated one, also seen by
//! the origin and returned to the client); and the request metrics that come with them
//! (per-backend latency histogram, build info, process metrics).

mod support;

use std::fs;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Starts a gateway in front of `origin` whose configuration says `access_log: <format>`.
async fn gateway_with_log(origin: &Origin, format: &str) -> Gateway {
    let builder = GatewayBuilder::default().backend(origin.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let yaml = builder.yaml(dir.path(), port, admin_port);
    assert!(yaml.contains("access_log: true\n"), "{yaml}");
    let yaml = yaml.replace("access_log: true\n", &format!("access_log: {format}\n"));
    let config = dir.path().join("portico.yaml");
    fs::write(&config, yaml).expect("write config");
    let gw = Gateway::spawn(dir, config, port, admin_port, &[]);
    gw.wait_ready().await;
    gw
}

/// The access log lines of `format` in the gateway's output once there are `n` of them.
async fn access_lines(gw: &Gateway, n: usize, is_line: fn(&str) -> bool) -> Vec<String> {
    let lines = || {
        gw.log()
            .lines()
            .filter(|l| is_line(l))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let seen = eventually(Duration::from_secs(5), || {
        let count = lines().len();
        async move { count >= n }
    })
    .await;
    assert!(seen, "expected {n} access log lines; log:\n{}", gw.log());
    lines()
}

fn is_json_line(line: &str) -> bool {
    line.starts_with('{')
}

/// Sends GET `path` with an optional `X-Request-Id`; returns the response's id and the
/// headers the origin saw (`/echo` reports them).
async fn echo(gw: &Gateway, path: &str, id: Option<&str>) -> (String, Value) {
    let mut req = client()
        .get(gw.url(path))
        .header("User-Agent", "access-log-test");
    if let Some(id) = id {
        req = req.header("X-Request-Id", id);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let returned = resp
        .headers()
        .get("x-request-id")
        .expect("the response carries X-Request-Id")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        resp.headers().get_all("x-request-id").iter().count(),
        1,
        "one X-Request-Id in the response"
    );
    let doc: Value = resp.json().await.expect("echo JSON");
    (returned, doc["headers"].clone())
}

#[tokio::test]
async fn json_log_has_one_object_per_request_with_the_request_id() {
    let origin = Origin::start("json-logged").await;
    let gw = gateway_with_log(&origin, "json").await;

    // 1. The client's id is kept end to end.
    let (returned, seen) = echo(&gw, "/echo?a=1", Some("client-id-42")).await;
    assert_eq!(returned, "client-id-42");
    assert_eq!(seen["x-request-id"], "client-id-42");

    // 2. No id: one is generated, the same at the origin, in the response and in the log.
    let (generated, seen) = echo(&gw, "/echo", None).await;
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(seen["x-request-id"], generated.as_str());

    // 3. An unusable id (too long) is replaced, not forwarded.
    let long = "x".repeat(300);
    let (replaced, seen) = echo(&gw, "/echo", Some(&long)).await;
    assert_ne!(replaced, long);
    assert_eq!(replaced.len(), 32);
    assert_eq!(seen["x-request-id"], replaced.as_str());

    // 4. A plain request (not /echo) gets an id too.
    let resp = client()
        .get(gw.url("/plain"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let plain_id = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();

    let lines = access_lines(&gw, 4, is_json_line).await;
    assert_eq!(lines.len(), 4, "one line per request: {lines:#?}");
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let mut ids: Vec<&str> = objects
        .iter()
        .map(|o| o["request_id"].as_str().expect("request_id"))
        .collect();
    let mut expected = vec!["client-id-42", &generated, &replaced, &plain_id];
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected, "{lines:#?}");
    let first = objects
        .iter()
        .find(|o| o["request_id"] == "client-id-42")
        .expect("the first request's line");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/echo?a=1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["backend"], origin.url().as_str());
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["user_agent"], "access-log-test");
    assert!(first["bytes_sent"].as_u64().expect("bytes_sent") > 0);
    let total = first["duration_ms"].as_f64().expect("duration_ms");
    let upstream = first["upstream_ms"].as_f64().expect("upstream_ms");
    assert!(
        total > 0.0 && upstream > 0.0 && upstream <= total,
        "{first}"
    );
    let time = first["time"].as_str().expect("time");
    // RFC 3339, UTC, milliseconds: 2026-12-06T11:40:07.123Z
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    // Nothing else in the log looks like an access log line.
    assert_eq!(gw.log_count("portico::access"), 0, "{}", gw.log());
}

#[tokio::test]
async fn a_503_answered_by_portico_carries_the_request_id_and_is_logged() {
    let mut origin = Origin::start("gone").await;
    let gw = gateway_with_log(&origin, "json").await;
    origin.stop();
    assert!(
        gw.wait_alive(&origin.url(), false, Duration::from_secs(5))
            .await
    );
    let resp = client()
        .get(gw.url("/x"))
        .header("X-Request-Id", "down-1")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-request-id"], "down-1");
    let lines = access_lines(&gw, 1, is_json_line).await;
    let last: Value = serde_json::from_str(lines.last().expect("a line")).expect("JSON");
    assert_eq!(last["request_id"], "down-1");
    assert_eq!(last["status"], 503);
    assert_eq!(last["upstream_ms"], Value::Null);
}

#[tokio::test]
async fn combined_log_lines_follow_the_apache_format() {
    let origin = Origin::start("combined").await;
    let gw = gateway_with_log(&origin, "combined").await;
    let resp = client()
        .get(gw.url("/page?q=1"))
        .header("Referer", "http://example.test/")
        .header("User-Agent", "tester \"quoted\"")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body_len = resp.bytes().await.expect("body").len();
    let lines = access_lines(&gw, 1, |l| l.starts_with("127.0.0.1 - - [")).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    // 127.0.0.1 - - [06/Dec/2026:11:40:07 +0000] "GET /page?q=1 HTTP/1.1" 200 8 "ref" "agent"
    let (time, rest) = line["127.0.0.1 - - [".len()..]
        .split_once("] ")
        .expect("a [time] field");
    assert_eq!(time.len(), "06/Dec/2026:11:40:07 +0000".len(), "{line}");
    assert!(time.ends_with(" +0000"), "{line}");
    assert_eq!(
        rest,
        format!(
            "\"GET /page?q=1 HTTP/1.1\" 200 {body_len} \"http://example.test/\" \
             \"tester \\x22quoted\\x22\""
        ),
        "{line}"
    );
}

#[tokio::test]
async fn metrics_show_backend_latency_build_info_and_the_process() {
    let a = Origin::start("metrics-a").await;
    let b = Origin::start("metrics-b").await;
    let gw = GatewayBuilder::default()
        .backend(a.url())
        .backend(b.url())
        .start()
        .await;
    let http = client();
    for _ in 0..6 {
        let r = http.get(gw.url("/m")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    let scrape = || async {
        client()
            .get(gw.admin("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    // The histogram is observed when a request's logging phase ends, just after the client
    // has its answer.
    let counted = eventually(Duration::from_secs(5), || async {
        let text = scrape().await;
        [&a, &b].iter().all(|o| {
            text.contains(&format!(
                "portico_backend_request_duration_seconds_count{{backend=\"{}\"}} 3",
                o.url()
            ))
        })
    })
    .await;
    let text = scrape().await;
    assert!(counted, "{text}");
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    for origin in [&a, &b] {
        let count = format!(
            "portico_backend_request_duration_seconds_count{{backend=\"{}\"}}",
            origin.url()
        );
        // Round robin over two: three each.
        assert_eq!(value(&count), Some(3.0), "{count} in:\n{text}");
        let inf = format!(
            "portico_backend_request_duration_seconds_bucket{{backend=\"{}\",le=\"+Inf\"}}",
            origin.url()
        );
        assert_eq!(value(&inf), Some(3.0), "{inf} in:\n{text}");
    }
    let build = format!(
        "portico_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&build), Some(1.0), "{text}");
    assert!(value("process_resident_memory_bytes").is_some_and(|v| v > 1e6));
    assert!(value("process_open_fds").is_some_and(|v| v >= 3.0));
    assert!(value("process_cpu_seconds_total").is_some_and(|v| v >= 0.0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = value("process_start_time_seconds").expect("start time");
    assert!(start <= now && start > now - 600.0, "{start} vs {now}");

    // A backend removed from the pool (and done) loses its latency series.
    let removed = http
        .delete(gw.admin("/backends"))
        .json(&serde_json::json!({"url": b.url()}))
        .send()
        .await
        .expect("remove");
    assert_eq!(removed.status(), 200);
    let gone = eventually(Duration::from_secs(5), || {
        let (http, url, name) = (http.clone(), gw.admin("/metrics"), b.url());
        async move {
            let Ok(r) = http.get(url).send().await else {
                return false;
            };
            let text = r.text().await.unwrap_or_default();
            !text.contains(&format!(
                "portico_backend_request_duration_seconds_count{{backend=\"{name}\"}}"
            ))
        }
    })
    .await;
    assert!(gone, "the removed backend's latency series stayed");
}

#[tokio::test]
async fn two_request_ids_from_a_client_reach_the_backend_as_the_first_one() {
    let origin = Origin::start("two-ids").await;
    let gw = gateway_with_log(&origin, "json").await;
    let resp = client()
        .get(gw.url("/echo"))
        .header("X-Request-Id", "first-id")
        .header("X-Request-Id", "second-id")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "first-id");
    let doc: Value = resp.json().await.expect("echo JSON");
    // The echo keeps the last value of a repeated header: the second would show if both went on.
    assert_eq!(doc["headers"]["x-request-id"], "first-id");
}

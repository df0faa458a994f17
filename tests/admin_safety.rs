//! The admin API against cross-site requests and DNS rebinding (issue 14), over raw sockets
//! against the real binary: a body must be declared JSON, `Host` must be one of the admin
//! listener's names, and a browser write must come from the admin API's own origin.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{client, free_port, Gateway, GatewayBuilder, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(15);

/// Sends `request` (which must ask for `Connection: close`) to the admin port; status and body.
async fn admin_exchange(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect admin");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn post(host: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "POST /backends HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn pool(port: u16) -> Vec<String> {
    let v: Value = client()
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    v["backends"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["url"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_changes_nothing() {
    let a = Origin::start("a").await;
    let gw = GatewayBuilder::default().backend(a.url()).start().await;
    let port = gw.admin_port;
    let before = pool(port).await;
    let own = format!("127.0.0.1:{port}");
    let add = r#"{"url": "http://127.0.0.1:9"}"#;

    // What a web page can make a browser send without a preflight, through DNS rebinding:
    // no Content-Type (text/plain), its own Origin, its own name as Host.
    let cross_site = post(
        &format!("attacker.example:{port}"),
        "Origin: http://attacker.example\r\nContent-Type: text/plain\r\n",
        add,
    );
    let (status, body) = admin_exchange(port, &cross_site).await;
    assert_eq!(status, 421, "{body}");
    // Each protection on its own.
    let cases = [
        // No Content-Type at all.
        (post(&own, "", add), 415),
        // A form.
        (
            post(
                &own,
                "Content-Type: application/x-www-form-urlencoded\r\n",
                "url=http://127.0.0.1:9",
            ),
            415,
        ),
        // A foreign page, JSON declared (a browser would preflight this; refused anyway).
        (
            post(
                &own,
                "Origin: http://attacker.example\r\nContent-Type: application/json\r\n",
                add,
            ),
            403,
        ),
        // A sandboxed page or a redirect: `Origin: null`.
        (
            post(
                &own,
                "Origin: null\r\nContent-Type: application/json\r\n",
                add,
            ),
            403,
        ),
        // Another port of the same machine is another origin.
        (
            post(
                &own,
                "Origin: http://127.0.0.1:3000\r\nContent-Type: application/json\r\n",
                add,
            ),
            403,
        ),
        // DNS rebinding alone.
        (
            post(
                &format!("rebind.example:{port}"),
                "Content-Type: application/json\r\n",
                add,
            ),
            421,
        ),
    ];
    for (request, want) in cases {
        let (status, body) = admin_exchange(port, &request).await;
        assert_eq!(status, want, "{request}\n-> {body}");
        let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(error["error"].is_string(), "{body}");
    }
    // A foreign Host cannot read either, and a DELETE from a foreign origin is refused.
    let (status, _) = admin_exchange(
        port,
        "GET /status HTTP/1.1\r\nHost: rebind.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 421);
    let delete = format!(
        "DELETE /backends?url={} HTTP/1.1\r\nHost: {own}\r\nOrigin: http://attacker.example\r\n\
         Connection: close\r\n\r\n",
        a.url()
    );
    assert_eq!(admin_exchange(port, &delete).await.0, 403);
    assert_eq!(
        pool(port).await,
        before,
        "a refused request changed the pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_pages_tools_and_listed_hosts_still_write() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let c = Origin::start("c").await;
    // `admin.hosts` goes under the `admin:` key the builder writes.
    let builder = GatewayBuilder::default().backend(a.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let yaml = builder.yaml(dir.path(), port, admin_port).replacen(
        "admin:\n",
        "admin:\n  hosts: [\"Gateway.Internal\"]\n",
        1,
    );
    let config = dir.path().join("portico.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let gw = Gateway::spawn(dir, config, port, admin_port, &[]);
    gw.wait_ready().await;
    let own = format!("127.0.0.1:{admin_port}");
    let json = "Content-Type: application/json\r\n";

    // The status page served by the admin listener: fetch() from its own origin.
    let page = post(
        &own,
        &format!("Origin: http://{own}\r\n{json}"),
        &format!(r#"{{"url": "{}"}}"#, b.url()),
    );
    let (status, body) = admin_exchange(admin_port, &page).await;
    assert_eq!(status, 201, "{body}");
    // curl: no Origin.
    let tool = post(&own, json, &format!(r#"{{"url": "{}"}}"#, c.url()));
    let (status, body) = admin_exchange(admin_port, &tool).await;
    assert_eq!(status, 201, "{body}");
    // A name from admin.hosts (any case, any port), and loopback names.
    for host in [
        format!("gateway.internal:{admin_port}"),
        "GATEWAY.INTERNAL".to_string(),
        format!("localhost:{admin_port}"),
        format!("[::1]:{admin_port}"),
    ] {
        let request = format!("GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, body) = admin_exchange(admin_port, &request).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    let listed = format!("gateway.internal:{admin_port}");
    let delete = format!(
        "DELETE /backends?url={} HTTP/1.1\r\nHost: {listed}\r\nOrigin: http://{listed}\r\n\
         Connection: close\r\n\r\n",
        c.url()
    );
    let (status, body) = admin_exchange(admin_port, &delete).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pool(admin_port).await, vec![a.url(), b.url()]);
}

#[test]
fn admin_hosts_are_validated() {
    let builder = GatewayBuilder::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = builder.yaml(dir.path(), free_port(), free_port()).replacen(
        "admin:\n",
        "admin:\n  hosts: [\"http://gateway.internal/\"]\n",
        1,
    );
    let config = dir.path().join("portico.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let out = support::gateway::check_file(&config);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("admin.hosts[0]"), "{text}");
}

//! Unit tests of configuration parsing and validation.

use super::*;
use std::time::Duration;

fn ok(text: &str) -> Config {
    match Config::from_text(text) {
        Ok(c) => c,
        Err(e) => panic!("expected valid config, got: {e}\n{text}"),
    }
}

fn bad(text: &str) -> ConfigError {
    match Config::from_text(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn an_empty_file_gets_defaults() {
    let c = ok("");
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.strategy, StrategyKind::RoundRobin);
    assert_eq!(c.health.interval, Duration::from_secs(10));
    assert_eq!(c.health.rise, 2);
    assert_eq!(c.health.fall, 3);
    assert_eq!(c.timeouts.read, Duration::from_secs(30));
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(
        c.server.grace_period_seconds,
        Some(DEFAULT_GRACE_PERIOD_SECS)
    );
    assert_eq!(c.server.pid_file, "/tmp/portico.pid");
    assert!(c.server.threads >= 1);
    assert_eq!(c.access_log, AccessLogFormat::Text);
}

#[test]
fn one_thread_uses_the_no_steal_runtime_unless_told_otherwise() {
    assert!(!ok("threads: 1").server.work_stealing);
    assert!(ok("threads: 2").server.work_stealing);
    assert!(ok("threads: 1\nwork_stealing: true").server.work_stealing);
    assert!(!ok("threads: 4\nwork_stealing: false").server.work_stealing);
}

#[test]
fn the_full_example_parses_with_pingora_keys_alongside() {
    let c = ok(r#"
threads: 3
grace_period_seconds: 2
pid_file: /tmp/x.pid
port: 9090
strategy: least-conn
health_check_frequency: 500ms
health_check: {path: /health, timeout: 1s, rise: 1, fall: 2}
backends:
  - http://127.0.0.1:9001
  - url: http://127.0.0.1:9002
    weight: 3
timeouts: {connect: 1s, read: 5}
admin: {listen: "127.0.0.1:0", token: secret}
state_file: /tmp/state.json
access_log: false
"#);
    assert_eq!(c.server.threads, 3);
    assert_eq!(c.server.grace_period_seconds, Some(2));
    assert_eq!(c.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(c.strategy, StrategyKind::LeastConn);
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert_eq!(c.health.path.as_deref(), Some("/health"));
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[1].weight, 3);
    assert_eq!(c.timeouts.read, Duration::from_secs(5));
    assert_eq!(c.admin.token.as_deref(), Some("secret"));
    assert_eq!(c.access_log, AccessLogFormat::Off);
}

#[test]
fn json_is_accepted() {
    let c =
        ok(r#"{"port": 8085, "strategy": "round-robin", "backends": ["http://127.0.0.1:9001"]}"#);
    assert_eq!(c.listen.port(), 8085);
    assert_eq!(c.backends.len(), 1);
}

#[test]
fn every_mistake_names_its_key_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        ("lisen: 0.0.0.0:80", "lisen", "did you mean `listen`"),
        ("strategy: fastest", "strategy", "fastest"),
        (
            "health_check_frequency: 10 parsecs",
            "health_check_frequency",
            "10 parsecs",
        ),
        (
            "health_check_frequency: 0s",
            "health_check_frequency",
            "greater than zero",
        ),
        (
            "health_check: {timeout: soon}",
            "health_check.timeout",
            "soon",
        ),
        ("health_check: {rize: 2}", "health_check.rize", "rize"),
        ("health_check: {rise: 0}", "health_check.rise", "0"),
        (
            "health_check: {path: health}",
            "health_check.path",
            "health",
        ),
        ("timeouts: {read: 1x}", "timeouts.read", "1x"),
        (
            "backends: [localhost:9001]",
            "backends[0].url",
            "localhost:9001",
        ),
        ("backends: [ftp://a:1]", "backends[0].url", "ftp://a:1"),
        (
            "backends: [http://a:1, 'HTTP://A:1/']",
            "backends[1]",
            "duplicate backend http://a:1",
        ),
        (
            "backends: [{url: http://a:1, weight: 0}]",
            "backends[0].weight",
            "0",
        ),
        (
            "backends: [{url: http://a:1, wieght: 2}]",
            "backends[0].wieght",
            "wieght",
        ),
        ("backends: [{weight: 2}]", "backends[0]", "url"),
        ("backends: [42]", "backends[0]", "a number"),
        ("port: 70000", "port", "70000"),
        ("port: 0", "port", "0"),
        ("listen: nowhere", "listen", "nowhere"),
        ("listen: 1.2.3.4:8080\nport: 80", "port", "not both"),
        ("admin: {listen: 'x:y'}", "admin.listen", "x:y"),
        ("admin: {token: ''}", "admin.token", "empty"),
        ("admin: {lsten: '127.0.0.1:1'}", "admin.lsten", "lsten"),
        ("retries: many", "retries", "expected an integer"),
        ("threads: many", "threads", "many"),
        ("timeouts: {read: [1]}", "timeouts.read", "sequence"),
        ("timeouts: {read: -5}", "timeouts.read", "-5"),
        ("timeouts: {read: 1.5}", "timeouts.read", "1.5"),
        (
            "tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}",
            "tls.cert",
            "/nonexistent/c.pem",
        ),
        ("tls: {key: /k.pem}", "tls.cert", "missing"),
        ("sticky_cookie: 'a b'", "sticky_cookie", "a b"),
        ("retries: 99", "retries", "99"),
        ("threads: 0", "threads", "at least 1"),
        ("listen: 127.0.0.1:8081", "admin.listen", "127.0.0.1:8081"),
        ("- just\n- a list", "", "mapping"),
        ("key: [unclosed", "", "YAML"),
    ];
    for (text, key, needle) in cases {
        let e = bad(text);
        assert_eq!(&e.key, key, "wrong key for {text:?}: {e}");
        let shown = e.to_string();
        assert!(
            shown.contains(needle),
            "{text:?}: message {shown:?} lacks {needle:?}"
        );
        if !key.is_empty() {
            assert!(
                shown.starts_with(key),
                "{shown:?} does not start with {key:?}"
            );
        }
    }
}

#[test]
fn nested_unknown_keys_are_named_with_their_section() {
    let e = bad("timeouts: {conect: 1s}");
    assert_eq!(e.key, "timeouts.conect");
    assert!(
        e.to_string()
            .contains("expected one of `connect`, `read`, `websocket_idle`, `keepalive`"),
        "{e}"
    );
}

#[test]
fn http2_backends_websocket_idle_and_grpc_checks_parse() {
    let c = ok(r#"
health_check: {grpc: true}
timeouts: {websocket_idle: 10m}
backends:
  - h2c://127.0.0.1:50051
  - {url: "https://api.example:443", protocol: h2}
  - {url: "https://old.example", protocol: h1}
  - http://127.0.0.1:9001
"#);
    assert!(c.health.grpc);
    assert_eq!(c.timeouts.websocket_idle, Duration::from_secs(600));
    let protocols: Vec<Protocol> = c.backends.iter().map(|b| b.protocol).collect();
    assert_eq!(
        protocols,
        [Protocol::H2, Protocol::H2, Protocol::Http1, Protocol::Http1]
    );
    assert_eq!(c.backends[0].url.to_string(), "h2c://127.0.0.1:50051");
    let defaults = ok("");
    assert_eq!(defaults.timeouts.websocket_idle, Duration::from_secs(3600));
    assert_eq!(defaults.timeouts.keepalive, Duration::from_secs(60));
    assert_eq!(
        ok("timeouts: {keepalive: 5s}").timeouts.keepalive,
        Duration::from_secs(5)
    );
    assert_eq!(bad("timeouts: {keepalive: 0s}").key, "timeouts.keepalive");
    assert!(!defaults.health.grpc);
}

#[test]
fn protocol_mismatches_name_the_key_and_the_fix() {
    let e = bad("backends: [{url: \"http://a:1\", protocol: h2}]");
    assert_eq!(e.key, "backends[0].protocol");
    assert!(e.message.contains("h2c://a:1"), "{e}");
    let e = bad("backends: [{url: \"h2c://a:1\", protocol: h1}]");
    assert_eq!(e.key, "backends[0].protocol");
    assert!(e.message.contains("http://a:1"), "{e}");
    let e = bad("backends: [{url: \"https://a:1\", protocol: h3}]");
    assert!(e.message.contains("unknown protocol \"h3\""), "{e}");
    let e = bad("backends: [{url: \"https://a:1\", protocol: 2}]");
    assert_eq!(e.key, "backends[0].protocol");
    let e = bad("timeouts: {websocket_idle: 0s}");
    assert_eq!(e.key, "timeouts.websocket_idle");
}

#[test]
fn outlier_detection_and_slow_start_have_defaults_and_bounds() {
    let c = ok("");
    assert_eq!(c.outlier, crate::backend::OutlierDetection::default());
    assert_eq!(c.slow_start, Duration::ZERO);
    let c = ok("outlier_detection:\n  consecutive_errors: 0\n  max_ejection_percent: 100\nslow_start: 30s\n");
    assert_eq!(c.outlier.consecutive_errors, 0);
    assert_eq!(c.outlier.max_ejection_percent, 100);
    assert_eq!(c.slow_start, Duration::from_secs(30));
    let e = bad("outlier_detection:\n  max_ejection_percent: 101\n");
    assert_eq!(e.key, "outlier_detection.max_ejection_percent");
    let e = bad("outlier_detection:\n  base_ejection_time: 1m\n  max_ejection_time: 10s\n");
    assert_eq!(e.key, "outlier_detection.max_ejection_time");
    let e = bad("outlier_detection:\n  base_ejection_time: 0s\n");
    assert_eq!(e.key, "outlier_detection.base_ejection_time");
    let e = bad("outlier_detection:\n  consecutive_eror: 3\n");
    assert_eq!(e.key, "outlier_detection.consecutive_eror");
    let e = bad("slow_start: soon\n");
    assert_eq!(e.key, "slow_start");
    assert_eq!(ok("strategy: p2c-ewma\n").strategy, StrategyKind::P2cEwma);
}

#[test]
fn the_backend_connection_pool_keeps_as_many_as_clients_may_hold() {
    let base = "backends: [\"http://127.0.0.1:9001\"]\n";
    let c = ok(&format!("{base}max_connections: 5000\n"));
    assert_eq!(c.server.upstream_keepalive_pool_size, 5000);
    // Never below Pingora's own 128.
    let c = ok(&format!("{base}max_connections: 10\n"));
    assert_eq!(c.server.upstream_keepalive_pool_size, 128);
    // Set in the file: kept as written.
    let c = ok(&format!(
        "{base}max_connections: 5000\nupstream_keepalive_pool_size: 64\n"
    ));
    assert_eq!(c.server.upstream_keepalive_pool_size, 64);
}

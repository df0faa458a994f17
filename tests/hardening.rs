//! Hardening for the open internet (issue 14), against the real binary over raw sockets: slow
//! and idle clients, strict HTTP/1.1 parsing, header limits, pipelining, `Expect: 100-continue`
//! and the connection cap. Each test checks what the client sees and, at a recording origin,
//! exactly what was forwarded.

mod support;

use std::time::{Duration, Instant};

use support::recording::RecordingOrigin;
use support::{client, eventually, Gateway, GatewayBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for any answer on a loaded machine; never waited out by a passing test.
const DEADLINE: Duration = Duration::from_secs(15);

/// A gateway in front of one recording origin, with short client timeouts.
async fn gateway(extra: &str) -> (RecordingOrigin, Gateway) {
    let origin = RecordingOrigin::start().await;
    let mut b = GatewayBuilder::default().backend(origin.url());
    b.extra = extra.to_string();
    (origin, b.start().await)
}

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .expect("connect gateway")
}

/// One response read off a connection: status, head (lower case) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one final response (interim 1xx skipped) framed by `Content-Length`, leaving any
/// bytes after it in `buf`. `None` when the connection closed first.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Answer> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
            if (100..200).contains(&status) {
                buf.drain(..end + 4);
                continue;
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                buf.drain(..end + 4 + length);
                return Some(Answer { status, head, body });
            }
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(DEADLINE, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// Sends `request` on a new connection and reads one answer.
async fn exchange(gw: &Gateway, request: &[u8]) -> Option<Answer> {
    let mut s = connect(gw).await;
    s.write_all(request).await.expect("write request");
    read_answer(&mut s, &mut Vec::new()).await
}

/// Whether the peer closed `s` (EOF or reset) within `within`; bytes before the close are
/// ignored.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request_lines_are_refused_not_rewritten() {
    let (origin, gw) = gateway("").await;
    for line in [
        &b"GET /a b HTTP/1.1"[..],
        b"GET /a\x01b HTTP/1.1",
        b"GET /a\x00b HTTP/1.1",
        b"GET /a\tb HTTP/1.1",
        b"GET /a HTTP/1.7",
        b"GET /a HTTQ/1.1",
    ] {
        let mut request = line.to_vec();
        request.extend_from_slice(b"\r\nHost: x\r\n\r\n");
        let answer = exchange(&gw, &request).await;
        let label = String::from_utf8_lossy(line).escape_debug().to_string();
        assert_eq!(answer.map(|a| a.status), Some(400), "{label}");
    }
    // A valid request passes, so the origin was reachable all along.
    let ok = exchange(&gw, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(ok.map(|a| a.status), Some(200));
    let forwarded = origin.requests();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert!(
        forwarded[0].starts_with("GET /ok HTTP/1.1\r\n"),
        "{forwarded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_content_lengths_are_forwarded_as_one_value() {
    let (origin, gw) = gateway("").await;
    for cl in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        origin.clear();
        let request = format!("POST /upload HTTP/1.1\r\nHost: x\r\n{cl}\r\nhello");
        let answer = exchange(&gw, request.as_bytes()).await;
        assert_eq!(answer.map(|a| a.status), Some(200), "{cl:?}");
        let forwarded = origin.requests();
        assert_eq!(forwarded.len(), 1, "{forwarded:?}");
        let lengths: Vec<&str> = forwarded[0]
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths.len(), 1, "{cl:?} forwarded as {lengths:?}");
        assert_eq!(lengths[0].split_once(':').map(|(_, v)| v.trim()), Some("5"));
        assert!(forwarded[0].ends_with("\r\n\r\nhello"), "{forwarded:?}");
    }
    // Differing values: refused, nothing forwarded.
    origin.clear();
    for cl in [
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        let request = format!("POST /upload HTTP/1.1\r\nHost: x\r\n{cl}\r\nhello!");
        let answer = exchange(&gw, request.as_bytes()).await;
        assert_eq!(answer.map(|a| a.status), Some(400), "{cl:?}");
    }
    assert_eq!(origin.requests(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_other_than_chunked_is_refused() {
    let (origin, gw) = gateway("").await;
    for te in [
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\n",
    ] {
        let request =
            format!("POST /upload HTTP/1.1\r\nHost: x\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n");
        let status = exchange(&gw, request.as_bytes()).await.map(|a| a.status);
        assert!(matches!(status, Some(501 | 400)), "{te:?}: {status:?}");
    }
    assert_eq!(origin.requests(), Vec::<String>::new());
    // Plain chunked goes through, as chunked.
    let request = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\n\r\n";
    let answer = exchange(&gw, request.as_bytes()).await;
    assert_eq!(answer.map(|a| a.status), Some(200));
    let forwarded = origin.requests();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert!(
        forwarded[0]
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{forwarded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_is_refused() {
    let (origin, gw) = gateway("").await;
    let answer = exchange(&gw, b"GET /nohost HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("Host"), "{answer:?}");
    assert_eq!(origin.requests(), Vec::<String>::new());
    // HTTP/1.0 predates Host and is served.
    let answer = exchange(&gw, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer.map(|a| a.status), Some(200));
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_and_uris_are_refused() {
    let (origin, gw) = gateway("").await;
    // 40 KiB of headers, past the 32 KiB default.
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    assert_eq!(
        exchange(&gw, big.as_bytes()).await.map(|a| a.status),
        Some(431)
    );
    // 101 header lines, past the 100 default.
    let mut many = "GET /many HTTP/1.1\r\nHost: x\r\n".to_string();
    for i in 0..100 {
        many += &format!("X-H{i}: v\r\n");
    }
    many += "\r\n";
    assert_eq!(
        exchange(&gw, many.as_bytes()).await.map(|a| a.status),
        Some(431)
    );
    // A 9 KiB target, past the 8 KiB default; and one past the header limit itself.
    for len in [9 * 1024, 40 * 1024] {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(len));
        let status = exchange(&gw, long.as_bytes()).await.map(|a| a.status);
        assert_eq!(status, Some(414), "target of {len} bytes");
    }
    assert_eq!(origin.requests(), Vec::<String>::new());
    // Just under every limit: served.
    let mut fine = format!("GET /{} HTTP/1.1\r\nHost: x\r\n", "u".repeat(8000));
    for i in 0..98 {
        fine += &format!("X-H{i}: v\r\n");
    }
    fine += "\r\n";
    assert_eq!(
        exchange(&gw, fine.as_bytes()).await.map(|a| a.status),
        Some(200)
    );
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_response_header_is_a_502() {
    let (origin, gw) = gateway("").await;
    let answer = exchange(&gw, b"GET /big-response-header HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        !answer.head.contains("x-big"),
        "the header leaked: {}",
        answer.head.len()
    );
    // The request itself was forwarded once, as sent.
    let forwarded = origin.requests();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert!(forwarded[0].starts_with("GET /big-response-header HTTP/1.1\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let (origin, gw) = gateway("").await;
    let mut s = connect(&gw).await;
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let a = read_answer(&mut s, &mut buf)
            .await
            .expect("an answer for each request");
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.head.contains("connection: keep-alive"), "{a:?}");
        bodies.push(a.body);
    }
    assert_eq!(bodies, ["/one", "/two", "/three"]);
    // The connection is still usable.
    s.write_all(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let a = read_answer(&mut s, &mut buf)
        .await
        .expect("a fourth answer");
    assert_eq!(a.body, "/four");
    let forwarded = origin.requests();
    assert_eq!(forwarded.len(), 4, "{forwarded:?}");
    assert!(forwarded[1].starts_with("POST /two HTTP/1.1\r\n"));
    assert!(forwarded[1].ends_with("\r\n\r\nabc"), "{forwarded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_keeps_the_connection() {
    let (origin, gw) = gateway("").await;
    let mut s = connect(&gw).await;
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write head");
    // The interim answer comes before the body is sent.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut chunk))
            .await
            .expect("100 Continue in time")
            .expect("read");
        assert!(n > 0, "closed before 100 Continue");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    s.write_all(b"hello").await.expect("write body");
    let a = read_answer(&mut s, &mut buf).await.expect("final answer");
    assert_eq!(a.status, 200);
    assert!(a.head.contains("connection: keep-alive"), "{a:?}");
    s.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let a = read_answer(&mut s, &mut buf)
        .await
        .expect("answer on the same connection");
    assert_eq!(a.body, "/after");
    let forwarded = origin.requests();
    assert_eq!(forwarded.len(), 2, "{forwarded:?}");
    assert!(forwarded[0].ends_with("\r\n\r\nhello"), "{forwarded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_gets_408_and_an_idle_connection_is_closed() {
    let (origin, gw) =
        gateway("client_timeouts:\n  header: 2s\n  keepalive: 1s\n  body: 1s\n").await;

    // Header trickled a byte every 300 ms: cut off 2 s after its first byte.
    let mut s = connect(&gw).await;
    let started = Instant::now();
    let mut answer = Vec::new();
    for b in b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: 0123456789012345678901234567890\r\n" {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
    }
    assert!(closed_within(&mut s, DEADLINE).await);
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");

    // An idle keep-alive connection: closed after `keepalive`.
    let mut s = connect(&gw).await;
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let a = read_answer(&mut s, &mut Vec::new()).await.expect("answer");
    assert!(a.head.contains("connection: keep-alive"), "{a:?}");
    let idle = Instant::now();
    assert!(
        closed_within(&mut s, DEADLINE).await,
        "idle connection kept open"
    );
    assert!(
        idle.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        idle.elapsed()
    );

    // A body that stalls longer than `body`: 408.
    let mut s = connect(&gw).await;
    s.write_all(b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let a = read_answer(&mut s, &mut Vec::new()).await.expect("answer");
    assert_eq!(a.status, 408, "{a:?}");
    // Nothing complete was forwarded: the first request never finished, the body never did.
    assert_eq!(
        origin
            .requests()
            .iter()
            .map(|r| r.split(' ').nth(1).unwrap_or("").to_string())
            .collect::<Vec<_>>(),
        ["/first"]
    );
}

/// Slowloris: 500 connections trickling a header are all closed within `header` + 1 s of
/// their first byte, while 200 ordinary requests succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_while_normal_requests_succeed() {
    const SLOW: usize = 500;
    const HEADER: Duration = Duration::from_secs(2);
    let (_origin, gw) = gateway("client_timeouts:\n  header: 2s\nmax_connections: 5000\n").await;
    let port = gw.port;
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..SLOW {
        slow.spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            let first = Instant::now();
            let mut i = 0u64;
            let mut chunk = [0u8; 1024];
            loop {
                let byte = b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    [(i % 60) as usize];
                if s.write_all(&[byte]).await.is_err() {
                    break;
                }
                i += 1;
                match tokio::time::timeout(Duration::from_millis(250), s.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {} // the 408; the close follows
                    Err(_) => {}
                }
                if first.elapsed() > DEADLINE {
                    break;
                }
            }
            first.elapsed()
        });
    }
    let http = client();
    let normal = futures_util::future::join_all((0..200).map(|i| {
        let (http, url) = (http.clone(), gw.url(&format!("/normal{i}")));
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    }))
    .await;
    let failed: Vec<_> = normal.iter().filter(|r| !matches!(r, Ok(200))).collect();
    assert!(
        failed.is_empty(),
        "{} normal requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let mut times = Vec::new();
    while let Some(t) = slow.join_next().await {
        times.push(t.expect("slow client task"));
    }
    times.sort();
    let worst = times.last().copied().unwrap_or_default();
    assert!(
        worst <= HEADER + Duration::from_secs(1),
        "slowest close after {worst:?} (median {:?})",
        times[times.len() / 2]
    );
}

/// The gateway's resident memory in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 100 clients each sending a header that never ends: each is cut off at `limits.header_bytes`
/// and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_headers_keep_memory_bounded() {
    let (origin, gw) = gateway("").await;
    let pid = gw.child.id();
    // Warm the process up (threads, pools) before the idle reading.
    for _ in 0..5 {
        let a = exchange(&gw, b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(a.map(|a| a.status), Some(200));
    }
    let idle = rss_kib(pid);
    assert!(idle > 0, "cannot read VmRSS of {pid}");
    let port = gw.port;
    let clients: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let mut sent = 0usize;
                let line = format!("X-Endless: {}\r\n", "e".repeat(1000));
                s.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .ok();
                // Until the gateway cuts the connection (or 4 MiB went out).
                while sent < 4 * 1024 * 1024 {
                    if s.write_all(line.as_bytes()).await.is_err() {
                        return (true, sent);
                    }
                    sent += line.len();
                }
                (closed_within(&mut s, DEADLINE).await, sent)
            })
        })
        .collect();
    let mut peak = idle;
    let mut cut = 0;
    let mut most_sent = 0;
    for c in clients {
        while !c.is_finished() {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (was_cut, sent) = c.await.expect("client task");
        cut += usize::from(was_cut);
        most_sent = most_sent.max(sent);
    }
    peak = peak.max(rss_kib(pid));
    eprintln!("VmRSS idle {idle} KiB, peak {peak} KiB with 100 endless headers");
    assert_eq!(cut, 100, "every endless header is cut off");
    assert!(
        peak < idle + 50 * 1024,
        "RSS went from {idle} KiB idle to {peak} KiB"
    );
    // The kernel buffers some of what a client sent; but not the megabytes a 1 MiB limit
    // would let through per connection.
    assert!(
        most_sent < 4 * 1024 * 1024,
        "a client sent {most_sent} bytes unhindered"
    );
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r.contains("/warm"))
            .count(),
        5
    );
    assert_eq!(
        origin.requests().len(),
        5,
        "an endless header was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_closed_at_once() {
    let (_origin, gw) = gateway("max_connections: 3\n").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&gw).await;
        s.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let a = read_answer(&mut s, &mut Vec::new()).await.expect("served");
        assert_eq!(a.status, 200);
        held.push(s);
    }
    // A fourth: closed without an answer, long before any timeout.
    let mut extra = connect(&gw).await;
    let _ = extra
        .write_all(b"GET /extra HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    assert!(
        matches!(answered, Ok(Ok(_)) | Ok(Err(_))),
        "the extra connection was not closed"
    );
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert!(
        eventually(DEADLINE, || async {
            gw.log_count("max_connections (3) reached") >= 1
        })
        .await,
        "no log line; log:\n{}",
        gw.log()
    );
    // A slot frees when a connection ends.
    drop(held.pop());
    let served = eventually(DEADLINE, || async {
        exchange(
            &gw,
            b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .is_some_and(|a| a.status == 200)
    })
    .await;
    assert!(served);
}

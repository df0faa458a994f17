//! A raw HTTP/1.1 origin that records every request byte for byte as it arrived, for tests
//! that check exactly what the gateway forwarded (nothing, or one normalised request).
//!
//! It answers each request with `200` and the request's path as the body, so that the order of
//! pipelined answers can be read off; `GET /health` (the gateway's probe) is answered and not
//! recorded; `/big-response-header` answers with a 40 KiB header. `Expect: 100-continue` gets
//! an interim `100 Continue` before the body is read. Framing: `Content-Length` (the first
//! value of a list) or `Transfer-Encoding: chunked`.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub struct RecordingOrigin {
    pub addr: std::net::SocketAddr,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl RecordingOrigin {
    pub async fn start() -> RecordingOrigin {
        let listener = super::local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = recorded.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, rec.clone()));
            }
        });
        RecordingOrigin {
            addr,
            recorded,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (header and body), as text.
    pub fn requests(&self) -> Vec<String> {
        self.recorded
            .lock()
            .expect("lock")
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.recorded.lock().expect("lock").clear();
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `buf` holds at least `n` bytes; false when the peer closed first.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    while buf.len() < n {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

/// Reads until `needle` is in `buf` after `from`; its position, or `None` when the peer closed.
async fn fill_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    from: usize,
    needle: &[u8],
) -> Option<usize> {
    loop {
        if let Some(i) = find(&buf[from..], needle) {
            return Some(from + i);
        }
        let have = buf.len();
        if !fill(s, buf, have + 1).await {
            return None;
        }
    }
}

async fn serve(mut s: TcpStream, recorded: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = fill_until(&mut s, &mut buf, 0, b"\r\n\r\n").await else {
            return;
        };
        let head_len = end + 4;
        let raw_head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        let path = raw_head
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let head = raw_head.to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        if header("expect").is_some_and(|v| v == "100-continue") {
            let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let request_end = if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
            // Chunks until the last one (`0\r\n\r\n`, no trailers in these tests).
            let mut at = head_len;
            loop {
                let Some(line_end) = fill_until(&mut s, &mut buf, at, b"\r\n").await else {
                    return;
                };
                let size_text = String::from_utf8_lossy(&buf[at..line_end]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                at = line_end + 2 + size + 2;
                if !fill(&mut s, &mut buf, at).await {
                    return;
                }
                if size == 0 {
                    break at;
                }
            }
        } else {
            let length = header("content-length")
                .and_then(|v| {
                    v.split(',')
                        .next()
                        .and_then(|n| n.trim().parse::<usize>().ok())
                })
                .unwrap_or(0);
            if !fill(&mut s, &mut buf, head_len + length).await {
                return;
            }
            head_len + length
        };
        let request: Vec<u8> = buf.drain(..request_end).collect();
        if path != "/health" {
            recorded.lock().expect("lock").push(request);
        }
        let extra = if path == "/big-response-header" {
            format!("X-Big: {}\r\n", "b".repeat(40 * 1024))
        } else {
            String::new()
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n{path}",
            path.len()
        );
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

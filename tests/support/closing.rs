//! A raw origin that misbehaves after the connection is made: it closes a kept-alive
//! connection instead of answering its next request, or closes after reading a request's
//! body without answering. It counts every request it received, answered or not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How a [`ClosingOrigin`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Answers the first request of a connection (keep-alive) and closes the connection when
    /// the next one arrives on it, without answering.
    ReusedConnections,
    /// Reads each request, body included, then closes without answering.
    AfterTheBody,
}

pub struct ClosingOrigin {
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl ClosingOrigin {
    pub async fn start(mode: Closing) -> ClosingOrigin {
        let listener = super::local_listener().await;
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, mode, counter.clone()));
            }
        });
        ClosingOrigin {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received (whole header seen), answered or not.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for ClosingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, mode: Closing, received: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    let mut answered = 0;
    loop {
        let Some((head_len, body_len)) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        received.fetch_add(1, Ordering::SeqCst);
        while buf.len() < head_len + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_len + body_len);
        let answer = match mode {
            Closing::ReusedConnections => answered == 0,
            Closing::AfterTheBody => false,
        };
        if !answer {
            return;
        }
        answered += 1;
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Reads until a whole request header is in `buf`; returns its length and the body's
/// (`Content-Length`, 0 without one), or `None` when the connection ends first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            return Some((end + 4, body));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

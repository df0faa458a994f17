//! The HTTP/1.1 client side of `loadgen`: a parsed `http://` URL, and a connection that sends a
//! request and reads one response framed by Content-Length or chunked encoding.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A response head larger than this is refused (the origins answer with a few headers).
const MAX_HEAD: usize = 64 * 1024;

/// Where requests go: `http://host:port/path`.
pub struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn describe(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }

    /// The bytes of one request: a GET, or a POST of `post` bytes when `post` > 0.
    pub fn request(&self, close: bool, post: usize) -> Vec<u8> {
        let method = if post > 0 { "POST" } else { "GET" };
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: loadgen\r\n",
            self.path, self.host, self.port
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        if post > 0 {
            head.push_str(&format!(
                "Content-Type: application/octet-stream\r\nContent-Length: {post}\r\n"
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.resize(bytes.len() + post, b'x');
        bytes
    }
}

/// One client connection and the bytes read from it but not consumed yet.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(target: &Target) -> Result<Conn, String> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect {}: {e}", target.describe()))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
        })
    }

    /// Sends `request`, reads the whole response; returns its status and the connection when
    /// it can carry another request.
    pub async fn exchange(mut self, request: &[u8]) -> Result<(u16, Option<Conn>), String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err("response head too large".into());
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked().await?;
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
            self.read_exact_body(len).await?;
        } else if status != 204 && status != 304 {
            // Framed by the end of the connection.
            while self.fill().await.is_ok() {
                self.buf.clear();
            }
            return Ok((status, None));
        }
        Ok((status, if close { None } else { Some(self) }))
    }

    /// Reads more bytes into the buffer; an error when the peer closed.
    async fn fill(&mut self) -> Result<(), String> {
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed mid-response".into());
        }
        Ok(())
    }

    async fn read_exact_body(&mut self, len: usize) -> Result<(), String> {
        while self.buf.len() < len {
            self.fill().await?;
        }
        self.buf.drain(..len);
        Ok(())
    }

    async fn read_chunked(&mut self) -> Result<(), String> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        self.fill().await?;
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(());
                    }
                }
            }
            self.read_exact_body(size + 2).await?;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

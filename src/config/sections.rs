//! The validated sections of the configuration that are plain records: health checking,
//! timeouts, the admin listener and the TLS listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Active health checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
    /// HTTP path to GET; `None` means a TCP connect check.
    pub path: Option<String>,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// HTTP/2 backends are probed with `grpc.health.v1.Health/Check` (SERVING passes); the
    /// others keep the `path` or TCP check.
    pub grpc: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    /// How long an upgraded (WebSocket) connection may stay silent in both directions; replaces
    /// `read` once the request asks for an upgrade.
    pub websocket_idle: Duration,
    /// How long an idle backend connection is kept in the pool for reuse.
    pub keepalive: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// Names, besides loopback names and the listener's address, that clients may use in
    /// `Host` to reach the admin API (lower case, without port).
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

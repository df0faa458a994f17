//! The logger: timestamps and levels, filtered by `RUST_LOG` (default `info`); rustls logs only
//! errors unless `RUST_LOG` names it.

/// rustls's warnings are about what a TLS client sent (e.g. "ignoring IP address presented as
/// hostname" on every handshake of a client that sends an IP address as SNI, as
/// `wrk https://127.0.0.1` does): any client could fill the log with them, and there is nothing
/// for the operator to do. They are shown when `RUST_LOG` names rustls (`info,rustls=warn`).
const RUSTLS_QUIET: &str = "rustls=error";

/// The filter for `RUST_LOG`'s value (`None`: unset).
pub fn filter(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|f| !f.is_empty()) {
        None => format!("info,{RUSTLS_QUIET}"),
        Some(f) if f.contains("rustls") => f.to_owned(),
        // `directives/regex`: the directive goes before the regex.
        Some(f) => match f.split_once('/') {
            Some((directives, regex)) => format!("{directives},{RUSTLS_QUIET}/{regex}"),
            None => format!("{f},{RUSTLS_QUIET}"),
        },
    }
}

/// Installs the process logger once; later calls do nothing.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = env_logger::Builder::new()
        .parse_filters(&filter(rust_log.as_deref()))
        .format_timestamp_millis()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn rustls_is_quiet_unless_named() {
        assert_eq!(filter(None), "info,rustls=error");
        assert_eq!(filter(Some("")), "info,rustls=error");
        assert_eq!(filter(Some("debug")), "debug,rustls=error");
        assert_eq!(filter(Some("info,rustls=warn")), "info,rustls=warn");
        assert_eq!(filter(Some("info/proxy")), "info,rustls=error/proxy");
    }
}

//! `max_connections`: the cap on concurrent client connections, by default derived from the
//! process's open-file limit.

use super::error::{err, ConfigError};

/// File descriptors kept for everything that is not a client connection: listening sockets,
/// the admin API, health probes, logs and the state file.
const RESERVED_FDS: u64 = 256;
/// Largest accepted value (beyond any realistic file-descriptor limit).
const MAX_CONNECTIONS: i64 = 10_000_000;

/// The default cap: half the descriptors left after [`RESERVED_FDS`], since every proxied
/// connection also holds one to its backend (HAProxy derives `maxconn` from `ulimit -n` the
/// same way). At least 1.
pub fn default_max_connections(open_file_limit: u64) -> usize {
    let usable = open_file_limit.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(usable.max(1)).unwrap_or(usize::MAX)
}

/// The process's soft open-file limit (`ulimit -n`), if it can be read.
fn open_file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// Checks `max_connections` (1 to 10,000,000); absent, derives it from the open-file limit
/// (1,024 assumed when that cannot be read).
pub(crate) fn max_connections(raw: Option<i64>) -> Result<usize, ConfigError> {
    match raw {
        None => Ok(default_max_connections(open_file_limit().unwrap_or(1024))),
        Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => {
            usize::try_from(n).or_else(|_| err("max_connections", format!("{n} is too large")))
        }
        Some(n) => err(
            "max_connections",
            format!("{n} is out of range (1 to {MAX_CONNECTIONS})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_room_for_backend_connections() {
        assert_eq!(default_max_connections(1024), 384);
        assert_eq!(default_max_connections(65536), 32640);
        assert_eq!(default_max_connections(10), 1);
    }

    #[test]
    fn explicit_values_are_range_checked() {
        assert_eq!(max_connections(Some(100)), Ok(100));
        assert!(max_connections(None).is_ok_and(|n| n >= 1));
        for bad in [0, -5, MAX_CONNECTIONS + 1] {
            let e = max_connections(Some(bad)).unwrap_err();
            assert_eq!(e.key, "max_connections");
        }
    }
}

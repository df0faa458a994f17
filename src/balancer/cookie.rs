//! Cookie stickiness: Portico names the chosen backend in a cookie whose value is an opaque
//! keyed hash of the backend URL (HMAC-SHA256, truncated), and honours it on later requests.
//! A value that names no backend (tampered, stale) is ignored; new clients are spread
//! round-robin; a client whose backend is DOWN gets another and a new cookie, and stays there.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::round_robin::{take_turn, RoundRobin};
use super::{Plan, RequestKey, Snapshot, Strategy};
use crate::backend::{Backend, Tried};
use crate::config::StrategyKind;

/// Bytes of the HMAC kept in the cookie (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 12;

/// The cookie value naming `url` under `key`: the first 12 bytes of HMAC-SHA256(key, url),
/// hex-encoded (24 characters). Stable for a given key and URL, so cookies survive restarts
/// and upgrades; without the key it can be neither read back to the URL nor forged.
pub fn cookie_token(key: &[u8], url: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(url.as_bytes());
    let tag = mac.finalize().into_bytes();
    tag[..TOKEN_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `cookie` strategy: the backend named by a valid cookie when it is ready, otherwise the
/// next ready backend in round-robin order (the proxy then sets a cookie for it).
#[derive(Default)]
pub struct Cookie {
    fallback: RoundRobin,
}

impl Strategy for Cookie {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Cookie
    }

    fn plan(&self, backends: &[Arc<Backend>]) -> Plan {
        Plan::Cookie {
            tokens: backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.cookie_token.clone(), i))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn pick(&self, snap: &Snapshot, key: &RequestKey<'_>, tried: &Tried) -> Option<usize> {
        if let (Plan::Cookie { tokens }, Some(value)) = (&snap.plan, key.cookie) {
            if let Some(&i) = tokens.get(value) {
                let b = &snap.backends[i];
                if b.is_ready() && !tried.contains(b.id) {
                    return Some(i);
                }
            }
        }
        take_turn(snap, &self.fallback, tried)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;

    fn with_cookie(lb: &Balancer, cookie: Option<&str>) -> std::sync::Arc<crate::backend::Backend> {
        let key = RequestKey {
            client_ip: None,
            cookie,
        };
        lb.next_valid_peer(&key, &Tried::default())
            .expect("ready")
            .backend()
            .clone()
    }

    #[test]
    fn tokens_are_opaque_stable_and_keyed() {
        let a = cookie_token(b"k1", "http://127.0.0.1:9001");
        assert_eq!(a, cookie_token(b"k1", "http://127.0.0.1:9001"));
        assert_ne!(a, cookie_token(b"k2", "http://127.0.0.1:9001"));
        assert!(!a.contains("127"));
        assert_eq!(a.len(), 24);
    }

    #[test]
    fn a_valid_cookie_sticks_and_a_tampered_one_is_ignored() {
        let lb = balancer(StrategyKind::Cookie, &[1, 1, 1]);
        let target = lb.snapshot().backends[2].clone();
        for _ in 0..50 {
            assert_eq!(with_cookie(&lb, Some(&target.cookie_token)).id, target.id);
        }
        let mut tampered = target.cookie_token.clone();
        tampered.replace_range(0..1, if tampered.starts_with('0') { "1" } else { "0" });
        let spread: std::collections::HashSet<u64> = (0..30)
            .map(|_| with_cookie(&lb, Some(&tampered)).id)
            .collect();
        assert_eq!(
            spread.len(),
            3,
            "tampered cookies are spread like new clients"
        );
    }

    #[test]
    fn a_down_backend_sends_its_clients_elsewhere() {
        let lb = balancer(StrategyKind::Cookie, &[1, 1]);
        let target = lb.snapshot().backends[0].clone();
        target.set_alive(false);
        let other = with_cookie(&lb, Some(&target.cookie_token));
        assert_ne!(other.id, target.id);
        assert_eq!(with_cookie(&lb, Some(&other.cookie_token)).id, other.id);
    }
}

//! The effective configuration as YAML (`portico -T`): every key with the value in force,
//! defaults filled in, secrets masked on request. Parsing the output gives the same `Config`.

use serde_yaml::{Mapping, Value};

use super::{format_duration, Config};

/// What stands in for a secret in printed output. Still a valid value, so that the output
/// passes `portico -t` (with the real secret replaced).
pub const MASK: &str = "********";

fn put(map: &mut Mapping, key: &str, value: impl Into<Value>) {
    map.insert(Value::from(key), value.into());
}

impl Config {
    /// Every key of the configuration in force, Pingora's and Portico's, as one mapping.
    /// With `mask`, `admin.token` and `sticky_secret` are replaced by [`MASK`].
    pub fn effective(&self, mask: bool) -> Mapping {
        let secret = |s: &str| {
            if mask {
                MASK.to_string()
            } else {
                s.to_string()
            }
        };
        let mut map = match serde_yaml::to_value(&self.server) {
            Ok(Value::Mapping(m)) => m,
            _ => Mapping::new(),
        };
        put(&mut map, "listen", self.listen.to_string());
        put(&mut map, "strategy", self.strategy.name());
        put(
            &mut map,
            "health_check_frequency",
            format_duration(self.health.interval),
        );
        let mut hc = Mapping::new();
        if let Some(p) = &self.health.path {
            put(&mut hc, "path", p.as_str());
        }
        put(&mut hc, "timeout", format_duration(self.health.timeout));
        put(&mut hc, "rise", u64::from(self.health.rise));
        put(&mut hc, "fall", u64::from(self.health.fall));
        put(&mut map, "health_check", hc);
        let backends: Vec<Value> = self
            .backends
            .iter()
            .map(|b| {
                let mut m = Mapping::new();
                put(&mut m, "url", b.url.to_string());
                put(&mut m, "weight", u64::from(b.weight));
                Value::Mapping(m)
            })
            .collect();
        put(&mut map, "backends", backends);
        let mut timeouts = Mapping::new();
        put(
            &mut timeouts,
            "connect",
            format_duration(self.timeouts.connect),
        );
        put(&mut timeouts, "read", format_duration(self.timeouts.read));
        put(
            &mut timeouts,
            "websocket_idle",
            format_duration(self.timeouts.websocket_idle),
        );
        put(
            &mut timeouts,
            "keepalive",
            format_duration(self.timeouts.keepalive),
        );
        put(&mut map, "timeouts", timeouts);
        let mut admin = Mapping::new();
        put(&mut admin, "listen", self.admin.listen.to_string());
        if let Some(t) = &self.admin.token {
            put(&mut admin, "token", secret(t));
        }
        put(&mut map, "admin", admin);
        if let Some(s) = &self.state_file {
            put(&mut map, "state_file", s.display().to_string());
        }
        if let Some(t) = &self.tls {
            let mut tls = Mapping::new();
            put(&mut tls, "listen", t.listen.to_string());
            put(&mut tls, "cert", t.cert.display().to_string());
            put(&mut tls, "key", t.key.display().to_string());
            put(&mut map, "tls", tls);
        }
        put(&mut map, "sticky_cookie", self.sticky_cookie.as_str());
        if let Some(s) = &self.sticky_secret {
            put(&mut map, "sticky_secret", secret(s));
        }
        put(&mut map, "access_log", self.access_log);
        put(&mut map, "retries", u64::from(self.retries));
        let o = &self.outlier;
        let mut outlier = Mapping::new();
        put(
            &mut outlier,
            "consecutive_errors",
            u64::from(o.consecutive_errors),
        );
        put(
            &mut outlier,
            "base_ejection_time",
            format_duration(o.base_ejection_time),
        );
        put(
            &mut outlier,
            "max_ejection_time",
            format_duration(o.max_ejection_time),
        );
        put(
            &mut outlier,
            "max_ejection_percent",
            u64::from(o.max_ejection_percent),
        );
        put(&mut map, "outlier_detection", outlier);
        put(&mut map, "slow_start", format_duration(self.slow_start));
        let mut dns = Mapping::new();
        if !self.dns.servers.is_empty() {
            let servers: Vec<Value> = self
                .dns
                .servers
                .iter()
                .map(|s| Value::from(s.to_string()))
                .collect();
            put(&mut dns, "servers", servers);
        }
        put(&mut dns, "refresh", format_duration(self.dns.refresh));
        put(&mut map, "dns", dns);
        map
    }

    /// [`Config::effective`] as YAML text, secrets masked.
    pub fn effective_yaml(&self) -> String {
        serde_yaml::to_string(&self.effective(true)).unwrap_or_default()
    }
}

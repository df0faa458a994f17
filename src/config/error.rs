//! Configuration errors: each names the key (dotted path) and what is wrong with its value,
//! in the configuration's words, with a "did you mean" for a misspelt key.

use std::fmt;

/// A configuration error: the key (dotted path) and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

pub(crate) fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        key: key.into(),
        message: message.into(),
    })
}

/// serde's message in the configuration's words rather than Rust's.
pub(crate) fn plain_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("unknown field", "unknown key"),
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected u8", "expected a non-negative integer"),
    ];
    WORDS.iter().fold(message.to_string(), |m, (rust, plain)| {
        m.replace(rust, plain)
    })
}

/// The closest known key (Portico's or Pingora's) to a misspelt one, if any is close.
pub(crate) fn suggestion(key: &str) -> Option<String> {
    let pingora = super::file::pingora_keys();
    super::file::PORTICO_KEYS
        .iter()
        .map(|k| k.to_string())
        .chain(pingora)
        .map(|k| (edit_distance(key, &k), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

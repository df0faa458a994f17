//! Parsing of byte sizes in the configuration: `32KiB`, `1MiB`, `512B`, or a bare number of bytes.

/// Parses `text` as a size: an integer followed by `B`, `KiB` or `MiB` (binary units, as the
/// names say; `k`/`K`/`KB` and `M`/`MB` are read the same way, as nginx does); a bare integer
/// means bytes. Returns a message naming what is wrong (the caller adds the key).
///
/// Hand-written: the grammar is the one `parse_duration` uses (number, optional unit), and
/// size crates read `KB` as 1000 bytes, which no HTTP server configuration does.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (value, unit) =
        super::duration::number_and_unit(text, "size", "\"32KiB\", \"1MiB\" or a number of bytes")?;
    let value = usize::try_from(value).map_err(|_| format!("invalid size {text:?} (too large)"))?;
    let unit_bytes: usize = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "KB" | "K" | "k" | "kB" => 1024,
        "MiB" | "MB" | "M" | "m" => 1024 * 1024,
        other => {
            return Err(format!(
                "invalid size {text:?} (unknown unit {other:?}; use B, KiB or MiB)"
            ))
        }
    };
    value
        .checked_mul(unit_bytes)
        .ok_or_else(|| format!("invalid size {text:?} (too large)"))
}

/// A size as written: `"32KiB"` or a bare number of bytes.
#[derive(Debug, Clone)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

impl RawSize {
    /// The size in bytes, or a message naming what is wrong (the caller adds the key).
    pub fn bytes(&self) -> Result<usize, String> {
        match self {
            RawSize::Bytes(n) => {
                usize::try_from(*n).map_err(|_| format!("invalid size {n} (too large)"))
            }
            RawSize::Text(t) => parse_size(t),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawSizeVisitor)
    }
}

struct RawSizeVisitor;

impl serde::de::Visitor<'_> for RawSizeVisitor {
    type Value = RawSize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a size such as \"32KiB\", \"1MiB\" or a whole number of bytes")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
        Ok(RawSize::Bytes(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
        u64::try_from(v)
            .map(RawSize::Bytes)
            .map_err(|_| E::custom(format!("invalid size {v} (must not be negative)")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawSize, E> {
        Err(E::custom(format!(
            "invalid size {v} (a whole number of bytes, or use KiB, e.g. \"32KiB\")"
        )))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
        Ok(RawSize::Text(v.to_string()))
    }
}

/// Formats a size the way the configuration writes it, for messages.
pub fn format_size(bytes: usize) -> String {
    const KIB: usize = 1024;
    if bytes >= KIB * KIB && bytes.is_multiple_of(KIB * KIB) {
        format!("{}MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_binary_units_and_bare_bytes() {
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("8k"), Ok(8 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size(" 512B "), Ok(512));
        assert_eq!(parse_size("4096"), Ok(4096));
    }

    #[test]
    fn rejects_garbage_with_the_value_named() {
        for bad in [
            "",
            "KiB",
            "32 parsecs",
            "-1",
            "1.5KiB",
            "99999999999999999999999",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_values() {
        assert_eq!(format_size(32 * 1024), "32KiB");
        assert_eq!(format_size(1024 * 1024), "1MiB");
        assert_eq!(format_size(1000), "1000B");
    }
}

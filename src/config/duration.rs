//! Parsing of human durations in the configuration: `500ms`, `10s`, `1m`, `1h`, or bare seconds.

use std::time::Duration;

/// Parses `text` as a duration: an integer followed by `ms`, `s`, `m` or `h`; a bare integer
/// means seconds. Returns a message naming what is wrong (the caller adds the key).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(
        text,
        "duration",
        "\"500ms\", \"10s\", \"1m\" or a number of seconds",
    )?;
    let millis_per_unit = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "invalid duration {text:?} (unknown unit {other:?}; use ms, s, m or h)"
            ))
        }
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?} (too large)"))
}

/// Splits `text` (trimmed) into its leading integer and the unit after it, the grammar of
/// durations and sizes; the message names `what` and gives `examples`.
pub(super) fn number_and_unit<'a>(
    text: &'a str,
    what: &str,
    examples: &str,
) -> Result<(u64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "invalid {what} {text:?} (expected e.g. {examples})"
        ));
    }
    let value = digits
        .parse()
        .map_err(|_| format!("invalid {what} {text:?} (number too large)"))?;
    Ok((value, unit))
}

/// Formats a duration the way the configuration writes it, for `/status` and logs.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn rejects_garbage_with_the_value_named() {
        for bad in [
            "",
            "s",
            "10 parsecs",
            "-1s",
            "1.5s",
            "ten",
            "99999999999999999999s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_values() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}

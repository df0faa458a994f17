//! The `access_log` key: whether requests are logged, and in which line format.

use serde_yaml::Value;

use super::error::{err, ConfigError};
use super::file::kind;

/// The format of the access log (target `portico::access`), one line per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// No access log (`false`).
    Off,
    /// Portico's own short line (`text`, or `true`): client, request, status, backend, duration.
    #[default]
    Text,
    /// One JSON object per line (`json`).
    Json,
    /// The Apache/nginx "combined" format (`combined`).
    Combined,
}

impl AccessLogFormat {
    /// The accepted words, for messages.
    const NAMES: &'static str = "text, json, combined, or false";

    /// Whether a line is written at all.
    pub fn enabled(self) -> bool {
        self != AccessLogFormat::Off
    }

    /// The format's name as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            AccessLogFormat::Off => "false",
            AccessLogFormat::Text => "text",
            AccessLogFormat::Json => "json",
            AccessLogFormat::Combined => "combined",
        }
    }
}

/// As `portico -T` prints it: `false`, or the format's name (both read back the same).
impl From<AccessLogFormat> for Value {
    fn from(format: AccessLogFormat) -> Value {
        match format {
            AccessLogFormat::Off => Value::Bool(false),
            other => Value::String(other.name().to_string()),
        }
    }
}

/// `access_log` as written: a boolean (`true` means `text`) or a format name. Default `text`.
pub(crate) fn access_log(raw: Option<&Value>) -> Result<AccessLogFormat, ConfigError> {
    let format = match raw {
        None | Some(Value::Bool(true)) => AccessLogFormat::Text,
        Some(Value::Bool(false)) => AccessLogFormat::Off,
        Some(Value::String(s)) => match s.trim() {
            "text" => AccessLogFormat::Text,
            "json" => AccessLogFormat::Json,
            "combined" => AccessLogFormat::Combined,
            "false" | "off" => AccessLogFormat::Off,
            other => {
                return err(
                    "access_log",
                    format!(
                        "unknown format {other:?} (expected {})",
                        AccessLogFormat::NAMES
                    ),
                )
            }
        },
        Some(other) => {
            return err(
                "access_log",
                format!("expected {}, found {}", AccessLogFormat::NAMES, kind(other)),
            )
        }
    };
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccessLogFormat, ConfigError> {
        let v: Value = serde_yaml::from_str(text).expect("yaml");
        access_log(Some(&v))
    }

    #[test]
    fn booleans_and_names_map_to_formats() {
        assert_eq!(access_log(None), Ok(AccessLogFormat::Text));
        assert_eq!(parse("true"), Ok(AccessLogFormat::Text));
        assert_eq!(parse("false"), Ok(AccessLogFormat::Off));
        assert_eq!(parse("text"), Ok(AccessLogFormat::Text));
        assert_eq!(parse("json"), Ok(AccessLogFormat::Json));
        assert_eq!(parse("combined"), Ok(AccessLogFormat::Combined));
    }

    #[test]
    fn the_effective_value_reads_back_the_same() {
        for f in [
            AccessLogFormat::Off,
            AccessLogFormat::Text,
            AccessLogFormat::Json,
            AccessLogFormat::Combined,
        ] {
            assert_eq!(access_log(Some(&Value::from(f))), Ok(f));
        }
    }

    #[test]
    fn anything_else_names_the_key_and_the_choices() {
        let e = parse("xml").expect_err("unknown format");
        assert_eq!(e.key, "access_log");
        assert!(e.message.contains("\"xml\""), "{e}");
        assert!(e.message.contains("combined"), "{e}");
        let e = parse("3").expect_err("a number");
        assert!(e.message.contains("a number"), "{e}");
    }
}

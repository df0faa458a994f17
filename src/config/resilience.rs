//! The `outlier_detection` section: passive ejection of backends whose requests keep failing.

use super::error::{err, ConfigError};
use super::file::FileOutlier;
use super::validate::duration;
use crate::backend::OutlierDetection;

/// Validates `outlier_detection` (defaults: 5 errors, 30 s, 300 s, 50 %).
pub(super) fn outlier(raw: Option<FileOutlier>) -> Result<OutlierDetection, ConfigError> {
    let d = OutlierDetection::default();
    let Some(raw) = raw else {
        return Ok(d);
    };
    let bounded = |key: &str, v: Option<i64>, default: u32, max: u32| match v {
        None => Ok(default),
        Some(n) => match u32::try_from(n) {
            Ok(v) if v <= max => Ok(v),
            _ => err(
                format!("outlier_detection.{key}"),
                format!("{n} is out of range (0 to {max})"),
            ),
        },
    };
    let settings = OutlierDetection {
        consecutive_errors: bounded(
            "consecutive_errors",
            raw.consecutive_errors,
            d.consecutive_errors,
            1000,
        )?,
        base_ejection_time: duration(
            "outlier_detection.base_ejection_time",
            raw.base_ejection_time,
            d.base_ejection_time,
        )?,
        max_ejection_time: duration(
            "outlier_detection.max_ejection_time",
            raw.max_ejection_time,
            d.max_ejection_time,
        )?,
        max_ejection_percent: bounded(
            "max_ejection_percent",
            raw.max_ejection_percent,
            d.max_ejection_percent,
            100,
        )?,
    };
    if settings.max_ejection_time < settings.base_ejection_time {
        return err(
            "outlier_detection.max_ejection_time",
            "must not be shorter than `base_ejection_time`",
        );
    }
    Ok(settings)
}

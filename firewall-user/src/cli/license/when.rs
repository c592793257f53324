//! The instants and durations the license commands take.

use anyhow::{Context as _, bail};
use chrono::{DateTime, TimeDelta, Utc};

/// `--at TEXT` as an instant, or now.
pub(super) fn instant(at: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    Ok(match at {
        None => Utc::now(),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .with_context(|| {
                format!(
                    "--at `{text}` is not an RFC 3339 instant such as 2025-04-01T09:00:00+09:00"
                )
            })?
            .with_timezone(&Utc),
    })
}

/// `--valid TEXT`: a humantime duration above zero.
pub(super) fn validity(text: &str) -> anyhow::Result<TimeDelta> {
    let valid = humantime::parse_duration(text)
        .with_context(|| format!("--valid `{text}` is not a duration such as 7d, 24h, 90s"))?;
    match TimeDelta::from_std(valid) {
        Ok(valid) if valid > TimeDelta::zero() => Ok(valid),
        _ => bail!("--valid `{text}` must be above zero and below a few thousand years"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_a_positive_duration() {
        assert_eq!(validity("7d").unwrap(), TimeDelta::days(7));
        assert!(validity("0s").is_err());
        assert!(validity("soon").is_err());
        assert!(instant(Some("2025-05-01T09:00:00+09:00")).is_ok());
        assert!(instant(Some("tomorrow")).is_err());
    }
}

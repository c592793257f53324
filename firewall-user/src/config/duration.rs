//! Durations in the daemon's config (`60s`, `5m`, `24h`), with a floor per key.

use std::time::Duration;

use firewall_diagnostic::Diagnostic;
use serde_saphyr::Spanned;

/// A humantime duration such as `60s`, `5m` or `24h`, at least `minimum`.
pub(super) fn duration(
    text: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    minimum: Duration,
    problems: &mut Vec<Diagnostic>,
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match humantime::parse_duration(&text.value) {
        Ok(value) if value < minimum => {
            problems.push(Diagnostic::at(
                &text.referenced,
                format!(
                    "`{key}: {}` is too short: at least {}",
                    text.value,
                    humantime::format_duration(minimum)
                ),
            ));
            default
        }
        Ok(value) => value,
        Err(error) => {
            problems.push(Diagnostic::at(
                &text.referenced,
                format!(
                    "`{key}: {}` is not a duration ({error}); write e.g. 60s, 5m, 24h",
                    text.value
                ),
            ));
            default
        }
    }
}

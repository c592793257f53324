//! `drop_log:` in the daemon's configuration: how many events per second each rule
//! with `log: true` may send.
//!
//! ```yaml
//! drop_log:
//!   rate_per_second: 10    # per rule; the default
//! ```

use firewall_common::drop_log::{DEFAULT_RATE, MAX_RATE};
use serde::Deserialize;
use serde_saphyr::Spanned;

use firewall_diagnostic::Diagnostic;

/// The validated `drop_log:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropLogConfig {
    /// Events per second (and burst) per rule with `log: true`.
    pub rate_per_second: u32,
}

impl Default for DropLogConfig {
    fn default() -> Self {
        Self {
            rate_per_second: DEFAULT_RATE,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDropLog {
    rate_per_second: Option<Spanned<i64>>,
}

/// Validates `drop_log:`: a rate of 1 to `MAX_RATE` events per second.
pub(super) fn drop_log(
    raw: Option<Spanned<RawDropLog>>,
    problems: &mut Vec<Diagnostic>,
) -> DropLogConfig {
    let Some(rate) = raw.and_then(|raw| raw.value.rate_per_second) else {
        return DropLogConfig::default();
    };
    match u32::try_from(rate.value) {
        Ok(value @ 1..=MAX_RATE) => DropLogConfig {
            rate_per_second: value,
        },
        _ => {
            problems.push(Diagnostic::at(
                &rate.referenced,
                format!(
                    "`rate_per_second: {}` is not 1-{MAX_RATE}: events per second and rule; \
                     to log nothing, remove `log: true` from the rules",
                    rate.value
                ),
            ));
            DropLogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(extra: &str) -> Result<Config, firewall_diagnostic::Diagnostics> {
        Config::parse(
            Path::new("/etc/smf-firewall/config.yaml"),
            &format!("rules: r.yaml\ninterfaces: [lan0]\n{extra}"),
        )
    }

    // Each row: the text after the two base lines, and the rate it gives.
    #[test]
    fn the_rate_defaults_to_10_per_second() {
        let cases = [
            ("", 10),
            ("drop_log: {}\n", 10),
            ("drop_log: {rate_per_second: 1}\n", 1),
            ("drop_log:\n  rate_per_second: 100000\n", 100_000),
        ];
        for (text, rate) in cases {
            assert_eq!(
                parse(text).unwrap().drop_log.rate_per_second,
                rate,
                "{text}"
            );
        }
    }

    #[test]
    fn the_deployed_example_config_states_the_default() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/config.yaml"
        ));
        let config = Config::parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(config.drop_log.rate_per_second, 10);
    }

    // Each row: the text after the two base lines (line 3 on), and a fragment of the error.
    #[test]
    fn a_bad_rate_is_an_error_at_its_position() {
        let cases = [
            ("drop_log: {rate_per_second: 0}\n", "is not 1-100000"),
            ("drop_log: {rate_per_second: 100001}\n", "is not 1-100000"),
            ("drop_log: {rate_per_second: -5}\n", "is not 1-100000"),
            ("drop_log: {rate_per_second: fast}\n", "whole number"),
            ("drop_log: {burst: 5}\n", "burst"),
        ];
        for (text, fragment) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.items[0].line, 3, "{text}: {err}");
            assert!(err.items[0].column > 0, "{text}: {err}");
            assert!(err.to_string().contains(fragment), "{text}: {err}");
        }
    }
}

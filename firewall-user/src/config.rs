//! The daemon's configuration file (`smf-firewall run --config FILE`).
//!
//! ```yaml
//! rules: rules/example.yaml        # relative to this file
//! interfaces: [lan0, wan0]         # XDP is attached to each
//! metrics:
//!   listen: 127.0.0.1:9775         # the default
//! ```

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, parse_yaml};

/// Where `/metrics` is served unless the config says otherwise: loopback only (Art. 17).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9775);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The rule file, resolved against the config file's directory.
    pub rules: PathBuf,
    /// Interfaces to attach to, in the order written; the order gives each its counter slot.
    pub interfaces: Vec<String>,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_METRICS_LISTEN
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rules: PathBuf,
    interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    metrics: MetricsConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(path, &text)?)
    }

    /// Parses and validates `text`, read from `path` (used for positions and relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let raw: RawConfig = parse_yaml(path, text)?;
        let mut problems = Vec::new();
        if raw.interfaces.value.is_empty() {
            problems.push(Diagnostic::at(
                &raw.interfaces.referenced,
                "`interfaces` is empty: name at least one interface to attach to",
            ));
        }
        let mut interfaces: Vec<String> = Vec::new();
        for name in &raw.interfaces.value {
            if let Some(problem) = interface_name_problem(&name.value) {
                problems.push(Diagnostic::at(&name.referenced, problem));
            } else if interfaces.contains(&name.value) {
                problems.push(Diagnostic::at(
                    &name.referenced,
                    format!("interface `{}` is listed twice", name.value),
                ));
            } else {
                interfaces.push(name.value.clone());
            }
        }
        if interfaces.len() > firewall_common::MAX_INTERFACES as usize {
            problems.push(Diagnostic::at(
                &raw.interfaces.referenced,
                format!(
                    "{} interfaces listed; at most {} are supported",
                    interfaces.len(),
                    firewall_common::MAX_INTERFACES
                ),
            ));
        }
        if !problems.is_empty() {
            return Err(Diagnostics {
                file: path.display().to_string(),
                items: problems,
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            rules: base.join(raw.rules),
            interfaces,
            metrics: raw.metrics,
        })
    }
}

/// Linux interface names: 1 to 15 bytes, no '/', no whitespace, not "." or "..".
pub(crate) fn interface_name_problem(name: &str) -> Option<String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace);
    bad.then(|| {
        format!("`{name}` is not a valid interface name (1-15 characters, no '/', ':' or spaces)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Diagnostics> {
        Config::parse(Path::new("/etc/smf-firewall/config.yaml"), text)
    }

    #[test]
    fn minimal_config_gets_loopback_metrics_and_relative_rules() {
        let config = parse("rules: rules/example.yaml\ninterfaces: [lan0, wan0]\n").unwrap();
        assert_eq!(
            config.rules,
            PathBuf::from("/etc/smf-firewall/rules/example.yaml")
        );
        assert_eq!(config.interfaces, ["lan0", "wan0"]);
        assert_eq!(config.metrics.listen, DEFAULT_METRICS_LISTEN);
    }

    #[test]
    fn explicit_listen_address_is_kept() {
        let config =
            parse("rules: r.yaml\ninterfaces: [lan0]\nmetrics:\n  listen: 127.0.0.1:9999\n")
                .unwrap();
        assert_eq!(config.metrics.listen, "127.0.0.1:9999".parse().unwrap());
    }

    // Each row: config text, expected "LINE:COL: message fragment".
    #[test]
    fn errors_carry_positions() {
        let cases = [
            ("rules: r.yaml\ninterfaces: [lan0]\nbogus: 1\n", 3, "bogus"),
            (
                "rules: r.yaml\ninterfaces: [lan0, lan0]\n",
                2,
                "listed twice",
            ),
            ("rules: r.yaml\ninterfaces: []\n", 2, "empty"),
            (
                "rules: r.yaml\ninterfaces: [a/b]\n",
                2,
                "not a valid interface name",
            ),
            ("interfaces: [lan0]\n", 1, "rules"),
            (
                "rules: r.yaml\ninterfaces: [lan0]\nmetrics: {listen: nope}\n",
                3,
                "socket address",
            ),
        ];
        for (text, line, fragment) in cases {
            let err = parse(text).unwrap_err();
            let first = &err.items[0];
            assert_eq!(first.line, line, "{text:?}: {err}");
            assert!(first.column > 0, "{text:?}: {err}");
            assert!(err.to_string().contains(fragment), "{text:?}: {err}");
            assert!(
                err.to_string()
                    .starts_with("/etc/smf-firewall/config.yaml:"),
                "{err}"
            );
        }
    }
}

//! The metering parts of the daemon's configuration: where and how `/metrics` is
//! served (`metrics:`), and each adapter model's rated capacity (`models:`).
//!
//! ```yaml
//! metrics:
//!   listen: 198.18.1.1:9775          # not loopback: needs both of the following (Art. 17)
//!   tls: {cert_file: metrics.crt, key_file: metrics.key}   # relative to the config file
//!   basic_auth_users: {prometheus: "$2y$10$..."}          # bcrypt hashes
//! models:
//!   x1: {capacity_bps: 500000000, next: x2}
//!   x2: {capacity_bps: 1000000000}
//! ```

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;
use serde_saphyr::Spanned;

use firewall_contracts::Model;
use firewall_diagnostic::Diagnostic;

/// Where `/metrics` is served unless the config says otherwise: loopback only (Art. 17).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9775);

/// How `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// HTTPS with this certificate and key; None: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// User names and their bcrypt hashes; empty: no authentication.
    pub basic_auth_users: BTreeMap<String, String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN,
            tls: None,
            basic_auth_users: BTreeMap::new(),
        }
    }
}

/// PEM files, resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The rated capacity of one adapter model, and the model to propose when it is not enough
/// (Art. 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCapacity {
    pub model: Model,
    pub capacity_bps: u64,
    pub next: Option<Model>,
}

/// `models:`, in the order written. The operator's figures: nothing here is built in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Models(Vec<ModelCapacity>);

impl Models {
    /// The entry of the model with this short name (`x86-fuji`, as the store writes it).
    pub fn get(&self, name: &str) -> Option<&ModelCapacity> {
        self.0.iter().find(|entry| entry.model.name() == name)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Option<Spanned<SocketAddr>>,
    tls: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    capacity_bps: Spanned<u64>,
    next: Option<Spanned<String>>,
}

/// Validates `metrics:`. A non-loopback address is refused unless both TLS and basic auth
/// are configured: the endpoint is not open to anyone by default (Art. 17).
pub(super) fn metrics(
    raw: Option<Spanned<RawMetrics>>,
    base: &Path,
    problems: &mut Vec<Diagnostic>,
) -> MetricsConfig {
    let Some(raw) = raw else {
        return MetricsConfig::default();
    };
    let mut users = BTreeMap::new();
    for (name, hash) in raw.value.basic_auth_users.unwrap_or_default() {
        if name.is_empty() || name.contains(':') {
            problems.push(Diagnostic::at(
                &hash.referenced,
                format!("`{name}` is not a user name (non-empty, no ':')"),
            ));
        } else if bcrypt::HashParts::from_str(&hash.value).is_err() {
            problems.push(Diagnostic::at(
                &hash.referenced,
                format!(
                    "the password of `{name}` is not a bcrypt hash ($2y$..., 60 characters); \
                     make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                ),
            ));
        } else {
            users.insert(name, hash.value);
        }
    }
    let tls = raw.value.tls.map(|tls| TlsFiles {
        cert_file: base.join(tls.cert_file),
        key_file: base.join(tls.key_file),
    });
    let listen = match raw.value.listen {
        Some(listen) => {
            let exposed = !listen.value.ip().is_loopback();
            if exposed && (tls.is_none() || users.is_empty()) {
                problems.push(Diagnostic::at(
                    &listen.referenced,
                    format!(
                        "`listen: {}` is not a loopback address: serving metrics beyond this host \
                         needs both `tls: {{cert_file, key_file}}` and `basic_auth_users` \
                         (service terms Art. 17); add them or listen on 127.0.0.1",
                        listen.value
                    ),
                ));
            }
            listen.value
        }
        None => DEFAULT_METRICS_LISTEN,
    };
    MetricsConfig {
        listen,
        tls,
        basic_auth_users: users,
    }
}

/// Validates `models:`: known model names, each once, a capacity above zero, and a `next`
/// model that is listed too and rated higher.
pub(super) fn models(
    raw: Option<BTreeMap<String, Spanned<RawModel>>>,
    problems: &mut Vec<Diagnostic>,
) -> Models {
    let raw = raw.unwrap_or_default();
    let mut entries: Vec<(ModelCapacity, &Spanned<RawModel>)> = Vec::new();
    for (name, spec) in &raw {
        let model = match Model::from_str(name) {
            Ok(model) => model,
            Err(error) => {
                problems.push(Diagnostic::at(&spec.referenced, error.to_string()));
                continue;
            }
        };
        if entries.iter().any(|(entry, _)| entry.model == model) {
            problems.push(Diagnostic::at(
                &spec.referenced,
                format!("model `{model}` is listed twice under `models`"),
            ));
            continue;
        }
        let capacity = &spec.value.capacity_bps;
        if capacity.value == 0 {
            problems.push(Diagnostic::at(
                &capacity.referenced,
                format!("the capacity of `{model}` is 0; write its rated bits per second"),
            ));
        }
        let next = spec.value.next.as_ref().and_then(|next| {
            Model::from_str(&next.value)
                .map_err(|error| problems.push(Diagnostic::at(&next.referenced, error.to_string())))
                .ok()
        });
        entries.push((
            ModelCapacity {
                model,
                capacity_bps: capacity.value,
                next,
            },
            spec,
        ));
    }
    for (entry, spec) in &entries {
        let (Some(next), Some(written)) = (entry.next, spec.value.next.as_ref()) else {
            continue;
        };
        match entries.iter().find(|(other, _)| other.model == next) {
            None => problems.push(Diagnostic::at(
                &written.referenced,
                format!("`next: {next}` is not listed under `models`: list it with its capacity"),
            )),
            Some((other, _)) if other.capacity_bps <= entry.capacity_bps => {
                problems.push(Diagnostic::at(
                    &written.referenced,
                    format!(
                        "`next: {next}` ({} bit/s) is not rated above `{}` ({} bit/s): propose a larger model",
                        other.capacity_bps, entry.model, entry.capacity_bps
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Models(entries.into_iter().map(|(entry, _)| entry).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall_diagnostic::Diagnostics;

    use crate::config::Config;

    const BASE: &str = "rules: r.yaml\ninterfaces: [lan0]\n";

    /// A bcrypt hash, at the lowest cost (4) to keep the tests fast.
    fn hash() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    fn parse(extra: &str) -> Result<Config, Diagnostics> {
        Config::parse(
            Path::new("/etc/smf-firewall/config.yaml"),
            &format!("{BASE}{extra}"),
        )
    }

    #[test]
    fn metrics_default_to_loopback_without_tls_or_users() {
        assert_eq!(parse("").unwrap().metrics, MetricsConfig::default());
        let config = parse("metrics: {listen: \"[::1]:9999\"}\n").unwrap();
        assert_eq!(config.metrics.listen, "[::1]:9999".parse().unwrap());
    }

    #[test]
    fn an_exposed_listener_with_tls_and_users_resolves_files_against_the_config() {
        let hash = hash();
        let config = parse(&format!(
            "metrics:\n  listen: 198.18.1.1:9775\n  tls: {{cert_file: m.crt, key_file: /k/m.key}}\n  basic_auth_users: {{prom: \"{hash}\"}}\n"
        ))
        .unwrap();
        assert_eq!(
            config.metrics,
            MetricsConfig {
                listen: "198.18.1.1:9775".parse().unwrap(),
                tls: Some(TlsFiles {
                    cert_file: "/etc/smf-firewall/m.crt".into(),
                    key_file: "/k/m.key".into(),
                }),
                basic_auth_users: [("prom".to_string(), hash)].into(),
            }
        );
    }

    #[test]
    fn models_keep_their_figures_and_accept_the_terms_names() {
        let config = parse(
            "models:\n  x1: {capacity_bps: 500000000, next: \"SEIL/X2\"}\n  SEIL/X2: {capacity_bps: 1000000000}\n",
        )
        .unwrap();
        assert_eq!(
            config.models.get("x1"),
            Some(&ModelCapacity {
                model: Model::X1,
                capacity_bps: 500_000_000,
                next: Some(Model::X2),
            })
        );
        assert_eq!(config.models.get("x2").unwrap().next, None);
        assert_eq!(config.models.get("x86-fuji"), None);
    }

    #[test]
    fn the_deployed_example_config_is_valid_and_keeps_its_example_figures() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/config.yaml"
        ));
        let config = Config::parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(config.metrics, MetricsConfig::default());
        let fuji = config.models.get("x86-fuji").unwrap();
        assert_eq!((fuji.capacity_bps, fuji.next), (10_000_000_000, None));
        assert_eq!(config.models.get("x1").unwrap().next, Some(Model::X2));
    }

    // Each row: the text after BASE, the line of the first error, a fragment of it.
    #[test]
    fn metering_errors_carry_positions() {
        let tls = "  tls: {cert_file: c, key_file: k}\n";
        let hash = hash();
        let users = format!("  basic_auth_users: {{prom: \"{hash}\"}}\n");
        let cases = [
            // Art. 17: not open to anyone by default, so not on the network without both.
            (
                "metrics: {listen: 0.0.0.0:9775}\n".to_string(),
                3,
                "not a loopback address",
            ),
            (
                format!("metrics:\n  listen: 198.18.1.1:9775\n{tls}"),
                4,
                "needs both `tls",
            ),
            (
                format!("metrics:\n  listen: \"[2001:2::1]:9775\"\n{users}"),
                4,
                "not a loopback address",
            ),
            (
                "metrics:\n  basic_auth_users: {prom: plain-text}\n".to_string(),
                4,
                "not a bcrypt hash",
            ),
            (
                format!("metrics:\n  basic_auth_users: {{\"a:b\": \"{hash}\"}}\n"),
                4,
                "not a user name",
            ),
            ("metrics: {port: 1}\n".to_string(), 3, "port"),
            (
                "models:\n  x99: {capacity_bps: 1}\n".to_string(),
                4,
                "unknown model `x99`",
            ),
            (
                "models:\n  x1: {capacity_bps: 0}\n".to_string(),
                4,
                "capacity of `x1` is 0",
            ),
            (
                "models:\n  x1: {capacity_bps: fast}\n".to_string(),
                4,
                "whole number",
            ),
            (
                "models:\n  x1: {capacity_bps: 5, next: x2}\n".to_string(),
                4,
                "`next: x2` is not listed",
            ),
            (
                "models:\n  x1: {capacity_bps: 5, next: x2}\n  x2: {capacity_bps: 5}\n".to_string(),
                4,
                "not rated above `x1`",
            ),
            (
                "models:\n  x1: {capacity_bps: 5, next: x3}\n".to_string(),
                4,
                "unknown model `x3`",
            ),
            (
                "models:\n  x1: {capacity_bps: 5}\n  SEIL/X1: {capacity_bps: 6}\n".to_string(),
                0,
                "listed twice",
            ),
        ];
        for (text, line, fragment) in cases {
            let err = parse(&text).unwrap_err();
            let first = &err.items[0];
            if line > 0 {
                assert_eq!(first.line, line, "{text:?}: {err}");
            }
            assert!(first.column > 0, "{text:?}: {err}");
            assert!(err.to_string().contains(fragment), "{text:?}: {err}");
        }
    }
}

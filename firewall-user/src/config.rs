//! The daemon's configuration file (`smf-firewall run --config FILE`).
//!
//! ```yaml
//! rules: rules/example.yaml        # relative to this file
//! interfaces: [lan0, wan0]         # XDP is attached to each
//! metrics:
//!   listen: 127.0.0.1:9775         # the default; elsewhere needs tls and basic_auth_users
//! models:                          # rated capacity per adapter model (metering)
//!   x86-fuji: {capacity_bps: 10000000000}
//! # Licensing; without `adapter` and `contracts` the rules are enforced unchecked.
//! adapter: {serial: FUJI-0001}     # this adapter's serial, exactly as in the store
//! contracts: {url: "sqlite:/var/lib/smf-firewall/contracts.db"}
//! license: {recheck: 60s, grace: 24h}  # the defaults
//! # Or, for a fleet (no store credentials on the adapter), one of:
//! # license: {grant: grant.jws, keys: [provider.pub]}          # a file delivered to it
//! # license: {url: "https://grants.example:8443", token_file: grant.token,
//! #           ca_file: grants-ca.pem, keys: [provider.pub, provider-next.pub]}
//! # Operations; the defaults:
//! watch: false                     # reload when the rules file changes
//! keep_attached_on_exit: false     # SIGTERM detaches and unpins unless true (upgrades)
//! pin_path: /sys/fs/bpf/smf-firewall   # on a BPF filesystem
//! runtime_dir: /run/smf-firewall   # control.sock (root only) and state.json
//! drop_log: {rate_per_second: 10}  # events per second per `log: true` rule
//! conntrack: {max_entries: 65536, timeouts: {udp: 30s}, sweep: 10s}  # see config/conntrack.rs
//! limits: {max_keys: 65536}        # per-address buckets of `limit:` rules (LRU)
//! ```

mod conntrack;
mod drop_log;
mod duration;
mod limits;
mod metering;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use firewall_diagnostic::{Diagnostic, Diagnostics, decode, parse_yaml};
use firewall_rules::{RuleSet, RulesError};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use self::duration::duration;
pub use self::{
    conntrack::ConntrackConfig,
    drop_log::DropLogConfig,
    limits::LimitsConfig,
    metering::{DEFAULT_METRICS_LISTEN, MetricsConfig, ModelCapacity, Models, TlsFiles},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    #[error(transparent)]
    Rules(#[from] RulesError),
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The rule file, resolved against the config file's directory.
    pub rules: PathBuf,
    /// Interfaces to attach to, in the order written; the order gives each its counter slot.
    pub interfaces: Vec<String>,
    pub metrics: MetricsConfig,
    /// Where and how to check this adapter's licence; None: not configured.
    pub licensing: Option<LicensingConfig>,
    /// Rated capacity per adapter model, for utilization (Art. 24).
    pub models: Models,
    pub operations: Operations,
    /// Sampling of drop logs.
    pub drop_log: DropLogConfig,
    /// The connection-tracking table.
    pub conntrack: ConntrackConfig,
    /// The rate limits' table of per-address buckets.
    pub limits: LimitsConfig,
    /// Where this came from, for errors found once the rule file is read.
    pub written: Written,
}

/// The config file and where in it `rules` and each of `interfaces` were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub file: PathBuf,
    pub rules: Location,
    /// In the order of `Config::interfaces`.
    pub interfaces: Vec<Location>,
}

/// How the daemon is operated: reloads, pins, the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    /// Reload when the rules file changes (debounced).
    pub watch: bool,
    /// Leave XDP attached and pinned on SIGTERM, for an upgrade.
    pub keep_attached_on_exit: bool,
    /// Where maps and links are pinned (a BPF filesystem).
    pub pin_path: PathBuf,
    /// The control socket and the state a restarted daemon picks up.
    pub runtime_dir: PathBuf,
}

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/smf-firewall";
pub const DEFAULT_RUNTIME_DIR: &str = "/run/smf-firewall";
/// The configuration `run`, `reload`, `status` and `unload` read unless told otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/smf-firewall/config.yaml";

impl Default for Operations {
    fn default() -> Self {
        Operations {
            watch: false,
            keep_attached_on_exit: false,
            pin_path: PathBuf::from(DEFAULT_PIN_PATH),
            runtime_dir: PathBuf::from(DEFAULT_RUNTIME_DIR),
        }
    }
}

impl Operations {
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join("control.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.runtime_dir.join("state.json")
    }
}

/// How often the daemon asks the contract store, and how long a decision outlives a store
/// that cannot be reached.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(60);
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// `adapter`, `contracts` and `license` together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicensingConfig {
    /// This adapter's serial number, matched exactly (Art. 8-1(4)).
    pub serial: String,
    /// Where the decision comes from.
    pub source: LicenseSource,
    /// How often the store is asked, the grant file re-read or the grant fetched.
    pub recheck: Duration,
    /// Store only: how long a decision outlives an unreachable store (a grant holds for its
    /// own window instead).
    pub grace: Duration,
}

/// `license:`'s modes: the store itself (the default), a grant file, or a grant server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseSource {
    /// `contracts: {url}`: `sqlite:PATH` or `postgres://...`.
    Store { url: String },
    /// `license: {grant: FILE, keys: [...]}`: a signed grant that the management system
    /// delivers, re-read when it changes and on reload.
    Grant { file: PathBuf, keys: Vec<PathBuf> },
    /// `license: {url, token_file, ca_file, keys}`: fetched from `smf-firewall license serve`.
    Url {
        url: String,
        token_file: PathBuf,
        /// Trust only this CA (PEM) for the server's certificate; None: the web roots.
        ca_file: Option<PathBuf>,
        keys: Vec<PathBuf>,
        /// The last grant fetched (runtime_dir/grant.jws), used when a restarted daemon
        /// cannot reach the server.
        cache: PathBuf,
    },
}

impl LicenseSource {
    /// `store`, `grant` or `url`, as metrics and `status` show it.
    pub fn mode(&self) -> &'static str {
        match self {
            LicenseSource::Store { .. } => "store",
            LicenseSource::Grant { .. } => "grant",
            LicenseSource::Url { .. } => "url",
        }
    }
}

impl LicensingConfig {
    /// The contract store's URL, in store mode.
    pub fn store_url(&self) -> Option<&str> {
        match &self.source {
            LicenseSource::Store { url } => Some(url),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rules: Spanned<PathBuf>,
    interfaces: Spanned<Vec<Spanned<String>>>,
    metrics: Option<Spanned<metering::RawMetrics>>,
    models: Option<BTreeMap<String, Spanned<metering::RawModel>>>,
    adapter: Option<Spanned<RawAdapter>>,
    contracts: Option<Spanned<RawContracts>>,
    license: Option<Spanned<RawLicense>>,
    #[serde(default)]
    watch: bool,
    #[serde(default)]
    keep_attached_on_exit: bool,
    pin_path: Option<Spanned<PathBuf>>,
    runtime_dir: Option<PathBuf>,
    drop_log: Option<Spanned<drop_log::RawDropLog>>,
    conntrack: Option<Spanned<conntrack::RawConntrack>>,
    limits: Option<Spanned<limits::RawLimits>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    serial: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContracts {
    url: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLicense {
    recheck: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    /// `store: true`: the default mode, said explicitly.
    store: Option<Spanned<bool>>,
    grant: Option<Spanned<PathBuf>>,
    url: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    keys: Option<Spanned<Vec<Spanned<PathBuf>>>>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(path, &decode(path, bytes)?)?)
    }

    /// Reads and validates the rule file named by `rules:`, and checks that it has rules for
    /// every interface in `interfaces:`. A `rules:` that names no file, or an interface the
    /// file lacks, is an error at its position in the config.
    pub fn load_rules(&self) -> Result<RuleSet, ConfigError> {
        let at = |location: &Location, message: String| Diagnostics {
            file: self.written.file.display().to_string(),
            items: vec![Diagnostic::at(location, message)],
        };
        let shown = self.rules.display();
        match fs::metadata(&self.rules) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(at(
                    &self.written.rules,
                    format!("`rules`: {shown} is not a file"),
                )
                .into());
            }
            Err(error) => {
                return Err(at(
                    &self.written.rules,
                    format!("`rules`: cannot read {shown}: {error}"),
                )
                .into());
            }
        }
        let rules = RuleSet::load(&self.rules)?;
        let items: Vec<Diagnostic> = self
            .interfaces
            .iter()
            .zip(&self.written.interfaces)
            .filter(|(name, _)| !rules.interfaces.contains_key(*name))
            .map(|(name, location)| {
                Diagnostic::at(
                    location,
                    format!(
                        "interface `{name}` has no rules in {shown}: add it under that file's \
                         `interfaces:`"
                    ),
                )
            })
            .collect();
        if !items.is_empty() {
            return Err(Diagnostics {
                file: self.written.file.display().to_string(),
                items,
            }
            .into());
        }
        Ok(rules)
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
        let mut interface_locations = Vec::new();
        for name in &raw.interfaces.value {
            if let Some(problem) = firewall_rules::interface::name_problem(&name.value) {
                problems.push(Diagnostic::at(&name.referenced, problem));
            } else if interfaces.contains(&name.value) {
                problems.push(Diagnostic::at(
                    &name.referenced,
                    format!("interface `{}` is listed twice", name.value),
                ));
            } else {
                interfaces.push(name.value.clone());
                interface_locations.push(name.referenced);
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
        let base = path.parent().unwrap_or(Path::new("."));
        let runtime_dir = raw
            .runtime_dir
            .map_or_else(|| Operations::default().runtime_dir, |dir| base.join(dir));
        let licensing = licensing(
            raw.adapter,
            raw.contracts,
            raw.license,
            (base, &runtime_dir),
            &mut problems,
        );
        let metrics = metering::metrics(raw.metrics, base, &mut problems);
        let models = metering::models(raw.models, &mut problems);
        let pin_path = match raw.pin_path {
            None => PathBuf::from(DEFAULT_PIN_PATH),
            Some(path) if path.value.is_absolute() => path.value,
            Some(path) => {
                problems.push(Diagnostic::at(
                    &path.referenced,
                    format!(
                        "`pin_path: {}` must be absolute, a directory on the BPF filesystem",
                        path.value.display()
                    ),
                ));
                PathBuf::new()
            }
        };
        let operations = Operations {
            watch: raw.watch,
            keep_attached_on_exit: raw.keep_attached_on_exit,
            pin_path,
            runtime_dir,
        };
        let drop_log = drop_log::drop_log(raw.drop_log, &mut problems);
        let conntrack = conntrack::conntrack(raw.conntrack, &mut problems);
        let limits = limits::limits(raw.limits, &mut problems);
        if !problems.is_empty() {
            return Err(Diagnostics {
                file: path.display().to_string(),
                items: problems,
            });
        }
        Ok(Config {
            rules: base.join(raw.rules.value),
            interfaces,
            metrics,
            licensing,
            models,
            operations,
            drop_log,
            conntrack,
            limits,
            written: Written {
                file: path.to_path_buf(),
                rules: raw.rules.referenced,
                interfaces: interface_locations,
            },
        })
    }
}

/// `adapter` and `contracts` come together or not at all (the store mode); with `license:
/// {grant}` or `{url}`, `adapter` comes without `contracts`; `license` only with `adapter`.
fn licensing(
    adapter: Option<Spanned<RawAdapter>>,
    contracts: Option<Spanned<RawContracts>>,
    license: Option<Spanned<RawLicense>>,
    (base, runtime_dir): (&Path, &Path),
    problems: &mut Vec<Diagnostic>,
) -> Option<LicensingConfig> {
    let granted = license
        .as_ref()
        .is_some_and(|l| l.value.grant.is_some() || l.value.url.is_some());
    let Some(adapter) = adapter else {
        match (&contracts, &license) {
            (Some(contracts), _) => problems.push(Diagnostic::at(
                &contracts.referenced,
                "`contracts` needs `adapter: {serial: ...}`, the adapter whose licence to check",
            )),
            (None, Some(license)) if granted => problems.push(Diagnostic::at(
                &license.referenced,
                "`license` needs `adapter: {serial: ...}`, the adapter the grant is for",
            )),
            (None, Some(license)) => problems.push(Diagnostic::at(
                &license.referenced,
                "`license` needs `adapter` and `contracts`",
            )),
            (None, None) => {}
        }
        return None;
    };
    let serial = adapter.value.serial;
    if serial.value.is_empty() || serial.value.chars().any(char::is_whitespace) {
        problems.push(Diagnostic::at(
            &serial.referenced,
            format!(
                "`{}` is not a serial number (non-empty, no spaces)",
                serial.value
            ),
        ));
    }
    let raw = license.map(|l| l.value);
    let source = match (&raw, contracts) {
        (Some(raw), contracts) if raw.grant.is_some() || raw.url.is_some() => {
            if let Some(contracts) = contracts {
                problems.push(Diagnostic::at(
                    &contracts.referenced,
                    "`contracts` is not used with `license: {grant}` or `{url}`: the adapter holds \
                     a signed grant and no store credentials; remove it",
                ));
            }
            granted_source(raw, base, runtime_dir, problems)?
        }
        (_, None) => {
            problems.push(Diagnostic::at(
                &adapter.referenced,
                "`adapter` needs `contracts: {url: ...}`, the store to check its licence in, \
                 or `license: {grant: FILE}` or `license: {url: ...}`",
            ));
            return None;
        }
        (_, Some(contracts)) => {
            if let Some(raw) = &raw {
                store_only(raw, problems);
            }
            let url = contracts.value.url;
            if firewall_contracts::store::Engine::of(&url.value).is_err() {
                problems.push(Diagnostic::at(
                    &url.referenced,
                    format!(
                        "`{}` is not a contract store URL; write sqlite:PATH or postgres://USER@HOST/DB",
                        url.value
                    ),
                ));
            }
            LicenseSource::Store { url: url.value }
        }
    };
    let (recheck, grace) = match raw {
        Some(license) => {
            if let (Some(grace), false) = (
                &license.grace,
                matches!(source, LicenseSource::Store { .. }),
            ) {
                problems.push(Diagnostic::at(
                    &grace.referenced,
                    "`grace` is for the store mode: a grant holds until its own valid_until",
                ));
            }
            (license.recheck, license.grace)
        }
        None => (None, None),
    };
    // A recheck below a second would hammer the store for nothing.
    let recheck = duration(
        recheck,
        "recheck",
        DEFAULT_RECHECK,
        Duration::from_secs(1),
        problems,
    );
    let grace = duration(grace, "grace", DEFAULT_GRACE, Duration::ZERO, problems);
    Some(LicensingConfig {
        serial: serial.value,
        source,
        recheck,
        grace,
    })
}

/// In the store mode, the grant modes' keys are mistakes.
fn store_only(raw: &RawLicense, problems: &mut Vec<Diagnostic>) {
    let stray = [
        ("token_file", raw.token_file.as_ref().map(|s| s.referenced)),
        ("ca_file", raw.ca_file.as_ref().map(|s| s.referenced)),
        ("keys", raw.keys.as_ref().map(|s| s.referenced)),
    ];
    for (key, at) in stray {
        if let Some(at) = at {
            problems.push(Diagnostic::at(
                &at,
                format!("`{key}` is for `license: {{grant}}` or `{{url}}`, not the store mode"),
            ));
        }
    }
    if let Some(store) = &raw.store
        && !store.value
    {
        problems.push(Diagnostic::at(
            &store.referenced,
            "`store: false` needs `grant: FILE` or `url: https://...` instead",
        ));
    }
}

/// `license: {grant}` or `{url}`, with the public keys that may sign the grant.
fn granted_source(
    raw: &RawLicense,
    base: &Path,
    runtime_dir: &Path,
    problems: &mut Vec<Diagnostic>,
) -> Option<LicenseSource> {
    if let Some(store) = &raw.store
        && store.value
    {
        problems.push(Diagnostic::at(
            &store.referenced,
            "`store: true` and `grant` or `url` exclude each other: choose one mode",
        ));
    }
    let keys: Vec<PathBuf> = match &raw.keys {
        Some(keys) if !keys.value.is_empty() => {
            keys.value.iter().map(|key| base.join(&key.value)).collect()
        }
        Some(keys) => {
            problems.push(Diagnostic::at(
                &keys.referenced,
                "`keys` is empty: name the provider's public key file(s) (`license keygen` writes them)",
            ));
            return None;
        }
        None => {
            let at = raw.grant.as_ref().map_or_else(
                || raw.url.as_ref().map(|u| u.referenced),
                |g| Some(g.referenced),
            );
            if let Some(at) = at {
                problems.push(Diagnostic::at(
                    &at,
                    "a grant needs `keys: [FILE, ...]`, the provider's public key(s) it is checked against",
                ));
            }
            return None;
        }
    };
    match (&raw.grant, &raw.url) {
        (Some(_), Some(url)) => {
            problems.push(Diagnostic::at(
                &url.referenced,
                "`grant` and `url` exclude each other: a grant file, or a grant server",
            ));
            None
        }
        (Some(file), None) => {
            for (key, at) in [
                ("token_file", raw.token_file.as_ref().map(|s| s.referenced)),
                ("ca_file", raw.ca_file.as_ref().map(|s| s.referenced)),
            ] {
                if let Some(at) = at {
                    problems.push(Diagnostic::at(
                        &at,
                        format!("`{key}` is for `url`, not for a grant file"),
                    ));
                }
            }
            Some(LicenseSource::Grant {
                file: base.join(&file.value),
                keys,
            })
        }
        (None, Some(url)) => {
            if !url.value.starts_with("https://") || url.value.len() <= "https://".len() {
                problems.push(Diagnostic::at(
                    &url.referenced,
                    format!(
                        "`url: {}` is not an https:// URL; the token is sent only over TLS",
                        url.value
                    ),
                ));
            }
            let Some(token_file) = &raw.token_file else {
                problems.push(Diagnostic::at(
                    &url.referenced,
                    "`url` needs `token_file: FILE`, the adapter's token from `license token`",
                ));
                return None;
            };
            Some(LicenseSource::Url {
                url: url.value.clone(),
                token_file: base.join(&token_file.value),
                ca_file: raw.ca_file.as_ref().map(|ca| base.join(&ca.value)),
                keys,
                cache: runtime_dir.join("grant.jws"),
            })
        }
        (None, None) => None,
    }
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

    #[test]
    fn licensing_is_off_without_adapter_and_contracts() {
        let config = parse("rules: r.yaml\ninterfaces: [lan0]\n").unwrap();
        assert_eq!(config.licensing, None);
    }

    #[test]
    fn licensing_with_defaults_and_with_durations() {
        let base = "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: FUJI-0001}\ncontracts: {url: \"sqlite:/tmp/c.db\"}\n";
        let config = parse(base).unwrap();
        assert_eq!(
            config.licensing,
            Some(LicensingConfig {
                serial: "FUJI-0001".into(),
                source: LicenseSource::Store {
                    url: "sqlite:/tmp/c.db".into()
                },
                recheck: Duration::from_secs(60),
                grace: Duration::from_secs(86_400),
            })
        );
        let config = parse(&format!("{base}license: {{recheck: 1s, grace: 90m}}\n")).unwrap();
        let licensing = config.licensing.unwrap();
        assert_eq!(licensing.recheck, Duration::from_secs(1));
        assert_eq!(licensing.grace, Duration::from_secs(5400));
    }

    #[test]
    fn a_grant_file_or_a_grant_server_replaces_the_store() {
        let base = "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: FUJI-0001}\n";
        let config = parse(&format!(
            "{base}license: {{grant: grant.jws, keys: [a.pub, /k/b.pub], recheck: 5s}}\n"
        ))
        .unwrap();
        let licensing = config.licensing.unwrap();
        assert_eq!(
            licensing.source,
            LicenseSource::Grant {
                file: "/etc/smf-firewall/grant.jws".into(),
                keys: vec!["/etc/smf-firewall/a.pub".into(), "/k/b.pub".into()],
            }
        );
        assert_eq!(licensing.recheck, Duration::from_secs(5));
        assert_eq!(licensing.source.mode(), "grant");
        let config = parse(&format!(
            "{base}license: {{url: \"https://g.example:8443\", token_file: t, ca_file: ca.pem, keys: [a.pub]}}\nruntime_dir: /run/x\n"
        ))
        .unwrap();
        assert_eq!(
            config.licensing.unwrap().source,
            LicenseSource::Url {
                url: "https://g.example:8443".into(),
                token_file: "/etc/smf-firewall/t".into(),
                ca_file: Some("/etc/smf-firewall/ca.pem".into()),
                keys: vec!["/etc/smf-firewall/a.pub".into()],
                cache: "/run/x/grant.jws".into(),
            }
        );
        // `store: true` says the default.
        let config = parse(&format!(
            "{base}contracts: {{url: \"sqlite:/c.db\"}}\nlicense: {{store: true, grace: 1h}}\n"
        ))
        .unwrap();
        assert_eq!(config.licensing.unwrap().store_url(), Some("sqlite:/c.db"));
    }

    // Each row: the `license:` line (line 4, after `adapter`), and a fragment of its first
    // error.
    #[test]
    fn grant_mode_mistakes_are_errors_at_their_position() {
        let cases = [
            ("license: {grant: g.jws}", "needs `keys"),
            ("license: {grant: g.jws, keys: []}", "`keys` is empty"),
            (
                "license: {grant: g.jws, url: \"https://g\", keys: [k]}",
                "exclude each other",
            ),
            (
                "license: {url: \"http://g:80\", token_file: t, keys: [k]}",
                "not an https:// URL",
            ),
            (
                "license: {url: \"https://g\", keys: [k]}",
                "needs `token_file",
            ),
            (
                "license: {grant: g.jws, keys: [k], token_file: t}",
                "`token_file` is for `url`",
            ),
            (
                "license: {grant: g.jws, keys: [k], grace: 1h}",
                "`grace` is for the store mode",
            ),
            (
                "license: {grant: g.jws, keys: [k], store: true}",
                "exclude each other",
            ),
            ("license: {recheck: 5s}", "`adapter` needs `contracts"),
            ("license: {grant: g.jws, keys: [k], bogus: 1}", "bogus"),
        ];
        for (line, fragment) in cases {
            let text =
                format!("rules: r.yaml\ninterfaces: [lan0]\nadapter: {{serial: S}}\n{line}\n");
            let err = parse(&text).unwrap_err();
            assert!(err.items[0].line >= 3, "{line}: {err}");
            assert!(err.to_string().contains(fragment), "{line}: {err}");
        }
        // With the store's `contracts`, a grant mode is a mistake too.
        let err = parse("rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S}\ncontracts: {url: \"sqlite:x\"}\nlicense: {grant: g, keys: [k]}\n").unwrap_err();
        assert_eq!(err.items[0].line, 4, "{err}");
        assert!(err.to_string().contains("`contracts` is not used"), "{err}");
        // And the store mode's keys for grants.
        let err = parse("rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S}\ncontracts: {url: \"sqlite:x\"}\nlicense: {keys: [k]}\n").unwrap_err();
        assert!(err.to_string().contains("`keys` is for"), "{err}");
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
            (
                "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S}\n",
                3,
                "`adapter` needs `contracts",
            ),
            (
                "rules: r.yaml\ninterfaces: [lan0]\ncontracts: {url: \"sqlite:x\"}\n",
                3,
                "`contracts` needs `adapter",
            ),
            (
                "rules: r.yaml\ninterfaces: [lan0]\nlicense: {recheck: 5s}\n",
                3,
                "`license` needs",
            ),
            (
                "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S}\ncontracts: {url: \"mysql://x\"}\n",
                4,
                "not a contract store URL",
            ),
            (
                "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S}\ncontracts: {url: \"sqlite:x\"}\nlicense: {grace: soon}\n",
                5,
                "`grace: soon` is not a duration",
            ),
            (
                "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S}\ncontracts: {url: \"sqlite:x\"}\nlicense: {recheck: 10ms}\n",
                5,
                "too short",
            ),
            (
                "rules: r.yaml\ninterfaces: [lan0]\nadapter: {serial: S, model: x1}\ncontracts: {url: \"sqlite:x\"}\n",
                3,
                "model",
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

    // Each row: a config line (line 3), and a fragment of its one error: YAML 1.1's booleans
    // are not booleans, quoted or not.
    #[test]
    fn only_true_and_false_are_booleans() {
        for line in [
            "watch: yes",
            "watch: \"yes\"",
            "keep_attached_on_exit: on",
            "keep_attached_on_exit: 'off'",
            "watch: n",
        ] {
            let err = parse(&format!("rules: r.yaml\ninterfaces: [lan0]\n{line}\n")).unwrap_err();
            assert_eq!(err.items.len(), 1, "{line}: {err}");
            assert_eq!(err.items[0].line, 3, "{line}: {err}");
            assert!(
                err.to_string().contains("expected true or false"),
                "{line}: {err}"
            );
        }
        assert!(
            parse("rules: r.yaml\ninterfaces: [lan0]\nwatch: true\n")
                .unwrap()
                .operations
                .watch
        );
    }

    /// A config in a fresh directory next to a rule file for `lan0` (`rules.yaml`) and a
    /// directory (`dir`).
    fn files(config: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("rules.yaml"),
            "version: 1\ninterfaces: {lan0: {default: pass}}\n",
        )
        .unwrap();
        fs::create_dir(dir.path().join("dir")).unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, config).unwrap();
        (dir, path)
    }

    // Each row: a config, and the LINE:COL and a fragment of its first error, found when the
    // rule file is read.
    #[test]
    fn rule_file_errors_point_into_the_config() {
        let cases = [
            (
                "rules: missing.yaml\ninterfaces: [lan0]\n",
                (1, 8),
                "`rules`: cannot read",
            ),
            ("rules: dir\ninterfaces: [lan0]\n", (1, 8), "is not a file"),
            (
                "rules: rules.yaml\ninterfaces: [lan0, wan0]\n",
                (2, 20),
                "interface `wan0` has no rules in",
            ),
        ];
        for (text, (line, column), fragment) in cases {
            let (_dir, path) = files(text.as_bytes());
            let config = Config::load(&path).unwrap();
            let err = config.load_rules().unwrap_err();
            let ConfigError::Invalid(diagnostics) = &err else {
                panic!("{text}: {err}");
            };
            let first = &diagnostics.items[0];
            assert_eq!((first.line, first.column), (line, column), "{text}: {err}");
            assert!(err.to_string().contains(fragment), "{text}: {err}");
            assert!(
                err.to_string().starts_with(&format!("{}:", path.display())),
                "{err}"
            );
        }
        let (_dir, path) = files(b"rules: rules.yaml\ninterfaces: [lan0]\n");
        let rules = Config::load(&path).unwrap().load_rules().unwrap();
        assert!(rules.interfaces.contains_key("lan0"));
    }

    #[test]
    fn invalid_utf8_in_the_config_or_its_rules_is_an_error_at_its_byte() {
        let (dir, path) = files(b"rules: rules.yaml\ninterfaces: [l\xffan0]\n");
        let err = Config::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:2:15: error: invalid UTF-8 at byte 32: the file must be UTF-8 text",
                path.display()
            )
        );
        fs::write(dir.path().join("rules.yaml"), b"version: 1\n# \xe9\n").unwrap();
        fs::write(&path, "rules: rules.yaml\ninterfaces: [lan0]\n").unwrap();
        let err = Config::load(&path).unwrap().load_rules().unwrap_err();
        assert!(
            err.to_string().ends_with(
                "rules.yaml:2:3: error: invalid UTF-8 at byte 13: the file must be UTF-8 text"
            ),
            "{err}"
        );
    }

    #[test]
    fn conntrack_defaults_and_settings() {
        let config = parse("rules: r.yaml\ninterfaces: [lan0]\n").unwrap();
        assert_eq!(config.conntrack, ConntrackConfig::default());
        let config = parse(
            "rules: r.yaml\ninterfaces: [lan0]\nconntrack: {max_entries: 1000000, timeouts: {udp: 60s, tcp_established: 2h}, sweep: 1s}\n",
        )
        .unwrap();
        let c = &config.conntrack;
        assert_eq!(c.max_entries, 1_000_000);
        assert_eq!(c.timeouts.0[6], Duration::from_secs(60));
        assert_eq!(c.timeouts.0[2], Duration::from_secs(7200));
        assert_eq!(
            c.timeouts.0[0],
            Duration::from_secs(120),
            "others keep defaults"
        );
        assert_eq!(c.sweep, Duration::from_secs(1));
        assert_eq!(config.limits, LimitsConfig::default());
        let config =
            parse("rules: r.yaml\ninterfaces: [lan0]\nlimits: {max_keys: 1000}\n").unwrap();
        assert_eq!(config.limits.max_keys, 1_000);
    }

    // Each row: a `conntrack:` line (line 3) and a fragment of its one error.
    #[test]
    fn conntrack_mistakes_are_errors_at_their_position() {
        let cases = [
            (
                "conntrack: {max_entries: 0}",
                "`max_entries: 0` is not 1-16777216",
            ),
            (
                "conntrack: {timeouts: {tcp_open: 5s}}",
                "unknown timeout `tcp_open`",
            ),
            (
                "conntrack: {timeouts: {udp: soon}}",
                "`udp: soon` is not a duration",
            ),
            (
                "conntrack: {timeouts: {udp: 10ms}}",
                "`udp: 10ms` is too short",
            ),
            ("pin_path: relative/dir", "must be absolute"),
            ("conntrack: {size: 5}", "unknown field `size`"),
            ("limits: {max_keys: 0}", "`max_keys: 0` is not 1-16777216"),
            ("limits: {keys: 5}", "unknown field `keys`"),
        ];
        for (line, fragment) in cases {
            let err = parse(&format!("rules: r.yaml\ninterfaces: [lan0]\n{line}\n")).unwrap_err();
            assert_eq!(err.items.len(), 1, "{line}: {err}");
            assert_eq!(err.items[0].line, 3, "{line}: {err}");
            assert!(err.items[0].column > 1, "{line}: {err}");
            assert!(err.to_string().contains(fragment), "{line}: {err}");
        }
    }
}

//! `conntrack:` in the daemon's configuration: the size of the kernel's flow table,
//! the idle timeout of each state (SEIL's `state-ttl`), and how often expired flows are swept.
//! The table is pinned with the other maps (`pin_path`), where `smf-firewall conntrack` reads it.
//!
//! ```yaml
//! conntrack:
//!   max_entries: 65536                     # the default (SEIL/x86 Fuji's limit)
//!   timeouts: {tcp_established: 2h, udp: 60s}   # the others keep their defaults
//!   sweep: 10s                             # the default
//! ```

use std::{collections::BTreeMap, time::Duration};

use firewall_common::conntrack::state;
use serde::Deserialize;
use serde_saphyr::Spanned;

use firewall_dataplane::conntrack::Timeouts;
use firewall_diagnostic::Diagnostic;

use super::duration::duration;

/// The largest table the daemon accepts (the kernel would take more; memory grows ~linearly).
pub const MAX_ENTRIES_LIMIT: u32 = 16_777_216;

/// How often the daemon deletes expired flows by default.
pub const DEFAULT_SWEEP: Duration = Duration::from_secs(10);

/// `conntrack:` in the daemon's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Entries of the kernel's LRU table; the least recently used flow is evicted when full.
    pub max_entries: u32,
    pub timeouts: Timeouts,
    /// How often the daemon deletes expired flows.
    pub sweep: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            max_entries: firewall_common::conntrack::DEFAULT_MAX_ENTRIES,
            timeouts: Timeouts::default(),
            sweep: DEFAULT_SWEEP,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConntrack {
    max_entries: Option<Spanned<i64>>,
    #[serde(default)]
    timeouts: BTreeMap<String, Spanned<String>>,
    sweep: Option<Spanned<String>>,
}

pub(super) fn conntrack(
    raw: Option<Spanned<RawConntrack>>,
    problems: &mut Vec<Diagnostic>,
) -> ConntrackConfig {
    let mut config = ConntrackConfig::default();
    let Some(raw) = raw else {
        return config;
    };
    let raw = raw.value;
    if let Some(max) = raw.max_entries {
        match u32::try_from(max.value) {
            Ok(n) if (1..=MAX_ENTRIES_LIMIT).contains(&n) => config.max_entries = n,
            _ => problems.push(Diagnostic::at(
                &max.referenced,
                format!("`max_entries: {}` is not 1-{MAX_ENTRIES_LIMIT}", max.value),
            )),
        }
    }
    for (name, value) in raw.timeouts {
        let Some(index) = state::NAMES.iter().position(|n| *n == name) else {
            problems.push(Diagnostic::at(
                &value.referenced,
                format!("unknown timeout `{name}`: use {}", state::NAMES.join(", ")),
            ));
            continue;
        };
        let default = config.timeouts.0[index];
        config.timeouts.0[index] = duration(
            Some(value),
            &name,
            default,
            Duration::from_secs(1),
            problems,
        );
    }
    config.sweep = duration(
        raw.sweep,
        "sweep",
        config.sweep,
        Duration::from_millis(100),
        problems,
    );
    config
}

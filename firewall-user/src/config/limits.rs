//! `limits:` in the daemon's configuration: the size of the kernel's table of per-address
//! rate-limit buckets (`limit: {per: src}` rules). It is an LRU table: a flood of random
//! sources evicts the least recently seen keys instead of failing.
//!
//! ```yaml
//! limits:
//!   max_keys: 65536   # the default
//! ```

use serde::Deserialize;
use serde_saphyr::Spanned;

use firewall_diagnostic::Diagnostic;

/// The largest table the daemon accepts (24-byte keys, 24-byte buckets, ~80 bytes a key with
/// the kernel's overhead: 1.3 GB).
pub const MAX_KEYS_LIMIT: u32 = 16_777_216;

/// `limits:` in the daemon's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Entries of the kernel's LRU table of per-address buckets, shared by all limit rules.
    pub max_keys: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_keys: firewall_common::limit::DEFAULT_MAX_KEYS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_keys: Option<Spanned<i64>>,
}

pub(super) fn limits(
    raw: Option<Spanned<RawLimits>>,
    problems: &mut Vec<Diagnostic>,
) -> LimitsConfig {
    let mut config = LimitsConfig::default();
    if let Some(max) = raw.and_then(|raw| raw.value.max_keys) {
        match u32::try_from(max.value) {
            Ok(n) if (1..=MAX_KEYS_LIMIT).contains(&n) => config.max_keys = n,
            _ => problems.push(Diagnostic::at(
                &max.referenced,
                format!("`max_keys: {}` is not 1-{MAX_KEYS_LIMIT}", max.value),
            )),
        }
    }
    config
}

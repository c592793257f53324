//! What the dataplane does after a check, shared by the store and the grant modes.

use firewall_contracts::license::Check;

/// What the dataplane does after a check, and the labels that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub licensed: bool,
    /// A decision's reason, [`STORE_UNREACHABLE`] or [`NOT_CONFIGURED`].
    pub reason: &'static str,
    pub serial: String,
    pub model: &'static str,
    pub role: &'static str,
}

impl Applied {
    pub(super) fn from_check(check: &Check) -> Self {
        Self {
            licensed: check.decision.licensed,
            reason: check.decision.reason.name(),
            serial: check.serial.clone(),
            model: check.model.map_or("", |m| m.name()),
            role: check.role.map_or("", |r| r.name()),
        }
    }
}

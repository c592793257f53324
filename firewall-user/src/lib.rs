//! smf-firewall userspace: configuration, the rule pipeline (YAML → validated `RuleSet` →
//! compiled map values), the aya loader that puts them into the kernel, and metrics.

pub mod config;
pub mod conntrack;
pub mod contracts;
pub mod daemon;
pub mod diagnostic;
pub mod license;
pub mod loader;
pub mod metrics;
pub mod reference;
pub mod replay;
pub mod rules;
pub mod spec;
pub mod top;

//! smf-firewall userspace: configuration, the rule pipeline (YAML → validated `RuleSet` →
//! compiled map values), the aya loader that puts them into the kernel, and metrics.

pub mod config;
pub mod conntrack;
pub mod contracts;
pub mod control;
pub mod daemon;
pub mod diagnostic;
pub mod droplog;
pub mod file_watch;
pub mod license;
pub mod loader;
pub mod metrics;
pub mod pins;
pub mod reference;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod spec;
pub mod state;
pub mod top;

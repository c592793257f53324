//! The smf-firewall daemon and its command line (`cli`): the daemon's configuration, its
//! start, reloads and control socket, metrics, drop logs and the licence loop, and the
//! metrics reader behind `smf-firewall top`, the grant server of `smf-firewall license serve`,
//! live packet traces. The rule pipeline is `firewall-rules`, the
//! kernel side `firewall-dataplane`, the contract store `firewall-contracts`.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod drop_log;
pub mod file_watch;
pub mod grant_server;
pub mod instance_lock;
pub mod interfaces;
pub mod licensing;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod state;
pub mod top;
pub mod trace;

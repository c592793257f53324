//! The daemon's config: parse and validate it (every problem at once, with positions).
#![no_main]

use std::path::Path;

use firewall_user::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(Path::new("/etc/smf-firewall/config.yaml"), text);
    }
});

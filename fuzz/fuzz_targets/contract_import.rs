//! A `contracts import` file: parse and plan it (every check that needs no store).
#![no_main]

use std::path::Path;

use firewall_contracts::import;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = import::check(Path::new("contracts.yaml"), text);
    }
});

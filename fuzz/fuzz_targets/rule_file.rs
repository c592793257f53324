//! A rule file: parse, validate and, when valid, compile it. No input may panic, hang or
//! allocate without bound; a valid set must compile or fail with a `CompileError`.
#![no_main]

use std::path::Path;

use firewall_rules::{Limits, RuleSet, compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(checked) = RuleSet::parse_checked(Path::new("fuzz.yaml"), text, &Limits::default())
    else {
        return;
    };
    let interfaces: Vec<(String, u32)> = checked
        .rules
        .interfaces
        .keys()
        .zip(0..)
        .map(|(name, slot)| (name.clone(), slot))
        .collect();
    let _ = compile::ruleset(
        &checked.rules,
        &interfaces,
        &mut compile::RuleCounters::default(),
    );
});

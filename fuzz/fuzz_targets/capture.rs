//! A capture for `smf-firewall replay`: pcap or pcapng, read into frames.
#![no_main]

use firewall_dataplane::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = replay::parse_frames("fuzz.pcap", data);
});

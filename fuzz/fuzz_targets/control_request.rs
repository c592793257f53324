//! A control-socket line: what the daemon reads as a request, and what `reload` and `status`
//! read back as an answer. Neither may panic, whatever the bytes.
#![no_main]

use firewall_user::control::protocol::{Answer, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Answer>(data);
});

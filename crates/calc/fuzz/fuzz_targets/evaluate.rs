//! Feed arbitrary bytes (lossily decoded as UTF-8) to `evaluate` with the
//! default limits: it must never panic, hang or exhaust memory.
#![no_main]

use capsule_calc::{evaluate, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let _ = evaluate(&input, &Limits::default());
});

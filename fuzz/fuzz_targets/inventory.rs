//! Fuzz target `inventory`: see `claw_provision::fuzzing::inventory`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    claw_provision::fuzzing::inventory(data);
});

//! Fuzz target `facts`: see `claw_provision::fuzzing::facts`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    claw_provision::fuzzing::facts(data);
});

//! Fuzz target `probe`: see `claw_provision::fuzzing::probe`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    claw_provision::fuzzing::probe(data);
});

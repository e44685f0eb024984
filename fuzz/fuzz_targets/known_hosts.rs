//! Fuzz target `known_hosts`: see `claw_provision::fuzzing::known_hosts`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    claw_provision::fuzzing::known_hosts(data);
});

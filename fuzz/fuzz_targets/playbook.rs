//! Fuzz target `playbook`: see `claw_provision::fuzzing::playbook`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    claw_provision::fuzzing::playbook(data);
});

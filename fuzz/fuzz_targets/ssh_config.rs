//! Fuzz target `ssh_config`: see `claw_provision::fuzzing::ssh_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    claw_provision::fuzzing::ssh_config(data);
});

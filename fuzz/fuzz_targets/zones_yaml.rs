//! zones.yaml from a hostile or careless hand: loading and rendering must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonegate::fuzz::zones_yaml(data);
});

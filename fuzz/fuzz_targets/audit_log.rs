//! An audit log someone edited: verification must never panic, and any event text must seal and verify.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonegate::fuzz::audit_log(data);
});

//! A netlink datagram from the kernel's drop log: the reader must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonegate::fuzz::droplog(data);
});

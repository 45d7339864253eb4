//! Bytes from a Modbus/TCP peer, hostile or broken: parsing requests and responses must never
//! panic, and what parses must agree with its bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonegate::fuzz::modbus(data);
});

//! A reassembled OPC UA request body, hostile or broken: the decoder must never panic, and what it
//! accepts must round-trip (see `zonegate::fuzz::opcua_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonegate::fuzz::opcua_request(data);
});

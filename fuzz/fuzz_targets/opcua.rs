//! Bytes from an OPC UA client, hostile or broken: chunk parsing, reassembly and service
//! decoding must never panic, and what parses must agree with its bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    zonegate::fuzz::opcua(data);
});

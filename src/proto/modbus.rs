//! Modbus/TCP (Modbus Application Protocol V1.1b3 and Modbus Messaging on TCP/IP V1.0b): the MBAP
//! header and every public function code's request PDU, plus responses, parsed in place.
//!
//! SKELETON: types and signatures are the contract between the parser, the proxy and the policy
//! input; the bodies are being written.

/// MBAP header: transaction id (2), protocol id (2), length (2), unit id (1).
pub const MBAP_LEN: usize = 7;
/// Largest PDU the spec allows (function code + 252 data bytes).
pub const MAX_PDU_LEN: usize = 253;
/// Largest ADU: MBAP header + PDU.
pub const MAX_ADU_LEN: usize = MBAP_LEN + MAX_PDU_LEN;

/// Exception code 0x01 Illegal Function.
pub const EXCEPTION_ILLEGAL_FUNCTION: u8 = 0x01;
/// Exception code 0x02 Illegal Data Address.
pub const EXCEPTION_ILLEGAL_DATA_ADDRESS: u8 = 0x02;
/// Exception code 0x03 Illegal Data Value.
pub const EXCEPTION_ILLEGAL_DATA_VALUE: u8 = 0x03;
/// Exception code 0x04 Server Device Failure.
pub const EXCEPTION_SERVER_DEVICE_FAILURE: u8 = 0x04;
/// Exception code 0x0A Gateway Path Unavailable.
pub const EXCEPTION_GATEWAY_PATH_UNAVAILABLE: u8 = 0x0A;
/// Exception code 0x0B Gateway Target Device Failed to Respond.
pub const EXCEPTION_GATEWAY_TARGET_FAILED: u8 = 0x0B;

/// The MBAP header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mbap {
    pub transaction_id: u16,
    /// Always 0 for Modbus; anything else is refused.
    pub protocol_id: u16,
    /// Bytes that follow the length field: unit id + PDU.
    pub length: u16,
    pub unit_id: u8,
}

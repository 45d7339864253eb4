//! OPC UA Binary over TCP (OPC 10000-6 "UA Part 6: Mappings", 1.05): the UA Connection Protocol
//! messages HEL, ACK, ERR and RHE (7.1.2), the UA Secure Conversation chunk headers of OPN, MSG
//! and CLO (6.7.2), the reassembly of chunks into messages (6.7.2.2), and service requests
//! (OPC 10000-4 "UA Part 4: Services") decoded from the UA Binary encoding (Part 6 5.2).
//!
//! The framing is ours and judges a chunk as its bytes arrive: the 8-byte header is checked as
//! soon as it is in, so a hostile size is refused before anything is buffered for it, and until a
//! chunk is complete and correct the parsers return `Ok(None)`. Request bodies are decoded by
//! async-opcua-types under limits derived from ours: no hostile length allocates more than the
//! message holds, nesting is bounded both by count and by the stack it uses, and an
//! ExtensionObject must fill exactly the length it declares (see [`decode_request`]).
//!
//! This module owns the limits and status codes; the parts live in one file each: `chunk`
//! (headers and chunk fields as they arrive), `reassembly` (chunks into messages), `service` (the
//! service catalogue and identity tokens), `decode` (guarded decoding of request bodies),
//! `round_trip` (the check that a request is in canonical form), `encode` (what the proxy writes
//! itself) and `error` ([`OpcUaError`]).

mod chunk;
mod decode;
mod encode;
mod error;
mod reassembly;
mod round_trip;
mod service;
#[cfg(test)]
mod tests;

pub use chunk::*;
pub use decode::*;
pub use encode::*;
pub use error::*;
pub use reassembly::*;
pub use round_trip::*;
pub use service::*;

/// Message header: MessageType (3 ASCII bytes), ChunkType (1), MessageSize (UInt32, little
/// endian, the whole chunk header included) (7.1.2.2, 6.7.2.2).
pub const HEADER_LEN: usize = 8;
/// The smallest ReceiveBufferSize and SendBufferSize a HEL or ACK may state (7.1.2.3): the
/// proxy never negotiates a chunk size below it.
pub const MIN_CHUNK_SIZE: u32 = 8192;
/// Our cap on one chunk: what the proxy negotiates at most, and what [`parse_header`] allows
/// whatever it is asked.
pub const MAX_CHUNK_SIZE: u32 = 65_535;
/// Chunks of one message.
pub const MAX_CHUNK_COUNT: usize = 64;
/// A reassembled message body (what follows the sequence headers of all its chunks).
pub const MAX_MESSAGE_SIZE: usize = 2 * 1024 * 1024;
/// HEL and RHE EndpointUrl, RHE ServerUri: "less than 4096 bytes" (7.1.2.3, 7.1.2.6).
pub const MAX_ENDPOINT_URL_LEN: usize = 4096;
/// OPN SecurityPolicyUri: "shall not exceed 255 bytes" (6.7.2.3).
pub const MAX_SECURITY_POLICY_URI_LEN: usize = 255;
/// OPN SenderCertificate (a DER certificate, or a chain of them).
pub const MAX_CERTIFICATE_LEN: usize = 32 * 1024;
/// Messages being reassembled at once per direction.
pub const MAX_PARTIAL_MESSAGES: usize = 4;
/// ERR Reason: "shall not be more than 4096 bytes" (7.1.2.5); [`encode_error`] cuts to it.
pub const MAX_REASON_LEN: usize = 4096;
/// OPN ReceiverCertificateThumbprint: a certificate digest, SHA-1 (20 bytes) for every RSA
/// policy; room for a SHA-512 one.
pub const MAX_THUMBPRINT_LEN: usize = 64;
/// Elements of one array in a request body (UA .NET's default MaxArrayLength). The decoder
/// reserves room for the declared count before it reads the elements, so this bounds what a
/// short hostile message can reserve; it is further cut to the message's length.
pub const MAX_ARRAY_LENGTH: usize = 65_535;
/// ExtensionObjects and Variants nested in each other in a request body (the decoder's depth
/// gauge).
pub const MAX_NESTING_DEPTH: u64 = 16;
/// ValueRank of an Argument structure (its number of array dimensions). The decoder allocates
/// that many dimensions, so an unbounded ValueRank would let a few bytes claim gigabytes.
pub const MAX_VALUE_RANK: i32 = 32;
/// Stack the decoder may use below [`decode_request`]. Some of the decoder's recursions carry
/// no depth count (a DiagnosticInfo in a DiagnosticInfo, a DataValue in a Variant in a
/// DataValue) and cost one or two bytes of message per level, so without this bound a 64 KiB
/// chunk would overflow a thread's stack and abort the process. The captures' requests use up
/// to 30 KiB in a debug build and 7 KiB in a release build; the caller's thread needs this much
/// free stack (a tokio worker has 2 MiB).
pub const MAX_DECODE_STACK: usize = 512 * 1024;
/// SequenceNumber (UInt32), RequestId (UInt32) (6.7.2.4).
pub const SEQUENCE_HEADER_LEN: usize = 8;
/// Offset of the SequenceNumber field within a MSG or CLO chunk: after the message header,
/// SecureChannelId and TokenId.
pub const SYMMETRIC_SEQUENCE_OFFSET: usize = 16;
/// The UA TCP protocol version this parser knows (7.1.2.3); HEL and ACK with others still parse.
pub const PROTOCOL_VERSION: u32 = 0;
/// A SequenceNumber may wrap around only once it is greater than this, UInt32.MaxValue - 1024
/// (6.7.2.4).
pub const SEQUENCE_NUMBER_WRAP_LIMIT: u32 = u32::MAX - 1024;
/// The SecurityPolicyUri prefix of the policies Part 7 defines.
pub const SECURITY_POLICY_PREFIX: &str = "http://opcfoundation.org/UA/SecurityPolicy#";
/// SecurityPolicy None: chunks are neither signed nor encrypted.
pub const SECURITY_POLICY_NONE: &str = "http://opcfoundation.org/UA/SecurityPolicy#None";

/// Status codes the proxy sends (Part 4 7.39; the values of the spec's StatusCode table, checked
/// against async-opcua-types' `StatusCode` in the tests).
pub const STATUS_BAD_USER_ACCESS_DENIED: u32 = 0x801F_0000;
pub const STATUS_BAD_SECURITY_POLICY_REJECTED: u32 = 0x8055_0000;
pub const STATUS_BAD_TCP_MESSAGE_TOO_LARGE: u32 = 0x8080_0000;
pub const STATUS_BAD_TCP_MESSAGE_TYPE_INVALID: u32 = 0x807E_0000;
pub const STATUS_BAD_COMMUNICATION_ERROR: u32 = 0x8005_0000;
pub const STATUS_BAD_SECURITY_CHECKS_FAILED: u32 = 0x8013_0000;
pub const STATUS_BAD_DECODING_ERROR: u32 = 0x8007_0000;
/// Bad_ServiceUnsupported: the server does not support the requested service.
pub const STATUS_BAD_SERVICE_UNSUPPORTED: u32 = 0x800B_0000;
/// Bad_Timeout: the operation timed out (a request not completed in time, an idle connection).
pub const STATUS_BAD_TIMEOUT: u32 = 0x800A_0000;

/// HEL, ACK: ProtocolVersion, ReceiveBufferSize, SendBufferSize, MaxMessageSize, MaxChunkCount.
const BUFFER_FIELDS_LEN: usize = 20;
/// Length prefix of a String or ByteString (Int32, -1 for null).
const LENGTH_PREFIX_LEN: usize = 4;
/// ServiceFault_Encoding_DefaultBinary: the type id of what [`encode_service_fault`] sends
/// (the test decodes it back with async-opcua-types).
const SERVICE_FAULT_TYPE_ID: u16 = 397;
const SEQUENCE_NUMBER_END: usize = SYMMETRIC_SEQUENCE_OFFSET + 4;
/// Text from a message that an error quotes, at most.
const MAX_ERROR_TEXT: usize = 160;

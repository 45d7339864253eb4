//! The messages the proxy writes itself: ERR, HEL and ACK (after clamping), a ServiceFault; and
//! what a SecurityPolicyUri names (its short name, its signature length).

use super::*;

/// An ERR message (7.1.2.5): "ERRF", size, Error (StatusCode), Reason (String, cut to
/// [`MAX_REASON_LEN`] bytes at a character boundary).
pub fn encode_error(status: u32, reason: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&status.to_le_bytes());
    put_string(&mut body, cut(reason, MAX_REASON_LEN));
    chunk(MessageType::Error, &body)
}

/// A HEL chunk (7.1.2.3) with `hello`'s fields, e.g. after clamping its buffer sizes.
pub fn encode_hello(hello: &Hello<'_>) -> Vec<u8> {
    let mut body = buffer_fields([
        hello.protocol_version,
        hello.receive_buffer_size,
        hello.send_buffer_size,
        hello.max_message_size,
        hello.max_chunk_count,
    ]);
    put_string(&mut body, hello.endpoint_url);
    chunk(MessageType::Hello, &body)
}

/// An ACK chunk (7.1.2.4) with `acknowledge`'s fields.
pub fn encode_acknowledge(acknowledge: &Acknowledge) -> Vec<u8> {
    let body = buffer_fields([
        acknowledge.protocol_version,
        acknowledge.receive_buffer_size,
        acknowledge.send_buffer_size,
        acknowledge.max_message_size,
        acknowledge.max_chunk_count,
    ]);
    chunk(MessageType::Acknowledge, &body)
}

/// A single-chunk plaintext MSG carrying a ServiceFault (Part 4 7.35; type id 397,
/// ServiceFault_Encoding_DefaultBinary) whose ResponseHeader has `request_handle`, ServiceResult
/// `status`, `timestamp` (OPC UA DateTime: 100 ns ticks since 1601-01-01 UTC), empty
/// diagnostics, a null string table and a null additional header.
pub fn encode_service_fault(
    secure_channel_id: u32,
    token_id: u32,
    sequence_number: u32,
    request_id: u32,
    request_handle: u32,
    status: u32,
    timestamp: i64,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(48);
    for field in [secure_channel_id, token_id, sequence_number, request_id] {
        body.extend_from_slice(&field.to_le_bytes());
    }
    // Type id: four-byte NodeId encoding (0x01), namespace 0, UInt16 identifier.
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&SERVICE_FAULT_TYPE_ID.to_le_bytes());
    // ResponseHeader (Part 4 7.34).
    body.extend_from_slice(&timestamp.to_le_bytes());
    body.extend_from_slice(&request_handle.to_le_bytes());
    body.extend_from_slice(&status.to_le_bytes());
    // ServiceDiagnostics: DiagnosticInfo with an empty encoding mask.
    body.push(0x00);
    // StringTable: null array.
    body.extend_from_slice(&(-1_i32).to_le_bytes());
    // AdditionalHeader: ExtensionObject with the null NodeId (two-byte encoding) and no body.
    body.extend_from_slice(&[0x00, 0x00, 0x00]);
    let mut message = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    message.extend_from_slice(&MessageType::Message.as_bytes());
    message.push(ChunkType::Final.as_byte());
    message.extend_from_slice(&chunk_size(body.len()).to_le_bytes());
    message.extend_from_slice(&body);
    message
}

/// The policy's name: what follows [`SECURITY_POLICY_PREFIX`] in the URI of a policy Part 7
/// defines ("Basic256Sha256"); any other URI whole, so a vendor's URI cannot pass for a standard
/// policy's name.
pub fn security_policy_name(uri: &str) -> &str {
    uri.strip_prefix(SECURITY_POLICY_PREFIX)
        .filter(|name| !name.is_empty())
        .unwrap_or(uri)
}

/// Length in bytes of the symmetric signature that ends every MSG and CLO chunk of a channel
/// with this policy, in Sign and SignAndEncrypt mode (OPC 10000-7 policy profiles):
/// HMAC-SHA256 (32) for Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss,
/// HMAC-SHA1 (20) for the deprecated Basic128Rsa15 and Basic256, 0 for None; `None` for a URI
/// this parser does not know.
pub fn signature_len(policy_uri: &str) -> Option<usize> {
    match policy_uri.strip_prefix(SECURITY_POLICY_PREFIX)? {
        "None" => Some(0),
        "Basic128Rsa15" | "Basic256" => Some(20),
        "Basic256Sha256" | "Aes128_Sha256_RsaOaep" | "Aes256_Sha256_RsaPss" => Some(32),
        _ => None,
    }
}

fn buffer_fields(values: [u32; 5]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// Appends a String; a length beyond Int32 cannot occur for the bounded strings we send, and
/// would be written as the largest one.
fn put_string(out: &mut Vec<u8>, value: &str) {
    let length = i32::try_from(value.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// One final chunk of a connection protocol message around `body`.
fn chunk(message_type: MessageType, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    out.extend_from_slice(&message_type.as_bytes());
    out.push(ChunkType::Final.as_byte());
    out.extend_from_slice(&chunk_size(body.len()).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub(super) fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    text.get(..end).unwrap_or_default()
}

fn chunk_size(body_len: usize) -> u32 {
    u32::try_from(HEADER_LEN.saturating_add(body_len)).unwrap_or(u32::MAX)
}

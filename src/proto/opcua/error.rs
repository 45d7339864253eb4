//! Why bytes are not a valid OPC UA chunk, message or request ([`OpcUaError`]), with the status
//! code and the audit tag of each reason, and how errors quote what they saw.

use std::fmt;

use super::*;

/// Why bytes are not a valid OPC UA chunk, message or request. Every variant reads on its own
/// in an audit event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpcUaError {
    #[error(
        "message type {} is not HEL, ACK, ERR, RHE, OPN, MSG or CLO",
        Ascii(found)
    )]
    MessageType { found: [u8; 3] },
    #[error(
        "{message_type}: chunk type {} is not allowed (only MSG may be 'C' or 'A', everything is 'F')",
        Ascii(&[*found])
    )]
    ChunkType {
        message_type: MessageType,
        found: u8,
    },
    #[error("{message_type}: chunk size {size} is below the {min} bytes its fixed fields take")]
    ChunkTooSmall {
        message_type: MessageType,
        size: u32,
        min: u32,
    },
    #[error("{message_type}: chunk size {size} is above {max}")]
    ChunkTooLarge {
        message_type: MessageType,
        size: u32,
        max: u32,
    },
    #[error("{message_type}: {field} needs {needed} bytes but the chunk leaves {remaining}")]
    Truncated {
        message_type: MessageType,
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    #[error("{message_type}: {extra} bytes after the last field")]
    TrailingBytes {
        message_type: MessageType,
        extra: usize,
    },
    #[error("{field}: length {length} is negative (only -1, null, is allowed)")]
    NegativeLength { field: &'static str, length: i32 },
    #[error("{field}: {length} bytes is above the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        length: usize,
        max: usize,
    },
    #[error("{field} is not valid UTF-8")]
    Utf8 { field: &'static str },
    #[error("{field} is null or empty")]
    NullField { field: &'static str },
    #[error("{field} {size} is below the minimum buffer size {MIN_CHUNK_SIZE}")]
    BufferSize { field: &'static str, size: u32 },
    #[error("the sequence header needs {SEQUENCE_HEADER_LEN} bytes but {remaining} are left")]
    SequenceHeader { remaining: usize },
    #[error(
        "message type {} has no sequence number to set (only MSG and CLO)",
        Ascii(found)
    )]
    NotSymmetric { found: [u8; 3] },
    #[error("request {request_id}: more than {max} chunks")]
    TooManyChunks { request_id: u32, max: usize },
    #[error("request {request_id}: message of {size} bytes is above {max}")]
    MessageTooLarge {
        request_id: u32,
        size: usize,
        max: usize,
    },
    #[error("request {request_id}: more than {max} messages being reassembled at once")]
    TooManyPartialMessages { request_id: u32, max: usize },
    #[error("type id {type_id} is not a numeric id in namespace 0 of this server")]
    TypeId { type_id: String },
    #[error("{service}: nesting uses more than {MAX_DECODE_STACK} bytes of stack at byte {offset}")]
    Nesting { service: Service, offset: usize },
    #[error("{service}: cannot decode at byte {offset}: {reason}")]
    Decode {
        service: Service,
        offset: usize,
        reason: String,
    },
    #[error("{service}: {extra} bytes after the end of the request")]
    ServiceTrailingBytes { service: Service, extra: usize },
    /// The decoded request does not encode back to the message: from `offset` on, the message
    /// says something in a form a reader may take otherwise than the decoder did.
    #[error(
        "{service}: not in canonical form from byte {offset} (decoding and encoding it again gives other bytes)"
    )]
    RoundTrip { service: Service, offset: usize },
}

impl OpcUaError {
    /// A short stable tag per variant, for audit events and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            OpcUaError::MessageType { .. } => "message_type",
            OpcUaError::ChunkType { .. } => "chunk_type",
            OpcUaError::ChunkTooSmall { .. } => "chunk_too_small",
            OpcUaError::ChunkTooLarge { .. } => "chunk_too_large",
            OpcUaError::Truncated { .. } => "truncated",
            OpcUaError::TrailingBytes { .. } => "trailing_bytes",
            OpcUaError::NegativeLength { .. } => "negative_length",
            OpcUaError::FieldTooLong { .. } => "field_too_long",
            OpcUaError::Utf8 { .. } => "utf8",
            OpcUaError::NullField { .. } => "null_field",
            OpcUaError::BufferSize { .. } => "buffer_size",
            OpcUaError::SequenceHeader { .. } => "sequence_header",
            OpcUaError::NotSymmetric { .. } => "not_symmetric",
            OpcUaError::TooManyChunks { .. } => "too_many_chunks",
            OpcUaError::MessageTooLarge { .. } => "message_too_large",
            OpcUaError::TooManyPartialMessages { .. } => "too_many_partial_messages",
            OpcUaError::TypeId { .. } => "type_id",
            OpcUaError::Nesting { .. } => "nesting",
            OpcUaError::Decode { .. } => "decode",
            OpcUaError::ServiceTrailingBytes { .. } => "service_trailing_bytes",
            OpcUaError::RoundTrip { .. } => "round_trip",
        }
    }

    /// The service whose request did not decode, when its type id named one this decoder
    /// knows: the message was plaintext, so it was malformed rather than encrypted.
    pub fn known_service(&self) -> Option<Service> {
        match self {
            OpcUaError::Nesting { service, .. }
            | OpcUaError::Decode { service, .. }
            | OpcUaError::ServiceTrailingBytes { service, .. }
            | OpcUaError::RoundTrip { service, .. } => {
                Some(*service).filter(|s| *s != Service::Unknown)
            }
            _ => None,
        }
    }

    /// The status code an ERR or ServiceFault about this error carries.
    pub fn status(&self) -> u32 {
        match self {
            OpcUaError::MessageType { .. }
            | OpcUaError::ChunkType { .. }
            | OpcUaError::NotSymmetric { .. } => STATUS_BAD_TCP_MESSAGE_TYPE_INVALID,
            OpcUaError::ChunkTooLarge { .. }
            | OpcUaError::TooManyChunks { .. }
            | OpcUaError::MessageTooLarge { .. } => STATUS_BAD_TCP_MESSAGE_TOO_LARGE,
            OpcUaError::TooManyPartialMessages { .. } => STATUS_BAD_COMMUNICATION_ERROR,
            _ => STATUS_BAD_DECODING_ERROR,
        }
    }
}

/// Bytes for messages: printable ASCII as is, anything else as \xNN.
struct Ascii<'a>(&'a [u8]);

impl fmt::Display for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "\\x{b:02X}")?;
            }
        }
        f.write_str("\"")
    }
}

/// Text in an error that may quote the message (a string NodeId can be megabytes), cut so that
/// an audit event stays short.
pub(super) fn clip(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    format!("{}...", cut(text, MAX_ERROR_TEXT))
}

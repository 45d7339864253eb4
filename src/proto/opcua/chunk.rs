//! Chunks as they arrive (OPC 10000-6 7.1.2, 6.7.2): the message header, judged as soon as its
//! 8 bytes are in, and the fields of HEL, ACK, ERR, RHE, OPN, MSG and CLO once the chunk is whole;
//! sequence headers and sequence numbers.

use std::fmt;

use super::*;

/// The three-letter message type of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// HEL: the client opens the connection (7.1.2.3).
    Hello,
    /// ACK: the server's answer to HEL (7.1.2.4).
    Acknowledge,
    /// ERR: a fatal error, then the sender closes the socket (7.1.2.5).
    Error,
    /// RHE: a server that opened the socket asks the client to send HEL (7.1.2.6).
    ReverseHello,
    /// OPN: OpenSecureChannel request or response (6.7.2.3, asymmetric security header).
    OpenChannel,
    /// MSG: a service request or response (6.7.2.2, symmetric security header).
    Message,
    /// CLO: CloseSecureChannel request (symmetric security header).
    CloseChannel,
}

impl MessageType {
    /// Every message type, in the order of the spec.
    pub const ALL: [MessageType; 7] = [
        MessageType::Hello,
        MessageType::Acknowledge,
        MessageType::Error,
        MessageType::ReverseHello,
        MessageType::OpenChannel,
        MessageType::Message,
        MessageType::CloseChannel,
    ];

    /// "HEL", "ACK", "ERR", "RHE", "OPN", "MSG", "CLO".
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Hello => "HEL",
            MessageType::Acknowledge => "ACK",
            MessageType::Error => "ERR",
            MessageType::ReverseHello => "RHE",
            MessageType::OpenChannel => "OPN",
            MessageType::Message => "MSG",
            MessageType::CloseChannel => "CLO",
        }
    }

    /// The three bytes on the wire.
    pub fn as_bytes(self) -> [u8; 3] {
        match self {
            MessageType::Hello => *b"HEL",
            MessageType::Acknowledge => *b"ACK",
            MessageType::Error => *b"ERR",
            MessageType::ReverseHello => *b"RHE",
            MessageType::OpenChannel => *b"OPN",
            MessageType::Message => *b"MSG",
            MessageType::CloseChannel => *b"CLO",
        }
    }

    pub fn from_bytes(bytes: [u8; 3]) -> Option<MessageType> {
        MessageType::ALL
            .into_iter()
            .find(|message_type| message_type.as_bytes() == bytes)
    }

    /// Smallest and largest chunk of this type that its fields allow: HEL, ACK, ERR and RHE have
    /// fixed fields and strings of bounded length; OPN, MSG and CLO need their security header
    /// and a sequence header (which is encrypted with the body, but there all the same).
    fn size_range(self) -> (usize, usize) {
        let string = |max: usize| LENGTH_PREFIX_LEN.saturating_add(max);
        let fixed = |len: usize| HEADER_LEN.saturating_add(len);
        match self {
            MessageType::Hello => (
                fixed(BUFFER_FIELDS_LEN + LENGTH_PREFIX_LEN),
                fixed(BUFFER_FIELDS_LEN.saturating_add(string(MAX_ENDPOINT_URL_LEN))),
            ),
            MessageType::Acknowledge => (fixed(BUFFER_FIELDS_LEN), fixed(BUFFER_FIELDS_LEN)),
            MessageType::Error => (
                fixed(4 + LENGTH_PREFIX_LEN),
                fixed(4_usize.saturating_add(string(MAX_REASON_LEN))),
            ),
            MessageType::ReverseHello => (
                fixed(2 * LENGTH_PREFIX_LEN),
                fixed(string(MAX_ENDPOINT_URL_LEN).saturating_mul(2)),
            ),
            // SecureChannelId, SecurityPolicyUri, SenderCertificate, ReceiverCertificateThumbprint.
            MessageType::OpenChannel => (
                fixed(4 + 3 * LENGTH_PREFIX_LEN + SEQUENCE_HEADER_LEN),
                usize::MAX,
            ),
            // SecureChannelId, TokenId.
            MessageType::Message | MessageType::CloseChannel => {
                (fixed(4 + 4 + SEQUENCE_HEADER_LEN), usize::MAX)
            }
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chunk type byte (6.7.2.2): only MSG may be intermediate or abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChunkType {
    /// 'F': the final (or only) chunk of a message.
    Final,
    /// 'C': an intermediate chunk; more follow.
    Intermediate,
    /// 'A': the sender gave up on the message; the body is Error (UInt32) and Reason (String).
    Abort,
}

impl ChunkType {
    pub fn as_byte(self) -> u8 {
        match self {
            ChunkType::Final => b'F',
            ChunkType::Intermediate => b'C',
            ChunkType::Abort => b'A',
        }
    }

    pub fn from_byte(byte: u8) -> Option<ChunkType> {
        match byte {
            b'F' => Some(ChunkType::Final),
            b'C' => Some(ChunkType::Intermediate),
            b'A' => Some(ChunkType::Abort),
            _ => None,
        }
    }
}

/// The message header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub message_type: MessageType,
    pub chunk_type: ChunkType,
    /// The whole chunk, these 8 header bytes included.
    pub size: u32,
}

/// Checks the 8-byte message header as soon as it is in (7.1.2.2, 6.7.2.2).
///
/// Refuses an unknown message type; a chunk type other than 'F' for anything but MSG; a size
/// below what the message type's fixed fields take, or above what its bounded fields allow; and
/// a size above `max_size` (itself capped at [`MAX_CHUNK_SIZE`]). `Ok(None)` until 8 bytes are
/// there.
pub fn parse_header(buf: &[u8], max_size: u32) -> Result<Option<ChunkHeader>, OpcUaError> {
    let Some((raw, _)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let [m0, m1, m2, chunk, s0, s1, s2, s3] = *raw;
    let found = [m0, m1, m2];
    let message_type = MessageType::from_bytes(found).ok_or(OpcUaError::MessageType { found })?;
    let chunk_type = ChunkType::from_byte(chunk)
        .filter(|&chunk_type| {
            chunk_type == ChunkType::Final || message_type == MessageType::Message
        })
        .ok_or(OpcUaError::ChunkType {
            message_type,
            found: chunk,
        })?;
    let size = u32::from_le_bytes([s0, s1, s2, s3]);
    let (min, type_max) = message_type.size_range();
    let min = u32::try_from(min).unwrap_or(u32::MAX);
    if size < min {
        return Err(OpcUaError::ChunkTooSmall {
            message_type,
            size,
            min,
        });
    }
    let max = u32::try_from(type_max)
        .unwrap_or(u32::MAX)
        .min(max_size)
        .min(MAX_CHUNK_SIZE);
    if size > max {
        return Err(OpcUaError::ChunkTooLarge {
            message_type,
            size,
            max,
        });
    }
    Ok(Some(ChunkHeader {
        message_type,
        chunk_type,
        size,
    }))
}

/// Parses one whole chunk from the front of `buf`; returns it and the bytes it used
/// (`header.size`).
///
/// Header errors come as soon as the header is in; the fields after it are judged once the whole
/// chunk is (it is at most [`MAX_CHUNK_SIZE`]). Strings must be valid UTF-8 and within their
/// limits, lengths -1 (null) or positive, and HEL, ACK, ERR and RHE must end with their last
/// field.
pub fn parse_chunk(buf: &[u8], max_size: u32) -> Result<Option<(Chunk<'_>, usize)>, OpcUaError> {
    let Some(header) = parse_header(buf, max_size)? else {
        return Ok(None);
    };
    // u32 always fits a usize on the targets zonegate runs on; if it did not, the chunk could
    // not be held anyway.
    let Ok(size) = usize::try_from(header.size) else {
        return Err(OpcUaError::ChunkTooLarge {
            message_type: header.message_type,
            size: header.size,
            max: MAX_CHUNK_SIZE,
        });
    };
    let Some(bytes) = buf.get(..size) else {
        return Ok(None);
    };
    let mut fields = Fields {
        message_type: header.message_type,
        rest: bytes.get(HEADER_LEN..).unwrap_or_default(),
    };
    let body = match header.message_type {
        MessageType::Hello => {
            let (protocol_version, receive_buffer_size, send_buffer_size) =
                buffer_sizes(&mut fields)?;
            let hello = Hello {
                protocol_version,
                receive_buffer_size,
                send_buffer_size,
                max_message_size: fields.u32("MaxMessageSize")?,
                max_chunk_count: fields.u32("MaxChunkCount")?,
                endpoint_url: fields
                    .string("EndpointUrl", MAX_ENDPOINT_URL_LEN)?
                    .unwrap_or_default(),
            };
            fields.finish()?;
            ChunkBody::Hello(hello)
        }
        MessageType::Acknowledge => {
            let (protocol_version, receive_buffer_size, send_buffer_size) =
                buffer_sizes(&mut fields)?;
            let acknowledge = Acknowledge {
                protocol_version,
                receive_buffer_size,
                send_buffer_size,
                max_message_size: fields.u32("MaxMessageSize")?,
                max_chunk_count: fields.u32("MaxChunkCount")?,
            };
            fields.finish()?;
            ChunkBody::Acknowledge(acknowledge)
        }
        MessageType::Error => {
            let error = ErrorMessage {
                error: fields.u32("Error")?,
                reason: fields.string("Reason", MAX_REASON_LEN)?.unwrap_or_default(),
            };
            fields.finish()?;
            ChunkBody::Error(error)
        }
        MessageType::ReverseHello => {
            let reverse_hello = ReverseHello {
                server_uri: fields
                    .string("ServerUri", MAX_ENDPOINT_URL_LEN)?
                    .unwrap_or_default(),
                endpoint_url: fields
                    .string("EndpointUrl", MAX_ENDPOINT_URL_LEN)?
                    .unwrap_or_default(),
            };
            fields.finish()?;
            ChunkBody::ReverseHello(reverse_hello)
        }
        MessageType::OpenChannel => {
            let secure_channel_id = fields.u32("SecureChannelId")?;
            let security_policy_uri = fields
                .string("SecurityPolicyUri", MAX_SECURITY_POLICY_URI_LEN)?
                .filter(|uri| !uri.is_empty())
                .ok_or(OpcUaError::NullField {
                    field: "SecurityPolicyUri",
                })?;
            ChunkBody::Open(OpenHeader {
                secure_channel_id,
                security_policy_uri,
                sender_certificate: fields.byte_string("SenderCertificate", MAX_CERTIFICATE_LEN)?,
                receiver_thumbprint: fields
                    .byte_string("ReceiverCertificateThumbprint", MAX_THUMBPRINT_LEN)?,
                rest: fields.rest,
            })
        }
        MessageType::Message | MessageType::CloseChannel => {
            let header = SymmetricHeader {
                secure_channel_id: fields.u32("SecureChannelId")?,
                token_id: fields.u32("TokenId")?,
                rest: fields.rest,
            };
            if fields.message_type == MessageType::Message {
                ChunkBody::Message(header)
            } else {
                ChunkBody::Close(header)
            }
        }
    };
    Ok(Some((
        Chunk {
            header,
            bytes,
            body,
        },
        size,
    )))
}

/// A complete chunk borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub header: ChunkHeader,
    /// The whole chunk, header included, exactly as on the wire.
    pub bytes: &'a [u8],
    pub body: ChunkBody<'a>,
}

/// What follows the message header, by message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkBody<'a> {
    Hello(Hello<'a>),
    Acknowledge(Acknowledge),
    Error(ErrorMessage<'a>),
    ReverseHello(ReverseHello<'a>),
    Open(OpenHeader<'a>),
    Message(SymmetricHeader<'a>),
    Close(SymmetricHeader<'a>),
}

/// HEL (7.1.2.3). A null EndpointUrl reads as "".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// 0 today; other versions parse (the server answers them).
    pub protocol_version: u32,
    /// At least [`MIN_CHUNK_SIZE`].
    pub receive_buffer_size: u32,
    /// At least [`MIN_CHUNK_SIZE`].
    pub send_buffer_size: u32,
    /// 0: no limit.
    pub max_message_size: u32,
    /// 0: no limit.
    pub max_chunk_count: u32,
    pub endpoint_url: &'a str,
}

/// ACK (7.1.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledge {
    pub protocol_version: u32,
    /// At least [`MIN_CHUNK_SIZE`].
    pub receive_buffer_size: u32,
    /// At least [`MIN_CHUNK_SIZE`].
    pub send_buffer_size: u32,
    /// 0: no limit.
    pub max_message_size: u32,
    /// 0: no limit.
    pub max_chunk_count: u32,
}

/// ERR (7.1.2.5). A null Reason reads as "".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorMessage<'a> {
    /// A status code.
    pub error: u32,
    pub reason: &'a str,
}

/// RHE (7.1.2.6). Null strings read as "".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReverseHello<'a> {
    pub server_uri: &'a str,
    pub endpoint_url: &'a str,
}

/// OPN: SecureChannelId, then the asymmetric security header (6.7.2.3); `rest` is everything
/// after it (sequence header + body, possibly followed by padding and signature; encrypted unless
/// the policy is None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenHeader<'a> {
    pub secure_channel_id: u32,
    /// Never empty.
    pub security_policy_uri: &'a str,
    /// `None` when null on the wire.
    pub sender_certificate: Option<&'a [u8]>,
    /// `None` when null on the wire (the chunk is not encrypted).
    pub receiver_thumbprint: Option<&'a [u8]>,
    pub rest: &'a [u8],
}

impl OpenHeader<'_> {
    /// SecurityPolicy None: `rest` is the plaintext sequence header and body.
    pub fn is_security_none(&self) -> bool {
        self.security_policy_uri == SECURITY_POLICY_NONE
    }
}

/// MSG and CLO: SecureChannelId, TokenId (6.7.2.2); `rest` = after the symmetric security
/// header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricHeader<'a> {
    pub secure_channel_id: u32,
    pub token_id: u32,
    pub rest: &'a [u8],
}

/// The sequence header that starts the (possibly encrypted) part of OPN, MSG and CLO chunks
/// (6.7.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceHeader {
    pub sequence_number: u32,
    /// The same for every chunk of one message; a response carries its request's.
    pub request_id: u32,
}

/// Splits the 8-byte sequence header off `rest` (for plaintext chunks: SecurityPolicy None, or
/// Sign mode).
pub fn parse_sequence_header(rest: &[u8]) -> Result<(SequenceHeader, &[u8]), OpcUaError> {
    let Some((raw, body)) = rest.split_first_chunk::<SEQUENCE_HEADER_LEN>() else {
        return Err(OpcUaError::SequenceHeader {
            remaining: rest.len(),
        });
    };
    let [n0, n1, n2, n3, r0, r1, r2, r3] = *raw;
    Ok((
        SequenceHeader {
            sequence_number: u32::from_le_bytes([n0, n1, n2, n3]),
            request_id: u32::from_le_bytes([r0, r1, r2, r3]),
        },
        body,
    ))
}

/// Rewrites the sequence number of a plaintext MSG/CLO chunk in place (at
/// [`SYMMETRIC_SEQUENCE_OFFSET`]); Err if the chunk is too short or not MSG or CLO.
pub fn set_sequence_number(chunk: &mut [u8], sequence_number: u32) -> Result<(), OpcUaError> {
    let found = chunk
        .first_chunk::<3>()
        .copied()
        .ok_or(OpcUaError::SequenceHeader { remaining: 0 })?;
    if !matches!(
        MessageType::from_bytes(found),
        Some(MessageType::Message | MessageType::CloseChannel)
    ) {
        return Err(OpcUaError::NotSymmetric { found });
    }
    let remaining = chunk.len().saturating_sub(SYMMETRIC_SEQUENCE_OFFSET);
    let field = chunk
        .get_mut(SYMMETRIC_SEQUENCE_OFFSET..SEQUENCE_NUMBER_END)
        .ok_or(OpcUaError::SequenceHeader { remaining })?;
    field.copy_from_slice(&sequence_number.to_le_bytes());
    Ok(())
}

/// Next sequence number after `n` (6.7.2.4): numbers increase by one and "shall not wrap around
/// until [they are] greater than 4 294 966 271 (UInt32.MaxValue – 1 024)"; "the first number
/// after the wrap around shall be less than 1 024". So 4 294 966 272 is still used, and any
/// number above [`SEQUENCE_NUMBER_WRAP_LIMIT`] is followed by 1.
pub fn next_sequence_number(n: u32) -> u32 {
    if n > SEQUENCE_NUMBER_WRAP_LIMIT {
        1
    } else {
        n.saturating_add(1)
    }
}

/// Reads the fields after the message header of one complete chunk.
struct Fields<'a> {
    message_type: MessageType,
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, needed: usize, field: &'static str) -> Result<&'a [u8], OpcUaError> {
        let (head, rest) = self
            .rest
            .split_at_checked(needed)
            .ok_or(OpcUaError::Truncated {
                message_type: self.message_type,
                field,
                needed,
                remaining: self.rest.len(),
            })?;
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, OpcUaError> {
        let bytes = self.take(4, field)?;
        let raw = bytes.first_chunk::<4>().copied().unwrap_or_default();
        Ok(u32::from_le_bytes(raw))
    }

    /// A ByteString (Part 6 5.2.2.7): Int32 length, -1 for null, then the bytes.
    fn byte_string(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Option<&'a [u8]>, OpcUaError> {
        let length = self.u32(field)?.cast_signed();
        if length == -1 {
            return Ok(None);
        }
        let length =
            usize::try_from(length).map_err(|_| OpcUaError::NegativeLength { field, length })?;
        if length > max {
            return Err(OpcUaError::FieldTooLong { field, length, max });
        }
        self.take(length, field).map(Some)
    }

    /// A String (Part 6 5.2.2.4): a ByteString holding UTF-8.
    fn string(&mut self, field: &'static str, max: usize) -> Result<Option<&'a str>, OpcUaError> {
        self.byte_string(field, max)?
            .map(|bytes| std::str::from_utf8(bytes).map_err(|_| OpcUaError::Utf8 { field }))
            .transpose()
    }

    fn finish(&self) -> Result<(), OpcUaError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(OpcUaError::TrailingBytes {
                message_type: self.message_type,
                extra: self.rest.len(),
            })
        }
    }
}

/// ProtocolVersion, ReceiveBufferSize, SendBufferSize of HEL and ACK; both buffers "shall be at
/// least 8 192 bytes" (7.1.2.3, 7.1.2.4).
fn buffer_sizes(fields: &mut Fields<'_>) -> Result<(u32, u32, u32), OpcUaError> {
    let protocol_version = fields.u32("ProtocolVersion")?;
    let mut sizes = [0; 2];
    for (size, field) in sizes
        .iter_mut()
        .zip(["ReceiveBufferSize", "SendBufferSize"])
    {
        *size = fields.u32(field)?;
        if *size < MIN_CHUNK_SIZE {
            return Err(OpcUaError::BufferSize { field, size: *size });
        }
    }
    let [receive, send] = sizes;
    Ok((protocol_version, receive, send))
}

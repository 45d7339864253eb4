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

use std::fmt;
use std::io::Read;
use std::sync::LazyLock;

use opcua_types::{
    ActivateSessionRequest, AddNodesRequest, AddReferencesRequest, AnonymousIdentityToken,
    BinaryDecodable, BinaryEncodable, BrowseNextRequest, BrowseRequest, ByteString, ByteStringBody,
    CallRequest, CancelRequest, CloseSecureChannelRequest, CloseSessionRequest, Context,
    CreateMonitoredItemsRequest, CreateSessionRequest, CreateSubscriptionRequest, DataTypeId,
    DecodingOptions, DeleteMonitoredItemsRequest, DeleteNodesRequest, DeleteReferencesRequest,
    DeleteSubscriptionsRequest, DepthGauge, DynEncodable, EncodingResult, ExpandedNodeId,
    ExtensionObject, FindServersOnNetworkRequest, FindServersRequest, GeneratedTypeLoader,
    GetEndpointsRequest, HistoryReadRequest, HistoryUpdateRequest, IssuedIdentityToken,
    ModifyMonitoredItemsRequest, ModifySubscriptionRequest, NamespaceMap, NodeId, ObjectId,
    OpenSecureChannelRequest, PublishRequest, QueryFirstRequest, QueryNextRequest, ReadRequest,
    RegisterNodesRequest, RegisterNodesResponse, RegisterServer2Request, RegisterServerRequest,
    RepublishRequest, RequestHeader, SetMonitoringModeRequest, SetPublishingModeRequest,
    SetTriggeringRequest, TransferSubscriptionsRequest, TranslateBrowsePathsToNodeIdsRequest,
    TypeLoader, TypeLoaderCollection, TypeLoaderPriority, UnregisterNodesRequest,
    UserNameIdentityToken, WriteRequest, X509IdentityToken,
};

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

/// Reassembles the chunks of messages per request id (MSG chunks 'C' ... 'F'; 'A' aborts,
/// 6.7.2.2). Bounded by the chunk count, the message size and [`MAX_PARTIAL_MESSAGES`];
/// exceeding any is an error (the proxy then closes the connection). After an error the request
/// id's chunks so far are gone.
#[derive(Debug)]
pub struct Reassembler {
    partial: Vec<Partial>,
    max_chunk_count: usize,
    max_message_size: usize,
}

#[derive(Debug)]
struct Partial {
    request_id: u32,
    chunks: usize,
    body: Vec<u8>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::with_limits(MAX_CHUNK_COUNT, MAX_MESSAGE_SIZE)
    }
}

impl Reassembler {
    /// With the limits a HEL/ACK negotiated (0: no limit of the peer's), never above
    /// [`MAX_CHUNK_COUNT`] and [`MAX_MESSAGE_SIZE`].
    pub fn with_limits(max_chunk_count: usize, max_message_size: usize) -> Self {
        let cap = |value: usize, ours: usize| if value == 0 { ours } else { value.min(ours) };
        Reassembler {
            partial: Vec::new(),
            max_chunk_count: cap(max_chunk_count, MAX_CHUNK_COUNT),
            max_message_size: cap(max_message_size, MAX_MESSAGE_SIZE),
        }
    }

    /// `body` is the chunk's bytes after the sequence header (with any signature already removed
    /// by the caller). Returns the whole message body on the final chunk, `None` for an
    /// intermediate chunk or an abort ('A' discards what was collected for that request id).
    pub fn push(
        &mut self,
        request_id: u32,
        chunk_type: ChunkType,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, OpcUaError> {
        let index = self
            .partial
            .iter()
            .position(|partial| partial.request_id == request_id);
        if chunk_type == ChunkType::Abort {
            if let Some(index) = index {
                self.partial.swap_remove(index);
            }
            return Ok(None);
        }
        let (chunks, size) = index
            .and_then(|index| self.partial.get(index))
            .map_or((0, 0), |partial| (partial.chunks, partial.body.len()));
        let chunks = chunks.saturating_add(1);
        let size = size.saturating_add(body.len());
        let error = if chunks > self.max_chunk_count {
            Some(OpcUaError::TooManyChunks {
                request_id,
                max: self.max_chunk_count,
            })
        } else if size > self.max_message_size {
            Some(OpcUaError::MessageTooLarge {
                request_id,
                size,
                max: self.max_message_size,
            })
        } else if index.is_none()
            && chunk_type == ChunkType::Intermediate
            && self.partial.len() >= MAX_PARTIAL_MESSAGES
        {
            Some(OpcUaError::TooManyPartialMessages {
                request_id,
                max: MAX_PARTIAL_MESSAGES,
            })
        } else {
            None
        };
        if let Some(error) = error {
            if let Some(index) = index {
                self.partial.swap_remove(index);
            }
            return Err(error);
        }
        match (chunk_type, index) {
            (ChunkType::Final, None) => Ok(Some(body.to_vec())),
            (ChunkType::Final, Some(index)) => {
                let mut partial = self.partial.swap_remove(index);
                partial.body.extend_from_slice(body);
                Ok(Some(partial.body))
            }
            (_, Some(index)) => {
                if let Some(partial) = self.partial.get_mut(index) {
                    partial.chunks = chunks;
                    partial.body.extend_from_slice(body);
                }
                Ok(None)
            }
            (_, None) => {
                self.partial.push(Partial {
                    request_id,
                    chunks,
                    body: body.to_vec(),
                });
                Ok(None)
            }
        }
    }

    /// Messages being collected.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// A decoded service request: the reassembled body of a plaintext MSG (or OPN, CLO), which is
/// the NodeId of the request's binary encoding, then the request (Part 6 5.2.9, 6.7.2.2).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRequest {
    /// Numeric id of the encoding node, namespace 0 (e.g. 673 WriteRequest_Encoding_DefaultBinary).
    pub type_id: u32,
    pub service: Service,
    /// From the RequestHeader; the response (or a ServiceFault) must carry it back.
    pub request_handle: u32,
    pub request: DecodedRequest,
}

/// The services of Part 4, by request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Read,
    Write,
    Call,
    Browse,
    BrowseNext,
    TranslateBrowsePathsToNodeIds,
    RegisterNodes,
    UnregisterNodes,
    CreateSession,
    ActivateSession,
    CloseSession,
    Cancel,
    CreateSubscription,
    ModifySubscription,
    SetPublishingMode,
    DeleteSubscriptions,
    TransferSubscriptions,
    Republish,
    Publish,
    CreateMonitoredItems,
    ModifyMonitoredItems,
    SetMonitoringMode,
    SetTriggering,
    DeleteMonitoredItems,
    HistoryRead,
    HistoryUpdate,
    AddNodes,
    AddReferences,
    DeleteNodes,
    DeleteReferences,
    QueryFirst,
    QueryNext,
    GetEndpoints,
    FindServers,
    FindServersOnNetwork,
    RegisterServer,
    RegisterServer2,
    OpenSecureChannel,
    CloseSecureChannel,
    /// A type id that is not one of the requests above.
    Unknown,
}

impl Service {
    /// Every known service (not [`Service::Unknown`]).
    pub const ALL: [Service; 39] = [
        Service::Read,
        Service::Write,
        Service::Call,
        Service::Browse,
        Service::BrowseNext,
        Service::TranslateBrowsePathsToNodeIds,
        Service::RegisterNodes,
        Service::UnregisterNodes,
        Service::CreateSession,
        Service::ActivateSession,
        Service::CloseSession,
        Service::Cancel,
        Service::CreateSubscription,
        Service::ModifySubscription,
        Service::SetPublishingMode,
        Service::DeleteSubscriptions,
        Service::TransferSubscriptions,
        Service::Republish,
        Service::Publish,
        Service::CreateMonitoredItems,
        Service::ModifyMonitoredItems,
        Service::SetMonitoringMode,
        Service::SetTriggering,
        Service::DeleteMonitoredItems,
        Service::HistoryRead,
        Service::HistoryUpdate,
        Service::AddNodes,
        Service::AddReferences,
        Service::DeleteNodes,
        Service::DeleteReferences,
        Service::QueryFirst,
        Service::QueryNext,
        Service::GetEndpoints,
        Service::FindServers,
        Service::FindServersOnNetwork,
        Service::RegisterServer,
        Service::RegisterServer2,
        Service::OpenSecureChannel,
        Service::CloseSecureChannel,
    ];

    /// A stable snake_case name for policy input, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::Read => "read",
            Service::Write => "write",
            Service::Call => "call",
            Service::Browse => "browse",
            Service::BrowseNext => "browse_next",
            Service::TranslateBrowsePathsToNodeIds => "translate_browse_paths_to_node_ids",
            Service::RegisterNodes => "register_nodes",
            Service::UnregisterNodes => "unregister_nodes",
            Service::CreateSession => "create_session",
            Service::ActivateSession => "activate_session",
            Service::CloseSession => "close_session",
            Service::Cancel => "cancel",
            Service::CreateSubscription => "create_subscription",
            Service::ModifySubscription => "modify_subscription",
            Service::SetPublishingMode => "set_publishing_mode",
            Service::DeleteSubscriptions => "delete_subscriptions",
            Service::TransferSubscriptions => "transfer_subscriptions",
            Service::Republish => "republish",
            Service::Publish => "publish",
            Service::CreateMonitoredItems => "create_monitored_items",
            Service::ModifyMonitoredItems => "modify_monitored_items",
            Service::SetMonitoringMode => "set_monitoring_mode",
            Service::SetTriggering => "set_triggering",
            Service::DeleteMonitoredItems => "delete_monitored_items",
            Service::HistoryRead => "history_read",
            Service::HistoryUpdate => "history_update",
            Service::AddNodes => "add_nodes",
            Service::AddReferences => "add_references",
            Service::DeleteNodes => "delete_nodes",
            Service::DeleteReferences => "delete_references",
            Service::QueryFirst => "query_first",
            Service::QueryNext => "query_next",
            Service::GetEndpoints => "get_endpoints",
            Service::FindServers => "find_servers",
            Service::FindServersOnNetwork => "find_servers_on_network",
            Service::RegisterServer => "register_server",
            Service::RegisterServer2 => "register_server2",
            Service::OpenSecureChannel => "open_secure_channel",
            Service::CloseSecureChannel => "close_secure_channel",
            Service::Unknown => "unknown",
        }
    }

    /// The service of a request's `*Request_Encoding_DefaultBinary` id (namespace 0).
    pub fn from_type_id(id: u32) -> Service {
        let Ok(object) = ObjectId::try_from(id) else {
            return Service::Unknown;
        };
        Service::ALL
            .into_iter()
            .find(|service| service.encoding_id() == Some(object))
            .unwrap_or(Service::Unknown)
    }

    /// The numeric id of the request's binary encoding; `None` for [`Service::Unknown`].
    pub fn type_id(self) -> Option<u32> {
        self.encoding_id().map(|id| id as u32)
    }

    fn encoding_id(self) -> Option<ObjectId> {
        use ObjectId as O;
        Some(match self {
            Service::Read => O::ReadRequest_Encoding_DefaultBinary,
            Service::Write => O::WriteRequest_Encoding_DefaultBinary,
            Service::Call => O::CallRequest_Encoding_DefaultBinary,
            Service::Browse => O::BrowseRequest_Encoding_DefaultBinary,
            Service::BrowseNext => O::BrowseNextRequest_Encoding_DefaultBinary,
            Service::TranslateBrowsePathsToNodeIds => {
                O::TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary
            }
            Service::RegisterNodes => O::RegisterNodesRequest_Encoding_DefaultBinary,
            Service::UnregisterNodes => O::UnregisterNodesRequest_Encoding_DefaultBinary,
            Service::CreateSession => O::CreateSessionRequest_Encoding_DefaultBinary,
            Service::ActivateSession => O::ActivateSessionRequest_Encoding_DefaultBinary,
            Service::CloseSession => O::CloseSessionRequest_Encoding_DefaultBinary,
            Service::Cancel => O::CancelRequest_Encoding_DefaultBinary,
            Service::CreateSubscription => O::CreateSubscriptionRequest_Encoding_DefaultBinary,
            Service::ModifySubscription => O::ModifySubscriptionRequest_Encoding_DefaultBinary,
            Service::SetPublishingMode => O::SetPublishingModeRequest_Encoding_DefaultBinary,
            Service::DeleteSubscriptions => O::DeleteSubscriptionsRequest_Encoding_DefaultBinary,
            Service::TransferSubscriptions => {
                O::TransferSubscriptionsRequest_Encoding_DefaultBinary
            }
            Service::Republish => O::RepublishRequest_Encoding_DefaultBinary,
            Service::Publish => O::PublishRequest_Encoding_DefaultBinary,
            Service::CreateMonitoredItems => O::CreateMonitoredItemsRequest_Encoding_DefaultBinary,
            Service::ModifyMonitoredItems => O::ModifyMonitoredItemsRequest_Encoding_DefaultBinary,
            Service::SetMonitoringMode => O::SetMonitoringModeRequest_Encoding_DefaultBinary,
            Service::SetTriggering => O::SetTriggeringRequest_Encoding_DefaultBinary,
            Service::DeleteMonitoredItems => O::DeleteMonitoredItemsRequest_Encoding_DefaultBinary,
            Service::HistoryRead => O::HistoryReadRequest_Encoding_DefaultBinary,
            Service::HistoryUpdate => O::HistoryUpdateRequest_Encoding_DefaultBinary,
            Service::AddNodes => O::AddNodesRequest_Encoding_DefaultBinary,
            Service::AddReferences => O::AddReferencesRequest_Encoding_DefaultBinary,
            Service::DeleteNodes => O::DeleteNodesRequest_Encoding_DefaultBinary,
            Service::DeleteReferences => O::DeleteReferencesRequest_Encoding_DefaultBinary,
            Service::QueryFirst => O::QueryFirstRequest_Encoding_DefaultBinary,
            Service::QueryNext => O::QueryNextRequest_Encoding_DefaultBinary,
            Service::GetEndpoints => O::GetEndpointsRequest_Encoding_DefaultBinary,
            Service::FindServers => O::FindServersRequest_Encoding_DefaultBinary,
            Service::FindServersOnNetwork => O::FindServersOnNetworkRequest_Encoding_DefaultBinary,
            Service::RegisterServer => O::RegisterServerRequest_Encoding_DefaultBinary,
            Service::RegisterServer2 => O::RegisterServer2Request_Encoding_DefaultBinary,
            Service::OpenSecureChannel => O::OpenSecureChannelRequest_Encoding_DefaultBinary,
            Service::CloseSecureChannel => O::CloseSecureChannelRequest_Encoding_DefaultBinary,
            Service::Unknown => return None,
        })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The request structure, for the services policy judges node by node.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedRequest {
    Read(ReadRequest),
    Write(WriteRequest),
    Call(CallRequest),
    Browse(BrowseRequest),
    CreateMonitoredItems(CreateMonitoredItemsRequest),
    /// Without the identity token's secrets: a UserNameIdentityToken's password and an
    /// IssuedIdentityToken's token data are null here.
    ActivateSession(ActivateSessionRequest),
    CreateSession(CreateSessionRequest),
    HistoryRead(HistoryReadRequest),
    HistoryUpdate(HistoryUpdateRequest),
    AddNodes(AddNodesRequest),
    DeleteNodes(DeleteNodesRequest),
    AddReferences(AddReferencesRequest),
    DeleteReferences(DeleteReferencesRequest),
    TranslateBrowsePaths(TranslateBrowsePathsToNodeIdsRequest),
    RegisterNodes(RegisterNodesRequest),
    /// Kept whole: the aliases it ends must be forgotten (see [`decode_register_nodes_response`]).
    UnregisterNodes(UnregisterNodesRequest),
    /// Every other service: not judged node by node. A known service's body was decoded whole
    /// (so it is well-formed) and then dropped; of an unknown one only the RequestHeader was
    /// decoded (enough for the request handle).
    Other,
}

impl DecodedRequest {
    /// Every NodeId of the request that names a node the service acts on, for the aliases a
    /// server gave at RegisterNodes to be resolved before the request is judged. Not those of
    /// RegisterNodes and UnregisterNodes themselves (the one names nodes, the other aliases).
    pub fn for_each_node_id(&mut self, mut f: impl FnMut(&mut NodeId)) {
        fn each<T>(list: &mut Option<Vec<T>>) -> std::slice::IterMut<'_, T> {
            list.as_deref_mut().unwrap_or_default().iter_mut()
        }
        match self {
            DecodedRequest::Read(r) => each(&mut r.nodes_to_read).for_each(|n| f(&mut n.node_id)),
            DecodedRequest::Write(r) => {
                each(&mut r.nodes_to_write).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::Call(r) => each(&mut r.methods_to_call).for_each(|c| {
                f(&mut c.object_id);
                f(&mut c.method_id);
            }),
            DecodedRequest::Browse(r) => {
                each(&mut r.nodes_to_browse).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::CreateMonitoredItems(r) => {
                each(&mut r.items_to_create).for_each(|m| f(&mut m.item_to_monitor.node_id))
            }
            DecodedRequest::HistoryRead(r) => {
                each(&mut r.nodes_to_read).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::TranslateBrowsePaths(r) => {
                each(&mut r.browse_paths).for_each(|p| f(&mut p.starting_node));
            }
            DecodedRequest::DeleteNodes(r) => {
                each(&mut r.nodes_to_delete).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::AddReferences(r) => {
                each(&mut r.references_to_add).for_each(|n| f(&mut n.source_node_id));
            }
            DecodedRequest::DeleteReferences(r) => {
                each(&mut r.references_to_delete).for_each(|n| f(&mut n.source_node_id));
            }
            DecodedRequest::ActivateSession(_)
            | DecodedRequest::CreateSession(_)
            | DecodedRequest::HistoryUpdate(_)
            | DecodedRequest::AddNodes(_)
            | DecodedRequest::RegisterNodes(_)
            | DecodedRequest::UnregisterNodes(_)
            | DecodedRequest::Other => {}
        }
    }
}

/// Decodes a reassembled plaintext request message body: the type id (an ExpandedNodeId, which
/// must be numeric, in namespace 0 and local), then the request.
///
/// A known request must decode whole, end where the message ends, and round-trip: encoding the
/// decoded type id and request again must give exactly the message's bytes. What the policy
/// judges is then all the message says, in the one form no reader can take differently: any
/// byte the decoder skipped, normalised or read another way than its encoding says (a
/// non-canonical NodeId, a Boolean other than 0 or 1, an ExtensionObject whose length does not
/// fit its body, an XML body, a DateTime out of range) is an [`OpcUaError::RoundTrip`]. An
/// unknown type id is `Ok` with [`Service::Unknown`] and [`DecodedRequest::Other`] once its
/// RequestHeader decodes, so that it can be answered; it is never forwarded (its body was not
/// judged).
///
/// Strings, ByteStrings and arrays are bounded by the message's own length (and
/// [`MAX_ARRAY_LENGTH`]), nesting by [`MAX_NESTING_DEPTH`] and [`MAX_DECODE_STACK`]. Errors,
/// never panics, on anything malformed.
pub fn decode_request(message: &[u8]) -> Result<ServiceRequest, OpcUaError> {
    let ctx = decoding_context(message.len());
    let mut reader = GuardedReader::new(message);
    let type_id: ExpandedNodeId = reader.decode(&ctx, Service::Unknown)?;
    let numeric = numeric_type_id(&type_id)?;
    let service = Service::from_type_id(numeric);

    // Decodes the request, checks that it ends with the message and round-trips, and keeps it
    // for policy (or only its request handle).
    macro_rules! decode {
        ($ty:ty) => {{
            let request: $ty = reader.decode(&ctx, service)?;
            reader.judged_whole(service, &type_id, &request, message)?;
            (request.request_header.request_handle, DecodedRequest::Other)
        }};
        ($ty:ty, $variant:path) => {{
            let request: $ty = reader.decode(&ctx, service)?;
            reader.judged_whole(service, &type_id, &request, message)?;
            (request.request_header.request_handle, $variant(request))
        }};
    }

    let (request_handle, request) = match service {
        Service::Read => decode!(ReadRequest, DecodedRequest::Read),
        Service::Write => decode!(WriteRequest, DecodedRequest::Write),
        Service::Call => decode!(CallRequest, DecodedRequest::Call),
        Service::Browse => decode!(BrowseRequest, DecodedRequest::Browse),
        Service::BrowseNext => decode!(BrowseNextRequest),
        Service::TranslateBrowsePathsToNodeIds => decode!(
            TranslateBrowsePathsToNodeIdsRequest,
            DecodedRequest::TranslateBrowsePaths
        ),
        Service::RegisterNodes => decode!(RegisterNodesRequest, DecodedRequest::RegisterNodes),
        Service::UnregisterNodes => {
            decode!(UnregisterNodesRequest, DecodedRequest::UnregisterNodes)
        }
        Service::CreateSession => decode!(CreateSessionRequest, DecodedRequest::CreateSession),
        Service::ActivateSession => {
            let mut request: ActivateSessionRequest = reader.decode(&ctx, service)?;
            reader.judged_whole(service, &type_id, &request, message)?;
            forget_secrets(&mut request);
            (
                request.request_header.request_handle,
                DecodedRequest::ActivateSession(request),
            )
        }
        Service::CloseSession => decode!(CloseSessionRequest),
        Service::Cancel => decode!(CancelRequest),
        Service::CreateSubscription => decode!(CreateSubscriptionRequest),
        Service::ModifySubscription => decode!(ModifySubscriptionRequest),
        Service::SetPublishingMode => decode!(SetPublishingModeRequest),
        Service::DeleteSubscriptions => decode!(DeleteSubscriptionsRequest),
        Service::TransferSubscriptions => decode!(TransferSubscriptionsRequest),
        Service::Republish => decode!(RepublishRequest),
        Service::Publish => decode!(PublishRequest),
        Service::CreateMonitoredItems => decode!(
            CreateMonitoredItemsRequest,
            DecodedRequest::CreateMonitoredItems
        ),
        Service::ModifyMonitoredItems => decode!(ModifyMonitoredItemsRequest),
        Service::SetMonitoringMode => decode!(SetMonitoringModeRequest),
        Service::SetTriggering => decode!(SetTriggeringRequest),
        Service::DeleteMonitoredItems => decode!(DeleteMonitoredItemsRequest),
        Service::HistoryRead => decode!(HistoryReadRequest, DecodedRequest::HistoryRead),
        Service::HistoryUpdate => decode!(HistoryUpdateRequest, DecodedRequest::HistoryUpdate),
        Service::AddNodes => decode!(AddNodesRequest, DecodedRequest::AddNodes),
        Service::AddReferences => decode!(AddReferencesRequest, DecodedRequest::AddReferences),
        Service::DeleteNodes => decode!(DeleteNodesRequest, DecodedRequest::DeleteNodes),
        Service::DeleteReferences => {
            decode!(DeleteReferencesRequest, DecodedRequest::DeleteReferences)
        }
        Service::QueryFirst => decode!(QueryFirstRequest),
        Service::QueryNext => decode!(QueryNextRequest),
        Service::GetEndpoints => decode!(GetEndpointsRequest),
        Service::FindServers => decode!(FindServersRequest),
        Service::FindServersOnNetwork => decode!(FindServersOnNetworkRequest),
        Service::RegisterServer => decode!(RegisterServerRequest),
        Service::RegisterServer2 => decode!(RegisterServer2Request),
        Service::OpenSecureChannel => decode!(OpenSecureChannelRequest),
        Service::CloseSecureChannel => decode!(CloseSecureChannelRequest),
        Service::Unknown => {
            // Enough to answer it; what follows the header is not ours to read.
            let header: RequestHeader = reader.decode(&ctx, service)?;
            (header.request_handle, DecodedRequest::Other)
        }
    };
    Ok(ServiceRequest {
        type_id: numeric,
        service,
        request_handle,
        request,
    })
}

/// The NodeIds a RegisterNodesResponse gives, in the order of the request's nodes (Part 4
/// 5.8.5): a server may answer a registered node with an alias that stands for it from then on
/// in every service of the session. `Ok(None)` for any other response (a ServiceFault).
pub fn decode_register_nodes_response(message: &[u8]) -> Result<Option<Vec<NodeId>>, OpcUaError> {
    let ctx = decoding_context(message.len());
    let mut reader = GuardedReader::new(message);
    let type_id: ExpandedNodeId = reader.decode(&ctx, Service::RegisterNodes)?;
    let response_id = ObjectId::RegisterNodesResponse_Encoding_DefaultBinary as u32;
    if numeric_type_id(&type_id).ok() != Some(response_id) {
        return Ok(None);
    }
    let response: RegisterNodesResponse = reader.decode(&ctx, Service::RegisterNodes)?;
    Ok(Some(response.registered_node_ids.unwrap_or_default()))
}

/// Where the encoding of a decoded message first differs from the message: the bytes the
/// encoder writes are compared as they come, so nothing is allocated.
///
/// One difference is no difference: a numeric NodeId in a longer form than it needs (Part 6
/// 5.2.2.9: the four-byte or the complete numeric form where the two-byte or four-byte one
/// fits). Each form is the same NodeId to every decoder, and real clients send them (the
/// open62541 captures' requests use the complete form throughout); the encoder writes the
/// shortest, so the message's form is compared with the shortest form of the same NodeId.
#[derive(Debug)]
struct SameBytes<'a> {
    /// What of the message is not matched yet.
    expected: &'a [u8],
    len: usize,
    /// The shortest form of the NodeId the message has in a longer one, not matched yet.
    alias: [u8; NUMERIC_NODE_ID_LEN],
    alias_left: std::ops::Range<usize>,
    /// Where that NodeId starts in the message.
    alias_at: usize,
    /// Offset in the message where the encoding first differs.
    differs_at: Option<usize>,
}

/// The complete numeric NodeId form: mask, UInt16 namespace, UInt32 identifier.
const NUMERIC_NODE_ID_LEN: usize = 7;

impl<'a> SameBytes<'a> {
    fn new(message: &'a [u8]) -> Self {
        SameBytes {
            expected: message,
            len: message.len(),
            alias: [0; NUMERIC_NODE_ID_LEN],
            alias_left: 0..0,
            alias_at: 0,
            differs_at: None,
        }
    }

    /// Where in the message the next byte is compared (the start of a NodeId being matched in
    /// its shortest form).
    fn offset(&self) -> usize {
        if self.alias_left.is_empty() {
            self.len.saturating_sub(self.expected.len())
        } else {
            self.alias_at
        }
    }

    /// The first byte offset at which encoding and message differ, if any.
    fn difference(&self) -> Option<usize> {
        self.differs_at.or_else(|| {
            (!self.expected.is_empty() || !self.alias_left.is_empty()).then(|| self.offset())
        })
    }

    fn byte(&mut self, byte: u8) -> bool {
        if let Some(&alias) = self.alias.get(self.alias_left.start)
            && !self.alias_left.is_empty()
        {
            self.alias_left.start = self.alias_left.start.saturating_add(1);
            return alias == byte;
        }
        match self.expected.split_first() {
            Some((&first, rest)) if first == byte => {
                self.expected = rest;
                true
            }
            _ => self.numeric_alias(byte),
        }
    }

    /// The message has a numeric NodeId in a longer form here, and the encoder begins its
    /// shortest form with `mask`.
    fn numeric_alias(&mut self, mask: u8) -> bool {
        let Some((&first, rest)) = self.expected.split_first() else {
            return false;
        };
        let flags = first & 0xC0;
        let (namespace, id, form_len) = match (first & 0x3F, rest) {
            (0x01, [namespace, i0, i1, ..]) => (
                u16::from(*namespace),
                u32::from(u16::from_le_bytes([*i0, *i1])),
                4,
            ),
            (0x02, [n0, n1, i0, i1, i2, i3, ..]) => (
                u16::from_le_bytes([*n0, *n1]),
                u32::from_le_bytes([*i0, *i1, *i2, *i3]),
                NUMERIC_NODE_ID_LEN,
            ),
            _ => return false,
        };
        let [n0, n1] = namespace.to_le_bytes();
        let [i0, i1, i2, i3] = id.to_le_bytes();
        let shortest_len = match (u8::try_from(namespace), u8::try_from(id), u16::try_from(id)) {
            (Ok(0), Ok(_), _) => {
                self.alias = [flags, i0, 0, 0, 0, 0, 0];
                2
            }
            (Ok(_), _, Ok(_)) => {
                self.alias = [flags | 0x01, n0, i0, i1, 0, 0, 0];
                4
            }
            _ => {
                self.alias = [flags | 0x02, n0, n1, i0, i1, i2, i3];
                NUMERIC_NODE_ID_LEN
            }
        };
        if shortest_len >= form_len || self.alias.first() != Some(&mask) {
            return false;
        }
        self.alias_at = self.offset();
        self.expected = self.expected.get(form_len..).unwrap_or_default();
        self.alias_left = 1..shortest_len;
        true
    }
}

impl std::io::Write for SameBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.differs_at.is_none() {
            // The common case in one comparison; byte by byte only where something differs.
            match self.expected.strip_prefix(buf) {
                Some(rest) if self.alias_left.is_empty() => self.expected = rest,
                _ => {
                    for &byte in buf {
                        let at = self.offset();
                        if !self.byte(byte) {
                            self.differs_at = Some(at);
                            break;
                        }
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether encoding `type_id` and then `request` gives exactly `message`: `Err` with the offset
/// of the first byte that differs.
pub fn round_trips<T: BinaryEncodable>(
    type_id: &ExpandedNodeId,
    request: &T,
    message: &[u8],
) -> Result<(), usize> {
    let ctx = decoding_context(message.len());
    let mut same = SameBytes::new(message);
    let encoded = type_id
        .encode(&mut same, &ctx)
        .and_then(|()| request.encode(&mut same, &ctx));
    match (encoded, same.difference()) {
        (Ok(()), None) => Ok(()),
        (Ok(()), Some(at)) => Err(at),
        // An encoder that fails on what its decoder accepted: no form the proxy can vouch for.
        (Err(_), at) => Err(at.unwrap_or_else(|| same.offset())),
    }
}

/// Drops the secrets of an identity token from the decoded copy, so that no log or policy input
/// can show them: a UserNameIdentityToken's password (encrypted, or in the clear where the
/// token policy is None) and an IssuedIdentityToken's token data (a bearer token). The bytes the
/// proxy forwards keep them.
fn forget_secrets(request: &mut ActivateSessionRequest) {
    let token = &request.user_identity_token;
    if let Some(user) = token.inner_as::<UserNameIdentityToken>() {
        request.user_identity_token = ExtensionObject::from_message(UserNameIdentityToken {
            password: ByteString::null(),
            ..user.clone()
        });
    } else if let Some(issued) = token.inner_as::<IssuedIdentityToken>() {
        request.user_identity_token = ExtensionObject::from_message(IssuedIdentityToken {
            token_data: ByteString::null(),
            ..issued.clone()
        });
    }
}

/// The identity token of an ActivateSessionRequest, as policy sees it (Part 4 7.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityToken<'a> {
    /// AnonymousIdentityToken, or a null token ("Null or empty user token shall always be
    /// interpreted as anonymous", Part 4 5.7.3.2).
    Anonymous,
    /// UserNameIdentityToken; its password is encrypted or secret and never exposed. A null user
    /// name reads as "".
    UserName { user_name: &'a str },
    /// X509IdentityToken.
    X509,
    /// IssuedIdentityToken (e.g. a JWT).
    Issued,
    /// Any other type id.
    Unknown,
}

impl IdentityToken<'_> {
    /// "anonymous", "user_name", "x509", "issued", "unknown".
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityToken::Anonymous => "anonymous",
            IdentityToken::UserName { .. } => "user_name",
            IdentityToken::X509 => "x509",
            IdentityToken::Issued => "issued",
            IdentityToken::Unknown => "unknown",
        }
    }
}

/// The identity token of `request`, by the type of its ExtensionObject's body
/// (AnonymousIdentityToken 321, UserNameIdentityToken 324, X509IdentityToken 327,
/// IssuedIdentityToken 940: the binary encoding ids, which [`decode_request`] decoded typed).
pub fn identity_token(request: &ActivateSessionRequest) -> IdentityToken<'_> {
    let token = &request.user_identity_token;
    if token.is_null() || token.inner_is::<AnonymousIdentityToken>() {
        IdentityToken::Anonymous
    } else if let Some(user) = token.inner_as::<UserNameIdentityToken>() {
        IdentityToken::UserName {
            user_name: user.user_name.as_ref(),
        }
    } else if token.inner_is::<X509IdentityToken>() {
        IdentityToken::X509
    } else if token.inner_is::<IssuedIdentityToken>() {
        IdentityToken::Issued
    } else {
        IdentityToken::Unknown
    }
}

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
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    text.get(..end).unwrap_or_default()
}

/// Text in an error that may quote the message (a string NodeId can be megabytes), cut so that
/// an audit event stays short.
fn clip(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    format!("{}...", cut(text, MAX_ERROR_TEXT))
}

fn chunk_size(body_len: usize) -> u32 {
    u32::try_from(HEADER_LEN.saturating_add(body_len)).unwrap_or(u32::MAX)
}

/// The encoding id of a message body as a number: numeric, namespace 0, no namespace URI, this
/// server.
fn numeric_type_id(id: &ExpandedNodeId) -> Result<u32, OpcUaError> {
    let local = id.namespace_uri.is_null() && id.server_index == 0 && id.node_id.namespace == 0;
    local
        .then(|| id.node_id.as_u32())
        .flatten()
        .ok_or_else(|| OpcUaError::TypeId {
            type_id: clip(&if id.namespace_uri.is_null() && id.server_index == 0 {
                id.node_id.to_string()
            } else {
                id.to_string()
            }),
        })
}

/// Decoding options for a message of `len` bytes: no string, byte string or array can claim more
/// than the message holds.
fn decoding_context(len: usize) -> Context<'static> {
    static NAMESPACES: LazyLock<NamespaceMap> = LazyLock::new(NamespaceMap::new);
    static LOADERS: LazyLock<TypeLoaderCollection> = LazyLock::new(|| {
        let mut loaders = TypeLoaderCollection::new_empty();
        loaders.add_type_loader(ExactLengthLoader);
        loaders
    });
    let len = len.min(MAX_MESSAGE_SIZE);
    let options = DecodingOptions {
        max_message_size: MAX_MESSAGE_SIZE,
        max_chunk_count: MAX_CHUNK_COUNT,
        max_string_length: len,
        max_byte_string_length: len,
        max_array_length: MAX_ARRAY_LENGTH.min(len),
        decoding_depth_gauge: DepthGauge::new(MAX_NESTING_DEPTH),
        ..DecodingOptions::default()
    };
    Context::new(&NAMESPACES, &LOADERS, options)
}

/// The message bytes as the decoder reads them: counts where it is, and stops it once its
/// recursion has used [`MAX_DECODE_STACK`] bytes of stack (every level reads at least its
/// encoding mask, so every level passes here).
struct GuardedReader<'a> {
    rest: &'a [u8],
    len: usize,
    stack_base: usize,
    too_deep: bool,
}

impl<'a> GuardedReader<'a> {
    fn new(message: &'a [u8]) -> Self {
        GuardedReader {
            rest: message,
            len: message.len(),
            stack_base: stack_position(),
            too_deep: false,
        }
    }

    fn offset(&self) -> usize {
        self.len.saturating_sub(self.rest.len())
    }

    fn decode<T: BinaryDecodable>(
        &mut self,
        ctx: &Context<'_>,
        service: Service,
    ) -> Result<T, OpcUaError> {
        T::decode(self, ctx).map_err(|error| {
            if self.too_deep {
                OpcUaError::Nesting {
                    service,
                    offset: self.offset(),
                }
            } else {
                OpcUaError::Decode {
                    service,
                    offset: self.offset(),
                    reason: clip(&error.to_string()),
                }
            }
        })
    }
}

impl GuardedReader<'_> {
    /// The request ends where the message ends, and encodes back to exactly its bytes.
    fn judged_whole<T: BinaryEncodable>(
        &self,
        service: Service,
        type_id: &ExpandedNodeId,
        request: &T,
        message: &[u8],
    ) -> Result<(), OpcUaError> {
        let extra = self.rest.len();
        if extra != 0 {
            return Err(OpcUaError::ServiceTrailingBytes { service, extra });
        }
        round_trips(type_id, request, message)
            .map_err(|offset| OpcUaError::RoundTrip { service, offset })
    }
}

impl Read for GuardedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if stack_position().abs_diff(self.stack_base) > MAX_DECODE_STACK {
            self.too_deep = true;
            return Err(std::io::Error::other("nested too deeply"));
        }
        self.rest.read(buf)
    }
}

/// Where this call's frame is on the stack: the address of a local.
#[inline(never)]
fn stack_position() -> usize {
    let marker = 0_u8;
    std::hint::black_box(&raw const marker).addr()
}

/// Decodes ExtensionObject bodies (Part 6 5.2.2.15) of the types async-opcua-types knows from
/// exactly the bytes their length declares, and keeps the others as raw bytes. The crate's own
/// loaders read a known type without looking at the length, and allocate an unknown one's
/// declared length before reading it.
struct ExactLengthLoader;

impl TypeLoader for ExactLengthLoader {
    fn load_from_binary(
        &self,
        node_id: &NodeId,
        stream: &mut dyn Read,
        ctx: &Context<'_>,
        length: Option<usize>,
    ) -> Option<EncodingResult<Box<dyn DynEncodable>>> {
        let Some(length) = length else {
            return Some(Err(decoding_error("ExtensionObject body without a length")));
        };
        if length > ctx.options().max_byte_string_length {
            return Some(Err(decoding_error(format!(
                "ExtensionObject body of {length} bytes is longer than the message"
            ))));
        }
        let mut body = stream.take(u64::try_from(length).unwrap_or(u64::MAX));
        let numeric = node_id.as_u32().filter(|_| node_id.namespace == 0);
        // The type id of a body is its encoding's node. The crate also decodes a DataType's id in
        // its place, which a server need not do: kept as bytes, the proxy sees no more than the
        // server would.
        if numeric.is_some_and(|id| DataTypeId::try_from(id).is_ok()) {
            return Some(read_body(&mut body, length).map(|raw| raw_body(raw, node_id)));
        }
        let loaded = match numeric.and_then(|id| ObjectId::try_from(id).ok()) {
            // Argument's decoder pads ArrayDimensions with zeros up to ValueRank, whatever
            // ValueRank says: 2^31 - 1 would be 8 GiB. Its fields hold no recursion, so it can be
            // checked and decoded from a copy.
            Some(ObjectId::Argument_Encoding_DefaultBinary) => read_body(&mut body, length)
                .and_then(|raw| {
                    check_argument(&raw, ctx)?;
                    let mut rest = raw.as_slice();
                    let value = GeneratedTypeLoader
                        .load_from_binary(node_id, &mut rest, ctx, Some(length))
                        .unwrap_or_else(|| Err(decoding_error("Argument has no decoder")))?;
                    exactly_used(node_id, length, rest.len()).map(|()| value)
                }),
            // Server diagnostics that hold Arguments, which a client has no reason to send: kept
            // as bytes rather than decoded.
            Some(
                ObjectId::ProgramDiagnosticDataType_Encoding_DefaultBinary
                | ObjectId::ProgramDiagnostic2DataType_Encoding_DefaultBinary,
            ) => read_body(&mut body, length).map(|raw| raw_body(raw, node_id)),
            _ => {
                match GeneratedTypeLoader.load_from_binary(node_id, &mut body, ctx, Some(length)) {
                    Some(Ok(value)) => exactly_used(
                        node_id,
                        length,
                        usize::try_from(body.limit()).unwrap_or(length),
                    )
                    .map(|()| value),
                    Some(Err(error)) => Err(error),
                    None => read_body(&mut body, length).map(|raw| raw_body(raw, node_id)),
                }
            }
        };
        Some(loaded)
    }

    fn load_from_xml(
        &self,
        node_id: &NodeId,
        _stream: &mut opcua_types::xml::XmlStreamReader<&mut dyn Read>,
        _ctx: &Context<'_>,
        _name: &str,
    ) -> Option<EncodingResult<Box<dyn DynEncodable>>> {
        Some(Err(decoding_error(format!(
            "ExtensionObject {node_id} has an XML body, which a binary message does not get"
        ))))
    }

    fn priority(&self) -> TypeLoaderPriority {
        TypeLoaderPriority::Core
    }
}

/// The `length` bytes of an ExtensionObject body, read as they come (the length was checked
/// against the message, and nothing is allocated before the bytes are there).
fn read_body(body: &mut impl Read, length: usize) -> EncodingResult<Vec<u8>> {
    let mut raw = Vec::new();
    let read = body.read_to_end(&mut raw)?;
    if read == length {
        Ok(raw)
    } else {
        Err(decoding_error(format!(
            "ExtensionObject body: {read} of its {length} bytes are there"
        )))
    }
}

fn raw_body(raw: Vec<u8>, node_id: &NodeId) -> Box<dyn DynEncodable> {
    Box::new(ByteStringBody::new(ByteString::from(raw), node_id.clone()))
}

/// A decoded body must have used all of its declared length: a server that skips by the length
/// would read the bytes left over as the next field.
fn exactly_used(node_id: &NodeId, length: usize, left: usize) -> EncodingResult<()> {
    if left == 0 {
        Ok(())
    } else {
        Err(decoding_error(format!(
            "ExtensionObject {node_id}: {left} of its {length} bytes are left after the body"
        )))
    }
}

/// Argument (Part 3 8.6): Name, DataType, ValueRank, ... with ValueRank at most
/// [`MAX_VALUE_RANK`].
fn check_argument(mut raw: &[u8], ctx: &Context<'_>) -> EncodingResult<()> {
    opcua_types::UAString::decode(&mut raw, ctx)?;
    NodeId::decode(&mut raw, ctx)?;
    let value_rank = i32::decode(&mut raw, ctx)?;
    if value_rank > MAX_VALUE_RANK {
        return Err(decoding_error(format!(
            "Argument ValueRank {value_rank} is above {MAX_VALUE_RANK}"
        )));
    }
    Ok(())
}

fn decoding_error(
    context: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> opcua_types::Error {
    opcua_types::Error::decoding(context)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use opcua_types::{
        Argument, BinaryEncodable, CallMethodRequest, ContextOwned, DataValue, DiagnosticInfo,
        ServiceFault, StatusCode, UAString, Variant, WriteValue,
    };

    /// HEL from a client that wants 64 KiB buffers.
    const HELLO: [u8; 50] = [
        b'H', b'E', b'L', // message type
        b'F', // chunk type: final
        0x32, 0x00, 0x00, 0x00, // message size 50
        0x00, 0x00, 0x00, 0x00, // protocol version 0
        0x00, 0x00, 0x01, 0x00, // receive buffer size 65536
        0x00, 0x00, 0x01, 0x00, // send buffer size 65536
        0x00, 0x00, 0x00, 0x01, // max message size 16 MiB
        0x00, 0x00, 0x00, 0x00, // max chunk count 0: no limit
        0x12, 0x00, 0x00, 0x00, // endpoint URL length 18
        b'o', b'p', b'c', b'.', b't', b'c', b'p', b':', b'/', b'/', b'p', b'l', b'c', b':', b'4',
        b'8', b'4', b'0', // "opc.tcp://plc:4840"
    ];

    /// ACK from a server that takes 8 KiB chunks.
    const ACKNOWLEDGE: [u8; 28] = [
        b'A', b'C', b'K', // message type
        b'F', // chunk type: final
        0x1C, 0x00, 0x00, 0x00, // message size 28
        0x00, 0x00, 0x00, 0x00, // protocol version 0
        0x00, 0x20, 0x00, 0x00, // receive buffer size 8192
        0x00, 0x20, 0x00, 0x00, // send buffer size 8192
        0x00, 0x00, 0x20, 0x00, // max message size 2 MiB
        0x40, 0x00, 0x00, 0x00, // max chunk count 64
    ];

    /// ERR: BadTcpMessageTooLarge.
    const ERROR: [u8; 24] = [
        b'E', b'R', b'R', // message type
        b'F', // chunk type: final
        0x18, 0x00, 0x00, 0x00, // message size 24
        0x00, 0x00, 0x80, 0x80, // error 0x80800000
        0x08, 0x00, 0x00, 0x00, // reason length 8
        b't', b'o', b'o', b' ', b'l', b'a', b'r', b'g', // "too larg"
    ];

    /// RHE from a server behind a firewall.
    const REVERSE_HELLO: [u8; 38] = [
        b'R', b'H', b'E', // message type
        b'F', // chunk type: final
        0x26, 0x00, 0x00, 0x00, // message size 38
        0x08, 0x00, 0x00, 0x00, // server URI length 8
        b'u', b'r', b'n', b':', b'b', b'e', b's', b's', // "urn:bess"
        0x0E, 0x00, 0x00, 0x00, // endpoint URL length 14
        b'o', b'p', b'c', b'.', b't', b'c', b'p', b':', b'/', b'/', b'b', b'e', b's',
        b's', // "opc.tcp://bess"
    ];

    /// OPN with SecurityPolicy None; its body is cut short after the request's type id.
    const OPEN_NONE: [u8; 83] = [
        b'O', b'P', b'N', // message type
        b'F', // chunk type: final
        0x53, 0x00, 0x00, 0x00, // message size 83
        0x00, 0x00, 0x00, 0x00, // secure channel id 0 (the server assigns one)
        0x2F, 0x00, 0x00, 0x00, // security policy URI length 47
        b'h', b't', b't', b'p', b':', b'/', b'/', b'o', b'p', b'c', b'f', b'o', b'u', b'n', b'd',
        b'a', b't', b'i', b'o', b'n', b'.', b'o', b'r', b'g', b'/', b'U', b'A', b'/', b'S', b'e',
        b'c', b'u', b'r', b'i', b't', b'y', b'P', b'o', b'l', b'i', b'c', b'y', b'#', b'N', b'o',
        b'n', b'e', // "http://opcfoundation.org/UA/SecurityPolicy#None"
        0xFF, 0xFF, 0xFF, 0xFF, // sender certificate: null
        0xFF, 0xFF, 0xFF, 0xFF, // receiver certificate thumbprint: null
        0x01, 0x00, 0x00, 0x00, // sequence number 1
        0x01, 0x00, 0x00, 0x00, // request id 1
        0x01, 0x00, 0xBE, 0x01, // type id: four-byte NodeId, ns 0, i=446 (OPN request)
    ];

    /// OPN with Basic256Sha256: a certificate and a thumbprint, then encrypted bytes.
    const OPEN_SIGNED: [u8; 113] = [
        b'O', b'P', b'N', // message type
        b'F', // chunk type: final
        0x71, 0x00, 0x00, 0x00, // message size 113
        0x00, 0x00, 0x00, 0x00, // secure channel id 0
        0x39, 0x00, 0x00, 0x00, // security policy URI length 57
        b'h', b't', b't', b'p', b':', b'/', b'/', b'o', b'p', b'c', b'f', b'o', b'u', b'n', b'd',
        b'a', b't', b'i', b'o', b'n', b'.', b'o', b'r', b'g', b'/', b'U', b'A', b'/', b'S', b'e',
        b'c', b'u', b'r', b'i', b't', b'y', b'P', b'o', b'l', b'i', b'c', b'y', b'#', b'B', b'a',
        b's', b'i', b'c', b'2', b'5', b'6', b'S', b'h', b'a', b'2', b'5',
        b'6', // "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
        0x04, 0x00, 0x00, 0x00, // sender certificate length 4
        0x30, 0x82, 0x01, 0x0A, // the start of a DER certificate
        0x14, 0x00, 0x00, 0x00, // receiver certificate thumbprint length 20
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
        0x11, 0x11, 0x11, 0x11, 0x11, // SHA-1 thumbprint
        0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, // encrypted
    ];

    /// MSG: a ReadRequest's chunk, cut short after the type id.
    const MESSAGE: [u8; 28] = [
        b'M', b'S', b'G', // message type
        b'F', // chunk type: final
        0x1C, 0x00, 0x00, 0x00, // message size 28
        0x07, 0x00, 0x00, 0x00, // secure channel id 7
        0x01, 0x00, 0x00, 0x00, // token id 1
        0x35, 0x00, 0x00, 0x00, // sequence number 53
        0x05, 0x00, 0x00, 0x00, // request id 5
        0x01, 0x00, 0x77, 0x02, // type id: four-byte NodeId, ns 0, 631 ReadRequest
    ];

    /// RequestHeader (Part 4 7.33) with request handle 0x2A and everything else empty.
    const REQUEST_HEADER: [u8; 29] = [
        0x00, 0x00, // authentication token: two-byte NodeId 0
        0, 0, 0, 0, 0, 0, 0, 0, // timestamp: none
        0x2A, 0x00, 0x00, 0x00, // request handle 42
        0x00, 0x00, 0x00, 0x00, // return diagnostics: none
        0xFF, 0xFF, 0xFF, 0xFF, // audit entry id: null
        0x10, 0x27, 0x00, 0x00, // timeout hint 10000 ms
        0x00, 0x00, 0x00, // additional header: null NodeId, no body
    ];

    /// A WriteRequest of one value to ns=2;i=1, attribute 13 (Value), whose DataValue holds
    /// `variant` (encoded bytes, mask first).
    fn write_message(variant: &[u8]) -> Vec<u8> {
        let mut message = vec![
            0x01, 0x00, 0xA1, 0x02, // type id: four-byte NodeId, ns 0, 673 WriteRequest
        ];
        message.extend_from_slice(&REQUEST_HEADER);
        message.extend_from_slice(&[
            0x01, 0x00, 0x00, 0x00, // nodes to write: 1
            0x01, 0x02, 0x01, 0x00, // node id: four-byte NodeId, ns 2, i=1
            0x0D, 0x00, 0x00, 0x00, // attribute id 13 (Value)
            0xFF, 0xFF, 0xFF, 0xFF, // index range: null
            0x01, // DataValue encoding mask: value only
        ]);
        message.extend_from_slice(variant);
        message
    }

    /// The ExtensionObject that `write_message(variant)` writes, decoded.
    fn written_object(variant: &[u8]) -> ExtensionObject {
        let decoded = decode_request(&write_message(variant)).unwrap();
        let DecodedRequest::Write(write) = decoded.request else {
            panic!("{decoded:?}");
        };
        let value = write.nodes_to_write.unwrap().remove(0).value.value;
        let Some(Variant::ExtensionObject(object)) = value else {
            panic!("{value:?}");
        };
        object
    }

    fn context() -> ContextOwned {
        ContextOwned::default()
    }

    /// The type id of `request`'s encoding, then `request`, as async-opcua-types encodes them.
    fn encode_message<T: BinaryEncodable>(type_id: ObjectId, request: &T) -> Vec<u8> {
        let owned = context();
        let ctx = owned.context();
        let mut out = Vec::new();
        NodeId::from(type_id as u32).encode(&mut out, &ctx).unwrap();
        request.encode(&mut out, &ctx).unwrap();
        out
    }

    fn header(handle: u32) -> RequestHeader {
        RequestHeader {
            request_handle: handle,
            timeout_hint: 10_000,
            ..RequestHeader::default()
        }
    }

    /// Parses a whole valid chunk, after checking that every prefix of it waits for more.
    fn chunk_of(bytes: &[u8]) -> Chunk<'_> {
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_chunk(&bytes[..cut], MAX_CHUNK_SIZE),
                Ok(None),
                "prefix of {cut}"
            );
        }
        let (chunk, used) = parse_chunk(bytes, MAX_CHUNK_SIZE).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(chunk.bytes, bytes);
        assert_eq!(chunk.header.size as usize, bytes.len());
        chunk
    }

    fn chunk_error(bytes: &[u8]) -> OpcUaError {
        parse_chunk(bytes, MAX_CHUNK_SIZE).unwrap_err()
    }

    #[test]
    fn hello_round_trip() {
        let chunk = chunk_of(&HELLO);
        assert_eq!(
            chunk.header,
            ChunkHeader {
                message_type: MessageType::Hello,
                chunk_type: ChunkType::Final,
                size: 50
            }
        );
        let ChunkBody::Hello(hello) = chunk.body else {
            panic!("{chunk:?}");
        };
        assert_eq!(
            hello,
            Hello {
                protocol_version: 0,
                receive_buffer_size: 65_536,
                send_buffer_size: 65_536,
                max_message_size: 16 * 1024 * 1024,
                max_chunk_count: 0,
                endpoint_url: "opc.tcp://plc:4840",
            }
        );
        assert_eq!(encode_hello(&hello), HELLO);
        // Clamped as the proxy would: still a valid HEL.
        let clamped = Hello {
            receive_buffer_size: MAX_CHUNK_SIZE,
            send_buffer_size: MAX_CHUNK_SIZE,
            ..hello
        };
        let bytes = encode_hello(&clamped);
        assert_eq!(chunk_of(&bytes).body, ChunkBody::Hello(clamped));
        // Two chunks back to back: the first uses exactly its own bytes.
        let mut two = HELLO.to_vec();
        two.extend_from_slice(&ACKNOWLEDGE);
        assert_eq!(parse_chunk(&two, MAX_CHUNK_SIZE).unwrap().unwrap().1, 50);
    }

    #[test]
    fn acknowledge() {
        let chunk = chunk_of(&ACKNOWLEDGE);
        let ChunkBody::Acknowledge(ack) = chunk.body else {
            panic!("{chunk:?}");
        };
        assert_eq!(
            ack,
            Acknowledge {
                protocol_version: 0,
                receive_buffer_size: 8192,
                send_buffer_size: 8192,
                max_message_size: 2 * 1024 * 1024,
                max_chunk_count: 64,
            }
        );
        assert_eq!(encode_acknowledge(&ack), ACKNOWLEDGE);
        // A buffer below 8192 is refused.
        let small = encode_acknowledge(&Acknowledge {
            send_buffer_size: 8191,
            ..ack
        });
        let e = chunk_error(&small);
        assert_eq!(
            e,
            OpcUaError::BufferSize {
                field: "SendBufferSize",
                size: 8191
            }
        );
        assert_eq!(e.kind(), "buffer_size");
        // ACK is 28 bytes exactly: a longer one is refused from its header.
        let mut long = ACKNOWLEDGE;
        long[4] = 0x1D;
        assert_eq!(
            parse_header(&long, MAX_CHUNK_SIZE),
            Err(OpcUaError::ChunkTooLarge {
                message_type: MessageType::Acknowledge,
                size: 29,
                max: 28
            })
        );
    }

    #[test]
    fn error_message() {
        let chunk = chunk_of(&ERROR);
        assert_eq!(
            chunk.body,
            ChunkBody::Error(ErrorMessage {
                error: STATUS_BAD_TCP_MESSAGE_TOO_LARGE,
                reason: "too larg"
            })
        );
        assert_eq!(
            encode_error(STATUS_BAD_TCP_MESSAGE_TOO_LARGE, "too larg"),
            ERROR
        );
        // The reason is cut to 4096 bytes, not inside a character.
        let reason = format!("{}é", "x".repeat(MAX_REASON_LEN - 1));
        let bytes = encode_error(STATUS_BAD_USER_ACCESS_DENIED, &reason);
        let ChunkBody::Error(error) = chunk_of(&bytes).body else {
            panic!();
        };
        assert_eq!(error.reason.len(), MAX_REASON_LEN - 1);
        assert_eq!(error.error, STATUS_BAD_USER_ACCESS_DENIED);
        // A trailing byte after the reason.
        let mut trailing = ERROR.to_vec();
        trailing.push(0x00);
        trailing[4] = 25;
        assert_eq!(
            chunk_error(&trailing),
            OpcUaError::TrailingBytes {
                message_type: MessageType::Error,
                extra: 1
            }
        );
    }

    #[test]
    fn reverse_hello() {
        assert_eq!(
            chunk_of(&REVERSE_HELLO).body,
            ChunkBody::ReverseHello(ReverseHello {
                server_uri: "urn:bess",
                endpoint_url: "opc.tcp://bess"
            })
        );
    }

    #[test]
    fn open_with_security_none() {
        let chunk = chunk_of(&OPEN_NONE);
        let ChunkBody::Open(open) = chunk.body else {
            panic!("{chunk:?}");
        };
        assert_eq!(open.secure_channel_id, 0);
        assert_eq!(open.security_policy_uri, SECURITY_POLICY_NONE);
        assert!(open.is_security_none());
        assert_eq!(security_policy_name(open.security_policy_uri), "None");
        assert_eq!(signature_len(open.security_policy_uri), Some(0));
        assert_eq!(
            (open.sender_certificate, open.receiver_thumbprint),
            (None, None)
        );
        let (sequence, body) = parse_sequence_header(open.rest).unwrap();
        assert_eq!(
            sequence,
            SequenceHeader {
                sequence_number: 1,
                request_id: 1
            }
        );
        assert_eq!(body, [0x01, 0x00, 0xBE, 0x01]);
    }

    #[test]
    fn open_with_a_certificate() {
        let chunk = chunk_of(&OPEN_SIGNED);
        let ChunkBody::Open(open) = chunk.body else {
            panic!("{chunk:?}");
        };
        assert_eq!(
            security_policy_name(open.security_policy_uri),
            "Basic256Sha256"
        );
        assert!(!open.is_security_none());
        assert_eq!(signature_len(open.security_policy_uri), Some(32));
        assert_eq!(open.sender_certificate, Some(&[0x30, 0x82, 0x01, 0x0A][..]));
        assert_eq!(open.receiver_thumbprint, Some(&[0x11; 20][..]));
        assert_eq!(open.rest, &OPEN_SIGNED[105..]);
        // A thumbprint longer than any digest.
        let mut long = OPEN_SIGNED;
        long[81] = 0x41;
        assert_eq!(
            chunk_error(&long),
            OpcUaError::FieldTooLong {
                field: "ReceiverCertificateThumbprint",
                length: 65,
                max: MAX_THUMBPRINT_LEN
            }
        );
        // A certificate longer than the chunk.
        let mut long = OPEN_SIGNED;
        long[73] = 0x40;
        assert!(matches!(
            chunk_error(&long),
            OpcUaError::Truncated {
                message_type: MessageType::OpenChannel,
                field: "SenderCertificate",
                needed: 64,
                ..
            }
        ));
        // An empty security policy URI.
        let mut empty = OPEN_NONE.to_vec();
        empty.splice(16..63, []);
        empty[12] = 0;
        empty[4] = u8::try_from(empty.len()).unwrap();
        assert_eq!(
            chunk_error(&empty),
            OpcUaError::NullField {
                field: "SecurityPolicyUri"
            }
        );
    }

    #[test]
    fn message_and_its_sequence_header() {
        let chunk = chunk_of(&MESSAGE);
        let ChunkBody::Message(message) = chunk.body else {
            panic!("{chunk:?}");
        };
        assert_eq!((message.secure_channel_id, message.token_id), (7, 1));
        let (sequence, body) = parse_sequence_header(message.rest).unwrap();
        assert_eq!(
            sequence,
            SequenceHeader {
                sequence_number: 53,
                request_id: 5
            }
        );
        assert_eq!(body, [0x01, 0x00, 0x77, 0x02]);
        assert_eq!(
            parse_sequence_header(&[0; 7]),
            Err(OpcUaError::SequenceHeader { remaining: 7 })
        );

        let mut bytes = MESSAGE;
        set_sequence_number(&mut bytes, 0x0102_0304).unwrap();
        assert_eq!(bytes[16..20], [0x04, 0x03, 0x02, 0x01]);
        assert_eq!(bytes[..16], MESSAGE[..16]);
        assert_eq!(bytes[20..], MESSAGE[20..]);
        // CLO too; not OPN, nor a chunk too short to hold the field.
        let mut close = MESSAGE;
        close[..3].copy_from_slice(b"CLO");
        set_sequence_number(&mut close, 9).unwrap();
        assert!(matches!(chunk_of(&close).body, ChunkBody::Close(_)));
        assert_eq!(
            set_sequence_number(&mut { OPEN_NONE }, 1),
            Err(OpcUaError::NotSymmetric { found: *b"OPN" })
        );
        assert_eq!(
            set_sequence_number(&mut { MESSAGE }[..19], 1),
            Err(OpcUaError::SequenceHeader { remaining: 3 })
        );
        assert!(set_sequence_number(&mut [], 1).is_err());
    }

    #[test]
    fn sequence_numbers_wrap_below_1024() {
        assert_eq!(next_sequence_number(1), 2);
        assert_eq!(next_sequence_number(4_294_966_270), 4_294_966_271);
        // Not before it is greater than UInt32.MaxValue - 1024.
        assert_eq!(next_sequence_number(4_294_966_271), 4_294_966_272);
        assert_eq!(next_sequence_number(4_294_966_272), 1);
        assert_eq!(next_sequence_number(u32::MAX), 1);
    }

    #[test]
    fn three_chunks_reassemble_into_one_message() {
        let mut reassembler = Reassembler::default();
        assert_eq!(
            reassembler.push(5, ChunkType::Intermediate, b"abc"),
            Ok(None)
        );
        assert_eq!(reassembler.pending(), 1);
        // Another request's single chunk passes between them.
        assert_eq!(
            reassembler.push(6, ChunkType::Final, b"xyz"),
            Ok(Some(b"xyz".to_vec()))
        );
        assert_eq!(
            reassembler.push(5, ChunkType::Intermediate, b"def"),
            Ok(None)
        );
        assert_eq!(
            reassembler.push(5, ChunkType::Final, b"gh"),
            Ok(Some(b"abcdefgh".to_vec()))
        );
        assert_eq!(reassembler.pending(), 0);
    }

    #[test]
    fn abort_discards_the_chunks_so_far() {
        let mut reassembler = Reassembler::default();
        reassembler
            .push(5, ChunkType::Intermediate, b"abc")
            .unwrap();
        assert_eq!(reassembler.push(5, ChunkType::Abort, b"ignored"), Ok(None));
        assert_eq!(reassembler.pending(), 0);
        // The request id starts afresh, and an abort of nothing is harmless.
        assert_eq!(
            reassembler.push(5, ChunkType::Final, b"new"),
            Ok(Some(b"new".to_vec()))
        );
        assert_eq!(reassembler.push(9, ChunkType::Abort, b""), Ok(None));
    }

    #[test]
    fn reassembly_limits() {
        // 64 chunks are a message; the 65th is one too many.
        let mut reassembler = Reassembler::default();
        for _ in 1..MAX_CHUNK_COUNT {
            reassembler.push(1, ChunkType::Intermediate, b"x").unwrap();
        }
        assert_eq!(
            reassembler
                .push(1, ChunkType::Final, b"x")
                .unwrap()
                .unwrap()
                .len(),
            MAX_CHUNK_COUNT
        );
        for _ in 0..MAX_CHUNK_COUNT {
            reassembler.push(1, ChunkType::Intermediate, b"x").unwrap();
        }
        let e = reassembler
            .push(1, ChunkType::Intermediate, b"x")
            .unwrap_err();
        assert_eq!(
            e,
            OpcUaError::TooManyChunks {
                request_id: 1,
                max: MAX_CHUNK_COUNT
            }
        );
        assert_eq!(e.kind(), "too_many_chunks");
        assert_eq!(reassembler.pending(), 0, "the failed message is dropped");

        // A message over 2 MiB, in 53 chunks of 40000 bytes.
        let body = vec![0_u8; 40_000];
        let mut reassembler = Reassembler::default();
        let mut result = Ok(None);
        for _ in 0..53 {
            result = reassembler.push(2, ChunkType::Intermediate, &body);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(OpcUaError::MessageTooLarge {
                request_id: 2,
                size: 40_000 * 53,
                max: MAX_MESSAGE_SIZE
            })
        );

        // Four messages at once, not five; a final chunk of a fifth needs no room.
        let mut reassembler = Reassembler::default();
        for id in 0..4 {
            reassembler.push(id, ChunkType::Intermediate, b"x").unwrap();
        }
        assert_eq!(
            reassembler.push(4, ChunkType::Intermediate, b"x"),
            Err(OpcUaError::TooManyPartialMessages {
                request_id: 4,
                max: MAX_PARTIAL_MESSAGES
            })
        );
        assert!(reassembler.push(4, ChunkType::Final, b"x").is_ok());
        assert_eq!(reassembler.pending(), 4);

        // Negotiated limits below ours apply; 0 means ours.
        let mut reassembler = Reassembler::with_limits(2, 0);
        reassembler.push(1, ChunkType::Intermediate, b"x").unwrap();
        reassembler.push(1, ChunkType::Intermediate, b"x").unwrap();
        assert!(reassembler.push(1, ChunkType::Final, b"x").is_err());
        let mut reassembler = Reassembler::with_limits(1000, 4);
        assert!(reassembler.push(1, ChunkType::Final, b"12345").is_err());
        assert_eq!(
            format!("{:?}", Reassembler::with_limits(1000, 0)),
            format!("{:?}", Reassembler::default())
        );
    }

    #[test]
    fn a_huge_size_is_refused_from_the_header_alone() {
        let header = [
            b'M', b'S', b'G', // message type
            b'F', // chunk type: final
            0xFF, 0xFF, 0xFF, 0xFF, // message size 4 GiB
        ];
        let expected = OpcUaError::ChunkTooLarge {
            message_type: MessageType::Message,
            size: u32::MAX,
            max: MAX_CHUNK_SIZE,
        };
        assert_eq!(parse_header(&header, MAX_CHUNK_SIZE), Err(expected.clone()));
        assert_eq!(parse_chunk(&header, MAX_CHUNK_SIZE), Err(expected.clone()));
        assert_eq!(expected.kind(), "chunk_too_large");
        assert_eq!(expected.status(), STATUS_BAD_TCP_MESSAGE_TOO_LARGE);
        assert_eq!(
            expected.to_string(),
            "MSG: chunk size 4294967295 is above 65535"
        );
        // Above what the proxy negotiated, and never above MAX_CHUNK_SIZE whatever it says.
        let mut header = header;
        header[4..].copy_from_slice(&8193_u32.to_le_bytes());
        assert!(parse_header(&header, 8192).is_err());
        assert!(parse_header(&header, 8193).unwrap().is_some());
        header[4..].copy_from_slice(&65_536_u32.to_le_bytes());
        assert!(parse_header(&header, u32::MAX).is_err());
        // Smaller than its security and sequence headers.
        header[4..].copy_from_slice(&23_u32.to_le_bytes());
        assert_eq!(
            parse_header(&header, MAX_CHUNK_SIZE),
            Err(OpcUaError::ChunkTooSmall {
                message_type: MessageType::Message,
                size: 23,
                min: 24
            })
        );
        // Fewer than 8 bytes: wait.
        assert_eq!(parse_header(&header[..7], MAX_CHUNK_SIZE), Ok(None));
    }

    #[test]
    fn endpoint_url_too_long() {
        let url = format!("opc.tcp://{}", "h".repeat(MAX_ENDPOINT_URL_LEN));
        let hello = Hello {
            protocol_version: 0,
            receive_buffer_size: 8192,
            send_buffer_size: 8192,
            max_message_size: 0,
            max_chunk_count: 0,
            endpoint_url: &url,
        };
        let bytes = encode_hello(&hello);
        // The size its header states is already more than a HEL may have.
        assert_eq!(
            parse_chunk(&bytes[..HEADER_LEN], MAX_CHUNK_SIZE),
            Err(OpcUaError::ChunkTooLarge {
                message_type: MessageType::Hello,
                size: 4138,
                max: 4128
            })
        );
        // Within a chunk of legal size, a length field that claims more.
        let mut bytes = HELLO;
        bytes[28..32].copy_from_slice(&4097_i32.to_le_bytes());
        let e = chunk_error(&bytes);
        assert_eq!(
            e,
            OpcUaError::FieldTooLong {
                field: "EndpointUrl",
                length: 4097,
                max: MAX_ENDPOINT_URL_LEN
            }
        );
        assert_eq!(e.kind(), "field_too_long");
        // One that claims more than the chunk holds.
        bytes[28..32].copy_from_slice(&19_i32.to_le_bytes());
        assert_eq!(
            chunk_error(&bytes),
            OpcUaError::Truncated {
                message_type: MessageType::Hello,
                field: "EndpointUrl",
                needed: 19,
                remaining: 18
            }
        );
        // A null URL parses as "".
        let mut null = HELLO[..32].to_vec();
        null[4] = 32;
        null[28..32].copy_from_slice(&(-1_i32).to_le_bytes());
        assert!(matches!(
            chunk_of(&null).body,
            ChunkBody::Hello(Hello {
                endpoint_url: "",
                ..
            })
        ));
    }

    #[test]
    fn bad_chunk_types() {
        let mut bytes = HELLO;
        bytes[3] = b'C';
        let e = parse_header(&bytes[..HEADER_LEN], MAX_CHUNK_SIZE).unwrap_err();
        assert_eq!(
            e,
            OpcUaError::ChunkType {
                message_type: MessageType::Hello,
                found: b'C'
            }
        );
        assert_eq!(e.kind(), "chunk_type");
        assert_eq!(
            e.to_string(),
            "HEL: chunk type \"C\" is not allowed (only MSG may be 'C' or 'A', everything is 'F')"
        );
        for (message_type, chunk_type) in [(*b"OPN", b'C'), (*b"CLO", b'A'), (*b"MSG", b'X')] {
            let mut bytes = MESSAGE;
            bytes[..3].copy_from_slice(&message_type);
            bytes[3] = chunk_type;
            assert!(matches!(
                parse_header(&bytes, MAX_CHUNK_SIZE),
                Err(OpcUaError::ChunkType { .. })
            ));
        }
        for chunk_type in [b'C', b'A'] {
            let mut bytes = MESSAGE;
            bytes[3] = chunk_type;
            assert_eq!(
                chunk_of(&bytes).header.chunk_type,
                ChunkType::from_byte(chunk_type).unwrap()
            );
        }
    }

    #[test]
    fn unknown_message_type() {
        let e = parse_header(b"GET / HTTP/1.1\r\n", MAX_CHUNK_SIZE).unwrap_err();
        assert_eq!(e, OpcUaError::MessageType { found: *b"GET" });
        assert_eq!(e.kind(), "message_type");
        assert_eq!(e.status(), STATUS_BAD_TCP_MESSAGE_TYPE_INVALID);
        let e = parse_header(&[0x16, 0x03, 0x01, 0, 0, 0, 0, 0], MAX_CHUNK_SIZE).unwrap_err();
        assert_eq!(
            e.to_string(),
            "message type \"\\x16\\x03\\x01\" is not HEL, ACK, ERR, RHE, OPN, MSG or CLO"
        );
        for message_type in MessageType::ALL {
            assert_eq!(
                MessageType::from_bytes(message_type.as_bytes()),
                Some(message_type)
            );
            assert_eq!(message_type.as_str().as_bytes(), message_type.as_bytes());
        }
    }

    #[test]
    fn negative_string_length() {
        let mut bytes = HELLO;
        bytes[28..32].copy_from_slice(&(-2_i32).to_le_bytes());
        let e = chunk_error(&bytes);
        assert_eq!(
            e,
            OpcUaError::NegativeLength {
                field: "EndpointUrl",
                length: -2
            }
        );
        assert_eq!(e.kind(), "negative_length");
        let mut bytes = OPEN_SIGNED;
        bytes[73..77].copy_from_slice(&i32::MIN.to_le_bytes());
        assert_eq!(
            chunk_error(&bytes),
            OpcUaError::NegativeLength {
                field: "SenderCertificate",
                length: i32::MIN
            }
        );
        // And a string that is not UTF-8.
        let mut bytes = HELLO;
        bytes[32] = 0xFF;
        assert_eq!(
            chunk_error(&bytes),
            OpcUaError::Utf8 {
                field: "EndpointUrl"
            }
        );
    }

    #[test]
    fn decodes_a_write_request() {
        let request = WriteRequest {
            request_header: header(7),
            nodes_to_write: Some(vec![WriteValue {
                node_id: NodeId::new(2, "bess.active_power_setpoint"),
                attribute_id: 13,
                value: DataValue {
                    value: Some(Variant::Double(1500.0)),
                    ..DataValue::default()
                },
                ..WriteValue::default()
            }]),
        };
        let message = encode_message(ObjectId::WriteRequest_Encoding_DefaultBinary, &request);
        let decoded = decode_request(&message).unwrap();
        assert_eq!(decoded.type_id, 673);
        assert_eq!(decoded.service, Service::Write);
        assert_eq!(decoded.service.name(), "write");
        assert_eq!(decoded.request_handle, 7);
        let DecodedRequest::Write(write) = &decoded.request else {
            panic!("{decoded:?}");
        };
        assert_eq!(write, &request);
        let value = &write.nodes_to_write.as_ref().unwrap()[0];
        assert_eq!(value.node_id, NodeId::new(2, "bess.active_power_setpoint"));
        assert_eq!(value.value.value, Some(Variant::Double(1500.0)));

        // One byte more is refused, one less cannot decode.
        let mut longer = message.clone();
        longer.push(0);
        let e = decode_request(&longer).unwrap_err();
        assert_eq!(
            e,
            OpcUaError::ServiceTrailingBytes {
                service: Service::Write,
                extra: 1
            }
        );
        assert_eq!(e.to_string(), "write: 1 bytes after the end of the request");
        let e = decode_request(&message[..message.len() - 1]).unwrap_err();
        assert!(
            matches!(
                e,
                OpcUaError::Decode {
                    service: Service::Write,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), "decode");
    }

    #[test]
    fn decodes_a_call_request() {
        let request = CallRequest {
            request_header: header(8),
            methods_to_call: Some(vec![CallMethodRequest {
                object_id: NodeId::new(2, 100),
                method_id: NodeId::new(2, 101),
                input_arguments: Some(vec![
                    Variant::Boolean(true),
                    Variant::String(UAString::from("open")),
                ]),
            }]),
        };
        let message = encode_message(ObjectId::CallRequest_Encoding_DefaultBinary, &request);
        let decoded = decode_request(&message).unwrap();
        assert_eq!(
            (decoded.type_id, decoded.service, decoded.request_handle),
            (712, Service::Call, 8)
        );
        assert_eq!(decoded.request, DecodedRequest::Call(request));
    }

    #[test]
    fn the_hand_made_write_request_decodes() {
        // The fixture the hostile variants below start from: a Double 1500.0.
        let message = write_message(&[
            0x0B, // Variant: Double
            0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x97, 0x40, // 1500.0
        ]);
        let decoded = decode_request(&message).unwrap();
        assert_eq!(decoded.request_handle, 42);
        let DecodedRequest::Write(write) = decoded.request else {
            panic!();
        };
        let value = &write.nodes_to_write.unwrap()[0];
        assert_eq!(value.node_id, NodeId::new(2, 1_u32));
        assert_eq!(value.value.value, Some(Variant::Double(1500.0)));
    }

    #[test]
    fn other_and_unknown_services() {
        // A known service outside DecodedRequest: decoded, kept as Other.
        let request = CloseSessionRequest {
            request_header: header(9),
            delete_subscriptions: true,
        };
        let message = encode_message(
            ObjectId::CloseSessionRequest_Encoding_DefaultBinary,
            &request,
        );
        let decoded = decode_request(&message).unwrap();
        assert_eq!(
            (decoded.service, decoded.request_handle, decoded.request),
            (Service::CloseSession, 9, DecodedRequest::Other)
        );
        // An unknown type id: only the request header, whatever follows.
        let mut message = vec![
            0x01, 0x00, 0x39, 0x30, // type id: four-byte NodeId, ns 0, 12345
        ];
        message.extend_from_slice(&REQUEST_HEADER);
        message.extend_from_slice(&[0xDE, 0xAD]);
        let decoded = decode_request(&message).unwrap();
        assert_eq!(
            (
                decoded.type_id,
                decoded.service,
                decoded.request_handle,
                decoded.request
            ),
            (12345, Service::Unknown, 42, DecodedRequest::Other)
        );
        // But its request header must decode.
        assert!(matches!(
            decode_request(&message[..20]),
            Err(OpcUaError::Decode {
                service: Service::Unknown,
                ..
            })
        ));
        // A type id outside namespace 0, or not numeric.
        let mut message = vec![
            0x01, 0x02, 0xA1, 0x02, // type id: four-byte NodeId, ns 2, 673
        ];
        message.extend_from_slice(&REQUEST_HEADER);
        let e = decode_request(&message).unwrap_err();
        assert_eq!(
            e,
            OpcUaError::TypeId {
                type_id: "ns=2;i=673".to_owned()
            }
        );
        assert_eq!(e.kind(), "type_id");
        let message = [
            0x03, 0x00, 0x00, // type id: string NodeId, ns 0
            0x01, 0x00, 0x00, 0x00, b'x', // "x"
        ];
        assert!(matches!(
            decode_request(&message),
            Err(OpcUaError::TypeId { .. })
        ));
        // A long one is quoted short.
        let mut message = vec![
            0x03, 0x00, 0x00, // type id: string NodeId, ns 0
            0x10, 0x27, 0x00, 0x00, // length 10000
        ];
        message.extend(std::iter::repeat_n(b'x', 10_000));
        let Err(OpcUaError::TypeId { type_id }) = decode_request(&message) else {
            panic!();
        };
        assert_eq!(type_id.len(), MAX_ERROR_TEXT + 3);
        assert!(matches!(
            decode_request(&[]),
            Err(OpcUaError::Decode { .. })
        ));
    }

    #[test]
    fn only_a_request_that_encodes_back_to_its_bytes_is_accepted() {
        let double = [
            0x0B, // Variant: Double
            0x00, 0x00, 0x00, 0x00, 0x00, 0x70, 0x97, 0x40, // 1500.0
        ];
        let canonical = write_message(&double);
        assert!(decode_request(&canonical).is_ok());
        // Where the value starts: type id 4, request header 29, count 4, node id 4, attribute
        // 4, index range 4, DataValue mask 1.
        let value_at = 4 + 29 + 4 + 4 + 4 + 4 + 1;
        let round_trip = |message: &[u8]| match decode_request(message) {
            Err(OpcUaError::RoundTrip { service, offset }) => (service, offset),
            other => panic!("{other:?}"),
        };

        // A Boolean is 0 or 1; 2 reads as true to one decoder and may not to another.
        let boolean = [
            0x01, // Variant: Boolean
            0x02, // neither 0 nor 1
        ];
        assert_eq!(
            round_trip(&write_message(&boolean)),
            (Service::Write, value_at + 1)
        );

        // Numeric NodeIds in a longer form than they need are the same NodeIds to every
        // decoder, and real clients send them: the type id in the complete form where the
        // four-byte one fits, the written node likewise, the two-byte authentication token in
        // the four-byte form.
        let mut longer_forms = vec![
            0x02, 0x00, 0x00, // type id: complete numeric NodeId, ns 0
            0xA1, 0x02, 0x00, 0x00, // 673 WriteRequest
            0x01, 0x00, 0x00, 0x00, // authentication token: four-byte NodeId, ns 0, i=0
        ];
        longer_forms.extend_from_slice(&canonical[6..4 + 29 + 4]);
        longer_forms.extend_from_slice(&[
            0x02, 0x02, 0x00, // node: complete numeric NodeId, ns 2
            0x01, 0x00, 0x00, 0x00, // i=1
        ]);
        longer_forms.extend_from_slice(&canonical[4 + 29 + 4 + 4..]);
        let decoded = decode_request(&longer_forms).unwrap();
        assert_eq!(decoded.request, decode_request(&canonical).unwrap().request);
        // A longer form that the shortest form does not begin the same way is a difference:
        // the written node in namespace 3 where the encoder writes namespace 2.
        let offset = 7 + 4 + 27 + 4; // type id, token, rest of the header, count
        let mut other_namespace = longer_forms.clone();
        other_namespace[offset + 1] = 0x03; // the node's namespace: 3, not 2
        assert!(decode_request(&other_namespace).is_ok());
        assert_eq!(
            round_trips(
                &ExpandedNodeId::from(NodeId::new(0, 673_u32)),
                &match decode_request(&longer_forms).unwrap().request {
                    DecodedRequest::Write(w) => w,
                    other => panic!("{other:?}"),
                },
                &other_namespace,
            ),
            Err(offset)
        );

        // A DateTime before 1601 is read as 1601 by async-opcua, as something else elsewhere.
        let before_1601 = [
            0x0D, // Variant: DateTime
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // -1
        ];
        assert_eq!(
            round_trip(&write_message(&before_1601)),
            (Service::Write, value_at + 1)
        );

        // An ExtensionObject in the request header with an XML body.
        let mut xml_header = canonical.clone();
        let additional_header = 4 + 26;
        xml_header.splice(
            additional_header..additional_header + 3,
            [
                0x01, 0x00, 0x2A, 0x01, // type id: four-byte NodeId, ns 0, 298
                0x02, // encoding: XML body
                0x03, 0x00, 0x00, 0x00, b'<', b'a', b'>', // "<a>"
            ],
        );
        assert!(decode_request(&xml_header).is_err());

        // The comparison itself: equal, shorter, longer, different.
        let type_id = ExpandedNodeId::from(NodeId::new(0, 673_u32));
        let ctx = context();
        let mut bytes = Vec::new();
        type_id.encode(&mut bytes, &ctx.context()).unwrap();
        bytes.push(7);
        assert_eq!(round_trips(&type_id, &7_u8, &bytes), Ok(()));
        assert_eq!(round_trips(&type_id, &7_u8, &bytes[..3]), Err(3));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(round_trips(&type_id, &7_u8, &longer), Err(5));
        let mut other = bytes.clone();
        other[2] ^= 1;
        assert_eq!(round_trips(&type_id, &7_u8, &other), Err(2));
        assert_eq!(round_trips(&type_id, &8_u8, &bytes), Err(4));
    }

    #[test]
    fn an_extension_object_must_fill_its_length() {
        // A Variant holding an Argument (298), whose declared length leaves 4 bytes that a
        // server skipping by the length would not read as the request's next field.
        let argument = [
            0x16, // Variant: ExtensionObject
            0x01, 0x00, 0x2A, 0x01, // type id: four-byte NodeId, ns 0, 298 Argument
            0x01, // encoding: binary body
            0x18, 0x00, 0x00, 0x00, // body length 24: 16 for the Argument, 8 more
            0x01, 0x00, 0x00, 0x00, b'a', // name "a"
            0x00, 0x0B, // data type: two-byte NodeId, i=11 (Double)
            0xFF, 0xFF, 0xFF, 0xFF, // value rank -1
            0x00, 0x00, 0x00, 0x00, // array dimensions: empty (the crate writes no null here)
            0x00, // description: empty LocalizedText
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 8 bytes padding
        ];
        let mut exact = argument;
        exact[6] = 16;
        let object = written_object(&exact[..exact.len() - 8]);
        assert_eq!(object.inner_as::<Argument>().unwrap().name.as_ref(), "a");
        // Null array dimensions decode, but encode as empty ones: not the message's form.
        let mut null_dimensions = exact;
        null_dimensions[21..25].copy_from_slice(&[0xFF; 4]);
        assert!(matches!(
            decode_request(&write_message(&null_dimensions[..exact.len() - 8])),
            Err(OpcUaError::RoundTrip { .. })
        ));

        // 8 bytes beyond the body.
        let e = decode_request(&write_message(&argument)).unwrap_err();
        assert!(e.to_string().contains("8 of its 24 bytes are left"), "{e}");
        // 1 byte short of the body.
        let mut shorter = exact;
        shorter[6] = 15;
        let message = write_message(&shorter[..shorter.len() - 8]);
        assert!(decode_request(&message).is_err());
    }

    #[test]
    fn hostile_extension_object_lengths_allocate_nothing() {
        // A type nobody knows (ns 2): kept as raw bytes when its length is right.
        let unknown = [
            0x16, // Variant: ExtensionObject
            0x01, 0x02, 0x88, 0x13, // type id: four-byte NodeId, ns 2, 5000
            0x01, // encoding: binary body
            0x03, 0x00, 0x00, 0x00, // body length 3
            0xAA, 0xBB, 0xCC, // body
        ];
        let object = written_object(&unknown);
        assert_eq!(
            object
                .inner_as::<ByteStringBody>()
                .unwrap()
                .raw_body()
                .as_ref(),
            [0xAA, 0xBB, 0xCC]
        );
        // 2 GiB claimed: refused before anything is allocated for it.
        let mut huge = unknown;
        huge[6..10].copy_from_slice(&i32::MAX.to_le_bytes());
        let e = decode_request(&write_message(&huge)).unwrap_err();
        assert!(e.to_string().contains("longer than the message"), "{e}");
        // An XML body, of any length, is refused.
        let mut xml = unknown;
        xml[5] = 0x02;
        for length in [i32::MAX, 3] {
            xml[6..10].copy_from_slice(&length.to_le_bytes());
            assert!(decode_request(&write_message(&xml)).is_err());
        }
        let mut xml = unknown[..6].to_vec();
        xml[5] = 0x02;
        xml.extend_from_slice(&[0x07, 0x00, 0x00, 0x00]);
        xml.extend_from_slice(b"<a></a>");
        let e = decode_request(&write_message(&xml)).unwrap_err();
        assert!(e.to_string().contains("XML body"), "{e}");
        // The crate reads an XML body without an element start ("<a/>", "", text) as null before
        // any loader sees it: a null ExtensionObject, which does not encode back to the message.
        xml[6] = 4;
        xml.truncate(10);
        xml.extend_from_slice(b"<a/>");
        assert!(matches!(
            decode_request(&write_message(&xml)),
            Err(OpcUaError::RoundTrip { .. })
        ));
        // An Argument whose ValueRank claims 2^31 - 1 dimensions, which its decoder would
        // allocate (8 GiB).
        let mut argument = [
            0x16, // Variant: ExtensionObject
            0x01, 0x00, 0x2A, 0x01, // type id: four-byte NodeId, ns 0, 298 Argument
            0x01, // encoding: binary body
            0x10, 0x00, 0x00, 0x00, // body length 16
            0x01, 0x00, 0x00, 0x00, b'a', // name "a"
            0x00, 0x0B, // data type: two-byte NodeId, i=11 (Double)
            0xFF, 0xFF, 0xFF, 0x7F, // value rank 2^31 - 1
            0x00, 0x00, 0x00, 0x00, // array dimensions: none (unknown lengths)
            0x00, // description: empty LocalizedText
        ];
        let e = decode_request(&write_message(&argument)).unwrap_err();
        assert!(
            e.to_string().contains("ValueRank 2147483647 is above 32"),
            "{e}"
        );
        // Rank 2 without its dimensions: the crate pads them, so it does not encode back.
        argument[17..21].copy_from_slice(&2_i32.to_le_bytes());
        assert!(matches!(
            decode_request(&write_message(&argument)),
            Err(OpcUaError::RoundTrip { .. })
        ));
        // Rank 2 with both lengths stated as unknown: decodes and encodes back.
        let mut ranked = argument.to_vec();
        ranked[6] = 24; // body length 24
        ranked.splice(
            21..25,
            [
                0x02, 0x00, 0x00, 0x00, // array dimensions: 2
                0x00, 0x00, 0x00, 0x00, // unknown
                0x00, 0x00, 0x00, 0x00, // unknown
            ],
        );
        let object = written_object(&ranked);
        let decoded = object.inner_as::<Argument>().unwrap();
        assert_eq!(decoded.value_rank, 2);
        assert_eq!(decoded.array_dimensions, Some(vec![0, 0]));
        // The Argument's DataType id (296) in place of its encoding's: kept as bytes.
        argument[3] = 0x28;
        let object = written_object(&argument);
        assert!(object.inner_is::<ByteStringBody>());
        // ProgramDiagnosticDataType (896) holds Arguments: kept as bytes.
        let mut diagnostic = unknown;
        diagnostic[2..5].copy_from_slice(&[0x00, 0x80, 0x03]); // ns 0, i=896
        let object = written_object(&diagnostic);
        assert!(object.inner_is::<ByteStringBody>());
        // An array that claims 2^31 elements.
        let array = [
            0x86, // Variant: array of Int32
            0xFF, 0xFF, 0xFF, 0x7F, // 2^31 - 1 elements
            0x01, 0x00, 0x00, 0x00, // the first
        ];
        assert!(decode_request(&write_message(&array)).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // DiagnosticInfo in DiagnosticInfo: one byte per level, no depth count of its own.
        let mut variant = vec![0x19]; // Variant: DiagnosticInfo
        variant.extend(std::iter::repeat_n(0x40, 60_000)); // mask: inner DiagnosticInfo
        variant.push(0x00); // the innermost: empty
        let e = decode_request(&write_message(&variant)).unwrap_err();
        assert!(
            matches!(
                e,
                OpcUaError::Nesting {
                    service: Service::Write,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), "nesting");
        // DataValue in Variant in DataValue: two bytes per level.
        let mut variant = Vec::new();
        for _ in 0..30_000 {
            variant.extend_from_slice(&[
                0x17, // Variant: DataValue
                0x01, // DataValue: value only
            ]);
        }
        variant.push(0x00); // Variant: empty
        assert!(matches!(
            decode_request(&write_message(&variant)),
            Err(OpcUaError::Nesting { .. })
        ));
        // A few levels are fine.
        let mut variant = vec![0x19];
        variant.extend(std::iter::repeat_n(0x40, 8));
        variant.push(0x00);
        let decoded = decode_request(&write_message(&variant)).unwrap();
        let DecodedRequest::Write(write) = decoded.request else {
            panic!();
        };
        let Some(Variant::DiagnosticInfo(mut info)) =
            write.nodes_to_write.unwrap()[0].value.value.clone()
        else {
            panic!();
        };
        let mut depth = 0;
        while let Some(inner) = info.inner_diagnostic_info {
            info = inner;
            depth += 1;
        }
        assert_eq!(depth, 8);
        let _: DiagnosticInfo = *info;
        // Variants in Variants stop at the depth count.
        let deep = |levels: usize| {
            let mut variant = vec![0x18; levels]; // Variant: Variant
            variant.push(0x00);
            decode_request(&write_message(&variant))
        };
        assert!(deep(MAX_NESTING_DEPTH as usize - 1).is_ok());
        assert!(matches!(
            deep(MAX_NESTING_DEPTH as usize + 1),
            Err(OpcUaError::Decode { .. })
        ));
    }

    #[test]
    fn identity_tokens() {
        let activate = |token: ExtensionObject| {
            let request = ActivateSessionRequest {
                request_header: header(3),
                user_identity_token: token,
                ..ActivateSessionRequest::default()
            };
            let message = encode_message(
                ObjectId::ActivateSessionRequest_Encoding_DefaultBinary,
                &request,
            );
            let decoded = decode_request(&message).unwrap();
            assert_eq!(decoded.service, Service::ActivateSession);
            let DecodedRequest::ActivateSession(request) = decoded.request else {
                panic!();
            };
            request
        };
        let request = activate(ExtensionObject::from_message(UserNameIdentityToken {
            policy_id: "username".into(),
            user_name: "operator".into(),
            password: ByteString::from(b"encrypted secret".to_vec()),
            encryption_algorithm: "http://www.w3.org/2001/04/xmlenc#rsa-oaep".into(),
        }));
        let token = identity_token(&request);
        assert_eq!(
            token,
            IdentityToken::UserName {
                user_name: "operator"
            }
        );
        assert_eq!(token.kind(), "user_name");
        // The decoded request no longer holds the password.
        assert!(
            !format!("{request:?}").contains("115, 101, 99, 114, 101, 116"),
            "{request:?}"
        );
        let user = request
            .user_identity_token
            .inner_as::<UserNameIdentityToken>()
            .unwrap();
        assert!(user.password.is_null());
        assert_eq!(user.policy_id.as_ref(), "username");

        let request = activate(ExtensionObject::null());
        assert_eq!(identity_token(&request), IdentityToken::Anonymous);
        let request = activate(ExtensionObject::from_message(AnonymousIdentityToken {
            policy_id: "anonymous".into(),
        }));
        assert_eq!(identity_token(&request), IdentityToken::Anonymous);
        let request = activate(ExtensionObject::from_message(X509IdentityToken {
            policy_id: "x509".into(),
            certificate_data: ByteString::from(vec![0x30, 0x82]),
        }));
        assert_eq!(identity_token(&request).kind(), "x509");
        let request = activate(ExtensionObject::from_message(IssuedIdentityToken {
            policy_id: "jwt".into(),
            token_data: ByteString::from(b"eyJhbGciOi".to_vec()),
            ..IssuedIdentityToken::default()
        }));
        assert_eq!(identity_token(&request), IdentityToken::Issued);
        let issued = request
            .user_identity_token
            .inner_as::<IssuedIdentityToken>()
            .unwrap();
        assert!(issued.token_data.is_null());
        // Any other structure in its place.
        let request = activate(ExtensionObject::from_message(Argument::default()));
        assert_eq!(identity_token(&request), IdentityToken::Unknown);
    }

    #[test]
    fn service_fault_decodes_back() {
        // 2024-01-01T00:00:00Z in 100 ns ticks since 1601.
        let timestamp = 133_485_408_000_000_000;
        let bytes = encode_service_fault(7, 1, 54, 5, 42, STATUS_BAD_USER_ACCESS_DENIED, timestamp);
        let chunk = chunk_of(&bytes);
        let ChunkBody::Message(message) = chunk.body else {
            panic!();
        };
        assert_eq!((message.secure_channel_id, message.token_id), (7, 1));
        let (sequence, body) = parse_sequence_header(message.rest).unwrap();
        assert_eq!(
            sequence,
            SequenceHeader {
                sequence_number: 54,
                request_id: 5
            }
        );
        let owned = context();
        let ctx = owned.context();
        let mut stream = body;
        let type_id = NodeId::decode(&mut stream, &ctx).unwrap();
        assert_eq!(
            type_id,
            NodeId::from(ObjectId::ServiceFault_Encoding_DefaultBinary as u32)
        );
        let fault = ServiceFault::decode(&mut stream, &ctx).unwrap();
        assert!(stream.is_empty());
        assert_eq!(fault.response_header.request_handle, 42);
        assert_eq!(
            fault.response_header.service_result,
            StatusCode::BadUserAccessDenied
        );
        assert_eq!(fault.response_header.timestamp.checked_ticks(), timestamp);
        assert_eq!(fault.response_header.string_table, None);
        assert!(fault.response_header.additional_header.is_null());
    }

    /// The ServiceFault the proxy sends when the server does not answer request 5 (handle 42) in
    /// time: channel 7, token 1, the client's next sequence number 54.
    const SERVICE_FAULT_TIMEOUT: [u8; 52] = [
        b'M', b'S', b'G', // message type
        b'F', // chunk type: final
        0x34, 0x00, 0x00, 0x00, // message size 52
        0x07, 0x00, 0x00, 0x00, // secure channel id 7
        0x01, 0x00, 0x00, 0x00, // token id 1
        0x36, 0x00, 0x00, 0x00, // sequence number 54
        0x05, 0x00, 0x00, 0x00, // request id 5: the request's, so the client matches it
        0x01, 0x00, 0x8D, 0x01, // type id: four-byte NodeId, ns 0, 397 ServiceFault
        0x00, 0xC0, 0x89, 0x76, 0x45, 0x3C, 0xDA, 0x01, // timestamp 2024-01-01T00:00:00Z
        0x2A, 0x00, 0x00, 0x00, // request handle 42: the request's
        0x00, 0x00, 0x0A, 0x80, // service result 0x800A0000 Bad_Timeout
        0x00, // service diagnostics: DiagnosticInfo with an empty mask
        0xFF, 0xFF, 0xFF, 0xFF, // string table: null array
        0x00, 0x00, 0x00, // additional header: null NodeId, no body
    ];

    #[test]
    fn service_fault_bad_timeout_bytes() {
        let timestamp = 133_485_408_000_000_000;
        let bytes = encode_service_fault(7, 1, 54, 5, 42, STATUS_BAD_TIMEOUT, timestamp);
        assert_eq!(bytes, SERVICE_FAULT_TIMEOUT);
        // A whole chunk, and one async-opcua-types reads as the same fault.
        let chunk = chunk_of(&SERVICE_FAULT_TIMEOUT);
        let ChunkBody::Message(message) = chunk.body else {
            panic!("{chunk:?}");
        };
        let (_, body) = parse_sequence_header(message.rest).unwrap();
        let owned = context();
        let ctx = owned.context();
        let mut stream = &body[4..];
        let fault = ServiceFault::decode(&mut stream, &ctx).unwrap();
        assert!(stream.is_empty());
        assert_eq!(fault.response_header.request_handle, 42);
        assert_eq!(fault.response_header.service_result, StatusCode::BadTimeout);
        assert_eq!(fault.response_header.timestamp.checked_ticks(), timestamp);
    }

    #[test]
    fn status_codes_are_the_specs() {
        for (ours, theirs) in [
            (
                STATUS_BAD_USER_ACCESS_DENIED,
                StatusCode::BadUserAccessDenied,
            ),
            (
                STATUS_BAD_SECURITY_POLICY_REJECTED,
                StatusCode::BadSecurityPolicyRejected,
            ),
            (
                STATUS_BAD_TCP_MESSAGE_TOO_LARGE,
                StatusCode::BadTcpMessageTooLarge,
            ),
            (
                STATUS_BAD_TCP_MESSAGE_TYPE_INVALID,
                StatusCode::BadTcpMessageTypeInvalid,
            ),
            (
                STATUS_BAD_COMMUNICATION_ERROR,
                StatusCode::BadCommunicationError,
            ),
            (
                STATUS_BAD_SECURITY_CHECKS_FAILED,
                StatusCode::BadSecurityChecksFailed,
            ),
            (STATUS_BAD_DECODING_ERROR, StatusCode::BadDecodingError),
            (STATUS_BAD_TIMEOUT, StatusCode::BadTimeout),
            (
                STATUS_BAD_SERVICE_UNSUPPORTED,
                StatusCode::BadServiceUnsupported,
            ),
        ] {
            assert_eq!(ours, theirs.bits(), "{theirs}");
        }
    }

    #[test]
    fn services_by_type_id() {
        for (id, service) in [
            (631, Service::Read),
            (673, Service::Write),
            (712, Service::Call),
            (527, Service::Browse),
            (446, Service::OpenSecureChannel),
            (452, Service::CloseSecureChannel),
            (461, Service::CreateSession),
            (467, Service::ActivateSession),
            (473, Service::CloseSession),
            (787, Service::CreateSubscription),
            (751, Service::CreateMonitoredItems),
            (826, Service::Publish),
            (664, Service::HistoryRead),
            (700, Service::HistoryUpdate),
            (488, Service::AddNodes),
            (494, Service::AddReferences),
            (500, Service::DeleteNodes),
            (506, Service::DeleteReferences),
            (428, Service::GetEndpoints),
            (422, Service::FindServers),
            (12208, Service::FindServersOnNetwork),
            (12211, Service::RegisterServer2),
        ] {
            assert_eq!(Service::from_type_id(id), service, "{id}");
        }
        // Responses, the XML encodings and nonsense are not requests.
        for id in [0, 634, 630, 397, u32::MAX] {
            assert_eq!(Service::from_type_id(id), Service::Unknown, "{id}");
        }
        let mut names = Vec::new();
        for service in Service::ALL {
            let id = service.type_id().unwrap();
            assert_eq!(Service::from_type_id(id), service);
            let name = service.name();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
            assert_eq!(service.to_string(), name);
            names.push(name);
        }
        assert_eq!(Service::Unknown.type_id(), None);
        names.push(Service::Unknown.name());
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Service::ALL.len() + 1);
    }

    #[test]
    fn security_policies() {
        let uri = |name: &str| format!("{SECURITY_POLICY_PREFIX}{name}");
        for (name, len) in [
            ("None", Some(0)),
            ("Basic128Rsa15", Some(20)),
            ("Basic256", Some(20)),
            ("Basic256Sha256", Some(32)),
            ("Aes128_Sha256_RsaOaep", Some(32)),
            ("Aes256_Sha256_RsaPss", Some(32)),
            ("ECC_curve25519", None),
        ] {
            assert_eq!(signature_len(&uri(name)), len, "{name}");
            assert_eq!(security_policy_name(&uri(name)), name);
        }
        assert_eq!(signature_len("Basic256Sha256"), None);
        assert_eq!(
            security_policy_name("urn:vendor:policy#Basic256Sha256"),
            "urn:vendor:policy#Basic256Sha256"
        );
        assert_eq!(
            security_policy_name(SECURITY_POLICY_PREFIX),
            SECURITY_POLICY_PREFIX
        );
    }

    #[test]
    fn error_kinds_are_distinct() {
        let errors = [
            OpcUaError::MessageType { found: *b"GET" },
            OpcUaError::ChunkType {
                message_type: MessageType::Hello,
                found: b'C',
            },
            OpcUaError::ChunkTooSmall {
                message_type: MessageType::Hello,
                size: 8,
                min: 32,
            },
            OpcUaError::ChunkTooLarge {
                message_type: MessageType::Message,
                size: u32::MAX,
                max: MAX_CHUNK_SIZE,
            },
            OpcUaError::Truncated {
                message_type: MessageType::Hello,
                field: "EndpointUrl",
                needed: 5,
                remaining: 4,
            },
            OpcUaError::TrailingBytes {
                message_type: MessageType::Error,
                extra: 1,
            },
            OpcUaError::NegativeLength {
                field: "Reason",
                length: -2,
            },
            OpcUaError::FieldTooLong {
                field: "Reason",
                length: 5000,
                max: MAX_REASON_LEN,
            },
            OpcUaError::Utf8 { field: "Reason" },
            OpcUaError::NullField {
                field: "SecurityPolicyUri",
            },
            OpcUaError::BufferSize {
                field: "ReceiveBufferSize",
                size: 0,
            },
            OpcUaError::SequenceHeader { remaining: 0 },
            OpcUaError::NotSymmetric { found: *b"HEL" },
            OpcUaError::TooManyChunks {
                request_id: 1,
                max: MAX_CHUNK_COUNT,
            },
            OpcUaError::MessageTooLarge {
                request_id: 1,
                size: MAX_MESSAGE_SIZE + 1,
                max: MAX_MESSAGE_SIZE,
            },
            OpcUaError::TooManyPartialMessages {
                request_id: 1,
                max: MAX_PARTIAL_MESSAGES,
            },
            OpcUaError::TypeId {
                type_id: "ns=2;i=1".to_owned(),
            },
            OpcUaError::Nesting {
                service: Service::Write,
                offset: 100,
            },
            OpcUaError::Decode {
                service: Service::Read,
                offset: 4,
                reason: "x".to_owned(),
            },
            OpcUaError::ServiceTrailingBytes {
                service: Service::Read,
                extra: 1,
            },
        ];
        let mut kinds: Vec<_> = errors.iter().map(OpcUaError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), errors.len());
        for e in errors {
            assert!(!e.to_string().is_empty());
            assert_eq!(e.status() & 0x8000_0000, 0x8000_0000, "a Bad status");
        }
    }
}

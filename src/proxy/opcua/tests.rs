//! The OPC UA session's chunk handling without sockets: byte fixtures in, bytes and audit
//! events out. (The session's I/O loop is not yet the shared driver's; these tests call the
//! handlers the loop calls.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    // Fixture arithmetic on small constant sizes.
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use opcua_types::{
    BinaryEncodable, ByteString, ContextOwned, DataValue, MessageSecurityMode, NodeId, ObjectId,
    OpenSecureChannelRequest, ReadRequest, ReadValueId, RequestHeader, SecurityTokenRequestType,
    Variant, WriteRequest, WriteValue,
};

use super::*;
use crate::proxy::testkit::{Kit, actions, client, device_of, zones};

/// The secure channel may open; reads are allowed; anything else (a Write) is refused.
const POLICY: &str = r#"
package zonegate.test

import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request", "rule": "test.default"}

decision := {"allow": true, "reason": "", "rule": "test.open"} if {
	input.opcua.stage == "open"
} else := {"allow": true, "reason": "", "rule": "test.read"} if {
	input.opcua.access == "read"
}
"#;

const URL: &str = "opc.tcp://10.2.0.20:4840";
/// Status codes of the answers (Part 6 A.2).
const BAD_USER_ACCESS_DENIED: u32 = 0x801F_0000;

/// A HEL chunk (Part 6 7.1.2.3) asking for more than the gateway allows.
fn hello() -> Vec<u8> {
    let url = URL.as_bytes();
    let mut b = Vec::new();
    b.extend_from_slice(b"HELF"); // message type HEL, chunk type F
    b.extend_from_slice(&(32 + url.len() as u32).to_le_bytes()); // MessageSize
    b.extend_from_slice(&0u32.to_le_bytes()); // ProtocolVersion 0
    b.extend_from_slice(&(16u32 << 20).to_le_bytes()); // ReceiveBufferSize: 16 MiB
    b.extend_from_slice(&(16u32 << 20).to_le_bytes()); // SendBufferSize: 16 MiB
    b.extend_from_slice(&0u32.to_le_bytes()); // MaxMessageSize: 0, no limit
    b.extend_from_slice(&0u32.to_le_bytes()); // MaxChunkCount: 0, no limit
    b.extend_from_slice(&(url.len() as i32).to_le_bytes()); // EndpointUrl length
    b.extend_from_slice(url); // EndpointUrl
    b
}

/// The server's ACK (Part 6 7.1.2.4), as generous as the client's Hello.
fn acknowledge() -> Vec<u8> {
    opcua::encode_acknowledge(&Acknowledge {
        protocol_version: 0,
        receive_buffer_size: 16 << 20,
        send_buffer_size: 16 << 20,
        max_message_size: 0,
        max_chunk_count: 0,
    })
}

/// An OPN chunk with SecurityPolicy None and a plaintext OpenSecureChannelRequest.
fn open_none() -> Vec<u8> {
    let owned = ContextOwned::default();
    let ctx = owned.context();
    let mut body = Vec::new();
    NodeId::from(ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary as u32)
        .encode(&mut body, &ctx)
        .unwrap();
    OpenSecureChannelRequest {
        request_header: RequestHeader {
            request_handle: 1,
            timeout_hint: 10_000,
            ..RequestHeader::default()
        },
        client_protocol_version: 0,
        request_type: SecurityTokenRequestType::Issue,
        security_mode: MessageSecurityMode::None,
        client_nonce: ByteString::null(),
        requested_lifetime: 600_000,
    }
    .encode(&mut body, &ctx)
    .unwrap();
    let uri = b"http://opcfoundation.org/UA/SecurityPolicy#None";
    let mut b = Vec::new();
    b.extend_from_slice(b"OPNF"); // message type OPN, chunk type F
    let size = 8 + 4 + 4 + uri.len() + 4 + 4 + 8 + body.len();
    b.extend_from_slice(&(size as u32).to_le_bytes()); // MessageSize
    b.extend_from_slice(&0u32.to_le_bytes()); // SecureChannelId: none yet
    b.extend_from_slice(&(uri.len() as i32).to_le_bytes()); // SecurityPolicyUri length
    b.extend_from_slice(uri); // SecurityPolicyUri
    b.extend_from_slice(&(-1i32).to_le_bytes()); // SenderCertificate: null
    b.extend_from_slice(&(-1i32).to_le_bytes()); // ReceiverCertificateThumbprint: null
    b.extend_from_slice(&1u32.to_le_bytes()); // SequenceNumber 1
    b.extend_from_slice(&1u32.to_le_bytes()); // RequestId 1
    b.extend_from_slice(&body); // type id + OpenSecureChannelRequest
    b
}

/// A final MSG chunk on channel 1, token 1, carrying `request` (its type id first).
fn message<T: BinaryEncodable>(encoding: ObjectId, request: &T, sequence: u32, id: u32) -> Vec<u8> {
    let owned = ContextOwned::default();
    let ctx = owned.context();
    let mut body = Vec::new();
    NodeId::from(encoding as u32)
        .encode(&mut body, &ctx)
        .unwrap();
    request.encode(&mut body, &ctx).unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(b"MSGF"); // message type MSG, chunk type F
    b.extend_from_slice(&((24 + body.len()) as u32).to_le_bytes()); // MessageSize
    b.extend_from_slice(&1u32.to_le_bytes()); // SecureChannelId 1
    b.extend_from_slice(&1u32.to_le_bytes()); // TokenId 1
    b.extend_from_slice(&sequence.to_le_bytes()); // SequenceNumber
    b.extend_from_slice(&id.to_le_bytes()); // RequestId
    b.extend_from_slice(&body);
    b
}

fn header(handle: u32) -> RequestHeader {
    RequestHeader {
        request_handle: handle,
        timeout_hint: 10_000,
        ..RequestHeader::default()
    }
}

/// A Write of 1500.0 to ns=2;s=setpoint, request handle 7: the policy refuses it.
fn write(sequence: u32, id: u32) -> Vec<u8> {
    let request = WriteRequest {
        request_header: header(7),
        nodes_to_write: Some(vec![WriteValue {
            node_id: NodeId::new(2, "setpoint"),
            attribute_id: 13, // Value
            value: DataValue {
                value: Some(Variant::Double(1500.0)),
                ..DataValue::default()
            },
            ..WriteValue::default()
        }]),
    };
    message(
        ObjectId::WriteRequest_Encoding_DefaultBinary,
        &request,
        sequence,
        id,
    )
}

/// A Read of ns=2;s=setpoint's value, request handle 8: allowed.
fn read(sequence: u32, id: u32) -> Vec<u8> {
    let request = ReadRequest {
        request_header: header(8),
        nodes_to_read: Some(vec![ReadValueId {
            node_id: NodeId::new(2, "setpoint"),
            attribute_id: 13,
            ..ReadValueId::default()
        }]),
        ..ReadRequest::default()
    };
    message(
        ObjectId::ReadRequest_Encoding_DefaultBinary,
        &request,
        sequence,
        id,
    )
}

fn session(kit: &Kit) -> Session {
    Session::new(
        client(),
        device_of(Protocol::OpcUa),
        kit.route(Protocol::OpcUa),
        kit.watch(),
        kit.audit(),
    )
}

/// Bytes from `side`, handled as the session's loop handles a read.
fn feed(s: &mut Session, side: Side, bytes: &[u8]) -> Flow {
    match side {
        Side::Client => s.from_client.extend_from_slice(bytes),
        Side::Server => s.from_server.extend_from_slice(bytes),
    }
    s.chunks(side)
}

/// What the session queued: (to the client, to the server).
fn written(s: &mut Session) -> (Vec<u8>, Vec<u8>) {
    (
        std::mem::take(&mut s.to_client),
        std::mem::take(&mut s.to_server),
    )
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A session past Hello/Acknowledge and OpenSecureChannel (SecurityPolicy None).
fn open_channel(kit: &Kit) -> Session {
    let mut s = session(kit);
    assert_eq!(feed(&mut s, Side::Client, &hello()), Flow::Continue);
    assert_eq!(feed(&mut s, Side::Server, &acknowledge()), Flow::Continue);
    assert_eq!(feed(&mut s, Side::Client, &open_none()), Flow::Continue);
    written(&mut s);
    s
}

fn kit() -> Kit {
    Kit::new(
        &zones(
            "policy: p.rego, mode: enforce, on_deny: illegal-function",
            "idle_timeout: 60s",
        ),
        POLICY,
    )
}

#[test]
fn hello_and_acknowledge_pass_clamped_to_the_gateways_limits() {
    let kit = kit();
    let mut s = session(&kit);
    let ours = s.frames;
    assert_eq!(feed(&mut s, Side::Client, &hello()), Flow::Continue);
    let (to_client, to_server) = written(&mut s);
    assert!(to_client.is_empty());
    let (chunk, used) = opcua::parse_chunk(&to_server, u32::MAX).unwrap().unwrap();
    assert_eq!(used, to_server.len());
    let ChunkBody::Hello(h) = chunk.body else {
        panic!("{chunk:?}")
    };
    assert_eq!(h.endpoint_url, URL);
    assert_eq!(h.receive_buffer_size, ours.max_chunk_size);
    assert_eq!(h.send_buffer_size, ours.max_chunk_size);
    // 0 ("no limit") becomes the gateway's limit.
    assert_eq!(h.max_message_size as usize, ours.max_message_size);
    assert_eq!(h.max_chunk_count as usize, ours.max_chunks);
    assert_eq!(feed(&mut s, Side::Server, &acknowledge()), Flow::Continue);
    let (to_client, to_server) = written(&mut s);
    assert!(to_server.is_empty());
    let (chunk, _) = opcua::parse_chunk(&to_client, u32::MAX).unwrap().unwrap();
    let ChunkBody::Acknowledge(a) = chunk.body else {
        panic!("{chunk:?}")
    };
    assert_eq!(a.receive_buffer_size, ours.max_chunk_size);
    assert_eq!(a.max_message_size as usize, ours.max_message_size);
    // The OpenSecureChannel is judged at the `open` stage and goes on as it came.
    assert_eq!(feed(&mut s, Side::Client, &open_none()), Flow::Continue);
    assert_eq!(written(&mut s), (Vec::new(), open_none()));
}

#[test]
fn a_denied_write_is_answered_with_a_service_fault_and_never_reaches_the_server() {
    let mut kit = kit();
    let mut s = open_channel(&kit);
    assert_eq!(feed(&mut s, Side::Client, &write(2, 2)), Flow::Continue);
    let (to_client, to_server) = written(&mut s);
    assert!(to_server.is_empty(), "the write stays at the gateway");
    // MSG header (24 bytes), then the ServiceFault's type id (four-byte node id 397), then
    // its ResponseHeader: Timestamp (8), RequestHandle (4), ServiceResult (4).
    assert_eq!(&to_client[..4], b"MSGF");
    assert_eq!(u32_at(&to_client, 20), 2, "request id of the write");
    assert_eq!(
        &to_client[24..28],
        &[0x01, 0x00, 0x8D, 0x01],
        "ServiceFault"
    );
    assert_eq!(u32_at(&to_client, 36), 7, "request handle of the write");
    assert_eq!(u32_at(&to_client, 40), BAD_USER_ACCESS_DENIED);
    // The next request goes on, renumbered after the dropped one (sequence 2 again).
    assert_eq!(feed(&mut s, Side::Client, &read(3, 3)), Flow::Continue);
    let (to_client, to_server) = written(&mut s);
    assert!(to_client.is_empty());
    let mut expected = read(3, 3);
    expected[16..20].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(to_server, expected);
    drop(s);
    let events = kit.events();
    let e = actions(&events, "opcua-request")
        .find(|e| e["opcua"]["service"] == "write")
        .expect("audited");
    assert_eq!(e["zonegate"]["decision"], "deny", "{e}");
    assert_eq!(e["opcua"]["access"], "write", "{e}");
    assert_eq!(e["rule"]["name"], "test.default", "{e}");
}

#[test]
fn a_chunk_split_at_every_byte_is_judged_once_whole() {
    let kit = kit();
    let whole = read(2, 2);
    for cut in 1..whole.len() {
        let mut s = open_channel(&kit);
        assert_eq!(feed(&mut s, Side::Client, &whole[..cut]), Flow::Continue);
        assert_eq!(written(&mut s), (Vec::new(), Vec::new()), "cut at {cut}");
        assert_eq!(feed(&mut s, Side::Client, &whole[cut..]), Flow::Continue);
        assert_eq!(written(&mut s), (Vec::new(), whole.clone()), "cut at {cut}");
    }
    // The Hello too.
    let hello = hello();
    for cut in 1..hello.len() {
        let mut s = session(&kit);
        assert_eq!(feed(&mut s, Side::Client, &hello[..cut]), Flow::Continue);
        assert_eq!(s.phase, Phase::Hello, "cut at {cut}");
        assert_eq!(feed(&mut s, Side::Client, &hello[cut..]), Flow::Continue);
        assert_eq!(s.phase, Phase::Open, "cut at {cut}");
    }
}

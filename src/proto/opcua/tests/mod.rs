//! Unit tests of the OPC UA parser: shared fixtures (hand-made chunks and requests) and helpers;
//! the chunk and the request tests are in their own files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod chunks;
mod requests;

use super::*;
use opcua_types::{
    ActivateSessionRequest, AnonymousIdentityToken, Argument, BinaryDecodable, BinaryEncodable,
    ByteString, ByteStringBody, CallMethodRequest, CallRequest, CloseSessionRequest, ContextOwned,
    DataValue, DiagnosticInfo, ExpandedNodeId, ExtensionObject, IssuedIdentityToken, NodeId,
    ObjectId, RequestHeader, ServiceFault, StatusCode, UAString, UserNameIdentityToken, Variant,
    WriteRequest, WriteValue, X509IdentityToken,
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
    b'o', b'p', b'c', b'.', b't', b'c', b'p', b':', b'/', b'/', b'p', b'l', b'c', b':', b'4', b'8',
    b'4', b'0', // "opc.tcp://plc:4840"
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
    b'h', b't', b't', b'p', b':', b'/', b'/', b'o', b'p', b'c', b'f', b'o', b'u', b'n', b'd', b'a',
    b't', b'i', b'o', b'n', b'.', b'o', b'r', b'g', b'/', b'U', b'A', b'/', b'S', b'e', b'c', b'u',
    b'r', b'i', b't', b'y', b'P', b'o', b'l', b'i', b'c', b'y', b'#', b'N', b'o', b'n',
    b'e', // "http://opcfoundation.org/UA/SecurityPolicy#None"
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
    b'h', b't', b't', b'p', b':', b'/', b'/', b'o', b'p', b'c', b'f', b'o', b'u', b'n', b'd', b'a',
    b't', b'i', b'o', b'n', b'.', b'o', b'r', b'g', b'/', b'U', b'A', b'/', b'S', b'e', b'c', b'u',
    b'r', b'i', b't', b'y', b'P', b'o', b'l', b'i', b'c', b'y', b'#', b'B', b'a', b's', b'i', b'c',
    b'2', b'5', b'6', b'S', b'h', b'a', b'2', b'5',
    b'6', // "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"
    0x04, 0x00, 0x00, 0x00, // sender certificate length 4
    0x30, 0x82, 0x01, 0x0A, // the start of a DER certificate
    0x14, 0x00, 0x00, 0x00, // receiver certificate thumbprint length 20
    0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
    0x11, 0x11, 0x11, 0x11, // SHA-1 thumbprint
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

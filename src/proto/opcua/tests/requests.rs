//! Requests: decoding, the round-trip check, hostile lengths and nesting, identity tokens,
//! ServiceFaults, status codes and the service catalogue.

use super::*;

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

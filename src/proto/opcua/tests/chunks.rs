//! Chunks: headers, connection protocol messages, sequence numbers, reassembly and its limits.

use super::*;

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

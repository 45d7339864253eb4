//! zonegate: IEC 62443 zones and conduits enforced on an industrial gateway.
//!
//! A request flows: nftables -> listener -> parser -> policy input -> decision -> forward or
//! refuse -> audit + metrics. This crate so far holds the model ([`config`]), its enforcement in
//! the kernel ([`nft`]) kept in force by the daemon ([`control`]), and its picture ([`diagram`]).
//!
//! # Layers
//!
//! Every import points down; `scripts/layers` prints the module graph and fails on a cycle, at
//! the top level and among the children of every module (it runs in `scripts/test`). Top to
//! bottom, a module names only modules in the layers below it:
//!
//! 1. [`control`] (the daemon: starts, reloads, stops everything), [`compliance`] (the IEC
//!    62443-3-3 report), `fuzz` (entry points for the fuzz targets)
//! 2. [`proxy`] (listeners and protocol sessions), [`api`] (management API), [`diagram`]
//! 3. [`site`] (a configuration with its compiled policies, swapped whole on reload),
//!    [`quarantine`] (counts violation values, holds sources in the kernel; knows no route)
//! 4. [`admission`] (connection limits, write-rate buckets, the inspected protocols),
//!    [`policy`] (Rego decisions and the policy input), [`audit`] (events, hash chain, sinks)
//! 5. [`nft`] (the ruleset, its renderings, the kernel side, the drop-log reader), [`metrics`]
//!    (a leaf fed plain values)
//! 6. [`config`] (zones.yaml and every settings type: model, audit, limits, egress)
//! 7. [`proto`] (pure Modbus/TCP and OPC UA parsers)

pub mod admission;
pub mod api;
pub mod audit;
pub mod compliance;
pub mod config;
pub mod control;
pub mod diagram;
pub mod metrics;
pub mod nft;
pub mod policy;
pub mod proto;
pub mod proxy;
pub mod quarantine;
pub mod site;

/// Entry points for the `fuzz/` targets: each is the whole path that untrusted input takes.
#[doc(hidden)]
pub mod fuzz {
    /// zones.yaml text through validation and, when valid, every rendering of it.
    pub fn zones_yaml(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(model) = crate::config::parse(text) {
            let rs = crate::nft::render(&model);
            let _ = crate::nft::text::render(&rs);
            let _ = crate::nft::json::transaction(&rs).and_then(|doc| serde_json::to_vec(&doc));
            let _ = crate::diagram::mermaid(&model);
            let _ = model.warnings();
        }
    }

    /// Bytes from a Modbus/TCP peer, read frame after frame as requests and as responses: the
    /// parsers and every accessor policy and audit use must never panic, and what parses must
    /// agree with the bytes it came from.
    pub fn modbus(data: &[u8]) {
        use crate::proto::modbus::{MBAP_LEN, parse_request, parse_response};

        let mut rest = data;
        loop {
            let parsed = parse_request(rest);
            // A frame is judged the same however much of it has arrived.
            let shorter =
                parse_request(rest.get(..rest.len().saturating_sub(1)).unwrap_or_default());
            match parsed {
                Ok(Some((frame, used))) => {
                    assert_eq!(Some(frame.pdu), rest.get(MBAP_LEN..used));
                    assert_eq!(frame.pdu.first(), Some(&frame.body.function_code()));
                    let cut = rest.get(..used.saturating_sub(1)).unwrap_or_default();
                    assert_eq!(parse_request(cut), Ok(None));
                    modbus_request(&frame.body);
                    rest = rest.get(used..).unwrap_or_default();
                }
                Ok(None) => {
                    assert_eq!(shorter, Ok(None));
                    break;
                }
                Err(e) => {
                    assert!(shorter == Ok(None) || shorter == Err(e));
                    let _ = (e.kind(), e.to_string());
                    // A request error is answered once its whole ADU is in, and the next
                    // request follows it; a framing error ends the stream.
                    match crate::proto::modbus::refusal(rest, e) {
                        Ok(Some(refusal)) => {
                            assert_eq!(e.exception(), Some(refusal.code));
                            assert!(refusal.len > MBAP_LEN && refusal.len <= rest.len());
                            rest = rest.get(refusal.len..).unwrap_or_default();
                        }
                        Ok(None) => {
                            assert!(e.exception().is_some());
                            break;
                        }
                        Err(framing) => {
                            assert_eq!((framing, e.exception()), (e, None));
                            break;
                        }
                    }
                }
            }
        }

        let mut rest = data;
        loop {
            match parse_response(rest) {
                Ok(Some((frame, used))) => {
                    assert_eq!(Some(frame.pdu), rest.get(MBAP_LEN..used));
                    let _ = frame.body.function_code();
                    rest = rest.get(used..).unwrap_or_default();
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = (e.kind(), e.to_string());
                    break;
                }
            }
        }
    }

    /// Bytes from an OPC UA client, read chunk after chunk as the proxy reads them: chunk
    /// parser, sequence headers, reassembly and the service decoder must never panic, and what
    /// parses must agree with the bytes it came from. The bytes are also decoded whole as one
    /// message body, which is what reassembly hands the decoder.
    pub fn opcua(data: &[u8]) {
        use crate::proto::opcua::{MAX_CHUNK_SIZE, MAX_PARTIAL_MESSAGES, Reassembler, parse_chunk};

        let mut reassembler = Reassembler::default();
        let mut rest = data;
        loop {
            let parsed = parse_chunk(rest, MAX_CHUNK_SIZE);
            // A chunk is judged the same however much of it has arrived.
            let shorter = parse_chunk(
                rest.get(..rest.len().saturating_sub(1)).unwrap_or_default(),
                MAX_CHUNK_SIZE,
            );
            match parsed {
                Ok(Some((chunk, used))) => {
                    assert_eq!(usize::try_from(chunk.header.size).ok(), Some(used));
                    assert_eq!(chunk.bytes.len(), used);
                    assert_eq!(Some(chunk.bytes), rest.get(..used));
                    let cut = rest.get(..used.saturating_sub(1)).unwrap_or_default();
                    assert_eq!(parse_chunk(cut, MAX_CHUNK_SIZE), Ok(None));
                    opcua_chunk(&chunk, &mut reassembler);
                    assert!(reassembler.pending() <= MAX_PARTIAL_MESSAGES);
                    rest = rest.get(used..).unwrap_or_default();
                }
                Ok(None) => {
                    assert_eq!(shorter, Ok(None));
                    break;
                }
                Err(e) => {
                    assert!(shorter == Ok(None) || shorter.as_ref() == Err(&e));
                    let _ = (e.kind(), e.to_string(), e.status());
                    break;
                }
            }
        }
        opcua_message(data);
    }

    /// One parsed chunk: encoders agree with the parser, plaintext bodies go through the
    /// sequence header and reassembly to the decoder.
    fn opcua_chunk(
        chunk: &crate::proto::opcua::Chunk<'_>,
        reassembler: &mut crate::proto::opcua::Reassembler,
    ) {
        use crate::proto::opcua::{
            ChunkBody, MAX_CHUNK_SIZE, Reassembler, SYMMETRIC_SEQUENCE_OFFSET, encode_acknowledge,
            encode_error, encode_hello, parse_chunk, parse_sequence_header, security_policy_name,
            set_sequence_number, signature_len,
        };

        // What an encoder writes parses back to what it was given.
        let reparses_to = |bytes: &[u8], body: &ChunkBody<'_>| {
            let reparsed = parse_chunk(bytes, MAX_CHUNK_SIZE);
            assert_eq!(reparsed.map(|c| c.map(|(c, _)| c.body)), Ok(Some(*body)));
        };
        match chunk.body {
            ChunkBody::Hello(hello) => reparses_to(&encode_hello(&hello), &chunk.body),
            ChunkBody::Acknowledge(ack) => assert_eq!(encode_acknowledge(&ack), chunk.bytes),
            ChunkBody::Error(error) => {
                reparses_to(&encode_error(error.error, error.reason), &chunk.body);
            }
            ChunkBody::ReverseHello(_) => {}
            ChunkBody::Open(open) => {
                let _ = (
                    security_policy_name(open.security_policy_uri),
                    signature_len(open.security_policy_uri),
                );
                if open.is_security_none()
                    && let Ok((_, body)) = parse_sequence_header(open.rest)
                {
                    opcua_message(body);
                }
            }
            ChunkBody::Message(message) | ChunkBody::Close(message) => {
                let mut copy = chunk.bytes.to_vec();
                assert!(set_sequence_number(&mut copy, 0xA5A5_A5A5).is_ok());
                assert_eq!(
                    copy.get(SYMMETRIC_SEQUENCE_OFFSET..SYMMETRIC_SEQUENCE_OFFSET + 4),
                    Some(&0xA5A5_A5A5_u32.to_le_bytes()[..])
                );
                let Ok((sequence, body)) = parse_sequence_header(message.rest) else {
                    return;
                };
                match reassembler.push(sequence.request_id, chunk.header.chunk_type, body) {
                    Ok(Some(message)) => opcua_message(&message),
                    Ok(None) => {}
                    // The proxy closes the connection here: start afresh.
                    Err(e) => {
                        let _ = (e.kind(), e.to_string());
                        *reassembler = Reassembler::default();
                    }
                }
            }
        }
    }

    /// A reassembled request body straight into the service decoder (the `opcua` target gets
    /// there only through chunk framing).
    pub fn opcua_request(data: &[u8]) {
        opcua_message(data);
    }

    /// A message body through the service decoder, and what policy reads of the result.
    ///
    /// The round-trip rule: whatever the decoder accepts encodes back to the message (up to
    /// the numeric NodeId forms, which only shorten), and that encoding decodes to the same
    /// request, so the bytes the proxy forwards say nothing its policy input does not.
    fn opcua_message(message: &[u8]) {
        use crate::proto::opcua::{DecodedRequest, Service, decode_request, identity_token};

        match decode_request(message) {
            Ok(request) => {
                let _ = request.service.name();
                if request.service != Service::Unknown {
                    assert_eq!(Service::from_type_id(request.type_id), request.service);
                    assert_eq!(request.service.type_id(), Some(request.type_id));
                }
                if let DecodedRequest::ActivateSession(activate) = &request.request {
                    let _ = identity_token(activate).kind();
                }
                if let Some(encoded) = encode_again(&request) {
                    assert!(encoded.len() <= message.len());
                    // Compared as bytes: a NaN is not equal to itself.
                    let again = decode_request(&encoded).map(|r| encode_again(&r));
                    assert_eq!(again, Ok(Some(encoded.clone())));
                    if encoded.len() == message.len() {
                        assert_eq!(encoded, message);
                    }
                }
            }
            Err(e) => {
                let _ = (e.kind(), e.to_string(), e.status());
            }
        }
    }

    /// The type id and the decoded request encoded anew by async-opcua-types, for the requests
    /// the decoder keeps whole (ActivateSession's copy has its secrets removed).
    fn encode_again(request: &crate::proto::opcua::ServiceRequest) -> Option<Vec<u8>> {
        use crate::proto::opcua::DecodedRequest as R;
        use opcua_types::{BinaryEncodable, ContextOwned, NodeId};

        let owned = ContextOwned::default();
        let ctx = owned.context();
        let mut out = Vec::new();
        NodeId::new(0, request.type_id)
            .encode(&mut out, &ctx)
            .ok()?;
        let encoded = match &request.request {
            R::Read(r) => r.encode(&mut out, &ctx),
            R::Write(r) => r.encode(&mut out, &ctx),
            R::Call(r) => r.encode(&mut out, &ctx),
            R::Browse(r) => r.encode(&mut out, &ctx),
            R::CreateMonitoredItems(r) => r.encode(&mut out, &ctx),
            R::CreateSession(r) => r.encode(&mut out, &ctx),
            R::HistoryRead(r) => r.encode(&mut out, &ctx),
            R::HistoryUpdate(r) => r.encode(&mut out, &ctx),
            R::AddNodes(r) => r.encode(&mut out, &ctx),
            R::DeleteNodes(r) => r.encode(&mut out, &ctx),
            R::AddReferences(r) => r.encode(&mut out, &ctx),
            R::DeleteReferences(r) => r.encode(&mut out, &ctx),
            R::TranslateBrowsePaths(r) => r.encode(&mut out, &ctx),
            R::RegisterNodes(r) => r.encode(&mut out, &ctx),
            R::UnregisterNodes(r) => r.encode(&mut out, &ctx),
            R::ActivateSession(_) | R::Other => return None,
        };
        encoded.ok().map(|()| out)
    }

    /// A netlink datagram as the kernel's drop log delivers it, and the packet headers inside:
    /// the reader must never panic on what a (buggy or forged) sender puts there.
    pub fn droplog(data: &[u8]) {
        let _ = crate::nft::droplog::read_datagram(data);
        if let Some(packet) = crate::nft::droplog::parse_packet(data) {
            let _ = packet.transport();
        }
    }

    /// An audit log someone may have edited: `audit verify` must never panic, and any text an
    /// event carries must seal and verify.
    pub fn audit_log(data: &[u8]) {
        use crate::audit::chain::{VerifyOptions, check_text};
        let public = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let _ = check_text(data, &VerifyOptions::default());
        let _ = check_text(
            data,
            &VerifyOptions {
                key: Some(b"0123456789abcdef"),
                ..VerifyOptions::default()
            },
        );
        let _ = check_text(
            data,
            &VerifyOptions {
                public_key: Some(&public),
                ..VerifyOptions::default()
            },
        );
        let text = String::from_utf8_lossy(data);
        assert!(crate::audit::chain::seal_and_check(&text, None));
        assert!(crate::audit::chain::seal_and_check(
            &text,
            Some(b"0123456789abcdef")
        ));
    }

    /// Every accessor of a parsed request, and the invariants policy relies on.
    fn modbus_request(request: &crate::proto::modbus::Request<'_>) {
        use crate::proto::modbus::{ADDRESS_SPACE, Request};

        let _ = (
            request.name(),
            request.access().as_str(),
            request.table().map(|t| t.as_str()),
        );
        if let (Some(address), Some(quantity)) = (request.address(), request.quantity()) {
            let end = u32::from(address).checked_add(u32::from(quantity));
            assert!(end.is_some_and(|end| end <= ADDRESS_SPACE));
        }
        match *request {
            Request::WriteMultipleCoils {
                quantity, values, ..
            } => {
                assert_eq!(values.len(), usize::from(quantity));
                assert_eq!(values.iter().filter(|_| true).count(), values.len());
                assert_eq!(values.get(values.len()), None);
            }
            Request::WriteMultipleRegisters {
                quantity, values, ..
            }
            | Request::ReadWriteMultipleRegisters {
                write_quantity: quantity,
                values,
                ..
            } => {
                assert_eq!(values.len(), usize::from(quantity));
                let _ = values.iter().fold(0u16, |acc, v| acc ^ v);
                assert_eq!(values.get(values.len()), None);
            }
            _ => {}
        }
        for record in request.file_records().into_iter().flatten() {
            assert_eq!(record.data.iter().len(), record.data.len());
        }
    }
}

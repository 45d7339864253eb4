//! zonegate: IEC 62443 zones and conduits enforced on an industrial gateway.
//!
//! A request flows: nftables -> listener -> parser -> policy input -> decision -> forward or
//! refuse -> audit + metrics. This crate so far holds the model ([`config`]), its enforcement in
//! the kernel ([`nft`]) kept in force by the daemon ([`control`]), and its picture ([`diagram`]).

pub mod audit;
pub mod config;
pub mod control;
pub mod diagram;
pub mod nft;
pub mod policy;
pub mod proto;
pub mod proxy;
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
            let _ = serde_json::to_vec(&crate::nft::json::transaction(&rs));
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
                    break;
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

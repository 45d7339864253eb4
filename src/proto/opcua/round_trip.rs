//! Round-trip checking: whether encoding a decoded message again gives exactly its bytes (up to
//! the NodeId forms every decoder reads alike), compared as the encoder writes, without allocating.

use super::*;
use opcua_types::{BinaryEncodable, ExpandedNodeId};

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

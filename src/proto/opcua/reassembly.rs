//! Reassembly of MSG chunks into messages per request id (6.7.2.2), bounded by chunk count,
//! message size and messages in progress.

use super::*;

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

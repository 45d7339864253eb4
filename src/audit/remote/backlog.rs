//! A sink's queue: the spool on disk followed by a bounded memory queue, in sequence order, and
//! what [`WhenFull`] does when both are full (see the [`super`] module docs on delivery).

use std::collections::VecDeque;
use std::time::Instant;

use super::{
    BATCH_MAX_BYTES, BATCH_MAX_EVENTS, Gap, MEMORY_MAX_BYTES, MEMORY_MAX_EVENTS, WhenFull,
};
use crate::audit::spool::{Spool, record_len};

/// One queued message.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) sequence: u64,
    pub(super) data: Vec<u8>,
}

/// Consecutive queued events, framed for the transport, for one write.
#[derive(Debug)]
pub(super) struct Batch {
    /// Queue position of the first event.
    pub(super) start: u64,
    pub(super) count: usize,
    pub(super) data: Vec<u8>,
    /// End of each message in `data` (UDP sends them one by one, RELP frames each).
    pub(super) ends: Vec<usize>,
    /// The sequence number of each message.
    pub(super) sequences: Vec<u64>,
    pub(super) first: u64,
    pub(super) last: u64,
}

impl Batch {
    pub(super) fn end(&self) -> u64 {
        self.start
            .saturating_add(u64::try_from(self.count).unwrap_or(u64::MAX))
    }
}

/// What happened to an event offered to the spool.
pub(super) enum Spooled {
    Yes,
    /// FailClosed and no room: the event is handed back.
    NoRoom(Entry),
    /// The spool cannot be written: the event is handed back.
    Failed(Entry),
}

/// The queue: the spool, then the memory queue. Queue positions count every event ever queued;
/// `head` is the position of the oldest one still queued.
#[derive(Debug)]
pub(super) struct Backlog {
    pub(super) name: String,
    pub(super) when_full: WhenFull,
    pub(super) memory: VecDeque<Entry>,
    pub(super) memory_bytes: usize,
    pub(super) spool: Spool,
    pub(super) head: u64,
    /// The receiver is unreachable: new events go to the spool.
    pub(super) down: bool,
    pub(super) connected: bool,
    /// The sink thread waits for events.
    pub(super) idle: bool,
    /// Shutdown asked: deliver until then.
    pub(super) stop: Option<Instant>,
    pub(super) finished: bool,
    pub(super) delivered: u64,
    pub(super) dropped: u64,
    pub(super) truncated: u64,
    pub(super) resent: u64,
    pub(super) gap: Option<Gap>,
    /// FailClosed found no room; cleared when a tenth of the spool is free again.
    pub(super) spool_full: bool,
    pub(super) spool_failed: bool,
}

impl Backlog {
    pub(super) fn new(name: String, when_full: WhenFull, spool: Spool) -> Backlog {
        Backlog {
            name,
            when_full,
            memory: VecDeque::new(),
            memory_bytes: 0,
            spool,
            head: 0,
            down: false,
            connected: false,
            idle: false,
            stop: None,
            finished: false,
            delivered: 0,
            dropped: 0,
            truncated: 0,
            resent: 0,
            gap: None,
            spool_full: false,
            spool_failed: false,
        }
    }

    pub(super) fn memory_has_room(&self, len: usize) -> bool {
        self.memory.len() < MEMORY_MAX_EVENTS
            && self.memory_bytes.saturating_add(len) <= MEMORY_MAX_BYTES
    }

    pub(super) fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.is_empty()
    }

    pub(super) fn healthy(&self) -> bool {
        self.when_full != WhenFull::FailClosed || !(self.spool_full || self.spool_failed)
    }

    /// An event this sink gives up on.
    pub(super) fn lost(&mut self, sequence: u64) {
        self.dropped = self.dropped.saturating_add(1);
        self.gap = Some(match self.gap {
            None => Gap {
                count: 1,
                first: sequence,
                last: sequence,
            },
            Some(g) => Gap {
                count: g.count.saturating_add(1),
                first: g.first.min(sequence),
                last: g.last.max(sequence),
            },
        });
    }

    pub(super) fn push(&mut self, entry: Entry) {
        // What the spool could never hold is dropped now rather than stuck in the queue later.
        if record_len(entry.data.len()) > self.spool.max_bytes() {
            self.lost(entry.sequence);
            return;
        }
        let mut entry = entry;
        if self.down || !self.memory_has_room(entry.data.len()) {
            self.spill();
            if self.memory.is_empty() {
                match self.spool_one(entry) {
                    Spooled::Yes => return,
                    Spooled::NoRoom(e) | Spooled::Failed(e) => entry = e,
                }
            }
        }
        if !self.memory_has_room(entry.data.len()) {
            self.lost(entry.sequence);
            return;
        }
        self.memory_bytes = self.memory_bytes.saturating_add(entry.data.len());
        self.memory.push_back(entry);
    }

    /// Appends an event to the spool, making room as `when_full` says.
    pub(super) fn spool_one(&mut self, entry: Entry) -> Spooled {
        let len = entry.data.len();
        if !self.spool.fits(len) {
            match self.when_full {
                WhenFull::DropOldest => {
                    while !self.spool.fits(len) {
                        let Some((sequence, _)) = self.spool.pop() else {
                            break;
                        };
                        self.head = self.head.saturating_add(1);
                        self.lost(sequence);
                    }
                }
                WhenFull::FailClosed => {
                    if !self.spool_full {
                        tracing::error!(
                            sink = %self.name,
                            "audit spool full ({} bytes): refusing new events until there is room",
                            self.spool.bytes()
                        );
                    }
                    self.spool_full = true;
                    return Spooled::NoRoom(entry);
                }
            }
        }
        match self.spool.append(entry.sequence, &entry.data) {
            Ok(()) => {
                if self.spool_failed {
                    tracing::info!(sink = %self.name, "audit spool writable again");
                }
                self.spool_failed = false;
                Spooled::Yes
            }
            Err(e) => {
                if !self.spool_failed {
                    tracing::error!(sink = %self.name, "cannot spool audit events: {e}");
                }
                self.spool_failed = true;
                Spooled::Failed(entry)
            }
        }
    }

    /// Moves the memory queue to the end of the spool, in order, as far as the spool takes it.
    pub(super) fn spill(&mut self) {
        while let Some(entry) = self.memory.pop_front() {
            let len = entry.data.len();
            self.memory_bytes = self.memory_bytes.saturating_sub(len);
            match self.spool_one(entry) {
                Spooled::Yes => {}
                Spooled::NoRoom(entry) | Spooled::Failed(entry) => {
                    self.memory_bytes = self.memory_bytes.saturating_add(len);
                    self.memory.push_front(entry);
                    break;
                }
            }
        }
    }

    /// Removes the delivered events: everything before queue position `upto`.
    pub(super) fn confirm(&mut self, upto: u64) {
        while self.head < upto {
            let popped = if self.spool.is_empty() {
                None
            } else {
                self.spool.pop()
            };
            if popped.is_none() {
                let Some(entry) = self.memory.pop_front() else {
                    break;
                };
                self.memory_bytes = self.memory_bytes.saturating_sub(entry.data.len());
            }
            self.head = self.head.saturating_add(1);
            self.delivered = self.delivered.saturating_add(1);
        }
        let max = self.spool.max_bytes();
        if self.spool_full && self.spool.bytes() <= max.saturating_sub(max / 10) {
            tracing::info!(sink = %self.name, "audit spool has room again");
            self.spool_full = false;
        }
    }

    /// The events from queue position `from` on, framed for one write.
    pub(super) fn batch(&mut self, from: u64, octet_counting: bool) -> Option<Batch> {
        self.batch_up_to(from, octet_counting, BATCH_MAX_EVENTS)
    }

    /// [`Backlog::batch`] of at most `max_events`.
    pub(super) fn batch_up_to(
        &mut self,
        from: u64,
        octet_counting: bool,
        max_events: usize,
    ) -> Option<Batch> {
        let start = from.max(self.head);
        let mut index = usize::try_from(start.saturating_sub(self.head)).ok()?;
        let mut batch = Batch {
            start,
            count: 0,
            data: Vec::new(),
            ends: Vec::new(),
            sequences: Vec::new(),
            first: 0,
            last: 0,
        };
        let max_events = max_events.min(BATCH_MAX_EVENTS);
        // Where the memory queue starts in queue order, once the spool's end is known.
        let mut spool_len = if self.spool.is_empty() { Some(0) } else { None };
        while batch.count < max_events && batch.data.len() < BATCH_MAX_BYTES {
            let (sequence, data) = match spool_len {
                None => match self.spool.get(index) {
                    Some(r) => (r.sequence, r.data.as_slice()),
                    None => {
                        spool_len = Some(self.spool.count_up_to(index));
                        continue;
                    }
                },
                Some(n) => match self.memory.get(index.checked_sub(n)?) {
                    Some(e) => (e.sequence, e.data.as_slice()),
                    None => break,
                },
            };
            if octet_counting {
                batch
                    .data
                    .extend_from_slice(format!("{} ", data.len()).as_bytes());
            }
            batch.data.extend_from_slice(data);
            batch.ends.push(batch.data.len());
            batch.sequences.push(sequence);
            if batch.count == 0 {
                batch.first = sequence;
            }
            batch.last = sequence;
            batch.count = batch.count.saturating_add(1);
            index = index.saturating_add(1);
        }
        (batch.count > 0).then_some(batch)
    }
}

//! The on-disk spool of a remote audit sink: a FIFO of formatted messages that survives receiver
//! outages and daemon restarts.
//!
//! Layout of the spool directory:
//!
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: segment files, numbered upwards, each a run of records
//!   `[payload length u32 LE][CRC-32 of sequence and payload u32 LE][sequence u64 LE][payload]`.
//!   Only the last one is appended to; a new one is started when it would exceed the segment size.
//! - `position`: `SEGMENT OFFSET`, where the oldest unread record starts. Segments before it are
//!   deleted as they are read out; a segment that is missing is taken as read.
//! - `lock`: held (flock) while a sink uses the directory, so that two never share it.
//!
//! A directory the spool creates is mode 0700, its files 0600.
//!
//! After a crash, the last record of the last segment may be torn: opening cuts the file back to
//! its last whole record. A record whose checksum fails elsewhere ends its segment (logged with
//! the bytes lost). Appends are not synced one by one: [`Spool::sync`] (the sink calls it every
//! second and at shutdown) makes them and the read position durable, so a power loss can cost the
//! last second of spooled events, or deliver up to a second of them twice.
//!
//! Not thread-safe by itself: the sink keeps it behind its queue's mutex.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Bytes before each payload.
pub const RECORD_HEADER: u64 = 16;
/// Largest payload a record may claim; anything larger is corruption.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Segment size: an eighth of the spool, within these bounds. The spool directory may hold up to
/// one segment more than the spool's limit (the read part of the oldest segment).
const MIN_SEGMENT: u64 = 64 * 1024;
const MAX_SEGMENT: u64 = 16 * 1024 * 1024;
/// The position file is small; a larger one is not ours.
const MAX_POSITION_FILE: u64 = 64;

const SEGMENT_SUFFIX: &str = ".seg";
const POSITION: &str = "position";
const POSITION_TMP: &str = "position.tmp";
const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool {0} is in use by another sink or process")]
    Locked(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a record starts (or the read or load point is) in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    segment: u64,
    offset: u64,
}

/// One spooled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub data: Vec<u8>,
    /// Where the next record starts.
    end: Pos,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    /// Bytes of whole records in it (a corrupt tail is cut off logically).
    size: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held for the flock; released when the spool is dropped.
    _lock: File,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    /// Start of the oldest unread record.
    read: Pos,
    /// Unread bytes, headers included.
    bytes: u64,
    /// Append handle of the last segment.
    tail: Option<File>,
    next_id: u64,
    /// Records decoded from `read` onwards, up to `load`.
    cache: VecDeque<Record>,
    load: Pos,
    reader: Option<(u64, File)>,
    /// Appends not yet synced, a new or removed file, a read position not yet written.
    unsynced: bool,
    dir_changed: bool,
    position_changed: bool,
    /// Bytes skipped as corrupt or unreadable since opening.
    lost_bytes: u64,
    /// The next append starts a new segment (the last one could not be cut back).
    roll: bool,
}

/// The bytes a payload of `len` takes in the spool.
pub fn record_len(len: usize) -> u64 {
    u64::try_from(len)
        .unwrap_or(u64::MAX)
        .saturating_add(RECORD_HEADER)
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes` of unread records.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        // Audit events are for the SOC only: the spool is the owner's.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        let _ = fs::remove_file(dir.join(POSITION_TMP));

        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let position = read_position(&dir.join(POSITION));
        let mut spool = Spool {
            dir: dir.to_owned(),
            _lock: lock,
            max_bytes,
            segment_max: (max_bytes / 8).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments: VecDeque::new(),
            read: Pos {
                segment: 1,
                offset: 0,
            },
            bytes: 0,
            tail: None,
            next_id: 1,
            cache: VecDeque::new(),
            load: Pos {
                segment: 1,
                offset: 0,
            },
            reader: None,
            unsynced: false,
            dir_changed: false,
            position_changed: false,
            lost_bytes: 0,
            roll: false,
        };
        for id in ids {
            // Segments before the read position were read out before a crash could delete them.
            if position.is_some_and(|p| id < p.segment) {
                spool.remove_segment_file(id);
                continue;
            }
            let path = spool.segment_path(id);
            let size = fs::metadata(&path).map_err(io_error(&path))?.len();
            spool.segments.push_back(Segment { id, size });
        }
        spool.read = match (spool.segments.front(), position) {
            (Some(first), Some(p)) if first.id == p.segment => Pos {
                segment: p.segment,
                offset: p.offset.min(first.size),
            },
            (Some(first), _) => Pos {
                segment: first.id,
                offset: 0,
            },
            (None, p) => Pos {
                segment: p.map_or(1, |p| p.segment.max(1)),
                offset: 0,
            },
        };
        spool.next_id = spool
            .segments
            .back()
            .map_or(1, |s| s.id.saturating_add(1))
            .max(spool.read.segment);
        spool.cut_torn_tail()?;
        spool.bytes = spool
            .segments
            .iter()
            .map(|s| s.size)
            .sum::<u64>()
            .saturating_sub(spool.read.offset);
        spool.load = spool.read;
        if spool.bytes == 0 {
            spool.reset();
        }
        Ok(spool)
    }

    /// Unread bytes, record headers included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Whether a payload of `len` bytes fits without dropping anything.
    pub fn fits(&self, len: usize) -> bool {
        self.bytes.saturating_add(record_len(len)) <= self.max_bytes
    }

    /// Bytes skipped as corrupt or unreadable since opening.
    pub fn lost_bytes(&self) -> u64 {
        self.lost_bytes
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
    }

    fn remove_segment_file(&mut self, id: u64) {
        let path = self.segment_path(id);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "cannot remove a read spool segment: {e}");
        }
        self.dir_changed = true;
    }

    /// Cuts the last segment back to its last whole record (a crash may have torn it).
    fn cut_torn_tail(&mut self) -> Result<(), SpoolError> {
        let Some(last) = self.segments.back().copied() else {
            return Ok(());
        };
        let path = self.segment_path(last.id);
        let file = File::open(&path).map_err(io_error(&path))?;
        let mut offset = if self.read.segment == last.id {
            self.read.offset
        } else {
            0
        };
        while let Ok(Some(record)) = read_record(&file, offset, last.size) {
            offset = offset.saturating_add(record_len(record.1.len()));
        }
        if offset < last.size {
            tracing::warn!(
                path = %path.display(),
                "cutting a torn or corrupt spool record at offset {offset} ({} bytes)",
                last.size.saturating_sub(offset)
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_error(&path))?;
            file.set_len(offset).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
            if let Some(s) = self.segments.back_mut() {
                s.size = offset;
            }
        }
        Ok(())
    }

    /// Appends one record. The caller has made room ([`Spool::fits`]).
    pub fn append(&mut self, sequence: u64, data: &[u8]) -> Result<(), SpoolError> {
        let len = record_len(data.len());
        let Ok(payload_len) = u32::try_from(data.len()) else {
            return Err(io_error(&self.dir)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record too large",
            )));
        };
        if data.len() > MAX_PAYLOAD {
            return Err(io_error(&self.dir)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record too large",
            )));
        }
        let roll = match self.segments.back() {
            None => true,
            Some(s) => self.roll || (s.size > 0 && s.size.saturating_add(len) > self.segment_max),
        };
        if roll {
            self.start_segment()?;
        }
        let Some(segment) = self.segments.back().copied() else {
            return Ok(());
        };
        let path = self.segment_path(segment.id);
        if self.tail.is_none() {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.tail = Some(file);
        }
        let mut buf = Vec::with_capacity(data.len().saturating_add(16));
        buf.extend_from_slice(&payload_len.to_le_bytes());
        buf.extend_from_slice(&checksum(sequence, data).to_le_bytes());
        buf.extend_from_slice(&sequence.to_le_bytes());
        buf.extend_from_slice(data);
        let Some(tail) = self.tail.as_mut() else {
            return Ok(());
        };
        if let Err(e) = tail.write_all(&buf) {
            // Take back a partial record so that the next append does not follow garbage.
            let _ = tail.set_len(segment.size);
            self.tail = None;
            return Err(io_error(&path)(e));
        }
        if let Some(s) = self.segments.back_mut() {
            s.size = s.size.saturating_add(len);
        }
        self.bytes = self.bytes.saturating_add(len);
        self.unsynced = true;
        Ok(())
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
        let id = self.next_id;
        let path = self.segment_path(id);
        let file = OpenOptions::new()
            .mode(0o600)
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        // The previous tail is complete: make it durable before leaving it.
        if let Some(old) = self.tail.take()
            && self.unsynced
        {
            let _ = old.sync_data();
        }
        drop(file);
        self.roll = false;
        self.next_id = id.saturating_add(1);
        if self.segments.is_empty() {
            self.read = Pos {
                segment: id,
                offset: 0,
            };
            self.load = self.read;
            self.position_changed = true;
        }
        self.segments.push_back(Segment { id, size: 0 });
        self.dir_changed = true;
        Ok(())
    }

    /// The `index`th unread record (0 is the oldest), reading ahead from disk as far as needed.
    /// `None` past the last record. The caller bounds `index` (the cache holds every record up to
    /// it).
    pub fn get(&mut self, index: usize) -> Option<&Record> {
        while self.cache.len() <= index {
            if !self.load_one() {
                return None;
            }
        }
        self.cache.get(index)
    }

    /// The number of unread records, counting no further than `limit`.
    pub fn count_up_to(&mut self, limit: usize) -> usize {
        while self.cache.len() < limit && self.load_one() {}
        self.cache.len()
    }

    /// Removes the oldest unread record; returns its sequence number and payload length.
    pub fn pop(&mut self) -> Option<(u64, usize)> {
        if self.cache.is_empty() && !self.load_one() {
            if self.bytes == 0 && !self.segments.is_empty() {
                self.reset();
            }
            return None;
        }
        let record = self.cache.pop_front()?;
        self.bytes = self.bytes.saturating_sub(record_len(record.data.len()));
        self.read = record.end;
        self.position_changed = true;
        self.skip_read_segments();
        if self.bytes == 0 {
            self.reset();
        }
        Some((record.sequence, record.data.len()))
    }

    /// Deletes segments that have been read to their end, except the one appended to.
    fn skip_read_segments(&mut self) {
        while self.segments.len() > 1 {
            let Some(first) = self.segments.front().copied() else {
                break;
            };
            if first.id == self.read.segment && self.read.offset < first.size {
                break;
            }
            self.segments.pop_front();
            if self.reader.as_ref().is_some_and(|(id, _)| *id == first.id) {
                self.reader = None;
            }
            self.remove_segment_file(first.id);
            if let Some(next) = self.segments.front()
                && self.read.segment != next.id
            {
                self.read = Pos {
                    segment: next.id,
                    offset: 0,
                };
            }
        }
    }

    /// Nothing unread: delete every segment, so that an idle spool holds no files but its
    /// position.
    fn reset(&mut self) {
        self.tail = None;
        self.reader = None;
        self.cache.clear();
        let ids: Vec<u64> = self.segments.drain(..).map(|s| s.id).collect();
        for id in ids {
            self.remove_segment_file(id);
        }
        self.read = Pos {
            segment: self.next_id,
            offset: 0,
        };
        self.load = self.read;
        self.bytes = 0;
        self.unsynced = false;
        self.position_changed = true;
    }

    /// Decodes the record at `load` into the cache; false at the end of the spool.
    fn load_one(&mut self) -> bool {
        loop {
            let Some(segment) = self
                .segments
                .iter()
                .find(|s| s.id == self.load.segment)
                .copied()
            else {
                // Before the first segment (after a reset) or a gap in the numbering.
                match self.segments.iter().find(|s| s.id > self.load.segment) {
                    Some(next) => {
                        self.load = Pos {
                            segment: next.id,
                            offset: 0,
                        };
                        continue;
                    }
                    None => return self.at_end(),
                }
            };
            if self.load.offset >= segment.size {
                match self.segments.iter().find(|s| s.id > segment.id) {
                    Some(next) => {
                        self.load = Pos {
                            segment: next.id,
                            offset: 0,
                        };
                        continue;
                    }
                    None => return self.at_end(),
                }
            }
            let path = self.segment_path(segment.id);
            if self.reader.as_ref().is_none_or(|(id, _)| *id != segment.id) {
                match File::open(&path) {
                    Ok(f) => self.reader = Some((segment.id, f)),
                    Err(e) => {
                        self.lose_rest_of_segment(segment, &format!("cannot open: {e}"));
                        continue;
                    }
                }
            }
            let Some((_, file)) = self.reader.as_ref() else {
                return false;
            };
            match read_record(file, self.load.offset, segment.size) {
                Ok(Some((sequence, data))) => {
                    let end = Pos {
                        segment: segment.id,
                        offset: self.load.offset.saturating_add(record_len(data.len())),
                    };
                    self.cache.push_back(Record {
                        sequence,
                        data,
                        end,
                    });
                    self.load = end;
                    return true;
                }
                Ok(None) => self.lose_rest_of_segment(segment, "corrupt record"),
                Err(e) => self.lose_rest_of_segment(segment, &format!("cannot read: {e}")),
            }
        }
    }

    /// Gives up the rest of a segment from the load point: it cannot be read back.
    fn lose_rest_of_segment(&mut self, segment: Segment, why: &str) {
        let lost = segment.size.saturating_sub(self.load.offset);
        tracing::error!(
            path = %self.segment_path(segment.id).display(),
            offset = self.load.offset,
            "spooled audit events lost: {why}; skipping {lost} bytes"
        );
        self.lost_bytes = self.lost_bytes.saturating_add(lost);
        self.bytes = self.bytes.saturating_sub(lost);
        if let Some(s) = self.segments.iter_mut().find(|s| s.id == segment.id) {
            s.size = self.load.offset;
        }
        // Appending after garbage would bury the new records behind it.
        if self.segments.back().is_some_and(|s| s.id == segment.id) {
            let path = self.segment_path(segment.id);
            let cut = match self.tail.as_ref() {
                Some(tail) => tail.set_len(self.load.offset),
                None => OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(self.load.offset)),
            };
            if let Err(e) = cut {
                // Later appends go to a new segment instead.
                tracing::error!(path = %path.display(), "cannot cut a corrupt spool segment: {e}");
                self.tail = None;
                self.next_id = self.next_id.max(segment.id.saturating_add(1));
                self.roll = true;
            }
        }
    }

    /// At the end of what can be read: whatever the byte count still holds beyond the cache
    /// cannot be read back.
    fn at_end(&mut self) -> bool {
        let cached: u64 = self.cache.iter().map(|r| record_len(r.data.len())).sum();
        if self.bytes != cached {
            tracing::error!(
                "spool {}: {} bytes counted but not readable",
                self.dir.display(),
                self.bytes.saturating_sub(cached)
            );
            self.lost_bytes = self
                .lost_bytes
                .saturating_add(self.bytes.saturating_sub(cached));
            self.bytes = cached;
        }
        false
    }

    /// Makes appends, new and removed files and the read position durable.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            if let Some(tail) = self.tail.as_ref() {
                tail.sync_data().map_err(io_error(&self.dir))?;
            }
            self.unsynced = false;
        }
        if self.position_changed {
            let tmp = self.dir.join(POSITION_TMP);
            let text = format!("{} {}\n", self.read.segment, self.read.offset);
            let write = || -> io::Result<()> {
                let mut f = OpenOptions::new()
                    .mode(0o600)
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_data()?;
                fs::rename(&tmp, self.dir.join(POSITION))
            };
            write().map_err(io_error(&tmp))?;
            self.position_changed = false;
            self.dir_changed = true;
        }
        if self.dir_changed {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(&self.dir))?;
            self.dir_changed = false;
        }
        Ok(())
    }
}

/// The read position left by the last run, if there is a readable one.
fn read_position(path: &Path) -> Option<Pos> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > MAX_POSITION_FILE {
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    let (segment, offset) = text.trim().split_once(' ')?;
    Some(Pos {
        segment: segment.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

/// The record at `offset` of a segment whose whole records end at `size`: `None` if it is torn,
/// oversized or fails its checksum.
fn read_record(file: &File, offset: u64, size: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    if offset.saturating_add(RECORD_HEADER) > size {
        return Ok(None);
    }
    let mut header = [0u8; 16];
    file.read_exact_at(&mut header, offset)?;
    let [
        l0,
        l1,
        l2,
        l3,
        c0,
        c1,
        c2,
        c3,
        s0,
        s1,
        s2,
        s3,
        s4,
        s5,
        s6,
        s7,
    ] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let sequence = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    if len > MAX_PAYLOAD || offset.saturating_add(record_len(len)) > size {
        return Ok(None);
    }
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, offset.saturating_add(RECORD_HEADER))?;
    if checksum(sequence, &data) != crc {
        return Ok(None);
    }
    Ok(Some((sequence, data)))
}

/// CRC-32 (IEEE) of the sequence number and the payload: finds torn and overwritten records.
fn checksum(sequence: u64, data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in sequence.to_le_bytes().iter().chain(data) {
        let index = usize::from((crc as u8) ^ byte);
        crc = (crc >> 8) ^ CRC_TABLE.get(index).copied().unwrap_or(0);
    }
    !crc
}

/// The byte-wise CRC-32 table (reflected polynomial 0xEDB88320).
const CRC_TABLE: [u32; 256] = crc_table();

#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // i < 256, bit < 8
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    fn drain(spool: &mut Spool) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((seq, _)) = spool.pop() {
            out.push(seq);
        }
        out
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn checksum_is_crc32() {
        // The standard check value: CRC-32 of "123456789" is 0xCBF43926. Here the sequence
        // number's 8 bytes come first, so compare with a bit-by-bit reference over both.
        let bitwise = |bytes: &[u8]| {
            let mut crc = !0u32;
            for b in bytes {
                crc ^= u32::from(*b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xEDB8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        };
        assert_eq!(bitwise(b"123456789"), 0xCBF4_3926);
        let mut bytes = 7u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"123456789");
        assert_eq!(checksum(7, b"123456789"), bitwise(&bytes));
    }

    #[test]
    fn fifo_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB segments (an eighth of 512 KiB): 300 records of 1000 bytes span five.
        let mut spool = Spool::open(dir.path(), 1 << 19).unwrap();
        for seq in 1..=300u64 {
            spool.append(seq, &vec![b'x'; 1000]).unwrap();
        }
        assert_eq!(spool.bytes(), 300 * 1016);
        assert!(segment_files(dir.path()).len() >= 4);
        assert_eq!(spool.get(0).unwrap().sequence, 1);
        assert_eq!(spool.get(99).unwrap().sequence, 100);
        for _ in 0..100 {
            spool.pop().unwrap();
        }
        spool.sync().unwrap();
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 19).unwrap();
        assert_eq!(spool.bytes(), 200 * 1016);
        spool.append(301, b"tail").unwrap();
        let order = drain(&mut spool);
        assert_eq!(order, (101..=301).collect::<Vec<_>>());
        assert!(spool.is_empty());
        // Read out: nothing but the position and the lock is left.
        assert!(segment_files(dir.path()).is_empty());
        spool.sync().unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 19).unwrap();
        assert!(spool.is_empty());
        spool.append(302, b"again").unwrap();
        assert_eq!(drain(&mut spool), vec![302]);
    }

    #[test]
    fn read_position_survives_without_sync_of_deleted_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for seq in 1..=200u64 {
            spool.append(seq, &vec![b'y'; 1000]).unwrap();
        }
        spool.sync().unwrap();
        // Read past the first segments, but crash before the position is written: the deleted
        // segments count as read, the rest of the current one is delivered again.
        for _ in 0..150 {
            spool.pop().unwrap();
        }
        let before = segment_files(dir.path());
        drop(spool);
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let order = drain(&mut spool);
        let first = *order.first().unwrap();
        assert!(first <= 151 && first > 64, "{first} {before:?}");
        assert_eq!(*order.last().unwrap(), 200);
        assert!(order.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for seq in 1..=3u64 {
            spool.append(seq, b"complete record").unwrap();
        }
        spool.sync().unwrap();
        drop(spool);
        let seg = segment_files(dir.path()).pop().unwrap();
        // Half a header, then a record whose payload is cut short.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 4, 0, 0, 0, 0, 0, 0, 0, b'a'])
            .unwrap();
        drop(f);
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.bytes(), 3 * (16 + 15));
        spool.append(4, b"after the cut").unwrap();
        assert_eq!(drain(&mut spool), vec![1, 2, 3, 4]);
    }

    #[test]
    fn corrupt_record_ends_its_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for seq in 1..=3u64 {
            spool.append(seq, b"0123456789").unwrap();
        }
        spool.sync().unwrap();
        // Flip a payload byte of the second record behind the spool's back.
        let seg = segment_files(dir.path()).pop().unwrap();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"X", 26 + 16 + 3).unwrap();
        assert_eq!(drain(&mut spool), vec![1]);
        assert_eq!(spool.lost_bytes(), 2 * 26);
        assert!(spool.is_empty());
    }

    #[test]
    fn second_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), 1 << 20),
            Err(SpoolError::Locked(_))
        ));
    }

    #[test]
    fn room_is_counted_with_headers() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        assert!(spool.fits(84));
        assert!(!spool.fits(85));
        spool.append(1, &[0; 40]).unwrap();
        assert!(spool.fits(28));
        assert!(!spool.fits(29));
        assert_eq!(spool.count_up_to(10), 1);
    }
}

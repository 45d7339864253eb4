//! Tamper evidence: every event carries its sequence number (`event.sequence`) and a link
//! `zonegate.chain = {alg, prev, hash}`, where `hash` is SHA-256 (or HMAC-SHA-256 with a key) over
//! the previous event's hash followed by this event's JSON without the link. Editing, deleting,
//! inserting or reordering events breaks a link that [`verify`] finds, also across rotated files.
//!
//! The link is the last member of the last object of the line, so the sealed bytes are the line
//! with it cut out:
//!
//! ```text
//! {"@timestamp":...,"event":{...,"sequence":7,...},...,"zonegate":{...,"chain":{"alg":"sha256","prev":"<64 hex>","hash":"<64 hex>"}}}
//!  \____________________________ sealed body (with "}}" closing it) _______/
//! ```
//!
//! Without a key the chain shows accidents and naive edits; someone able to rewrite the file can
//! also recompute plain hashes from the edit onwards. With a key file (`audit.key_file`) they
//! cannot, as long as the key stays secret.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The link's key in the line; only the chain uses it, so the last occurrence is the link.
const LINK_KEY: &[u8] = b"\"chain\":{";
/// The previous hash of the first event there ever was.
pub const GENESIS: [u8; 32] = [0; 32];
/// Longest line [`verify`] reads; a longer one is reported as modified rather than buffered.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("the event does not serialize to an object ending in the zonegate object")]
    Shape,
    #[error("cannot serialize the event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no events")]
    Empty(PathBuf),
}

/// Seals events one after another. One per audit stream (the writer's).
#[derive(Clone)]
pub struct Chain {
    key: Option<Vec<u8>>,
    prev: [u8; 32],
    last_sequence: u64,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Chain")
            .field("keyed", &self.key.is_some())
            .field("last_sequence", &self.last_sequence)
            .finish()
    }
}

/// The last link of a stream, where the next event continues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub sequence: u64,
    pub hash: [u8; 32],
}

impl Chain {
    /// A chain continuing after `tail`, or a new one.
    pub fn new(key: Option<Vec<u8>>, tail: Option<Tail>) -> Chain {
        Chain {
            key,
            prev: tail.map_or(GENESIS, |t| t.hash),
            last_sequence: tail.map_or(0, |t| t.sequence),
        }
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn tail(&self) -> Tail {
        Tail {
            sequence: self.last_sequence,
            hash: self.prev,
        }
    }

    /// Gives `event` the next sequence number and appends it, sealed, to `out` as one line
    /// (without the newline).
    pub fn seal(&mut self, event: &mut super::Event, out: &mut Vec<u8>) -> Result<(), ChainError> {
        let sequence = self.last_sequence.saturating_add(1);
        event.event.sequence = sequence;
        let start = out.len();
        serde_json::to_writer(&mut *out, event)?;
        let body = out.get(start..).ok_or(ChainError::Shape)?;
        if !body.ends_with(b"}}") {
            out.truncate(start);
            return Err(ChainError::Shape);
        }
        let hash = link_hash(self.key.as_deref(), &self.prev, body);
        let empty_object = body.ends_with(b"{}}");
        // Reopen the zonegate object and append the link to it.
        out.truncate(out.len().saturating_sub(2));
        if !empty_object {
            out.push(b',');
        }
        out.extend_from_slice(LINK_KEY);
        out.extend_from_slice(br#""alg":""#);
        out.extend_from_slice(self.alg().as_bytes());
        out.extend_from_slice(br#"","prev":""#);
        push_hex(out, &self.prev);
        out.extend_from_slice(br#"","hash":""#);
        push_hex(out, &hash);
        out.extend_from_slice(br#""}}}"#);
        self.prev = hash;
        self.last_sequence = sequence;
        Ok(())
    }

    fn alg(&self) -> &'static str {
        if self.key.is_some() {
            ALG_HMAC
        } else {
            ALG_SHA256
        }
    }
}

const ALG_SHA256: &str = "sha256";
const ALG_HMAC: &str = "hmac-sha256";

fn link_hash(key: Option<&[u8]>, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    match key {
        Some(key) => match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(prev);
                mac.update(body);
                mac.finalize().into_bytes().into()
            }
            // HMAC takes keys of any length; keep the types honest anyway.
            Err(_) => plain_hash(prev, body),
        },
        None => plain_hash(prev, body),
    }
}

fn plain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(d) = DIGITS.get(usize::from(nibble)) {
                out.push(*d);
            }
        }
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// One line taken apart: what it claims and whether its own hash holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    sequence: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    /// The stated hash is the one of the stated prev and the body.
    sealed: bool,
    keyed: bool,
}

#[derive(Deserialize)]
struct LinkFields {
    alg: String,
    prev: String,
    hash: String,
}

#[derive(Deserialize)]
struct SequenceOnly {
    event: SequenceMeta,
}

#[derive(Deserialize)]
struct SequenceMeta {
    sequence: u64,
}

/// Takes a line apart; `None` when it is not a sealed event at all.
fn parse_link(line: &[u8], key: Option<&[u8]>) -> Option<Link> {
    let at = line.windows(LINK_KEY.len()).rposition(|w| w == LINK_KEY)?;
    let fields: LinkFields = serde_json::from_slice(
        line.get(at.checked_add(LINK_KEY.len())?.checked_sub(1)?..line.len().checked_sub(2)?)?,
    )
    .ok()?;
    if line.get(line.len().checked_sub(2)?..) != Some(b"}}") {
        return None;
    }
    // The whole line must be the JSON object SOC tools read, too.
    let meta: SequenceOnly = serde_json::from_slice(line).ok()?;
    let cut = match line.get(at.checked_sub(1)?) {
        Some(b',') => at.checked_sub(1)?,
        _ => at,
    };
    let mut body = line.get(..cut)?.to_vec();
    body.extend_from_slice(b"}}");
    let prev = parse_hex(&fields.prev)?;
    let hash = parse_hex(&fields.hash)?;
    let keyed = fields.alg == ALG_HMAC;
    let expected = match (keyed, key) {
        (true, Some(key)) => link_hash(Some(key), &prev, &body),
        (true, None) => {
            return Some(Link {
                sequence: meta.event.sequence,
                prev,
                hash,
                sealed: false,
                keyed,
            });
        }
        (false, _) if fields.alg == ALG_SHA256 => link_hash(None, &prev, &body),
        (false, _) => return None,
    };
    Some(Link {
        sequence: meta.event.sequence,
        prev,
        hash,
        sealed: expected == hash,
        keyed,
    })
}

/// Where a chain breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breach {
    /// The line's content does not match its own hash.
    Modified,
    /// The line is not a sealed event, and without it the chain holds: something was added.
    Inserted,
    /// Events are missing before this one.
    Deleted { missing_from: u64, missing_to: u64 },
    /// This event belongs elsewhere in the stream (its sequence number was expected earlier or
    /// later, and it is found there).
    Reordered { expected: u64 },
    /// The sequence is right but the link points at another event than the one before it.
    Relinked,
    /// Keyed events and no key to check them with.
    NeedsKey,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breach::Modified => f.write_str("modified: the event does not match its hash"),
            Breach::Inserted => f.write_str("inserted: not a sealed event of this chain"),
            Breach::Deleted {
                missing_from,
                missing_to,
            } if missing_from == missing_to => {
                write!(
                    f,
                    "deleted: event {missing_from} is missing before this one"
                )
            }
            Breach::Deleted {
                missing_from,
                missing_to,
            } => write!(
                f,
                "deleted: events {missing_from} to {missing_to} are missing before this one"
            ),
            Breach::Reordered { expected } => write!(
                f,
                "reordered: event {expected} was expected here; this one belongs elsewhere"
            ),
            Breach::Relinked => f.write_str(
                "relinked: the event does not follow the one before it (replaced or re-sealed)",
            ),
            Breach::NeedsKey => f.write_str(
                "sealed with a key (hmac-sha256): run again with --key-file to check it",
            ),
        }
    }
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: PathBuf,
    /// 1-based.
    pub line: u64,
    pub sequence: Option<u64>,
    pub breach: Breach,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(s) = self.sequence {
            write!(f, "event {s}: ")?;
        }
        write!(f, "{}", self.breach)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The files in stream order, with their first sequence number and event count.
    pub files: Vec<(PathBuf, u64, u64)>,
    pub events: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The first event's link continues a chain whose beginning is not in these files (rotated
    /// away): fine, but said.
    pub starts_mid_chain: bool,
    pub keyed: bool,
    pub broken: Option<Break>,
}

/// One event line as read, in stream order.
struct Entry {
    file: usize,
    line: u64,
    link: Option<Link>,
}

/// Checks the chain through `files` (a log and its rotated predecessors, in any order: they
/// are put in stream order by their first sequence number) and reports the first broken link.
pub fn verify(files: &[PathBuf], key: Option<&[u8]>) -> Result<Report, ChainError> {
    let mut per_file = Vec::new();
    for path in files {
        let entries = read_links(path, key)?;
        let first = entries
            .iter()
            .find_map(|(_, l)| l.as_ref().map(|l| l.sequence))
            .unwrap_or(u64::MAX);
        per_file.push((path.clone(), first, entries));
    }
    per_file.sort_by_key(|(_, first, _)| *first);
    let mut entries = Vec::new();
    let mut report_files = Vec::new();
    for (index, (path, first, lines)) in per_file.into_iter().enumerate() {
        report_files.push((path, first, u64::try_from(lines.len()).unwrap_or(u64::MAX)));
        entries.extend(lines.into_iter().map(|(line, link)| Entry {
            file: index,
            line,
            link,
        }));
    }
    if entries.is_empty() {
        let path = files.first().cloned().unwrap_or_default();
        return Err(ChainError::Empty(path));
    }
    let broken = first_break(&entries, key.is_some()).map(|(i, breach)| {
        let e = entries.get(i);
        Break {
            file: e
                .and_then(|e| report_files.get(e.file))
                .map(|f| f.0.clone())
                .unwrap_or_default(),
            line: e.map_or(0, |e| e.line),
            sequence: e.and_then(|e| e.link.as_ref().map(|l| l.sequence)),
            breach,
        }
    });
    let links = || entries.iter().filter_map(|e| e.link.as_ref());
    Ok(Report {
        events: u64::try_from(entries.len()).unwrap_or(u64::MAX),
        first_sequence: links().next().map_or(0, |l| l.sequence),
        last_sequence: links().next_back().map_or(0, |l| l.sequence),
        starts_mid_chain: links().next().is_some_and(|l| l.prev != GENESIS),
        keyed: links().any(|l| l.keyed),
        files: report_files,
        broken,
    })
}

/// Lines of a log as [`verify`] reads them, and its verdict on them: for the fuzz target.
#[doc(hidden)]
pub fn check_text(text: &[u8], key: Option<&[u8]>) -> Option<Breach> {
    let entries: Vec<Entry> = text
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| Entry {
            file: 0,
            line: u64::try_from(i).unwrap_or(u64::MAX),
            link: parse_link(line, key),
        })
        .collect();
    first_break(&entries, key.is_some()).map(|(_, breach)| breach)
}

/// Seals an event whose message is `text` and reads the line back: sealing and reading agree
/// for any content. For the fuzz target.
#[doc(hidden)]
pub fn seal_and_check(text: &str, key: Option<&[u8]>) -> bool {
    let mut e = super::Event::now(
        "fuzz",
        "event",
        &["process"],
        &["info"],
        "success",
        super::Severity::Info,
    );
    e.message = text.to_owned();
    e.zonegate.reason = text.to_owned();
    let mut chain = Chain::new(key.map(<[u8]>::to_vec), None);
    let mut line = Vec::new();
    if chain.seal(&mut e, &mut line).is_err() {
        return false;
    }
    parse_link(&line, key).is_some_and(|l| l.sealed && l.sequence == 1 && l.hash == chain.prev)
}

fn read_links(path: &Path, key: Option<&[u8]>) -> Result<Vec<(u64, Option<Link>)>, ChainError> {
    let read_error = |source| ChainError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(u64::try_from(MAX_LINE).unwrap_or(u64::MAX))
            .read_until(b'\n', &mut line)
            .map_err(read_error)?;
        if n == 0 {
            break;
        }
        number = number.saturating_add(1);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            // A blank line is something added to the file, too.
            out.push((number, None));
            continue;
        }
        out.push((number, parse_link(text, key)));
        if !line.ends_with(b"\n") && n >= MAX_LINE {
            // Skip the rest of an overlong line; it is reported as not sealed.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).map_err(read_error)?;
        }
    }
    Ok(out)
}

use std::io::Read as _;

/// The index of the first entry whose link does not hold, and why.
fn first_break(entries: &[Entry], have_key: bool) -> Option<(usize, Breach)> {
    // (sequence, hash) of the last good event.
    let mut last: Option<(u64, [u8; 32])> = None;
    for (i, entry) in entries.iter().enumerate() {
        // Without entry i the chain would hold: it was added, not changed.
        let next_follows = || {
            entries
                .get(i.saturating_add(1))
                .and_then(|n| n.link.as_ref())
                .is_some_and(|n| follows(last, n))
        };
        let added_or_changed = || {
            if next_follows() {
                Breach::Inserted
            } else {
                Breach::Modified
            }
        };
        // Not a sealed event: added, or so damaged that it no longer parses.
        let Some(link) = &entry.link else {
            return Some((i, added_or_changed()));
        };
        if link.keyed && !have_key {
            return Some((i, Breach::NeedsKey));
        }
        if !link.sealed {
            return Some((i, added_or_changed()));
        }
        if let Some((sequence, hash)) = last {
            let expected = sequence.saturating_add(1);
            if link.sequence == expected && link.prev != hash {
                return Some((i, Breach::Relinked));
            }
            if link.sequence != expected {
                let later = entries
                    .iter()
                    .skip(i)
                    .any(|e| e.link.as_ref().is_some_and(|l| l.sequence == expected));
                let earlier_duplicate = link.sequence < expected;
                let breach = if earlier_duplicate && next_follows() {
                    Breach::Inserted
                } else if later || earlier_duplicate {
                    Breach::Reordered { expected }
                } else {
                    Breach::Deleted {
                        missing_from: expected,
                        missing_to: link.sequence.saturating_sub(1),
                    }
                };
                return Some((i, breach));
            }
        }
        last = Some((link.sequence, link.hash));
    }
    None
}

/// Whether `link` continues right after `last`.
fn follows(last: Option<(u64, [u8; 32])>, link: &Link) -> bool {
    match last {
        Some((sequence, hash)) => link.sequence == sequence.saturating_add(1) && link.prev == hash,
        None => link.sealed,
    }
}

/// The last link in a log (the active file, or the newest rotated one when the active file is
/// empty), so that a restarted daemon continues the chain. `None` when there is no event.
pub fn tail_of(path: &Path) -> Option<Tail> {
    for candidate in [path.to_owned(), super::file::rotated(path, 1)] {
        if let Some(tail) = last_line(&candidate).and_then(|l| {
            let link = parse_link(&l, None)?;
            Some(Tail {
                sequence: link.sequence,
                hash: link.hash,
            })
        }) {
            return Some(tail);
        }
    }
    None
}

/// The file's last complete line, read from its end.
fn last_line(path: &Path) -> Option<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    // Only a regular file has a tail: /dev/full or a FIFO would be read forever.
    if !meta.is_file() {
        return None;
    }
    let len = meta.len();
    let window = len.min(u64::try_from(MAX_LINE).unwrap_or(u64::MAX));
    file.seek(SeekFrom::Start(len.saturating_sub(window)))
        .ok()?;
    let mut bytes = Vec::new();
    file.take(window).read_to_end(&mut bytes).ok()?;
    let trimmed = bytes.strip_suffix(b"\n")?;
    let start = trimmed
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p.saturating_add(1));
    trimmed.get(start..).map(<[u8]>::to_vec)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::event::{Event, Severity};

    fn event(n: u32) -> Event {
        let mut e = Event::now(
            "test",
            "event",
            &["network"],
            &["info"],
            "success",
            Severity::Info,
        );
        e.message = format!("event number {n}");
        e
    }

    fn lines(chain: &mut Chain, n: u32) -> Vec<Vec<u8>> {
        (1..=n)
            .map(|i| {
                let mut out = Vec::new();
                chain.seal(&mut event(i), &mut out).unwrap();
                out
            })
            .collect()
    }

    fn write(dir: &Path, name: &str, lines: &[Vec<u8>]) -> PathBuf {
        let path = dir.join(name);
        let mut text = Vec::new();
        for l in lines {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn check(lines: &[Vec<u8>], key: Option<&[u8]>) -> Report {
        let dir = tempfile::tempdir().unwrap();
        verify(&[write(dir.path(), "audit.jsonl", lines)], key).unwrap()
    }

    #[test]
    fn sealed_lines_are_json_with_sequence_and_link() {
        let mut chain = Chain::new(None, None);
        let l = lines(&mut chain, 2);
        let first: serde_json::Value = serde_json::from_slice(&l[0]).unwrap();
        assert_eq!(first["event"]["sequence"], 1);
        assert_eq!(first["zonegate"]["chain"]["alg"], "sha256");
        assert_eq!(first["zonegate"]["chain"]["prev"], "0".repeat(64));
        let second: serde_json::Value = serde_json::from_slice(&l[1]).unwrap();
        assert_eq!(second["event"]["sequence"], 2);
        assert_eq!(
            second["zonegate"]["chain"]["prev"],
            first["zonegate"]["chain"]["hash"]
        );
    }

    #[test]
    fn an_untouched_log_verifies() {
        let mut chain = Chain::new(None, None);
        let r = check(&lines(&mut chain, 20), None);
        assert_eq!(r.broken, None);
        assert_eq!((r.events, r.first_sequence, r.last_sequence), (20, 1, 20));
        assert!(!r.starts_mid_chain);
    }

    #[test]
    fn one_changed_byte_is_found() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 10);
        // "event number 5" -> "event number 6" in the message of event 5.
        let at = l[4]
            .windows(14)
            .position(|w| w == b"event number 5")
            .unwrap()
            + 13;
        l[4][at] = b'6';
        let b = check(&l, None).broken.unwrap();
        assert_eq!(
            (b.line, b.sequence, b.breach),
            (5, Some(5), Breach::Modified)
        );
    }

    #[test]
    fn a_changed_byte_in_the_link_is_found() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 5);
        let len = l[2].len();
        l[2][len - 5] = if l[2][len - 5] == b'a' { b'b' } else { b'a' };
        assert_eq!(check(&l, None).broken.unwrap().line, 3);
    }

    #[test]
    fn a_deleted_line_is_found() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 10);
        l.remove(6);
        let b = check(&l, None).broken.unwrap();
        assert_eq!(
            (b.line, b.breach),
            (
                7,
                Breach::Deleted {
                    missing_from: 7,
                    missing_to: 7
                }
            )
        );
    }

    #[test]
    fn swapped_lines_are_found() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 10);
        l.swap(3, 4);
        let b = check(&l, None).broken.unwrap();
        assert_eq!(
            (b.line, b.sequence, b.breach),
            (4, Some(5), Breach::Reordered { expected: 4 })
        );
    }

    #[test]
    fn inserted_lines_are_found() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 10);
        // A forged event that is not sealed.
        l.insert(
            3,
            br#"{"@timestamp":"2026-12-01T00:00:00Z","message":"all is well"}"#.to_vec(),
        );
        let b = check(&l, None).broken.unwrap();
        assert_eq!((b.line, b.breach), (4, Breach::Inserted));

        // A copy of a real event.
        let mut l = lines(&mut Chain::new(None, None), 10);
        let copy = l[2].clone();
        l.insert(6, copy);
        let b = check(&l, None).broken.unwrap();
        assert_eq!(
            (b.line, b.sequence, b.breach),
            (7, Some(3), Breach::Inserted)
        );
    }

    #[test]
    fn a_forged_event_sealed_without_the_key_is_found() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let mut chain = Chain::new(Some(key.clone()), None);
        let mut l = lines(&mut chain, 6);
        assert_eq!(check(&l, Some(&key)).broken, None);
        // Re-seal event 4 onwards with plain hashes after an edit: the alg changes, and a
        // re-sealing with a guessed key does not match.
        let mut forger = Chain::new(Some(b"guess".to_vec()), None);
        let mut forged = Vec::new();
        let mut e = event(99);
        forger.last_sequence = 3;
        forger.seal(&mut e, &mut forged).unwrap();
        l[3] = forged;
        let b = check(&l, Some(&key)).broken.unwrap();
        assert_eq!(b.line, 4);
        // Without the key nothing can be checked, and verify says so.
        let b = check(&l, None).broken.unwrap();
        assert_eq!(b.breach, Breach::NeedsKey);
    }

    #[test]
    fn the_chain_continues_across_rotated_files_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::new(None, None);
        let l = lines(&mut chain, 9);
        let a = write(dir.path(), "audit.jsonl.2", &l[..3]);
        let b = write(dir.path(), "audit.jsonl.1", &l[3..6]);
        let c = write(dir.path(), "audit.jsonl", &l[6..]);
        let r = verify(&[c.clone(), a.clone(), b.clone()], None).unwrap();
        assert_eq!(r.broken, None);
        assert_eq!(r.events, 9);
        assert_eq!(r.files.iter().map(|f| f.1).collect::<Vec<_>>(), [1, 4, 7]);
        // The middle file missing: a deletion at the start of the last one.
        let b2 = verify(&[a, c], None).unwrap().broken.unwrap();
        assert_eq!(
            b2.breach,
            Breach::Deleted {
                missing_from: 4,
                missing_to: 6
            }
        );
        // Rotated away: starting mid-chain is fine, and said.
        let r = verify(&[b], None).unwrap();
        assert_eq!(r.broken, None);
        assert!(r.starts_mid_chain);
    }

    #[test]
    fn a_restarted_chain_continues_from_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::new(None, None);
        let l = lines(&mut chain, 4);
        let path = write(dir.path(), "audit.jsonl", &l);
        let tail = tail_of(&path).unwrap();
        assert_eq!(tail, chain.tail());
        let mut again = Chain::new(None, Some(tail));
        let more = lines(&mut again, 3);
        let mut all = l;
        all.extend(more);
        let r = check(&all, None);
        assert_eq!(r.broken, None);
        assert_eq!(r.last_sequence, 7);
    }

    #[test]
    fn an_empty_zonegate_object_takes_the_link_without_a_comma() {
        let mut e = event(1);
        e.zonegate = Default::default();
        let mut chain = Chain::new(None, None);
        let mut out = Vec::new();
        chain.seal(&mut e, &mut out).unwrap();
        assert!(out.windows(20).any(|w| w == br#""zonegate":{"chain":"#));
        assert_eq!(check(&[out], None).broken, None);
    }
}

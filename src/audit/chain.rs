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
//! cannot, as long as the key stays secret. The seal is one for the whole chain: with a key every
//! event must carry an HMAC, and a plain one among them is a downgrade.
//!
//! The ends of a log are held by [`super::checkpoint`]s: a log begins at event 1 or at a rotation
//! checkpoint (the first event of a file that continues the one before it), and with signed
//! checkpoints it ends at the daemon's stop checkpoint. Anything else is a cut, reported.

use std::fmt;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::checkpoint::{self, Checkpoint, Reason, SignatureFault, line_hash, parse_hex};

/// The link's key in the line; only the chain uses it, so the last occurrence is the link.
const LINK_KEY: &[u8] = b"\"chain\":{";
/// The previous hash of the first event there ever was.
pub const GENESIS: [u8; 32] = [0; 32];
/// Longest line [`verify`] reads; a longer one is reported as unreadable rather than buffered.
pub const MAX_LINE: usize = 1 << 20;
/// The `event.action` of checkpoints.
pub const CHECKPOINT_ACTION: &str = "audit-checkpoint";

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

/// How a chain is sealed: fixed for the whole chain by its first event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Sha256,
    HmacSha256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Sha256 => "sha256",
            Alg::HmacSha256 => "hmac-sha256",
        }
    }

    fn parse(s: &str) -> Option<Alg> {
        match s {
            "sha256" => Some(Alg::Sha256),
            "hmac-sha256" => Some(Alg::HmacSha256),
            _ => None,
        }
    }
}

/// Seals events one after another. One per audit stream (the writer's).
#[derive(Clone)]
pub struct Chain {
    key: Option<Vec<u8>>,
    prev: [u8; 32],
    last_sequence: u64,
    last_line_hash: Option<[u8; 32]>,
    /// The first event the next checkpoint's digest covers, and the digest so far.
    range_from: u64,
    range: checkpoint::Digest,
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
    /// SHA-256 of its line, when known: the next checkpoint's digest begins with it.
    pub line_hash: Option<[u8; 32]>,
}

/// Events since the last checkpoint, for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_sequence: u64,
    pub sequence: u64,
    pub head: [u8; 32],
    pub digest: [u8; 32],
}

impl Chain {
    /// A chain continuing after `tail`, or a new one.
    pub fn new(key: Option<Vec<u8>>, tail: Option<Tail>) -> Chain {
        let mut range = checkpoint::Digest::default();
        let range_from = match tail {
            // The tail (the last event of the previous run, often its stop checkpoint) is
            // covered by no digest yet: the next checkpoint's begins with it.
            Some(Tail {
                sequence,
                line_hash: Some(h),
                ..
            }) => {
                range.add(&h);
                sequence
            }
            Some(t) => t.sequence.saturating_add(1),
            None => 1,
        };
        Chain {
            key,
            prev: tail.map_or(GENESIS, |t| t.hash),
            last_sequence: tail.map_or(0, |t| t.sequence),
            last_line_hash: tail.and_then(|t| t.line_hash),
            range_from,
            range,
        }
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn tail(&self) -> Tail {
        Tail {
            sequence: self.last_sequence,
            hash: self.prev,
            line_hash: self.last_line_hash,
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
        out.extend_from_slice(self.alg().as_str().as_bytes());
        out.extend_from_slice(br#"","prev":""#);
        push_hex(out, &self.prev);
        out.extend_from_slice(br#"","hash":""#);
        push_hex(out, &hash);
        out.extend_from_slice(br#""}}}"#);
        let line = line_hash(out.get(start..).unwrap_or_default());
        self.range.add(&line);
        self.last_line_hash = Some(line);
        self.prev = hash;
        self.last_sequence = sequence;
        Ok(())
    }

    /// The events since the last checkpoint (none when only this checkpoint follows), and a new
    /// range that begins with the checkpoint sealed next.
    pub fn close_range(&mut self) -> Range {
        let range = Range {
            from_sequence: self.range_from,
            sequence: self.last_sequence,
            head: self.prev,
            digest: std::mem::take(&mut self.range).finish(),
        };
        self.range_from = self.last_sequence.saturating_add(1);
        range
    }

    pub fn alg(&self) -> Alg {
        if self.key.is_some() {
            Alg::HmacSha256
        } else {
            Alg::Sha256
        }
    }
}

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
    out.extend_from_slice(checkpoint::hex(bytes).as_bytes());
}

/// One line taken apart: what it claims and whether its own hash holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    sequence: u64,
    prev: [u8; 32],
    hash: [u8; 32],
    alg: Alg,
    /// The stated hash is the one of the stated prev and the body; `None` when that cannot be
    /// checked (an HMAC and no key).
    sealed: Option<bool>,
    /// An `audit-checkpoint` event, and its checkpoint when that parses.
    is_checkpoint: bool,
    checkpoint: Option<Box<Checkpoint>>,
}

#[derive(Deserialize)]
struct LinkFields {
    alg: String,
    prev: String,
    hash: String,
}

/// What [`parse_link`] reads of the whole line.
#[derive(Deserialize)]
struct Peek {
    event: PeekEvent,
    #[serde(default)]
    zonegate: PeekZonegate,
}

#[derive(Deserialize)]
struct PeekEvent {
    sequence: u64,
    #[serde(default)]
    action: String,
}

#[derive(Deserialize, Default)]
struct PeekZonegate {
    #[serde(default)]
    checkpoint: Option<serde_json::Value>,
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
    let peek: Peek = serde_json::from_slice(line).ok()?;
    let cut = match line.get(at.checked_sub(1)?) {
        Some(b',') => at.checked_sub(1)?,
        _ => at,
    };
    let mut body = line.get(..cut)?.to_vec();
    body.extend_from_slice(b"}}");
    let prev = parse_hex(&fields.prev)?;
    let hash = parse_hex(&fields.hash)?;
    let alg = Alg::parse(&fields.alg)?;
    let sealed = match (alg, key) {
        (Alg::HmacSha256, Some(key)) => Some(link_hash(Some(key), &prev, &body) == hash),
        (Alg::HmacSha256, None) => None,
        (Alg::Sha256, _) => Some(link_hash(None, &prev, &body) == hash),
    };
    let is_checkpoint = peek.event.action == CHECKPOINT_ACTION;
    let checkpoint = peek
        .zonegate
        .checkpoint
        .filter(|_| is_checkpoint)
        .and_then(|v| serde_json::from_value(v).ok())
        .map(Box::new);
    Some(Link {
        sequence: peek.event.sequence,
        prev,
        hash,
        alg,
        sealed,
        is_checkpoint,
        checkpoint,
    })
}

/// What is wrong with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointFault {
    /// `zonegate.checkpoint` is missing or does not parse.
    Malformed,
    /// It does not state the event right before it as the chain's head.
    Head {
        stated: String,
    },
    /// The events it covers are not the ones its digest was made of.
    Digest {
        from: u64,
        to: u64,
    },
    Signature(SignatureFault),
}

/// How a log ends when it does not end at the daemon's stop checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenEnd {
    /// Events after the last checkpoint (`None`: there is none).
    After {
        from: u64,
        to: u64,
        checkpoint: Option<u64>,
    },
    /// The last event is a checkpoint, but not the one a stopping daemon writes.
    NotStopped { checkpoint: u64, reason: Reason },
}

/// Where a chain breaks, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breach {
    /// The line's content does not match its own hash.
    Modified,
    /// The line is not a sealed event, and without it the chain holds: something was added.
    Inserted,
    /// The line is not a sealed event (not JSON, no sequence number or link), and the chain
    /// does not hold without it either.
    Unreadable,
    /// Events are missing before this one.
    Deleted {
        missing_from: u64,
        missing_to: u64,
    },
    /// This event belongs elsewhere in the stream (its sequence number was expected earlier or
    /// later, and it is found there).
    Reordered {
        expected: u64,
    },
    /// The sequence is right but the link points at another event than the one before it.
    Relinked,
    /// Keyed events and no key (nor public key) to check them with.
    NeedsKey,
    /// Sealed otherwise than the chain (by its first event, or with a key: HMAC): with a plain
    /// hash in a keyed chain, a downgrade.
    SealChanged {
        chain: Alg,
        found: Alg,
    },
    /// The first event is neither event 1 nor a rotation start: events before it were cut off,
    /// or are in files not given.
    HeadMissing {
        first: u64,
    },
    Checkpoint(CheckpointFault),
    /// Keyed events checked with the public key only, not covered by a checkpoint's digest:
    /// their content is not anchored.
    NotAnchored {
        from: u64,
        to: u64,
    },
    /// With signed checkpoints, the log does not end at the daemon's stop checkpoint.
    OpenEnd(OpenEnd),
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breach::Modified => f.write_str("modified: the event does not match its hash"),
            Breach::Inserted => f.write_str("inserted: not a sealed event of this chain"),
            Breach::Unreadable => f.write_str(
                "unreadable: not a sealed audit event (not JSON, or no sequence number or chain link)",
            ),
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
                "sealed with a key (hmac-sha256): run again with --key-file (or --public-key) to check it",
            ),
            Breach::SealChanged {
                chain: Alg::HmacSha256,
                found: Alg::Sha256,
            } => f.write_str(
                "downgrade: sealed with plain sha256 in a chain sealed with hmac-sha256 (re-sealed without the key)",
            ),
            Breach::SealChanged { chain, found } => write!(
                f,
                "seal changed: sealed with {} in a chain sealed with {} (the key changed here? verify the files from here on separately)",
                found.as_str(),
                chain.as_str()
            ),
            Breach::HeadMissing { first } => write!(
                f,
                "head missing: the log begins at event {first}, which is neither event 1 nor a rotation start: the events before it were cut off (or are in files not given)"
            ),
            Breach::Checkpoint(CheckpointFault::Malformed) => {
                f.write_str("checkpoint unreadable: no zonegate.checkpoint of the documented form")
            }
            Breach::Checkpoint(CheckpointFault::Head { stated }) => write!(
                f,
                "checkpoint does not match the chain: it states head {stated} for the event before it, which has another hash (re-sealed or replaced)"
            ),
            Breach::Checkpoint(CheckpointFault::Digest { from, to }) => write!(
                f,
                "checkpoint does not match events {from} to {to}: they were changed, added or removed since it was written"
            ),
            Breach::Checkpoint(CheckpointFault::Signature(SignatureFault::Unsigned)) => {
                f.write_str("checkpoint not signed")
            }
            Breach::Checkpoint(CheckpointFault::Signature(SignatureFault::Malformed)) => {
                f.write_str("checkpoint signature unreadable")
            }
            Breach::Checkpoint(CheckpointFault::Signature(SignatureFault::OtherKey { key_id })) => {
                write!(
                    f,
                    "checkpoint signed by another key (key id {key_id}), or forged"
                )
            }
            Breach::Checkpoint(CheckpointFault::Signature(SignatureFault::BadSignature)) => f
                .write_str(
                    "checkpoint signature does not verify with this public key: forged or changed",
                ),
            Breach::NotAnchored { from, to } => write!(
                f,
                "not anchored: events {from} to {to} are covered by no verified checkpoint digest, and their HMAC seals cannot be checked without --key-file"
            ),
            Breach::OpenEnd(OpenEnd::After {
                from,
                to,
                checkpoint: Some(c),
            }) => write!(
                f,
                "unanchored: events {from} to {to} follow the last checkpoint (event {c}): the end of the log was cut off, or the daemon was killed or is still running (--allow-open-end accepts that)"
            ),
            Breach::OpenEnd(OpenEnd::After {
                from,
                to,
                checkpoint: None,
            }) => write!(
                f,
                "unanchored: no checkpoint covers events {from} to {to} (--allow-open-end accepts a log younger than the checkpoint interval)"
            ),
            Breach::OpenEnd(OpenEnd::NotStopped { checkpoint, reason }) => write!(
                f,
                "end missing: the log ends at event {checkpoint}, a checkpoint of reason {}, not at the daemon's stop checkpoint: cut off there, or the daemon was killed or is still running (--allow-open-end accepts that)",
                reason.as_str()
            ),
        }
    }
}

/// A broken link, a cut end or a false checkpoint.
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

/// What [`verify`] checks with.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions<'a> {
    /// The HMAC key of a keyed chain (`audit.key_file`).
    pub key: Option<&'a [u8]>,
    /// The public key of the checkpoint signing key.
    pub public_key: Option<&'a VerifyingKey>,
    /// A log that does not end at a stop checkpoint (still written, or of a killed daemon) is
    /// fine.
    pub allow_open_end: bool,
}

/// How the log begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Event 1, the first there ever was.
    Genesis,
    /// A rotation checkpoint: the log continues a file that is not among those given.
    Rotation { after: u64 },
    /// Neither: reported as [`Breach::HeadMissing`].
    Missing,
}

/// One file of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub lines: u64,
    /// Its first sealed event; `None` when it has none.
    pub first_sequence: Option<u64>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The files in stream order.
    pub files: Vec<FileReport>,
    /// Lines read.
    pub events: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    /// The chain's seal, by its first event.
    pub alg: Option<Alg>,
    pub start: Start,
    pub checkpoints: u64,
    pub signed_checkpoints: u64,
    /// The signatures were checked against a public key.
    pub signatures_checked: bool,
    /// The last checkpoint's sequence number and reason.
    pub last_checkpoint: Option<(u64, Reason)>,
    /// How the log ends, when not at a stop checkpoint.
    pub open_end: Option<OpenEnd>,
    /// Whether a cut-off end can be told: only with signed checkpoints.
    pub end_checked: bool,
    /// Everything wrong, in stream order; empty when the log holds.
    pub problems: Vec<Break>,
}

impl Report {
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One line as read, in stream order.
#[derive(Debug)]
struct Entry {
    file: usize,
    line: u64,
    link: Option<Link>,
    line_hash: [u8; 32],
}

/// Checks the chain through `files` (a log and its rotated predecessors, in any order: they
/// are put in stream order by their first sequence number), its beginning and end, and its
/// checkpoints.
pub fn verify(files: &[PathBuf], options: &VerifyOptions<'_>) -> Result<Report, ChainError> {
    let mut per_file = Vec::new();
    for path in files {
        let entries = read_entries(path, options.key)?;
        let first = entries
            .iter()
            .find_map(|e| e.link.as_ref().map(|l| l.sequence));
        per_file.push((path.clone(), first, entries));
    }
    // Files without a sealed event last.
    per_file.sort_by_key(|(_, first, _)| first.unwrap_or(u64::MAX));
    let mut entries = Vec::new();
    let mut report_files = Vec::new();
    for (index, (path, first, lines)) in per_file.into_iter().enumerate() {
        report_files.push(FileReport {
            path,
            lines: u64::try_from(lines.len()).unwrap_or(u64::MAX),
            first_sequence: first,
        });
        entries.extend(lines.into_iter().map(|e| Entry { file: index, ..e }));
    }
    if entries.is_empty() {
        let path = files.first().cloned().unwrap_or_default();
        return Err(ChainError::Empty(path));
    }
    Ok(analyze(&entries, report_files, options))
}

fn analyze(entries: &[Entry], files: Vec<FileReport>, options: &VerifyOptions<'_>) -> Report {
    let mut problems: Vec<(usize, Breach)> = first_break(entries, options).into_iter().collect();
    let anchors = check_anchors(entries, options);
    problems.extend(anchors.problems);
    problems.sort_by_key(|(i, _)| *i);
    let problems = problems
        .into_iter()
        .map(|(i, breach)| {
            let e = entries.get(i);
            Break {
                file: e
                    .and_then(|e| files.get(e.file))
                    .map(|f| f.path.clone())
                    .unwrap_or_default(),
                line: e.map_or(0, |e| e.line),
                sequence: e.and_then(|e| e.link.as_ref().map(|l| l.sequence)),
                breach,
            }
        })
        .collect();
    let links = || entries.iter().filter_map(|e| e.link.as_ref());
    Report {
        events: u64::try_from(entries.len()).unwrap_or(u64::MAX),
        first_sequence: links().next().map_or(0, |l| l.sequence),
        last_sequence: links().next_back().map_or(0, |l| l.sequence),
        alg: links().next().map(|l| l.alg),
        start: anchors.start,
        checkpoints: anchors.checkpoints,
        signed_checkpoints: anchors.signed,
        signatures_checked: options.public_key.is_some(),
        last_checkpoint: anchors.last_checkpoint,
        open_end: anchors.open_end,
        end_checked: anchors.end_checked,
        files,
        problems,
    }
}

/// Lines of a log as [`verify`] reads them, and its first problem: for the fuzz target.
#[doc(hidden)]
pub fn check_text(text: &[u8], options: &VerifyOptions<'_>) -> Option<Breach> {
    let entries: Vec<Entry> = text
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| Entry {
            file: 0,
            line: u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1),
            link: parse_link(line, options.key),
            line_hash: line_hash(line),
        })
        .collect();
    let files = vec![FileReport {
        path: PathBuf::new(),
        lines: u64::try_from(entries.len()).unwrap_or(u64::MAX),
        first_sequence: None,
    }];
    analyze(&entries, files, options)
        .problems
        .into_iter()
        .next()
        .map(|b| b.breach)
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
    parse_link(&line, key).is_some_and(|l| {
        l.sealed == Some(true)
            && l.sequence == 1
            && l.hash == chain.prev
            && l.alg == chain.alg()
            && !l.is_checkpoint
    })
}

fn read_entries(path: &Path, key: Option<&[u8]>) -> Result<Vec<Entry>, ChainError> {
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
        // A blank line is something added to the file, too.
        let link = if text.is_empty() {
            None
        } else {
            parse_link(text, key)
        };
        out.push(Entry {
            file: 0,
            line: number,
            link,
            line_hash: line_hash(text),
        });
        if !line.ends_with(b"\n") && n >= MAX_LINE {
            // Skip the rest of an overlong line; it is reported as unreadable.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).map_err(read_error)?;
        }
    }
    Ok(out)
}

/// The index of the first entry whose link does not hold, and why.
fn first_break(entries: &[Entry], options: &VerifyOptions<'_>) -> Option<(usize, Breach)> {
    // With a key every event must carry its HMAC; otherwise the first event fixes the seal.
    let chain_alg = if options.key.is_some() {
        Some(Alg::HmacSha256)
    } else {
        entries.iter().find_map(|e| e.link.as_ref().map(|l| l.alg))
    };
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
        // Not a sealed event: added, or so damaged that it no longer parses.
        let Some(link) = &entry.link else {
            let breach = if next_follows() {
                Breach::Inserted
            } else {
                Breach::Unreadable
            };
            return Some((i, breach));
        };
        if let Some(chain) = chain_alg
            && link.alg != chain
        {
            return Some((
                i,
                Breach::SealChanged {
                    chain,
                    found: link.alg,
                },
            ));
        }
        if link.sealed.is_none() && options.public_key.is_none() {
            return Some((i, Breach::NeedsKey));
        }
        if link.sealed == Some(false) {
            let breach = if next_follows() {
                Breach::Inserted
            } else {
                Breach::Modified
            };
            return Some((i, breach));
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
        None => link.sealed != Some(false),
    }
}

/// What [`check_anchors`] found.
struct Anchors {
    start: Start,
    checkpoints: u64,
    signed: u64,
    last_checkpoint: Option<(u64, Reason)>,
    open_end: Option<OpenEnd>,
    end_checked: bool,
    problems: Vec<(usize, Breach)>,
}

/// The log's beginning, its checkpoints and its end.
fn check_anchors(entries: &[Entry], options: &VerifyOptions<'_>) -> Anchors {
    let linked: Vec<(usize, &Link)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, e.link.as_ref()?)))
        .collect();
    let mut out = Anchors {
        start: Start::Missing,
        checkpoints: 0,
        signed: 0,
        last_checkpoint: None,
        open_end: None,
        end_checked: false,
        problems: Vec::new(),
    };
    let (Some(&(first_index, first)), Some(&(last_index, last))) = (linked.first(), linked.last())
    else {
        return out;
    };

    out.start = if first.sequence == 1 && first.prev == GENESIS {
        Start::Genesis
    } else if let Some(cp) = first.checkpoint.as_ref().filter(|c| {
        c.reason == Reason::Rotation && c.sequence.checked_add(1) == Some(first.sequence)
    }) {
        Start::Rotation { after: cp.sequence }
    } else {
        out.problems.push((
            first_index,
            Breach::HeadMissing {
                first: first.sequence,
            },
        ));
        Start::Missing
    };

    // Entries whose content a verified digest covers.
    let mut digested = vec![false; entries.len()];
    let mut fault_reported = false;
    let mut last_checkpoint_at: Option<usize> = None;
    for (pos, &(index, link)) in linked.iter().enumerate() {
        if !link.is_checkpoint {
            continue;
        }
        out.checkpoints = out.checkpoints.saturating_add(1);
        last_checkpoint_at = Some(pos);
        let fault = match &link.checkpoint {
            None => Some(CheckpointFault::Malformed),
            Some(cp) => {
                if cp.signature.is_some() {
                    out.signed = out.signed.saturating_add(1);
                }
                out.last_checkpoint = Some((link.sequence, cp.reason));
                check_checkpoint(cp, pos, &linked, entries, first.sequence, options)
                    .map(|covered| {
                        for &(i, _) in covered {
                            if let Some(d) = digested.get_mut(i) {
                                *d = true;
                            }
                        }
                    })
                    .err()
            }
        };
        if let Some(fault) = fault
            && !fault_reported
        {
            out.problems.push((index, Breach::Checkpoint(fault)));
            fault_reported = true;
        }
    }

    // Keyed events read with the public key only: their content is anchored by digests alone.
    let digests_only =
        options.key.is_none() && options.public_key.is_some() && first.alg == Alg::HmacSha256;
    if digests_only && let Some(end) = last_checkpoint_at {
        let uncovered = linked
            .get(..end)
            .unwrap_or_default()
            .iter()
            .position(|(i, _)| !digested.get(*i).copied().unwrap_or(false));
        if let Some(from_pos) = uncovered {
            let to_pos = linked
                .get(from_pos..end)
                .unwrap_or_default()
                .iter()
                .position(|(i, _)| digested.get(*i).copied().unwrap_or(false))
                .map_or(end, |p| from_pos.saturating_add(p));
            if let (Some(&(i, from)), Some((_, to))) =
                (linked.get(from_pos), linked.get(to_pos.saturating_sub(1)))
            {
                out.problems.push((
                    i,
                    Breach::NotAnchored {
                        from: from.sequence,
                        to: to.sequence,
                    },
                ));
            }
        }
    }

    // The end: with signed checkpoints, the daemon's stop checkpoint.
    let (open_end, at) = match last_checkpoint_at {
        Some(pos) if pos.saturating_add(1) == linked.len() => match &last.checkpoint {
            Some(cp) if cp.reason == Reason::Stop => (None, last_index),
            Some(cp) => (
                Some(OpenEnd::NotStopped {
                    checkpoint: last.sequence,
                    reason: cp.reason,
                }),
                last_index,
            ),
            // Reported as malformed already.
            None => (None, last_index),
        },
        Some(pos) => match (linked.get(pos), linked.get(pos.saturating_add(1))) {
            (Some((_, checkpoint)), Some(&(after_index, after))) => (
                Some(OpenEnd::After {
                    from: after.sequence,
                    to: last.sequence,
                    checkpoint: Some(checkpoint.sequence),
                }),
                after_index,
            ),
            _ => (None, last_index),
        },
        None => (
            Some(OpenEnd::After {
                from: first.sequence,
                to: last.sequence,
                checkpoint: None,
            }),
            first_index,
        ),
    };
    out.end_checked = options.public_key.is_some() || out.signed > 0;
    if out.end_checked
        && !options.allow_open_end
        && let Some(o) = &open_end
    {
        out.problems.push((at, Breach::OpenEnd(o.clone())));
    }
    out.open_end = open_end;
    out
}

/// Checks the checkpoint at `linked[pos]`: that it states the chain's head, its signature (with
/// a public key) and its digest. The events its digest verifiably covers, or what is wrong.
fn check_checkpoint<'e>(
    cp: &Checkpoint,
    pos: usize,
    linked: &'e [(usize, &Link)],
    entries: &[Entry],
    first_sequence: u64,
    options: &VerifyOptions<'_>,
) -> Result<&'e [(usize, &'e Link)], CheckpointFault> {
    let Some(&(_, link)) = linked.get(pos) else {
        return Err(CheckpointFault::Malformed);
    };
    if cp.sequence.checked_add(1) != Some(link.sequence)
        || cp.head_bytes() != Some(link.prev)
        || cp.from_sequence > link.sequence
    {
        return Err(CheckpointFault::Head {
            stated: cp.head.clone(),
        });
    }
    if let Some(public) = options.public_key {
        cp.verify(public).map_err(CheckpointFault::Signature)?;
    }
    let Some(digest) = cp.digest_bytes() else {
        return Err(CheckpointFault::Malformed);
    };
    let count = link.sequence.saturating_sub(cp.from_sequence);
    let covered = usize::try_from(count)
        .ok()
        .and_then(|n| linked.get(pos.checked_sub(n)?..pos));
    let in_order = covered.is_some_and(|c| {
        c.iter()
            .zip(cp.from_sequence..)
            .all(|((_, l), s)| l.sequence == s)
    });
    match covered {
        Some(covered) if in_order => {
            let mut d = checkpoint::Digest::default();
            for &(i, _) in covered {
                if let Some(e) = entries.get(i) {
                    d.add(&e.line_hash);
                }
            }
            if d.finish() == digest {
                Ok(covered)
            } else {
                Err(CheckpointFault::Digest {
                    from: cp.from_sequence,
                    to: cp.sequence,
                })
            }
        }
        // It reaches back before these files (a rotation start, or a cut head, reported as
        // such): what it covers cannot all be checked.
        _ if cp.from_sequence < first_sequence => Ok(&[]),
        _ => Err(CheckpointFault::Digest {
            from: cp.from_sequence,
            to: cp.sequence,
        }),
    }
}

/// Where the daemon continues a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundTail {
    pub tail: Tail,
    /// In the active file (not in `path.1`, with the active file empty or missing).
    pub in_active_file: bool,
    /// Sealed as `key` seals: the same algorithm and, keyed, the same key.
    pub same_seal: bool,
}

/// The last link in a log (the active file, or the newest rotated one when the active file is
/// empty), so that a restarted daemon continues the chain. `None` when there is no event.
pub fn find_tail(path: &Path, key: Option<&[u8]>) -> Option<FoundTail> {
    for (candidate, in_active_file) in [
        (path.to_owned(), true),
        (super::file::rotated(path, 1), false),
    ] {
        let found = last_line(&candidate).and_then(|l| {
            let link = parse_link(&l, key)?;
            let alg = if key.is_some() {
                Alg::HmacSha256
            } else {
                Alg::Sha256
            };
            Some(FoundTail {
                tail: Tail {
                    sequence: link.sequence,
                    hash: link.hash,
                    line_hash: Some(line_hash(&l)),
                },
                in_active_file,
                same_seal: link.alg == alg && link.sealed != Some(false),
            })
        });
        if found.is_some() {
            return found;
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
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::audit::event::{Event, Severity};
    use ed25519_dalek::SigningKey;

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

    fn options(key: Option<&[u8]>) -> VerifyOptions<'_> {
        VerifyOptions {
            key,
            ..VerifyOptions::default()
        }
    }

    fn check_with(lines: &[Vec<u8>], options: &VerifyOptions<'_>) -> Report {
        let dir = tempfile::tempdir().unwrap();
        verify(&[write(dir.path(), "audit.jsonl", lines)], options).unwrap()
    }

    fn check(lines: &[Vec<u8>], key: Option<&[u8]>) -> Report {
        check_with(lines, &options(key))
    }

    /// The first problem.
    fn first(r: &Report) -> Option<Break> {
        r.problems.first().cloned()
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
        assert_eq!(first(&r), None);
        assert_eq!((r.events, r.first_sequence, r.last_sequence), (20, 1, 20));
        assert_eq!(r.start, Start::Genesis);
        // No signed checkpoints: the end cannot be told, and is not held against the log.
        assert!(!r.end_checked);
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
        let b = first(&check(&l, None)).unwrap();
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
        assert_eq!(first(&check(&l, None)).unwrap().line, 3);
    }

    #[test]
    fn a_deleted_line_is_found() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 10);
        l.remove(6);
        let b = first(&check(&l, None)).unwrap();
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
        let b = first(&check(&l, None)).unwrap();
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
        let b = first(&check(&l, None)).unwrap();
        assert_eq!((b.line, b.breach), (4, Breach::Inserted));

        // A copy of a real event.
        let mut l = lines(&mut Chain::new(None, None), 10);
        let copy = l[2].clone();
        l.insert(6, copy);
        let b = first(&check(&l, None)).unwrap();
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
        assert_eq!(first(&check(&l, Some(&key))), None);
        // Re-seal event 4 onwards with plain hashes after an edit: the alg changes, and a
        // re-sealing with a guessed key does not match.
        let mut forger = Chain::new(Some(b"guess".to_vec()), None);
        let mut forged = Vec::new();
        let mut e = event(99);
        forger.last_sequence = 3;
        forger.seal(&mut e, &mut forged).unwrap();
        l[3] = forged;
        let b = first(&check(&l, Some(&key))).unwrap();
        assert_eq!(b.line, 4);
        // Without the key nothing can be checked, and verify says so.
        let b = first(&check(&l, None)).unwrap();
        assert_eq!(b.breach, Breach::NeedsKey);
    }

    #[test]
    fn the_chain_continues_across_rotated_files_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 3);
        l.push(sealed_checkpoint(&mut chain, Reason::Rotation, None));
        l.extend(lines(&mut chain, 2));
        l.push(sealed_checkpoint(&mut chain, Reason::Rotation, None));
        l.extend(lines(&mut chain, 2));
        let a = write(dir.path(), "audit.jsonl.2", &l[..3]);
        let b = write(dir.path(), "audit.jsonl.1", &l[3..6]);
        let c = write(dir.path(), "audit.jsonl", &l[6..]);
        let r = verify(&[c.clone(), a.clone(), b.clone()], &options(None)).unwrap();
        assert_eq!(first(&r), None);
        assert_eq!(r.events, 9);
        assert_eq!(
            r.files.iter().map(|f| f.first_sequence).collect::<Vec<_>>(),
            [Some(1), Some(4), Some(7)]
        );
        // The middle file missing: a deletion at the start of the last one.
        let b2 = first(&verify(&[a, c], &options(None)).unwrap()).unwrap();
        assert_eq!(
            b2.breach,
            Breach::Deleted {
                missing_from: 4,
                missing_to: 6
            }
        );
        // Rotated away: a file that begins with its rotation checkpoint verifies alone, and
        // says where it continues from.
        let r = verify(&[b], &options(None)).unwrap();
        assert_eq!(first(&r), None);
        assert_eq!(r.start, Start::Rotation { after: 3 });
    }

    #[test]
    fn a_cut_head_is_reported_at_the_first_remaining_line() {
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 6);
        l.drain(..2);
        let r = check(&l, None);
        let b = first(&r).unwrap();
        assert_eq!(
            (b.line, b.sequence, b.breach),
            (1, Some(3), Breach::HeadMissing { first: 3 })
        );
        assert_eq!(r.start, Start::Missing);

        // Cut up to a checkpoint that is not a rotation start: still a cut.
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 3);
        l.push(sealed_checkpoint(&mut chain, Reason::Interval, Some(&key)));
        l.extend(lines(&mut chain, 2));
        l.drain(..3);
        assert_eq!(
            first(&check(&l, None)).unwrap().breach,
            Breach::HeadMissing { first: 4 }
        );
        // A file that began with a rotation start, cut after it.
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 3);
        l.push(sealed_checkpoint(&mut chain, Reason::Rotation, None));
        l.extend(lines(&mut chain, 3));
        l.drain(..5);
        assert_eq!(
            first(&check(&l, None)).unwrap().breach,
            Breach::HeadMissing { first: 6 }
        );
    }

    /// What someone without the key does to a keyed log: edits, then re-seals the events from
    /// `from` (1-based) on with the plain SHA-256 chain, continuing from the hash before them.
    fn reseal_plain(lines: &[Vec<u8>], from: usize) -> Vec<Vec<u8>> {
        let mut out = lines[..from - 1].to_vec();
        let mut prev = if from > 1 {
            parse_link(&lines[from - 2], None).unwrap().hash
        } else {
            GENESIS
        };
        for line in &lines[from - 1..] {
            let at = line
                .windows(LINK_KEY.len())
                .rposition(|w| w == LINK_KEY)
                .unwrap();
            let comma = line[at - 1] == b',';
            let cut = if comma { at - 1 } else { at };
            let mut body = line[..cut].to_vec();
            body.extend_from_slice(b"}}");
            let hash = plain_hash(&prev, &body);
            let mut resealed = line[..cut].to_vec();
            if comma {
                resealed.push(b',');
            }
            resealed.extend_from_slice(
                format!(
                    r#""chain":{{"alg":"sha256","prev":"{}","hash":"{}"}}}}}}"#,
                    checkpoint::hex(&prev),
                    checkpoint::hex(&hash)
                )
                .as_bytes(),
            );
            out.push(resealed);
            prev = hash;
        }
        out
    }

    #[test]
    fn a_keyed_log_resealed_with_the_plain_chain_is_a_downgrade() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let mut chain = Chain::new(Some(key.clone()), None);
        let l = lines(&mut chain, 6);
        assert_eq!(first(&check(&l, Some(&key))), None);
        let mut edited = l.clone();
        edited[3] = String::from_utf8(edited[3].clone())
            .unwrap()
            .replace("event number 4", "all is well")
            .into_bytes();
        let resealed = reseal_plain(&edited, 3);
        // Plain links that hold in themselves: only the seal gives them away.
        assert_eq!(
            first(&check(&resealed[2..], None)).unwrap().breach,
            Breach::HeadMissing { first: 3 }
        );
        let b = first(&check(&resealed, Some(&key))).unwrap();
        assert_eq!(
            (b.line, b.sequence, b.breach.clone()),
            (
                3,
                Some(3),
                Breach::SealChanged {
                    chain: Alg::HmacSha256,
                    found: Alg::Sha256
                }
            )
        );
        assert!(b.to_string().contains(":3: event 3: downgrade"), "{b}");
        // The whole log re-sealed: with the key, the first event is already a downgrade.
        let b = first(&check(&reseal_plain(&l, 1), Some(&key))).unwrap();
        assert_eq!(
            (b.line, b.breach.to_string().starts_with("downgrade")),
            (1, true)
        );
        // Without a key, the seal is fixed by the first event just the same.
        let b = first(&check(&resealed, None)).unwrap();
        assert_eq!(b.line, 1);
        assert_eq!(b.breach, Breach::NeedsKey);
    }

    /// A checkpoint of the events since the last one, sealed.
    fn sealed_checkpoint(chain: &mut Chain, reason: Reason, key: Option<&SigningKey>) -> Vec<u8> {
        let range = chain.close_range();
        let mut e = Event::audit_checkpoint(Checkpoint::new(
            reason,
            range.from_sequence,
            range.sequence,
            &range.head,
            &range.digest,
            key,
        ));
        let mut out = Vec::new();
        chain.seal(&mut e, &mut out).unwrap();
        out
    }

    /// A keyed log as a daemon with checkpoints writes it: 3 events, an interval checkpoint,
    /// 2 events, the stop checkpoint.
    fn signed_log(key: &[u8], signer: &SigningKey) -> Vec<Vec<u8>> {
        let mut chain = Chain::new(Some(key.to_vec()), None);
        let mut l = lines(&mut chain, 3);
        l.push(sealed_checkpoint(
            &mut chain,
            Reason::Interval,
            Some(signer),
        ));
        l.extend(lines(&mut chain, 2));
        l.push(sealed_checkpoint(&mut chain, Reason::Stop, Some(signer)));
        l
    }

    #[test]
    fn signed_checkpoints_verify_with_the_public_key_alone() {
        let key = b"0123456789abcdef0123456789abcdef";
        let signer = SigningKey::from_bytes(&[5; 32]);
        let public = signer.verifying_key();
        let l = signed_log(key, &signer);
        for o in [
            options(Some(key)),
            VerifyOptions {
                public_key: Some(&public),
                ..VerifyOptions::default()
            },
            VerifyOptions {
                key: Some(key),
                public_key: Some(&public),
                ..VerifyOptions::default()
            },
        ] {
            let r = check_with(&l, &o);
            assert_eq!(r.problems, [], "{o:?}");
            assert_eq!((r.checkpoints, r.signed_checkpoints), (2, 2));
            assert_eq!(r.last_checkpoint, Some((7, Reason::Stop)));
            assert!(r.end_checked);
        }
        // Another key's signatures are not these.
        let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
        let b = first(&check_with(
            &l,
            &VerifyOptions {
                public_key: Some(&other),
                ..VerifyOptions::default()
            },
        ))
        .unwrap();
        // Nothing is anchored now, either.
        assert_eq!(b.breach, Breach::NotAnchored { from: 1, to: 6 });
        let r = check_with(
            &l,
            &VerifyOptions {
                public_key: Some(&other),
                ..VerifyOptions::default()
            },
        );
        assert!(
            matches!(
                &r.problems[1],
                Break {
                    line: 4,
                    breach: Breach::Checkpoint(CheckpointFault::Signature(
                        SignatureFault::OtherKey { .. }
                    )),
                    ..
                }
            ),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn with_the_public_key_only_a_changed_keyed_event_breaks_its_checkpoint() {
        let key = b"0123456789abcdef0123456789abcdef";
        let signer = SigningKey::from_bytes(&[5; 32]);
        let public = signer.verifying_key();
        let public_only = VerifyOptions {
            public_key: Some(&public),
            ..VerifyOptions::default()
        };
        let mut l = signed_log(key, &signer);
        // The link stays as it was: without the HMAC key only the digest can tell.
        l[1] = String::from_utf8(l[1].clone())
            .unwrap()
            .replace("event number 2", "event number 9")
            .into_bytes();
        let r = check_with(&l, &public_only);
        let found: Vec<(u64, &Breach)> = r.problems.iter().map(|b| (b.line, &b.breach)).collect();
        assert_eq!(
            found,
            [
                (1, &Breach::NotAnchored { from: 1, to: 3 }),
                (
                    4,
                    &Breach::Checkpoint(CheckpointFault::Digest { from: 1, to: 3 })
                )
            ]
        );
        assert_eq!(
            first(&check(&l, Some(key))).unwrap().breach,
            Breach::Modified
        );

        // Re-sealed from event 3 with the plain chain: a downgrade, and the checkpoint no
        // longer states the chain's head.
        let resealed = reseal_plain(&signed_log(key, &signer), 3);
        let r = check_with(&resealed, &public_only);
        let found: Vec<(u64, &Breach)> = r.problems.iter().map(|b| (b.line, &b.breach)).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0], (1, &Breach::NotAnchored { from: 1, to: 6 }));
        assert_eq!(
            found[1],
            (
                3,
                &Breach::SealChanged {
                    chain: Alg::HmacSha256,
                    found: Alg::Sha256
                }
            )
        );
        assert!(
            matches!(
                found[2],
                (4, Breach::Checkpoint(CheckpointFault::Head { .. }))
            ),
            "{found:?}"
        );
    }

    #[test]
    fn a_cut_end_is_reported_unless_the_log_is_still_open() {
        let key = b"0123456789abcdef0123456789abcdef";
        let signer = SigningKey::from_bytes(&[5; 32]);
        let public = signer.verifying_key();
        let l = signed_log(key, &signer);
        for o in [
            options(Some(key)),
            VerifyOptions {
                public_key: Some(&public),
                ..VerifyOptions::default()
            },
        ] {
            // The stop checkpoint and the event before it cut off.
            let b = first(&check_with(&l[..5], &o)).unwrap();
            assert_eq!(
                (b.line, b.breach),
                (
                    5,
                    Breach::OpenEnd(OpenEnd::After {
                        from: 5,
                        to: 5,
                        checkpoint: Some(4)
                    })
                )
            );
            // Cut right after the interval checkpoint.
            let b = first(&check_with(&l[..4], &o)).unwrap();
            assert_eq!(
                (b.line, b.breach),
                (
                    4,
                    Breach::OpenEnd(OpenEnd::NotStopped {
                        checkpoint: 4,
                        reason: Reason::Interval
                    })
                )
            );
            // A log still being written.
            let open = VerifyOptions {
                allow_open_end: true,
                ..o
            };
            let r = check_with(&l[..5], &open);
            assert_eq!(r.problems, []);
            assert!(r.open_end.is_some());
        }
        // With the public key, a log without any checkpoint is open, too.
        let mut chain = Chain::new(Some(key.to_vec()), None);
        let b = first(&check_with(
            &lines(&mut chain, 2),
            &VerifyOptions {
                public_key: Some(&public),
                ..VerifyOptions::default()
            },
        ))
        .unwrap();
        assert_eq!(
            b.breach,
            Breach::OpenEnd(OpenEnd::After {
                from: 1,
                to: 2,
                checkpoint: None
            })
        );
    }

    #[test]
    fn garbage_lines_are_reported_by_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 4);
        l[2] = b"\x00garbage, not JSON".to_vec();
        let path = write(dir.path(), "audit.jsonl", &l);
        let b = first(&verify(std::slice::from_ref(&path), &options(None)).unwrap()).unwrap();
        assert_eq!(
            (b.line, b.sequence, &b.breach),
            (3, None, &Breach::Unreadable)
        );
        assert_eq!(
            b.to_string(),
            format!(
                "{}:3: unreadable: not a sealed audit event (not JSON, or no sequence number or chain link)",
                path.display()
            )
        );
        // A file of nothing but garbage has no first event, rather than a made-up one.
        let junk = write(
            dir.path(),
            "junk.jsonl",
            &[b"junk".to_vec(), b"more".to_vec()],
        );
        let r = verify(&[junk], &options(None)).unwrap();
        assert_eq!(r.files[0].first_sequence, None);
        assert_eq!((r.problems[0].line, r.problems[0].sequence), (1, None));
    }

    #[test]
    fn a_restarted_chain_continues_from_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let signer = SigningKey::from_bytes(&[5; 32]);
        let public = signer.verifying_key();
        let mut chain = Chain::new(None, None);
        let mut l = lines(&mut chain, 3);
        l.push(sealed_checkpoint(&mut chain, Reason::Stop, Some(&signer)));
        let path = write(dir.path(), "audit.jsonl", &l);
        let found = find_tail(&path, None).unwrap();
        assert_eq!(found.tail, chain.tail());
        assert!(found.same_seal && found.in_active_file);
        let mut again = Chain::new(None, Some(found.tail));
        let mut all = l;
        all.extend(lines(&mut again, 3));
        all.push(sealed_checkpoint(&mut again, Reason::Stop, Some(&signer)));
        let r = check_with(
            &all,
            &VerifyOptions {
                public_key: Some(&public),
                ..VerifyOptions::default()
            },
        );
        assert_eq!(r.problems, []);
        assert_eq!(r.last_sequence, 8);
        // The first run's stop checkpoint is covered by the second run's first digest.
        let second: serde_json::Value = serde_json::from_slice(&all[7]).unwrap();
        assert_eq!(second["zonegate"]["checkpoint"]["from_sequence"], 4);

        // Sealed otherwise (a key now): the daemon must not continue this chain in this file.
        assert!(
            !find_tail(&path, Some(b"a key of sixteen bytes"))
                .unwrap()
                .same_seal
        );
        let keyed = write(
            dir.path(),
            "keyed.jsonl",
            &lines(
                &mut Chain::new(Some(b"first key 0123456".to_vec()), None),
                2,
            ),
        );
        assert!(
            find_tail(&keyed, Some(b"first key 0123456"))
                .unwrap()
                .same_seal
        );
        assert!(
            !find_tail(&keyed, Some(b"other key 0123456"))
                .unwrap()
                .same_seal
        );
    }

    #[test]
    fn an_empty_zonegate_object_takes_the_link_without_a_comma() {
        let mut e = event(1);
        e.zonegate = Default::default();
        let mut chain = Chain::new(None, None);
        let mut out = Vec::new();
        chain.seal(&mut e, &mut out).unwrap();
        assert!(out.windows(20).any(|w| w == br#""zonegate":{"chain":"#));
        assert_eq!(first(&check(&[out], None)), None);
    }
}

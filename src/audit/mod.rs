//! Audit events for SOC tools: built where something happened ([`event`]), handed to one writer
//! thread through a bounded queue so that a slow disk or receiver never stalls the data path,
//! numbered and sealed into a hash chain there ([`chain`]), and written to every configured sink
//! at once: a rotating JSON lines file ([`file`]), standard output, remote syslog receivers.
//!
//! With `audit.checkpoint` the writer also seals signed checkpoints into the stream, every
//! interval and when it stops ([`checkpoint`]); every new log file begins with one.
//!
//! Nothing is lost silently: events the queue cannot take are counted and reported by a gap
//! event; with `when_full: fail_closed` the inspected conduits refuse new requests while audit
//! cannot keep up (IEC 62443-3-3 SR 2.10, response to audit processing failures).

pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod file;
pub mod remote;
pub mod spool;
pub mod syslog;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

pub use event::{Endpoint, Event, Network, Place, Rule, Severity, Zonegate};
// The settings are the configuration's (config is the layer below audit); re-exported so that
// audit's users name them where they are used.
pub use crate::config::audit::{
    CheckpointSettings, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_FILE_KEEP, DEFAULT_FILE_MAX_BYTES,
    DEFAULT_SPOOL_DIR, DEFAULT_SPOOL_MAX_BYTES, FileSettings, Reads, Settings, SyslogFormat,
    SyslogSettings, SyslogTransport, WhenFull,
};

use chain::Chain;
use file::RotatingFile;
use remote::{Remote, RemoteSettings, RemoteStats, TlsSettings, Transport};

/// Events waiting for the writer; beyond this they are dropped and counted (never block traffic).
pub const QUEUE_CAPACITY: usize = 65_536;
/// The writer stops adding queued events to one write at about this size.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// After a write the writer waits this long before it takes the next events, so that events
/// arriving one by one are written in batches instead of costing the data path a thread wake-up
/// and the writer a system call each. What an event may wait in the queue.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest HMAC key accepted from `audit.key_file`.
pub const MIN_KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit key file {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit key file {0} holds fewer than {MIN_KEY_LEN} bytes")]
    ShortKey(PathBuf),
    #[error("audit.checkpoint.signing_key_file: {0}")]
    SigningKey(#[source] checkpoint::CheckpointError),
    #[error("cannot start the audit writer: {0}")]
    Thread(#[source] std::io::Error),
    #[error("syslog receiver {address}: {source}")]
    Remote {
        address: String,
        #[source]
        source: remote::RemoteError,
    },
}

/// Hands events to the writer. Cheap to clone; one per session.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
}

/// What the data path and the writer both see.
#[derive(Debug, Default)]
struct Shared {
    /// Events the queue could not take since the writer last reported them.
    lost: AtomicU64,
    lost_total: AtomicU64,
    /// The writer's last write failed.
    write_failed: AtomicBool,
    /// A syslog receiver's spool is full or cannot be written (with `fail_closed`).
    receiver_failed: AtomicBool,
    /// Each receiver's counters as of the writer's last batch.
    receivers: std::sync::Mutex<Vec<(String, RemoteStats)>>,
    fail_closed: bool,
    reads: Reads,
}

#[derive(Debug)]
enum Message {
    Event(Box<Event>),
    /// The checkpoint interval passed: a checkpoint if there are new events.
    Checkpoint,
    /// Write what is queued, then stop.
    Close,
}

/// The writer thread; [`AuditWriter::finish`] writes what is queued and stops it.
#[derive(Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Message>,
    thread: std::thread::JoinHandle<()>,
}

/// A snapshot for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Events waiting for the writer.
    pub queued: u64,
    /// Events the queue dropped since start.
    pub lost: u64,
    pub healthy: bool,
    /// Per syslog receiver: queue, spool, delivered and dropped.
    pub receivers: Vec<(String, RemoteStats)>,
}

impl Audit {
    /// Opens the sinks and starts the writer thread.
    pub fn start(settings: &Settings) -> Result<(Audit, AuditWriter), AuditError> {
        let key = settings.key_file.as_deref().map(read_key).transpose()?;
        let signer = settings
            .checkpoint
            .as_ref()
            .map(|c| checkpoint::load_signing_key(&c.signing_key_file))
            .transpose()
            .map_err(AuditError::SigningKey)?;
        let mut sinks = Sinks::default();
        let mut tail = None;
        let mut new_file = false;
        if let Some(f) = &settings.file {
            let found = chain::find_tail(&f.path, key.as_deref());
            let mut file = RotatingFile::open(&f.path, f.max_bytes, f.keep).map_err(|source| {
                AuditError::Open {
                    path: f.path.clone(),
                    source,
                }
            })?;
            if let Some(found) = found {
                tail = Some(found.tail);
                // A chain is sealed one way throughout: another key (or none) continues the
                // stream in a new file, so that each file verifies with its own key.
                if !found.same_seal {
                    tracing::warn!(
                        path = %f.path.display(),
                        "the audit log was sealed with another key (or none): continuing in a new file"
                    );
                    file.rotate_before_next_write();
                }
                // A file that begins mid-chain says so in its first event.
                new_file = !found.same_seal || !found.in_active_file || file.is_empty();
            }
            sinks.file = Some(file);
        }
        for s in &settings.syslog {
            sinks.remotes.push(start_remote(settings, s)?);
        }
        sinks.stdout = sinks.file.is_none() && sinks.remotes.is_empty();
        let shared = Arc::new(Shared {
            fail_closed: settings.when_full == WhenFull::FailClosed,
            reads: settings.reads,
            ..Shared::default()
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            rx,
            chain: Chain::new(key, tail),
            signer,
            new_file,
            unanchored: false,
            sinks,
            shared: shared.clone(),
            batch: Vec::with_capacity(WRITE_BATCH_BYTES.saturating_mul(2)),
        };
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())
            .map_err(AuditError::Thread)?;
        if let Some(c) = &settings.checkpoint {
            let ticker = tx.clone();
            let interval = c.interval;
            // Wakes the writer, which blocks on its queue, once per interval; ends with it.
            std::thread::Builder::new()
                .name("audit-checkpoint".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(interval);
                        if ticker.blocking_send(Message::Checkpoint).is_err() {
                            break;
                        }
                    }
                })
                .map_err(AuditError::Thread)?;
        }
        Ok((
            Audit {
                tx: tx.clone(),
                shared,
            },
            AuditWriter { tx, thread },
        ))
    }

    /// Queues an event; when the queue is full it is dropped and counted, never waited for.
    pub fn emit(&self, event: Event) {
        if self.tx.try_send(Message::Event(Box::new(event))).is_err() {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
            self.shared.lost_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether requests may proceed: false only with `when_full: fail_closed` while events are
    /// being lost or cannot be written.
    pub fn healthy(&self) -> bool {
        !self.shared.fail_closed
            || (self.shared.lost.load(Ordering::Relaxed) == 0
                && !self.shared.write_failed.load(Ordering::Relaxed)
                && !self.shared.receiver_failed.load(Ordering::Relaxed))
    }

    pub fn reads(&self) -> Reads {
        self.shared.reads
    }

    pub fn stats(&self) -> Stats {
        Stats {
            queued: u64::try_from(self.tx.max_capacity().saturating_sub(self.tx.capacity()))
                .unwrap_or(u64::MAX),
            lost: self.shared.lost_total.load(Ordering::Relaxed),
            healthy: self.healthy(),
            receivers: self
                .shared
                .receivers
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default(),
        }
    }

    /// Events dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.lost_total.load(Ordering::Relaxed)
    }
}

impl AuditWriter {
    /// Writes everything queued before this call, then stops the writer.
    pub fn finish(self) {
        // Blocking send: this is the daemon's last act, and the queue drains meanwhile.
        if self.tx.blocking_send(Message::Close).is_ok() {
            let _ = self.thread.join();
        }
    }
}

fn read_key(path: &std::path::Path) -> Result<Vec<u8>, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Key {
        path: path.to_owned(),
        source,
    })?;
    // A key written with `echo` ends in a newline that is not meant to be part of it.
    let key = bytes.trim_ascii_end().to_vec();
    if key.len() < MIN_KEY_LEN {
        return Err(AuditError::ShortKey(path.to_owned()));
    }
    Ok(key)
}

#[derive(Debug, Default)]
struct Sinks {
    stdout: bool,
    file: Option<RotatingFile>,
    remotes: Vec<Receiver>,
}

/// A syslog receiver and how its messages are written.
#[derive(Debug)]
struct Receiver {
    name: String,
    format: SyslogFormat,
    remote: Remote,
}

/// How long a stopping daemon tries to deliver what its receivers have not yet taken; the rest
/// stays in their spools for the next start.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn tls_settings(s: &SyslogSettings) -> TlsSettings {
    TlsSettings {
        ca: s.ca.clone().unwrap_or_default(),
        server_name: s.server_name.clone(),
        client_cert: s.client_cert.clone(),
        client_key: s.client_key.clone(),
    }
}

fn start_remote(settings: &Settings, s: &SyslogSettings) -> Result<Receiver, AuditError> {
    let transport = match s.transport {
        SyslogTransport::Udp => Transport::Udp,
        SyslogTransport::Tcp => Transport::Tcp,
        SyslogTransport::Tls => Transport::Tls(tls_settings(s)),
        SyslogTransport::Relp => Transport::Relp,
        SyslogTransport::RelpTls => Transport::RelpTls(tls_settings(s)),
    };
    // Named by where it sends, so that reordering receivers in zones.yaml keeps each spool with
    // its receiver.
    let name = format!(
        "syslog-{}-{}-{}",
        s.transport.as_str(),
        s.format.as_str(),
        s.address
    );
    let dir_name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let remote = Remote::start(RemoteSettings {
        name: name.clone(),
        address: s.address.clone(),
        transport,
        format: match s.format {
            SyslogFormat::Rfc5424 => syslog::Format::Rfc5424,
            SyslogFormat::Cef => syslog::Format::Cef,
        },
        spool_dir: settings.spool_dir.join(dir_name),
        spool_max_bytes: settings.spool_max_bytes,
        when_full: match settings.when_full {
            WhenFull::DropOldest => remote::WhenFull::DropOldest,
            WhenFull::FailClosed => remote::WhenFull::FailClosed,
        },
    })
    .map_err(|source| AuditError::Remote {
        address: s.address.clone(),
        source,
    })?;
    Ok(Receiver {
        name,
        format: s.format,
        remote,
    })
}

struct Writer {
    rx: mpsc::Receiver<Message>,
    chain: Chain,
    /// Signs checkpoints (`audit.checkpoint`); without it only rotation starts are written, unsigned.
    signer: Option<ed25519_dalek::SigningKey>,
    /// The next event written begins a file mid-chain.
    new_file: bool,
    /// Events were sealed since the last checkpoint.
    unanchored: bool,
    sinks: Sinks,
    shared: Arc<Shared>,
    /// Sealed lines of the write being assembled.
    batch: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        let mut closing = false;
        while !closing {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            // What is queued goes out in one write, so that a burst costs one system call
            // rather than one per event; nothing waits for more to come.
            self.batch.clear();
            // A new file's first line says where it continues from.
            if self.new_file
                || self
                    .sinks
                    .file
                    .as_ref()
                    .is_some_and(RotatingFile::will_rotate)
            {
                self.checkpoint(checkpoint::Reason::Rotation);
                self.new_file = false;
            }
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Event(mut event) => self.seal(&mut event),
                    Message::Checkpoint => {
                        self.report_lost();
                        if self.signer.is_some() && self.unanchored {
                            self.checkpoint(checkpoint::Reason::Interval);
                        }
                    }
                    Message::Close => closing = true,
                }
                if self.batch.len() < WRITE_BATCH_BYTES || closing {
                    next = self.rx.try_recv().ok();
                }
            }
            self.report_lost();
            // The stop checkpoint is the last event a stopped daemon's log holds.
            if closing && self.signer.is_some() && self.unanchored {
                self.checkpoint(checkpoint::Reason::Stop);
            }
            self.write();
            if self.batch.len() < WRITE_BATCH_BYTES && !closing {
                std::thread::sleep(WRITE_INTERVAL);
            }
        }
        for r in std::mem::take(&mut self.sinks.remotes) {
            r.remote.shutdown(SHUTDOWN_GRACE);
        }
    }

    /// Numbers, seals and queues one event for every sink.
    fn seal(&mut self, event: &mut Event) {
        // Events lost before this one are reported before it, in their place in the stream.
        self.report_lost();
        self.seal_now(event);
    }

    /// Seals a checkpoint of the events since the last one.
    fn checkpoint(&mut self, reason: checkpoint::Reason) {
        let range = self.chain.close_range();
        let mut e = Event::audit_checkpoint(checkpoint::Checkpoint::new(
            reason,
            range.from_sequence,
            range.sequence,
            &range.head,
            &range.digest,
            self.signer.as_ref(),
        ));
        self.seal_now(&mut e);
        self.unanchored = false;
    }

    /// Seals `event` into the batch and hands it to the receivers.
    fn seal_now(&mut self, event: &mut Event) {
        let start = self.batch.len();
        match self.chain.seal(event, &mut self.batch) {
            Ok(()) => {
                self.send(event, start);
                self.batch.push(b'\n');
                self.unanchored = true;
            }
            Err(e) => {
                self.batch.truncate(start);
                tracing::error!(error = %e, "cannot seal an audit event");
            }
        }
    }

    /// Hands the event sealed at `batch[start..]` to every syslog receiver.
    fn send(&self, event: &Event, start: usize) {
        if self.sinks.remotes.is_empty() {
            return;
        }
        let line = self.batch.get(start..).unwrap_or_default();
        let socket = |e: &Option<Endpoint>| {
            let e = e.as_ref()?;
            Some(std::net::SocketAddr::new(e.ip.parse().ok()?, e.port?))
        };
        let z = &event.zonegate;
        let message = syslog::Message {
            sequence: event.event.sequence,
            timestamp: &event.timestamp,
            severity: match event.severity() {
                Severity::Critical => syslog::Severity::Critical,
                Severity::Warning => syslog::Severity::Warning,
                Severity::Notice => syslog::Severity::Notice,
                Severity::Info => syslog::Severity::Info,
            },
            action: event.event.action,
            outcome: event.event.outcome,
            json: line,
            cef: syslog::Cef {
                name: &event.message,
                source: socket(&event.source),
                destination: socket(&event.destination),
                source_zone: z.source.as_ref().map(|p| p.zone.as_str()),
                destination_zone: z.destination.as_ref().map(|p| p.zone.as_str()),
                conduit: z.conduit.as_deref(),
                decision: z.decision,
                reason: Some(z.reason.as_str()).filter(|r| !r.is_empty()),
                rule: event.rule.as_ref().map(|r| r.name.as_str()),
                transport: event.network.as_ref().map(|n| n.transport),
                protocol: event.network.as_ref().and_then(|n| n.protocol),
            },
        };
        for r in &self.sinks.remotes {
            let mut out = Vec::with_capacity(line.len().saturating_add(160));
            let format = match r.format {
                SyslogFormat::Rfc5424 => syslog::Format::Rfc5424,
                SyslogFormat::Cef => syslog::Format::Cef,
            };
            syslog::format(
                format,
                &message,
                event::hostname(),
                std::process::id(),
                &mut out,
            );
            r.remote.push(event.event.sequence, out);
        }
    }

    /// Gap events: for events the queue dropped, and for events a receiver's full spool
    /// dropped (those are in the file, not at that receiver).
    fn report_lost(&mut self) {
        let gaps: Vec<(String, remote::Gap)> = self
            .sinks
            .remotes
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.remote.take_gap()?)))
            .collect();
        for (name, gap) in gaps {
            let mut e = Event::now(
                "audit-gap",
                "alert",
                &["process"],
                &["error"],
                "failure",
                Severity::Critical,
            );
            e.message = format!(
                "{} audit events (sequence {} to {}) were not delivered to {name}: its spool was full",
                gap.count, gap.first, gap.last
            );
            e.zonegate.gap = Some(serde_json::json!({
                "lost": gap.count, "where": name,
                "first_sequence": gap.first, "last_sequence": gap.last,
            }));
            self.seal_now(&mut e);
        }
        let lost = self.shared.lost.swap(0, Ordering::Relaxed);
        if lost == 0 {
            return;
        }
        let mut gap = Event::now(
            "audit-gap",
            "alert",
            &["process"],
            &["error"],
            "failure",
            Severity::Critical,
        );
        gap.message = format!("{lost} audit events were lost: the audit queue was full");
        gap.zonegate.gap = Some(serde_json::json!({ "lost": lost, "where": "queue" }));
        self.seal_now(&mut gap);
    }

    fn write(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut ok = true;
        if let Some(file) = &mut self.sinks.file
            && let Err(e) = file.write(&self.batch)
        {
            tracing::error!(error = %e, "cannot write audit events");
            ok = false;
        }
        if self.sinks.stdout {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(&self.batch)
                .and_then(|()| out.flush())
                .is_err()
            {
                ok = false;
            }
        }
        self.shared.write_failed.store(!ok, Ordering::Relaxed);
        self.refresh_receivers();
    }

    /// Receiver health and counters, as of now.
    fn refresh_receivers(&self) {
        let remotes = &self.sinks.remotes;
        self.shared.receiver_failed.store(
            remotes.iter().any(|r| !r.remote.healthy()),
            Ordering::Relaxed,
        );
        if let Ok(mut stats) = self.shared.receivers.lock() {
            *stats = remotes
                .iter()
                .map(|r| (r.name.clone(), r.remote.stats()))
                .collect();
        }
    }
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
    use chain::{Start, VerifyOptions};
    use checkpoint::Reason;

    fn settings(dir: &std::path::Path, key: &str) -> Settings {
        Settings {
            file: Some(FileSettings {
                path: dir.join("audit.jsonl"),
                max_bytes: 3000,
                keep: 10,
            }),
            key_file: Some(dir.join(key)),
            checkpoint: Some(CheckpointSettings {
                signing_key_file: dir.join("signing.pem"),
                // Longer than the test: the checkpoints here are rotations and the stop.
                interval: Duration::from_secs(3600),
            }),
            spool_dir: dir.join("spool"),
            ..Settings::default()
        }
    }

    /// Starts the writer, emits `n` events in separate writes, stops it.
    fn run(settings: &Settings, n: u32) {
        let (audit, writer) = Audit::start(settings).unwrap();
        for i in 0..n {
            let mut e = Event::now(
                "test",
                "event",
                &["process"],
                &["info"],
                "success",
                Severity::Info,
            );
            e.message = format!("event {i} of a run");
            audit.emit(e);
            std::thread::sleep(WRITE_INTERVAL * 2);
        }
        writer.finish();
    }

    fn log_files(dir: &std::path::Path) -> Vec<PathBuf> {
        let base = dir.join("audit.jsonl");
        std::iter::once(base.clone())
            .chain((1..=10).map(|n| file::rotated(&base, n)))
            .filter(|p| p.exists())
            .collect()
    }

    #[test]
    fn the_writer_begins_each_file_with_a_rotation_start_and_ends_with_its_stop_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("audit.key"),
            "a key of more than 16 bytes\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("other.key"),
            "another key, also long enough",
        )
        .unwrap();
        let public = checkpoint::generate(
            &dir.path().join("signing.pem"),
            &dir.path().join("signing.pub.pem"),
        )
        .unwrap();
        let key = b"a key of more than 16 bytes".as_slice();
        let both = VerifyOptions {
            key: Some(key),
            public_key: Some(&public),
            allow_open_end: false,
        };
        let s = settings(dir.path(), "audit.key");
        run(&s, 20);
        // Stopped and started again: the chain continues in the same file.
        run(&s, 3);
        let files = log_files(dir.path());
        assert!(files.len() >= 3, "rotated into {files:?}");
        let r = chain::verify(&files, &both).unwrap();
        assert_eq!(r.problems, [], "{r:#?}");
        assert_eq!(r.start, Start::Genesis);
        assert_eq!(r.last_checkpoint.map(|c| c.1), Some(Reason::Stop));
        // 23 events, a stop checkpoint per run, a rotation start per rotated file.
        let rotations = u64::try_from(files.len() - 1).unwrap();
        assert_eq!(r.last_sequence, 23 + 2 + rotations);
        assert_eq!(r.checkpoints, 2 + rotations);

        // Each file alone: it begins where its predecessor ended, and says so in a signed
        // event; it ends where its successor begins (an open end, for a file alone).
        let (oldest, newer) = files.split_last().unwrap();
        for f in newer {
            let r = chain::verify(
                std::slice::from_ref(f),
                &VerifyOptions {
                    allow_open_end: true,
                    ..both
                },
            )
            .unwrap();
            assert_eq!(r.problems, [], "{}: {r:#?}", f.display());
            assert!(
                matches!(r.start, Start::Rotation { .. }),
                "{}: {r:#?}",
                f.display()
            );
        }
        let r = chain::verify(
            std::slice::from_ref(oldest),
            &VerifyOptions {
                allow_open_end: true,
                ..both
            },
        )
        .unwrap();
        assert_eq!((&r.problems[..], r.start), (&[][..], Start::Genesis));
        // The active file alone ends at the stop checkpoint: nothing is open.
        let r = chain::verify(&files[..1], &both).unwrap();
        assert_eq!(r.problems, [], "{r:#?}");

        // Another HMAC key: the stream continues in a new file, sealed with it throughout.
        let before = chain::verify(&files, &both).unwrap().last_sequence;
        let mut other = settings(dir.path(), "other.key");
        other.file.as_mut().unwrap().max_bytes = 0;
        run(&other, 2);
        let newest = dir.path().join("audit.jsonl");
        let r = chain::verify(
            std::slice::from_ref(&newest),
            &VerifyOptions {
                key: Some(b"another key, also long enough"),
                ..both
            },
        )
        .unwrap();
        assert_eq!(r.problems, [], "{r:#?}");
        assert_eq!(r.start, Start::Rotation { after: before });
        // The files before it still verify with the key they were sealed with.
        let older: Vec<PathBuf> = log_files(dir.path()).into_iter().skip(1).collect();
        let r = chain::verify(&older, &both).unwrap();
        assert_eq!(r.problems, [], "{r:#?}");
    }
}

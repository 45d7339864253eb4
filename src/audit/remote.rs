//! Remote audit sinks: syslog over UDP (RFC 5426), TCP (RFC 6587 octet counting), TLS
//! (RFC 5425, the same framing) or RELP (plain or in TLS, `remote/relp.rs`), fed by the audit
//! writer with messages that [`super::syslog::format`] wrote. One thread per sink does all
//! network I/O; `push` only queues.
//!
//! # Delivery
//!
//! Events go out in the order they were pushed (sequence order). The queue is the spool on disk
//! followed by a bounded memory queue: while the receiver is up, events go memory -> socket and
//! nothing touches the disk. When it is down (or the memory queue is full), queued and new
//! events are appended to the spool ([`super::spool`]); after reconnecting, the spool is sent
//! first. The spool survives restarts: a new sink on the same directory sends it first. When the
//! spool is full, [`WhenFull`] decides: drop the oldest spooled events (reported by
//! [`Remote::take_gap`]) or refuse new ones and report unhealthy.
//!
//! Plain syslog over TCP and TLS has no acknowledgements (RFC 6587, RFC 5425), so "delivered"
//! is inferred:
//!
//! - Before each write the socket is read without blocking, as rsyslog's omfwd does, to see a
//!   FIN or RST the receiver sent: nothing is written into a connection it has closed.
//! - A write that returned OK is not yet delivered. A receiver that stops (rsyslog on SIGTERM
//!   stops reading a few milliseconds before it closes) loses what reached its socket after its
//!   last read, and the kernel answers with RST. So what was written is kept for
//!   [`CONFIRM_AFTER`] and counts as delivered only if the connection is still intact then. If
//!   the receiver resets the connection, those events are sent again after reconnecting, and a
//!   warning names their sequence range: the receiver may see some of them twice (the
//!   `sequenceId` tells), but none is lost.
//! - A clean close (FIN without RST) means the receiver read everything that reached it before
//!   closing; after [`CLOSE_SETTLE`] without a reset, everything written counts as delivered.
//!
//! Residual risks: a receiver that reads events and then dies before storing them, a reset that
//! comes later than [`CONFIRM_AFTER`] after the write (a receiver that stopped reading for
//! longer), and more than [`UNCONFIRMED_MAX_BYTES`] written within [`CONFIRM_AFTER`] (the oldest
//! are then taken as delivered early) lose events without notice.
//!
//! RELP has acknowledgements, and none of the above applies to it: every event is a `syslog`
//! command, and it counts as delivered when the receiver's `rsp 200` for it arrives. At most 128
//! events (librelp's default window) wait for their answer. When the connection breaks (EOF,
//! reset, a `serverclose` hint, an answer other than 200, a malformed frame, or no answer for
//! [`RELP_ACK_TIMEOUT`]), the events not acknowledged stay queued and are sent again, in order,
//! before newer ones, so a receiver that stops and comes back gets every event exactly once. The
//! residual risk is the other way round: a receiver that took an event and died before its
//! answer left sees it twice (the `sequenceId` tells). An acknowledgement means the receiver took
//! the event, not that it stored it: rsyslog answers once the message is in its main queue.
//!
//! UDP is best effort: the only sign of trouble is an ICMP error (port unreachable) that Linux
//! reports on the connected socket; it is treated like a reset. Datagrams lost in the network or
//! by the receiver go unnoticed.
//!
//! The memory queue is not durable: a crash loses what is in it (the local audit log still has
//! it); a clean [`Remote::shutdown`] spools it.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::spool::{Spool, SpoolError, record_len};
use super::syslog::Format;

mod relp;

/// Messages longer than this are cut to it (at a UTF-8 boundary), keeping the header and the
/// `sequenceId`: a cut event is still seen, a dropped one is not. Counted in
/// [`RemoteStats::truncated`]. RELP cuts at 128 KiB, the protocol's limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The limit for UDP: one message per datagram, below the 65507 bytes an IPv4 datagram can carry.
pub const MAX_DATAGRAM_BYTES: usize = 64_000;
/// The memory queue in front of the spool; beyond it events are spooled even while connected.
pub const MEMORY_MAX_BYTES: usize = 16 * 1024 * 1024;
pub const MEMORY_MAX_EVENTS: usize = 65_536;
/// One write: up to this many bytes or events.
const BATCH_MAX_BYTES: usize = 64 * 1024;
const BATCH_MAX_EVENTS: usize = 1024;
/// How long written events stay queued before they count as delivered (see the module docs).
pub const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// Bound of what is written and not yet confirmed; beyond it the oldest are confirmed early.
pub const UNCONFIRMED_MAX_BYTES: usize = 4 * 1024 * 1024;
const UNCONFIRMED_MAX_EVENTS: usize = 16_384;
/// After a clean close, how long to wait for a reset that data still on its way would draw.
pub const CLOSE_SETTLE: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write (or handshake read) that makes no progress for this long breaks the connection.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Spooled events and the read position are synced to disk this often.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Reads per liveness check (a receiver has nothing to say; what it says is discarded).
const CHECK_READS: usize = 16;
/// Addresses tried per connection attempt when the host name resolves to several.
const MAX_ADDRESSES: usize = 8;
/// PEM files larger than this are not certificates or keys.
const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;
/// TLS handshake round trips before giving up.
const MAX_HANDSHAKE_STEPS: usize = 64;
/// A refused connection is logged as a warning the first time and then every this many tries.
const WARN_EVERY_FAILURES: u64 = 60;
/// RELP: with events awaiting their answer, none for this long breaks the connection. Long enough
/// for a receiver in flow control (rsyslog stops answering while its queue is full); librelp
/// waits 90 s.
pub const RELP_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// RELP: how long one wait for answers lasts before the queue is looked at again.
const RELP_ACK_POLL: Duration = Duration::from_millis(10);
/// RELP: bytes per read, and reads per look at the socket.
const READ_CHUNK: usize = 4096;
const RELP_READS: usize = 64;

/// How events reach the receiver.
#[derive(Debug, Clone)]
pub enum Transport {
    Udp,
    Tcp,
    Tls(TlsSettings),
    /// RELP over TCP: acknowledged, exactly once across receiver restarts (rsyslog's imrelp).
    Relp,
    /// RELP in TLS from the first byte, as librelp does it (imrelp `tls="on"`).
    RelpTls(TlsSettings),
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM CA bundle that verifies the server.
    pub ca: PathBuf,
    /// Name checked against the server's certificate; defaults to the host part of the address
    /// (an IP address is checked against the certificate's IP SANs).
    pub server_name: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// What to do when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the oldest spooled events; [`Remote::take_gap`] reports them.
    DropOldest,
    /// Refuse new events (dropped and counted) and report unhealthy until there is room.
    FailClosed,
}

#[derive(Debug, Clone)]
pub struct RemoteSettings {
    /// For logs and metrics, e.g. `syslog-1`.
    pub name: String,
    /// `host:port` (`[v6]:port` for an IPv6 literal).
    pub address: String,
    pub transport: Transport,
    pub format: Format,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub when_full: WhenFull,
}

/// A snapshot of a sink's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Events and bytes in the memory queue (written but unconfirmed ones included).
    pub queued_events: u64,
    pub queued_bytes: u64,
    /// Unread bytes in the spool (record headers included).
    pub spooled_bytes: u64,
    pub delivered: u64,
    /// Events this sink will never send (spool full, spool unwritable, too large for the spool).
    pub dropped: u64,
    /// Events cut to the size limit.
    pub truncated: u64,
    /// Events sent again because the receiver reset the connection after they were written
    /// (RELP: because the connection broke before they were acknowledged).
    pub resent: u64,
    pub connected: bool,
}

/// Events dropped since the last [`Remote::take_gap`]: how many and the range of their sequence
/// numbers (not necessarily contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub count: u64,
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("audit sink {name}: address {address:?} is not HOST:PORT")]
    Address { name: String, address: String },
    #[error("audit sink {name}: {}: {reason}", path.display())]
    TlsFile {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("audit sink {name}: a TLS client certificate needs its key, and a key its certificate")]
    ClientAuthIncomplete { name: String },
    #[error("audit sink {name}: {server_name:?} is not a valid TLS server name")]
    ServerName { name: String, server_name: String },
    #[error("audit sink {name}: TLS: {source}")]
    Tls {
        name: String,
        #[source]
        source: rustls::Error,
    },
    #[error("audit sink {name}: {source}")]
    Spool {
        name: String,
        #[source]
        source: SpoolError,
    },
    #[error("audit sink {name}: cannot start its thread: {source}")]
    Thread {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// One queued message.
#[derive(Debug)]
struct Entry {
    sequence: u64,
    data: Vec<u8>,
}

/// Consecutive queued events, framed for the transport, for one write.
#[derive(Debug)]
struct Batch {
    /// Queue position of the first event.
    start: u64,
    count: usize,
    data: Vec<u8>,
    /// End of each message in `data` (UDP sends them one by one, RELP frames each).
    ends: Vec<usize>,
    /// The sequence number of each message.
    sequences: Vec<u64>,
    first: u64,
    last: u64,
}

impl Batch {
    fn end(&self) -> u64 {
        self.start
            .saturating_add(u64::try_from(self.count).unwrap_or(u64::MAX))
    }
}

/// What happened to an event offered to the spool.
enum Spooled {
    Yes,
    /// FailClosed and no room: the event is handed back.
    NoRoom(Entry),
    /// The spool cannot be written: the event is handed back.
    Failed(Entry),
}

/// The queue: the spool, then the memory queue. Queue positions count every event ever queued;
/// `head` is the position of the oldest one still queued.
#[derive(Debug)]
struct Backlog {
    name: String,
    when_full: WhenFull,
    memory: VecDeque<Entry>,
    memory_bytes: usize,
    spool: Spool,
    head: u64,
    /// The receiver is unreachable: new events go to the spool.
    down: bool,
    connected: bool,
    /// The sink thread waits for events.
    idle: bool,
    /// Shutdown asked: deliver until then.
    stop: Option<Instant>,
    finished: bool,
    delivered: u64,
    dropped: u64,
    truncated: u64,
    resent: u64,
    gap: Option<Gap>,
    /// FailClosed found no room; cleared when a tenth of the spool is free again.
    spool_full: bool,
    spool_failed: bool,
}

impl Backlog {
    fn new(name: String, when_full: WhenFull, spool: Spool) -> Backlog {
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

    fn memory_has_room(&self, len: usize) -> bool {
        self.memory.len() < MEMORY_MAX_EVENTS
            && self.memory_bytes.saturating_add(len) <= MEMORY_MAX_BYTES
    }

    fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spool.is_empty()
    }

    fn healthy(&self) -> bool {
        self.when_full != WhenFull::FailClosed || !(self.spool_full || self.spool_failed)
    }

    /// An event this sink gives up on.
    fn lost(&mut self, sequence: u64) {
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

    fn push(&mut self, entry: Entry) {
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
    fn spool_one(&mut self, entry: Entry) -> Spooled {
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
    fn spill(&mut self) {
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
    fn confirm(&mut self, upto: u64) {
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
    fn batch(&mut self, from: u64, octet_counting: bool) -> Option<Batch> {
        self.batch_up_to(from, octet_counting, BATCH_MAX_EVENTS)
    }

    /// [`Backlog::batch`] of at most `max_events`.
    fn batch_up_to(&mut self, from: u64, octet_counting: bool, max_events: usize) -> Option<Batch> {
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

#[derive(Debug)]
struct Shared {
    backlog: Mutex<Backlog>,
    wake: Condvar,
    /// A clone of the connection's socket, so that shutdown can break a blocked write.
    abort: Mutex<Option<TcpStream>>,
    aborted: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on the condition variable until `until` at most.
    fn wait<'a>(&self, guard: MutexGuard<'a, Backlog>, until: Instant) -> MutexGuard<'a, Backlog> {
        let timeout = until.saturating_duration_since(Instant::now());
        if timeout.is_zero() {
            return guard;
        }
        self.wake
            .wait_timeout(guard, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }
}

/// A remote audit sink: a queue and the thread that sends it.
pub struct Remote {
    name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    limit: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("name", &self.name).finish()
    }
}

impl Remote {
    /// Checks the address and TLS files, opens (or creates) the spool and starts the sink's
    /// thread. The receiver need not be up.
    pub fn start(settings: RemoteSettings) -> Result<Remote, RemoteError> {
        let name = settings.name.clone();
        let (host, port) =
            split_host_port(&settings.address).ok_or_else(|| RemoteError::Address {
                name: name.clone(),
                address: settings.address.clone(),
            })?;
        let tls_kind = |tls: &TlsSettings| -> Result<Kind, RemoteError> {
            let config = tls_config(&name, tls)?;
            let server_name = tls.server_name.clone().unwrap_or_else(|| host.clone());
            let server_name =
                ServerName::try_from(server_name.clone()).map_err(|_| RemoteError::ServerName {
                    name: name.clone(),
                    server_name,
                })?;
            Ok(Kind::Tls(config, server_name))
        };
        let (kind, relp) = match &settings.transport {
            Transport::Udp => (Kind::Udp, false),
            Transport::Tcp => (Kind::Tcp, false),
            Transport::Tls(tls) => (tls_kind(tls)?, false),
            Transport::Relp => (Kind::Tcp, true),
            Transport::RelpTls(tls) => (tls_kind(tls)?, true),
        };
        let spool =
            Spool::open(&settings.spool_dir, settings.spool_max_bytes).map_err(|source| {
                RemoteError::Spool {
                    name: name.clone(),
                    source,
                }
            })?;
        if !spool.is_empty() {
            tracing::info!(
                sink = %name,
                "{} bytes of audit events spooled from before: sending them first",
                spool.bytes()
            );
        }
        let limit = match kind {
            Kind::Udp => MAX_DATAGRAM_BYTES,
            Kind::Tcp | Kind::Tls(..) if relp => relp::MAX_MESSAGE_BYTES,
            Kind::Tcp | Kind::Tls(..) => MAX_MESSAGE_BYTES,
        };
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog::new(name.clone(), settings.when_full, spool)),
            wake: Condvar::new(),
            abort: Mutex::new(None),
            aborted: AtomicBool::new(false),
        });
        let worker = Worker {
            shared: shared.clone(),
            name: name.clone(),
            address: settings.address.clone(),
            host,
            port,
            kind,
            relp,
            session: None,
            conn: None,
            sent_until: 0,
            written: VecDeque::new(),
            unconfirmed_bytes: 0,
            unconfirmed_events: 0,
            backoff: BACKOFF_FIRST,
            next_attempt: Instant::now(),
            last_sync: Instant::now(),
            failures: 0,
        };
        let thread = thread::Builder::new()
            .name("zg-audit-remote".into())
            .spawn(move || worker.run())
            .map_err(|source| RemoteError::Thread {
                name: name.clone(),
                source,
            })?;
        Ok(Remote {
            name,
            shared,
            thread: Some(thread),
            limit,
        })
    }

    /// Queues one formatted message (no framing). Never waits for the network; while the
    /// receiver is down this appends to the spool file. Called in sequence order.
    pub fn push(&self, sequence: u64, message: Vec<u8>) {
        let mut message = message;
        let truncated = message.len() > self.limit;
        if truncated {
            truncate_utf8(&mut message, self.limit);
        }
        let mut b = self.shared.lock();
        if truncated {
            b.truncated = b.truncated.saturating_add(1);
        }
        b.push(Entry {
            sequence,
            data: message,
        });
        if b.idle {
            b.idle = false;
            self.shared.wake.notify_all();
        }
    }

    pub fn stats(&self) -> RemoteStats {
        let b = self.shared.lock();
        RemoteStats {
            queued_events: u64::try_from(b.memory.len()).unwrap_or(u64::MAX),
            queued_bytes: u64::try_from(b.memory_bytes).unwrap_or(u64::MAX),
            spooled_bytes: b.spool.bytes(),
            delivered: b.delivered,
            dropped: b.dropped,
            truncated: b.truncated,
            resent: b.resent,
            connected: b.connected,
        }
    }

    /// False when `when_full` is FailClosed and the spool is full or cannot be written: the
    /// daemon then refuses new inspected requests.
    pub fn healthy(&self) -> bool {
        self.shared.lock().healthy()
    }

    /// Events dropped since the last call, so that the writer can put a gap event into the
    /// audit stream.
    pub fn take_gap(&self) -> Option<Gap> {
        self.shared.lock().gap.take()
    }

    /// Delivers what is queued for up to `grace`, then spools what is left and stops. Takes at
    /// most `grace` plus a connection attempt in progress ([`CONNECT_TIMEOUT`]; for RELP also the
    /// wait for the answer to `open`, [`IO_TIMEOUT`]).
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let now = Instant::now();
        let deadline = now.checked_add(grace).unwrap_or(now);
        {
            let mut b = self.shared.lock();
            b.stop = Some(deadline);
            self.shared.wake.notify_all();
            // The thread stops by itself at the deadline unless a write blocks it.
            let until = deadline
                .checked_add(Duration::from_millis(100))
                .unwrap_or(deadline);
            while !b.finished && Instant::now() < until {
                b = self.shared.wait(b, until);
            }
            if !b.finished {
                self.shared.aborted.store(true, Ordering::SeqCst);
                if let Some(sock) = self
                    .shared
                    .abort
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                {
                    let _ = sock.shutdown(Shutdown::Both);
                }
            }
        }
        if thread.join().is_err() {
            tracing::error!(sink = %self.name, "audit sink thread panicked");
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// `host:port` or `[v6]:port`.
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Cuts `message` to at most `limit` bytes without splitting a UTF-8 sequence.
fn truncate_utf8(message: &mut Vec<u8>, limit: usize) {
    let mut cut = limit.min(message.len());
    // Back off continuation bytes (10xxxxxx) so that a multi-byte character goes whole.
    while cut > 0 && message.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        cut = cut.saturating_sub(1);
    }
    message.truncate(cut);
}

fn read_pem(name: &str, path: &Path) -> Result<Vec<u8>, RemoteError> {
    let err = |reason: String| RemoteError::TlsFile {
        name: name.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_PEM_BYTES {
        return Err(err(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

fn certificates(name: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, RemoteError> {
    let pem = read_pem(name, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RemoteError::TlsFile {
            name: name.to_owned(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RemoteError::TlsFile {
            name: name.to_owned(),
            path: path.to_owned(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The TLS client configuration: server verified against `ca`, optional client certificate.
/// ring as the crypto provider, TLS 1.2 and 1.3.
fn tls_config(name: &str, tls: &TlsSettings) -> Result<Arc<ClientConfig>, RemoteError> {
    let tls_err = |source| RemoteError::Tls {
        name: name.to_owned(),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(name, &tls.ca)? {
        roots.add(cert).map_err(|e| RemoteError::TlsFile {
            name: name.to_owned(),
            path: tls.ca.clone(),
            reason: e.to_string(),
        })?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(name, cert)?;
            let pem = read_pem(name, key)?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| RemoteError::TlsFile {
                    name: name.to_owned(),
                    path: key.clone(),
                    reason: e.to_string(),
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(tls_err)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(RemoteError::ClientAuthIncomplete {
                name: name.to_owned(),
            });
        }
    };
    Ok(Arc::new(config))
}

#[derive(Debug)]
enum Kind {
    Udp,
    Tcp,
    Tls(Arc<ClientConfig>, ServerName<'static>),
}

/// An open connection to the receiver.
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// What a look at the socket showed.
enum Liveness {
    Alive,
    /// The receiver closed its end (FIN, or TLS close_notify).
    Closed,
    /// Reset, or another error.
    Broken(io::Error),
}

impl Conn {
    /// Reads without blocking: a syslog receiver sends nothing, so this only finds a FIN, a
    /// RST or an error (what it does send, e.g. TLS session tickets, is processed or
    /// discarded).
    fn check(&mut self) -> Liveness {
        match self {
            // An ICMP port unreachable for an earlier datagram shows as a pending error.
            Conn::Udp(s) => match s.take_error() {
                Ok(None) => Liveness::Alive,
                Ok(Some(e)) | Err(e) => Liveness::Broken(e),
            },
            Conn::Tcp(s) => nonblocking(s, |s| {
                let mut buf = [0u8; 4096];
                for _ in 0..CHECK_READS {
                    match s.read(&mut buf) {
                        Ok(0) => return Liveness::Closed,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Liveness::Broken(e),
                    }
                }
                Liveness::Alive
            }),
            Conn::Tls(s) => {
                let StreamOwned { conn, sock } = &mut **s;
                nonblocking(sock, |sock| {
                    for _ in 0..CHECK_READS {
                        match conn.read_tls(sock) {
                            Ok(0) => return Liveness::Closed,
                            Ok(_) => match conn.process_new_packets() {
                                Ok(state) => {
                                    let mut buf = [0u8; 4096];
                                    while conn.reader().read(&mut buf).is_ok_and(|n| n > 0) {}
                                    if state.peer_has_closed() {
                                        return Liveness::Closed;
                                    }
                                }
                                Err(e) => {
                                    return Liveness::Broken(io::Error::new(
                                        io::ErrorKind::InvalidData,
                                        e,
                                    ));
                                }
                            },
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Liveness::Broken(e),
                        }
                    }
                    Liveness::Alive
                })
            }
        }
    }

    /// A reset that arrived after the FIN (reads then only show the end of the stream).
    fn take_error(&self) -> Option<io::Error> {
        let sock = match self {
            Conn::Udp(s) => return s.take_error().unwrap_or_else(Some),
            Conn::Tcp(s) => s,
            Conn::Tls(s) => &s.sock,
        };
        sock.take_error().unwrap_or_else(Some)
    }

    fn write(&mut self, batch: &Batch) -> io::Result<()> {
        match self {
            Conn::Udp(s) => {
                let mut begin = 0;
                for &end in &batch.ends {
                    s.send(batch.data.get(begin..end).unwrap_or_default())?;
                    begin = end;
                }
                Ok(())
            }
            Conn::Tcp(_) | Conn::Tls(_) => self.write_all(&batch.data),
        }
    }

    /// Writes all of `bytes` to a stream (nothing for UDP).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(_) => Ok(()),
            Conn::Tcp(s) => s.write_all(bytes),
            Conn::Tls(s) => {
                s.write_all(bytes)?;
                // rustls ignores socket errors in write; flush reports them.
                s.flush()
            }
        }
    }

    /// Reads what the receiver sent into `buf`: without blocking when `wait` is zero, else
    /// waiting up to `wait`. `Ok(None)`: nothing yet; `Ok(Some(0))`: the end of the stream.
    fn receive(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        let Some(sock) = self.tcp() else {
            return Ok(None);
        };
        if wait.is_zero() {
            sock.set_nonblocking(true)?;
        } else {
            sock.set_read_timeout(Some(wait))?;
        }
        let result = match self {
            Conn::Udp(_) => Ok(0),
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        };
        if let Some(sock) = self.tcp() {
            if wait.is_zero() {
                sock.set_nonblocking(false)?;
            } else {
                sock.set_read_timeout(Some(IO_TIMEOUT))?;
            }
        }
        match result {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Closes our end: politely (close_notify for TLS, then FIN) when the connection is
    /// intact, else at once (a polite close could wait on a receiver that does not read).
    fn close(self, polite: bool) {
        match self {
            Conn::Udp(_) => {}
            Conn::Tcp(s) => {
                let how = if polite {
                    Shutdown::Write
                } else {
                    Shutdown::Both
                };
                let _ = s.shutdown(how);
            }
            Conn::Tls(mut s) => {
                if polite {
                    s.conn.send_close_notify();
                    let _ = s.flush();
                    let _ = s.sock.shutdown(Shutdown::Write);
                } else {
                    let _ = s.sock.shutdown(Shutdown::Both);
                }
            }
        }
    }

    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(s) => Some(s),
            Conn::Tls(s) => Some(&s.sock),
        }
    }
}

/// Runs `f` with the socket non-blocking.
fn nonblocking(sock: &mut TcpStream, f: impl FnOnce(&mut TcpStream) -> Liveness) -> Liveness {
    if let Err(e) = sock.set_nonblocking(true) {
        return Liveness::Broken(e);
    }
    let result = f(sock);
    match sock.set_nonblocking(false) {
        Err(e) if matches!(result, Liveness::Alive) => Liveness::Broken(e),
        _ => result,
    }
}

/// Opens a RELP session on a new connection: `open`, and the receiver's answer within
/// [`IO_TIMEOUT`].
fn relp_open(conn: &mut Conn) -> io::Result<relp::Session> {
    let mut out = Vec::new();
    let mut session = relp::Session::open(&mut out);
    conn.write_all(&out)?;
    let deadline = later(Instant::now(), IO_TIMEOUT);
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer to the RELP open",
            ));
        }
        match conn.receive(&mut buf, wait)? {
            None => {}
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the receiver closed the connection before answering the RELP open",
                ));
            }
            Some(n) => {
                let mut progress = relp::Progress::default();
                session
                    .receive(buf.get(..n).unwrap_or_default(), &mut progress)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if progress.opened {
                    return Ok(session);
                }
                if progress.server_close {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the receiver closed the RELP session before it was open",
                    ));
                }
            }
        }
    }
}

/// Events written on the current connection and not yet confirmed.
#[derive(Debug)]
struct Written {
    at: Instant,
    end: u64,
    count: usize,
    bytes: usize,
    first: u64,
    last: u64,
}

/// The sink's thread: connects, sends, confirms, spools.
struct Worker {
    shared: Arc<Shared>,
    name: String,
    address: String,
    host: String,
    port: u16,
    kind: Kind,
    /// RELP over the connection `kind` makes.
    relp: bool,
    /// The RELP session on `conn`.
    session: Option<relp::Session>,
    conn: Option<Conn>,
    /// Queue position up to which events were written on this connection.
    sent_until: u64,
    written: VecDeque<Written>,
    unconfirmed_bytes: usize,
    unconfirmed_events: usize,
    backoff: Duration,
    next_attempt: Instant,
    last_sync: Instant,
    /// Connections that failed or broke in a row, without a delivery.
    failures: u64,
}

/// Marks the sink finished when the thread ends, however it ends.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        let mut b = self.0.lock();
        b.finished = true;
        b.connected = false;
        self.0.wake.notify_all();
    }
}

fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

impl Worker {
    fn run(mut self) {
        let _finished = Finished(self.shared.clone());
        loop {
            let now = Instant::now();
            self.sync(now);
            let stop = self.shared.lock().stop;
            if stop.is_some_and(|deadline| now >= deadline) {
                break;
            }
            if self.conn.is_none() {
                if stop.is_some() && self.shared.lock().is_empty() {
                    break;
                }
                if now < self.next_attempt {
                    self.pause(stop.map_or(self.next_attempt, |s| s.min(self.next_attempt)));
                } else {
                    self.connect(now);
                }
                continue;
            }
            if self.relp {
                if self.relp_step(now) {
                    continue;
                }
                break;
            }
            let liveness = match self.conn.as_mut() {
                Some(conn) => conn.check(),
                None => continue,
            };
            match liveness {
                Liveness::Alive => {}
                Liveness::Closed => {
                    self.lost_connection(None);
                    continue;
                }
                Liveness::Broken(e) => {
                    self.lost_connection(Some(e));
                    continue;
                }
            }
            self.confirm_written(now);
            match self.next_batch(now) {
                Some(batch) => self.send(batch),
                None if stop.is_some() => break,
                None => {}
            }
        }
        self.finish();
    }

    /// Syncs the spool every [`SYNC_INTERVAL`].
    fn sync(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sync) < SYNC_INTERVAL {
            return;
        }
        self.last_sync = now;
        if let Err(e) = self.shared.lock().spool.sync() {
            tracing::error!(sink = %self.name, "cannot sync the audit spool: {e}");
        }
    }

    /// Waits until `until`, or until shutdown is asked.
    fn pause(&self, until: Instant) {
        let b = self.shared.lock();
        if b.stop.is_some() && b.is_empty() {
            return;
        }
        drop(
            self.shared
                .wait(b, until.min(later(Instant::now(), SYNC_INTERVAL))),
        );
    }

    fn connect(&mut self, now: Instant) {
        let opened = self.open().and_then(|mut conn| {
            let session = if self.relp {
                Some(relp_open(&mut conn)?)
            } else {
                None
            };
            Ok((conn, session))
        });
        match opened {
            Ok((conn, session)) => {
                // Backoff and failures are reset once something is delivered on it: a receiver
                // that accepts and then breaks every connection is retried with backoff too.
                tracing::debug!(sink = %self.name, "connected to {}", self.address);
                *self
                    .shared
                    .abort
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    conn.tcp().and_then(|s| s.try_clone().ok());
                let mut b = self.shared.lock();
                b.connected = true;
                b.down = false;
                self.sent_until = b.head;
                self.conn = Some(conn);
                self.session = session;
            }
            Err(e) => {
                if self.failures.checked_rem(WARN_EVERY_FAILURES) == Some(0) {
                    tracing::warn!(
                        sink = %self.name,
                        "cannot reach {}: {e}; spooling audit events, retrying",
                        self.address
                    );
                }
                self.failures = self.failures.saturating_add(1);
                let mut b = self.shared.lock();
                b.connected = false;
                b.down = true;
                b.spill();
                drop(b);
                self.next_attempt = later(now, self.backoff);
                self.backoff = self.backoff.saturating_mul(2).min(BACKOFF_MAX);
            }
        }
    }

    fn open(&self) -> io::Result<Conn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for addr in (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .take(MAX_ADDRESSES)
        {
            match self.open_to(addr) {
                Ok(conn) => return Ok(conn),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open_to(&self, addr: SocketAddr) -> io::Result<Conn> {
        let tcp = || -> io::Result<TcpStream> {
            let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(s)
        };
        match &self.kind {
            Kind::Udp => {
                let local = if addr.is_ipv4() {
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
                } else {
                    SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
                };
                let s = UdpSocket::bind(local)?;
                s.connect(addr)?;
                Ok(Conn::Udp(s))
            }
            Kind::Tcp => Ok(Conn::Tcp(tcp()?)),
            Kind::Tls(config, server_name) => {
                let mut sock = tcp()?;
                let mut conn = ClientConnection::new(config.clone(), server_name.clone())
                    .map_err(io::Error::other)?;
                let mut steps = 0_usize;
                while conn.is_handshaking() {
                    steps = steps.saturating_add(1);
                    if steps > MAX_HANDSHAKE_STEPS {
                        return Err(io::Error::other("TLS handshake does not finish"));
                    }
                    conn.complete_io(&mut sock)?;
                }
                Ok(Conn::Tls(Box::new(StreamOwned::new(conn, sock))))
            }
        }
    }

    /// The receiver closed or broke the connection: resend what may not have been read, spool
    /// from now on, reconnect.
    fn lost_connection(&mut self, error: Option<io::Error>) {
        let stopping = self.shared.lock().stop.is_some();
        let mut error = error;
        if self.relp {
            self.relp_lost(error);
            return;
        }
        if error.is_none() && !self.written.is_empty() && !stopping {
            // A FIN: the receiver read all that reached it before closing. What was still on
            // its way draws a reset, which only the socket's error shows.
            thread::sleep(CLOSE_SETTLE);
            error = self.conn.as_ref().and_then(Conn::take_error);
        }
        let resend = self.unconfirmed_events;
        match (&error, self.written.front(), self.written.back()) {
            (Some(e), Some(first), Some(last)) => {
                let ms = first.at.elapsed().as_millis();
                tracing::warn!(
                    sink = %self.name,
                    "{} broke the connection ({e}): events {}..={} written in the last {ms} ms may \
                     not have been read; sending them again (the receiver may see some twice)",
                    self.address,
                    first.first,
                    last.last
                );
            }
            _ => self.log_lost(error.as_ref()),
        }
        self.close_connection(error.is_none());
        let mut b = self.shared.lock();
        if error.is_none() {
            b.confirm(self.sent_until);
        } else {
            b.resent = b
                .resent
                .saturating_add(u64::try_from(resend).unwrap_or(u64::MAX));
        }
        drop(b);
        self.written.clear();
        self.unconfirmed_bytes = 0;
        self.unconfirmed_events = 0;
        self.reconnect_later();
    }

    /// A lost connection that took no unconfirmed events with it.
    fn log_lost(&self, error: Option<&io::Error>) {
        match error {
            Some(e) => {
                tracing::warn!(sink = %self.name, "connection to {} lost: {e}", self.address)
            }
            None => tracing::info!(sink = %self.name, "{} closed the connection", self.address),
        }
    }

    /// Closes the socket (cleanly, or at once after an error) and forgets its abort handle.
    fn close_connection(&mut self, clean: bool) {
        if let Some(conn) = self.conn.take() {
            conn.close(clean);
        }
        *self
            .shared
            .abort
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// After a lost connection: spool from now on, resend from the oldest unconfirmed event, and
    /// reconnect at once after a connection that delivered (a restarted receiver is back
    /// quickly), else with backoff.
    fn reconnect_later(&mut self) {
        let mut b = self.shared.lock();
        b.connected = false;
        b.down = true;
        self.sent_until = b.head;
        b.spill();
        drop(b);
        let now = Instant::now();
        if self.failures == 0 {
            self.next_attempt = now;
        } else {
            self.next_attempt = later(now, self.backoff);
            self.backoff = self.backoff.saturating_mul(2).min(BACKOFF_MAX);
        }
        self.failures = self.failures.saturating_add(1);
    }

    /// Confirms what was written at least [`CONFIRM_AFTER`] ago (the connection was just seen
    /// intact).
    fn confirm_written(&mut self, now: Instant) {
        let mut upto = None;
        while let Some(w) = self.written.front() {
            if now.saturating_duration_since(w.at) < CONFIRM_AFTER {
                break;
            }
            upto = Some(w.end);
            self.forget_front();
        }
        if let Some(upto) = upto {
            self.delivered(upto);
        }
    }

    /// Everything before queue position `upto` reached the receiver.
    fn delivered(&mut self, upto: u64) {
        self.shared.lock().confirm(upto);
        if self.failures > 0 {
            tracing::info!(sink = %self.name, "delivering to {} again", self.address);
        }
        self.failures = 0;
        self.backoff = BACKOFF_FIRST;
    }

    /// One round of a RELP session: take the receiver's answers, then send what the window
    /// allows, or wait for answers or events. False when the sink is done (stopping, everything
    /// acknowledged, session closed).
    fn relp_step(&mut self, now: Instant) -> bool {
        // Answers first: they make room in the window, and show a closed session before a write.
        if let Err(e) = self.relp_receive(Duration::ZERO) {
            self.lost_connection(Some(e));
            return true;
        }
        let Some(session) = self.session.as_ref() else {
            return true;
        };
        if let Some(oldest) = session.pending().front()
            && now.saturating_duration_since(oldest.sent) >= RELP_ACK_TIMEOUT
        {
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no RELP answer for {} s",
                    now.saturating_duration_since(oldest.sent).as_secs()
                ),
            );
            self.lost_connection(Some(e));
            return true;
        }
        let (room, idle, exhausted) = (
            session.room(),
            session.pending().is_empty(),
            session.exhausted(),
        );
        let mut b = self.shared.lock();
        if room > 0
            && let Some(batch) = b.batch_up_to(self.sent_until, false, room)
        {
            drop(b);
            self.relp_send(&batch);
            return true;
        }
        if !idle {
            // Answers are due: wait for them (the read returns as soon as any arrive).
            drop(b);
            if let Err(e) = self.relp_receive(RELP_ACK_POLL) {
                self.lost_connection(Some(e));
            }
            return true;
        }
        let stop = b.stop;
        if exhausted || stop.is_some() {
            // Everything sent is acknowledged: end the session politely. A session out of
            // transaction numbers is followed by a new one at once.
            drop(b);
            let until = later(now, IO_TIMEOUT);
            self.relp_close(stop.map_or(until, |s| s.min(until)));
            self.next_attempt = now;
            return exhausted;
        }
        b.idle = true;
        let mut b = self.shared.wait(b, later(now, SYNC_INTERVAL));
        b.idle = false;
        true
    }

    /// Frames a batch as one `syslog` command per event (as many as the window takes) and
    /// writes it.
    fn relp_send(&mut self, batch: &Batch) {
        let (Some(conn), Some(session)) = (self.conn.as_mut(), self.session.as_mut()) else {
            return;
        };
        let now = Instant::now();
        let mut out = Vec::with_capacity(
            batch
                .data
                .len()
                .saturating_add(batch.count.saturating_mul(relp::SYSLOG_OVERHEAD)),
        );
        let mut begin = 0;
        let mut position = batch.start;
        for (&end, &sequence) in batch.ends.iter().zip(&batch.sequences) {
            let message = batch.data.get(begin..end).unwrap_or_default();
            if !session.syslog(&mut out, message, position, sequence, now) {
                break;
            }
            begin = end;
            position = position.saturating_add(1);
        }
        match conn.write_all(&out) {
            Ok(()) => self.sent_until = position,
            Err(e) => self.lost_connection(Some(e)),
        }
    }

    /// Reads and handles what the receiver sent; the first read waits up to `wait`. Answered
    /// events are delivered; the end of the stream or a `serverclose` end the connection here.
    /// An error (malformed frame, refused event, socket error) is for the caller to handle.
    fn relp_receive(&mut self, wait: Duration) -> io::Result<()> {
        let mut buf = [0u8; READ_CHUNK];
        let mut wait = wait;
        for _ in 0..RELP_READS {
            let (Some(conn), Some(session)) = (self.conn.as_mut(), self.session.as_mut()) else {
                return Ok(());
            };
            let n = match conn.receive(&mut buf, wait)? {
                None => return Ok(()),
                Some(0) => {
                    self.lost_connection(None);
                    return Ok(());
                }
                Some(n) => n,
            };
            wait = Duration::ZERO;
            let mut progress = relp::Progress::default();
            let result = session.receive(buf.get(..n).unwrap_or_default(), &mut progress);
            // What was acknowledged counts even if a later frame breaks the session.
            if let Some(upto) = progress.delivered_upto {
                self.delivered(upto);
            }
            result.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if progress.server_close {
                self.lost_connection(None);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Ends a RELP session with nothing pending: `close`, its answer (until `until` at most),
    /// then the connection.
    fn relp_close(&mut self, until: Instant) {
        let (Some(mut conn), Some(mut session)) = (self.conn.take(), self.session.take()) else {
            return;
        };
        let mut out = Vec::new();
        session.close(&mut out);
        if conn.write_all(&out).is_ok() {
            let mut buf = [0u8; READ_CHUNK];
            loop {
                let wait = until.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                match conn.receive(&mut buf, wait) {
                    Ok(None) => {}
                    Ok(Some(0)) | Err(_) => break,
                    Ok(Some(n)) => {
                        let mut p = relp::Progress::default();
                        let result = session.receive(buf.get(..n).unwrap_or_default(), &mut p);
                        if result.is_err() || p.closed || p.server_close {
                            break;
                        }
                    }
                }
            }
        }
        conn.close(true);
        *self
            .shared
            .abort
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        let mut b = self.shared.lock();
        b.connected = false;
        self.sent_until = b.head;
        tracing::debug!(sink = %self.name, "RELP session with {} closed", self.address);
    }

    /// The RELP connection ended: whatever is not acknowledged is sent again, in order.
    fn relp_lost(&mut self, error: Option<io::Error>) {
        let pending = self
            .session
            .take()
            .map(|s| s.pending().clone())
            .unwrap_or_default();
        match (&error, pending.front(), pending.back()) {
            (_, Some(first), Some(last)) => {
                let why = error.as_ref().map_or_else(
                    || "it closed the connection".to_owned(),
                    ToString::to_string,
                );
                tracing::warn!(
                    sink = %self.name,
                    "RELP session with {} ended ({why}): events {}..={} were not acknowledged; \
                     sending them again",
                    self.address,
                    first.sequence,
                    last.sequence
                );
            }
            _ => self.log_lost(error.as_ref()),
        }
        self.close_connection(error.is_none());
        let mut b = self.shared.lock();
        b.resent = b
            .resent
            .saturating_add(u64::try_from(pending.len()).unwrap_or(u64::MAX));
        drop(b);
        self.reconnect_later();
    }

    fn forget_front(&mut self) {
        if let Some(w) = self.written.pop_front() {
            self.unconfirmed_bytes = self.unconfirmed_bytes.saturating_sub(w.bytes);
            self.unconfirmed_events = self.unconfirmed_events.saturating_sub(w.count);
        }
    }

    /// The next batch to write, or `None` after waiting a while for one.
    fn next_batch(&mut self, now: Instant) -> Option<Batch> {
        let octet_counting = !matches!(self.kind, Kind::Udp);
        let mut b = self.shared.lock();
        if let Some(batch) = b.batch(self.sent_until, octet_counting) {
            return Some(batch);
        }
        if b.stop.is_some() {
            return None;
        }
        let until = self
            .written
            .front()
            .map_or(later(now, SYNC_INTERVAL), |w| later(w.at, CONFIRM_AFTER))
            .min(later(now, SYNC_INTERVAL));
        b.idle = true;
        let mut b = self.shared.wait(b, until);
        b.idle = false;
        None
    }

    fn send(&mut self, batch: Batch) {
        // Bound what waits for confirmation: the oldest count as delivered early.
        let mut upto = None;
        while !self.written.is_empty()
            && (self.unconfirmed_bytes.saturating_add(batch.data.len()) > UNCONFIRMED_MAX_BYTES
                || self.unconfirmed_events.saturating_add(batch.count) > UNCONFIRMED_MAX_EVENTS)
        {
            upto = self.written.front().map(|w| w.end);
            self.forget_front();
        }
        if let Some(upto) = upto {
            self.shared.lock().confirm(upto);
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let result = conn.write(&batch);
        let written = Written {
            at: Instant::now(),
            end: batch.end(),
            count: batch.count,
            bytes: batch.data.len(),
            first: batch.first,
            last: batch.last,
        };
        self.unconfirmed_bytes = self.unconfirmed_bytes.saturating_add(written.bytes);
        self.unconfirmed_events = self.unconfirmed_events.saturating_add(written.count);
        self.written.push_back(written);
        match result {
            Ok(()) => self.sent_until = batch.end(),
            Err(e) => self.lost_connection(Some(e)),
        }
    }

    /// Shutdown: what was written counts as delivered if the connection is intact; the rest
    /// goes to the spool.
    fn finish(&mut self) {
        let aborted = self.shared.aborted.load(Ordering::SeqCst);
        if self.relp {
            if !aborted {
                // Answers that arrived in the meantime still count.
                let _ = self.relp_receive(Duration::ZERO);
            }
            let pending = self
                .session
                .take()
                .map(|s| s.pending().clone())
                .unwrap_or_default();
            if let (Some(first), Some(last)) = (pending.front(), pending.back()) {
                tracing::warn!(
                    sink = %self.name,
                    "events {}..={} were sent to {} but not acknowledged: spooled, to be sent \
                     again on the next start",
                    first.sequence,
                    last.sequence,
                    self.address
                );
            }
            if let Some(conn) = self.conn.take() {
                conn.close(!aborted);
            }
        }
        if let Some(mut conn) = self.conn.take() {
            let intact = !aborted
                && match conn.check() {
                    Liveness::Alive => true,
                    Liveness::Closed => conn.take_error().is_none(),
                    Liveness::Broken(_) => false,
                };
            if intact {
                self.shared.lock().confirm(self.sent_until);
            } else if let (Some(first), Some(last)) = (self.written.front(), self.written.back()) {
                tracing::warn!(
                    sink = %self.name,
                    "events {}..={} were written to {} but not confirmed: spooled, to be sent \
                     again on the next start",
                    first.first,
                    last.last,
                    self.address
                );
            }
            conn.close(intact);
        }
        *self
            .shared
            .abort
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        let mut b = self.shared.lock();
        b.connected = false;
        b.down = true;
        b.spill();
        if !b.memory.is_empty() {
            let lost: Vec<u64> = b.memory.iter().map(|e| e.sequence).collect();
            tracing::error!(
                sink = %b.name,
                "{} audit events could not be spooled at shutdown and are lost",
                lost.len()
            );
            b.memory.clear();
            b.memory_bytes = 0;
            for sequence in lost {
                b.lost(sequence);
            }
        }
        if let Err(e) = b.spool.sync() {
            tracing::error!(sink = %b.name, "cannot sync the audit spool: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )]

    use std::net::TcpListener;

    use super::*;

    fn backlog(dir: &Path, max: u64, when_full: WhenFull) -> Backlog {
        Backlog::new("test".into(), when_full, Spool::open(dir, max).unwrap())
    }

    fn entry(sequence: u64, len: usize) -> Entry {
        Entry {
            sequence,
            data: vec![b'a'; len],
        }
    }

    /// Sequences of a batch (framing removed).
    fn frames(batch: &Batch) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = batch.data.as_slice();
        while !rest.is_empty() {
            let sp = rest.iter().position(|b| *b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
            out.push(String::from_utf8(rest[sp + 1..sp + 1 + len].to_vec()).unwrap());
            rest = &rest[sp + 1 + len..];
        }
        out
    }

    #[test]
    fn addresses() {
        assert_eq!(
            split_host_port("10.0.0.1:514"),
            Some(("10.0.0.1".into(), 514))
        );
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1".into(), 6514)));
        assert_eq!(
            split_host_port("siem.example:6514"),
            Some(("siem.example".into(), 6514))
        );
        for bad in [
            "siem", "siem:", ":514", "::1:514", "[::1]", "h:0", "h:70000", "[]:1",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncation_keeps_utf8_whole() {
        let mut m = "ab\u{e9}".as_bytes().to_vec(); // a b 0xC3 0xA9
        truncate_utf8(&mut m, 3);
        assert_eq!(m, b"ab");
        let mut m = b"abcdef".to_vec();
        truncate_utf8(&mut m, 4);
        assert_eq!(m, b"abcd");
    }

    #[test]
    fn octet_counting_framing() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 1 << 20, WhenFull::DropOldest);
        b.push(Entry {
            sequence: 1,
            data: b"<110>1 - - zonegate 1 - - hello".to_vec(),
        });
        b.push(Entry {
            sequence: 2,
            data: "\u{e9}t\u{e9}".as_bytes().to_vec(),
        });
        let batch = b.batch(0, true).unwrap();
        assert_eq!(
            batch.data,
            "31 <110>1 - - zonegate 1 - - hello5 \u{e9}t\u{e9}".as_bytes()
        );
        assert_eq!((batch.first, batch.last, batch.count), (1, 2, 2));
        let plain = b.batch(0, false).unwrap();
        assert_eq!(plain.ends, vec![31, 36]);
    }

    #[test]
    fn spool_then_memory_in_order_with_resend() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 1 << 20, WhenFull::DropOldest);
        for seq in 1..=3 {
            b.push(entry(seq, 10));
        }
        // The receiver goes away: queued and new events are spooled.
        b.down = true;
        b.spill();
        b.push(entry(4, 10));
        assert_eq!(b.memory.len(), 0);
        assert_eq!(b.spool.bytes(), 4 * 26);
        // Back: new events queue in memory behind the spool.
        b.down = false;
        b.push(entry(5, 10));
        b.push(entry(6, 10));
        let first = b.batch(0, true).unwrap();
        assert_eq!((first.first, first.last, first.count), (1, 6, 6));
        // Written up to 4, then a reset: nothing confirmed, the same events come again.
        let again = b.batch(0, true).unwrap();
        assert_eq!(frames(&again), frames(&first));
        // Confirm the first three, and batch from what was written (position 4).
        b.confirm(3);
        assert_eq!(b.head, 3);
        let rest = b.batch(4, true).unwrap();
        assert_eq!((rest.first, rest.last), (5, 6));
        b.confirm(6);
        assert!(b.is_empty());
        assert_eq!(b.delivered, 6);
        assert!(b.batch(6, true).is_none());
    }

    #[test]
    fn memory_full_spills_to_the_spool_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 64 << 20, WhenFull::DropOldest);
        let n = u64::try_from(MEMORY_MAX_EVENTS).unwrap() + 3;
        for seq in 1..=n {
            b.push(entry(seq, 8));
        }
        // The memory queue overflowed once: it went to the spool, and so did the event that
        // found it full; the two after it queue in memory again.
        assert_eq!(b.memory.len(), 2);
        assert_eq!(b.spool.bytes(), (n - 2) * 24);
        let mut seen = Vec::new();
        let mut pos = 0;
        while let Some(batch) = b.batch(pos, false) {
            seen.extend(batch.first..=batch.last);
            pos = batch.end();
            b.confirm(pos);
        }
        assert_eq!(seen, (1..=n).collect::<Vec<_>>());
        assert!(b.is_empty());
    }

    #[test]
    fn drop_oldest_reports_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        // Room for 10 records of 100 bytes (116 with the header).
        let mut b = backlog(dir.path(), 1160, WhenFull::DropOldest);
        b.down = true;
        for seq in 1..=25 {
            b.push(entry(seq, 100));
        }
        assert!(b.healthy());
        assert_eq!(
            b.gap.take(),
            Some(Gap {
                count: 15,
                first: 1,
                last: 15
            })
        );
        assert_eq!(b.dropped, 15);
        assert_eq!(b.head, 15);
        let batch = b.batch(0, false).unwrap();
        assert_eq!((batch.first, batch.last), (16, 25));
        // Too large for the spool at all: dropped at once.
        b.push(entry(26, 2000));
        assert_eq!(b.gap.take().map(|g| (g.first, g.count)), Some((26, 1)));
    }

    #[test]
    fn fail_closed_refuses_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 1160, WhenFull::FailClosed);
        b.down = true;
        for seq in 1..=10 {
            b.push(entry(seq, 100));
        }
        assert!(b.healthy());
        b.push(entry(11, 100));
        assert!(!b.healthy());
        // No room on disk: the event waits in memory (it is not dropped while memory has room).
        assert_eq!(b.memory.len(), 1);
        assert_eq!(b.dropped, 0);
        // Delivering two frees a tenth: healthy again, and the waiting event moves on.
        b.confirm(b.head + 2);
        assert!(b.healthy());
        b.push(entry(12, 100));
        let mut seen = Vec::new();
        let mut pos = b.head;
        while let Some(batch) = b.batch(pos, false) {
            seen.extend(batch.first..=batch.last);
            pos = batch.end();
        }
        assert_eq!(seen, (3..=12).collect::<Vec<_>>());
    }

    #[test]
    fn shutdown_breaks_a_blocked_write_and_spools_the_rest() {
        // A small receive buffer, so that a few MB fill the connection.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket.listen(1).unwrap();
        let listener: TcpListener = socket.into();
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let remote = Remote::start(RemoteSettings {
            name: "stuck".into(),
            address: listener.local_addr().unwrap().to_string(),
            transport: Transport::Tcp,
            format: Format::Rfc5424,
            spool_dir: spool.clone(),
            spool_max_bytes: 256 << 20,
            when_full: WhenFull::DropOldest,
        })
        .unwrap();
        // A receiver that never reads: the socket buffers fill and the write blocks.
        let (peer, _) = listener.accept().unwrap();
        for seq in 1..=80 {
            remote.push(seq, vec![b'x'; 100_000]);
        }
        thread::sleep(Duration::from_millis(500));
        assert!(remote.stats().connected);
        let begin = Instant::now();
        remote.shutdown(Duration::from_millis(200));
        assert!(
            begin.elapsed() < Duration::from_secs(3),
            "{:?}",
            begin.elapsed()
        );
        drop(peer);
        // What was not taken as delivered is spooled, in order, up to the last event.
        let mut spool = Spool::open(&spool, 256 << 20).unwrap();
        let mut seqs = Vec::new();
        while let Some((seq, _)) = spool.pop() {
            seqs.push(seq);
        }
        let first = *seqs.first().unwrap();
        assert_eq!(seqs, (first..=80).collect::<Vec<_>>());
        assert!(first < 60, "{first}");
        eprintln!("shutdown took {:?}; spooled {first}..=80", begin.elapsed());
    }

    #[test]
    fn liveness_sees_fin_and_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Alive, then a clean close.
        let mut conn = Conn::Tcp(TcpStream::connect(addr).unwrap());
        let (peer, _) = listener.accept().unwrap();
        assert!(matches!(conn.check(), Liveness::Alive));
        drop(peer);
        thread::sleep(Duration::from_millis(50));
        assert!(matches!(conn.check(), Liveness::Closed));
        assert!(conn.take_error().is_none());
        // Data the peer never reads, then its close: a reset.
        let mut conn = Conn::Tcp(TcpStream::connect(addr).unwrap());
        let (peer, _) = listener.accept().unwrap();
        let batch = Batch {
            start: 0,
            count: 1,
            data: b"5 hello".to_vec(),
            ends: vec![7],
            sequences: vec![1],
            first: 1,
            last: 1,
        };
        conn.write(&batch).unwrap();
        thread::sleep(Duration::from_millis(50));
        drop(peer);
        thread::sleep(Duration::from_millis(50));
        assert!(matches!(conn.check(), Liveness::Broken(_)));
    }

    /// The server end of one RELP connection, played by the test thread.
    struct RelpPeer {
        reader: io::BufReader<TcpStream>,
        writer: TcpStream,
    }

    /// A syslog command as the peer saw it: TXNR and the event's sequence number.
    type Command = (u32, u64);

    impl RelpPeer {
        /// Accepts a connection and answers its `open` as rsyslog does.
        fn open(listener: &TcpListener) -> RelpPeer {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut peer = RelpPeer {
                writer: stream.try_clone().unwrap(),
                reader: io::BufReader::new(stream),
            };
            let (txnr, command, data) = peer.frame().unwrap();
            assert_eq!((txnr, command.as_str()), (1, "open"));
            let offers = String::from_utf8(data).unwrap();
            assert!(offers.starts_with("relp_version=0\n"), "{offers}");
            assert!(offers.ends_with("\ncommands=syslog"), "{offers}");
            peer.send(b"1 rsp 37 200 OK\nrelp_version=0\ncommands=syslog\n");
            peer
        }

        /// The next frame, or None after a second of silence or at the end of the stream.
        fn frame(&mut self) -> Option<(u32, String, Vec<u8>)> {
            use std::io::BufRead as _;
            let mut field = |end: &[u8]| -> Option<String> {
                let mut out = Vec::new();
                loop {
                    let mut b = [0u8];
                    self.reader.read_exact(&mut b).ok()?;
                    if end.contains(&b[0]) {
                        return Some(String::from_utf8(out).unwrap());
                    }
                    out.push(b[0]);
                }
            };
            let txnr = field(b" ")?.parse().unwrap();
            let command = field(b" ")?;
            let len: usize = field(b" \n")?.parse().unwrap();
            let mut data = vec![0u8; len];
            if len > 0 {
                self.reader.read_exact(&mut data).unwrap();
                let mut lf = Vec::new();
                self.reader.read_until(b'\n', &mut lf).unwrap();
                assert_eq!(lf, b"\n");
            }
            Some((txnr, command, data))
        }

        /// The next `n` syslog commands.
        fn events(&mut self, n: usize) -> Vec<Command> {
            (0..n)
                .map(|_| {
                    let (txnr, command, data) = self.frame().expect("a syslog command");
                    assert_eq!(command, "syslog");
                    let text = String::from_utf8(data).unwrap();
                    (txnr, text.strip_prefix("event ").unwrap().parse().unwrap())
                })
                .collect()
        }

        fn send(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).unwrap();
        }

        fn ack(&mut self, commands: &[Command]) {
            for (txnr, _) in commands {
                self.send(format!("{txnr} rsp 6 200 OK\n").as_bytes());
            }
        }

        /// Nothing more arrives for a while.
        fn silent(&mut self, for_: Duration) -> bool {
            self.reader.get_ref().set_read_timeout(Some(for_)).unwrap();
            let mut b = [0u8];
            let silent = matches!(
                self.reader.read(&mut b),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            );
            self.reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            silent
        }
    }

    fn relp_sink(listener: &TcpListener, spool: &Path) -> Remote {
        Remote::start(RemoteSettings {
            name: "relp".into(),
            address: listener.local_addr().unwrap().to_string(),
            transport: Transport::Relp,
            format: Format::Rfc5424,
            spool_dir: spool.to_owned(),
            spool_max_bytes: 16 << 20,
            when_full: WhenFull::DropOldest,
        })
        .unwrap()
    }

    fn push_events(remote: &Remote, sequences: std::ops::RangeInclusive<u64>) {
        for seq in sequences {
            remote.push(seq, format!("event {seq}").into_bytes());
        }
    }

    fn sequences(commands: &[Command]) -> Vec<u64> {
        commands.iter().map(|c| c.1).collect()
    }

    fn wait_delivered(remote: &Remote, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while remote.stats().delivered < n {
            assert!(Instant::now() < deadline, "{:?}", remote.stats());
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn relp_resends_exactly_what_was_not_acknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let remote = relp_sink(&listener, dir.path());
        push_events(&remote, 1..=5);
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(5);
        assert_eq!(
            got.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        // Three answered, then the server says it closes, and does.
        peer.ack(&got[..3]);
        peer.send(b"0 serverclose 0\n");
        drop(peer);
        wait_delivered(&remote, 3);
        // A new session (TXNR from 1 again) gets 4 and 5 first, then what is new.
        let mut peer = RelpPeer::open(&listener);
        push_events(&remote, 6..=6);
        let got = peer.events(3);
        assert_eq!(sequences(&got), vec![4, 5, 6]);
        assert_eq!(got[0].0, 2);
        peer.ack(&got);
        wait_delivered(&remote, 6);
        let stats = remote.stats();
        assert_eq!((stats.resent, stats.queued_events), (2, 0), "{stats:?}");
        // Shutdown with everything answered: `close`, answered as rsyslog does.
        let stopper = thread::spawn(move || remote.shutdown(Duration::from_secs(2)));
        let (txnr, command, data) = peer.frame().unwrap();
        assert_eq!((txnr, command.as_str(), data.len()), (5, "close", 0));
        peer.send(b"5 rsp 0\n0 serverclose 0\n");
        stopper.join().unwrap();
        assert!(peer.frame().is_none(), "nothing after close");
    }

    #[test]
    fn relp_refused_event_is_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let remote = relp_sink(&listener, dir.path());
        push_events(&remote, 1..=3);
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(3);
        // The acknowledgement of 1 and the refusal of 2 in one write: 1 is delivered all the same.
        let mut answers = Vec::new();
        relp::frame(&mut answers, got[0].0, "rsp", b"200 OK");
        relp::frame(&mut answers, got[1].0, "rsp", b"500 no resources");
        peer.send(&answers);
        wait_delivered(&remote, 1);
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(2);
        assert_eq!(sequences(&got), vec![2, 3]);
        peer.ack(&got);
        wait_delivered(&remote, 3);
        assert_eq!(remote.stats().resent, 2);
    }

    #[test]
    fn relp_malformed_answer_breaks_the_session() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let remote = relp_sink(&listener, dir.path());
        push_events(&remote, 1..=2);
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(2);
        // DATALEN 4 for "200 OK": a framing error, the session is dropped.
        peer.send(format!("{} rsp 4 200 OK\n", got[0].0).as_bytes());
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(2);
        assert_eq!(sequences(&got), vec![1, 2]);
        peer.ack(&got);
        wait_delivered(&remote, 2);
        assert_eq!(remote.stats().resent, 2);
    }

    #[test]
    fn relp_keeps_to_its_window() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let remote = relp_sink(&listener, dir.path());
        let n = relp::WINDOW as u64 + 72;
        push_events(&remote, 1..=n);
        let mut peer = RelpPeer::open(&listener);
        let first = peer.events(relp::WINDOW);
        assert!(
            peer.silent(Duration::from_millis(300)),
            "more than the window"
        );
        peer.ack(&first[..10]);
        let next = peer.events(10);
        assert!(peer.silent(Duration::from_millis(100)));
        peer.ack(&first[10..]);
        peer.ack(&next);
        let rest = peer.events(62);
        peer.ack(&rest);
        let all: Vec<u64> = [first, next, rest]
            .iter()
            .flat_map(|c| sequences(c))
            .collect();
        assert_eq!(all, (1..=n).collect::<Vec<_>>());
        wait_delivered(&remote, n);
    }

    #[test]
    fn relp_unanswered_events_are_spooled_at_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let remote = relp_sink(&listener, dir.path());
        push_events(&remote, 1..=20);
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(20);
        peer.ack(&got[..5]);
        wait_delivered(&remote, 5);
        remote.shutdown(Duration::from_millis(200));
        let mut spool = Spool::open(dir.path(), 16 << 20).unwrap();
        let mut seqs = Vec::new();
        while let Some((seq, _)) = spool.pop() {
            seqs.push(seq);
        }
        assert_eq!(seqs, (6..=20).collect::<Vec<_>>());
    }

    #[test]
    fn relp_open_refused_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let remote = relp_sink(&listener, dir.path());
        push_events(&remote, 1..=1);
        // A server without the syslog command.
        let (stream, _) = listener.accept().unwrap();
        let mut peer = RelpPeer {
            writer: stream.try_clone().unwrap(),
            reader: io::BufReader::new(stream),
        };
        assert_eq!(peer.frame().unwrap().1, "open");
        let mut answer = Vec::new();
        relp::frame(&mut answer, 1, "rsp", b"200 OK\nrelp_version=0\ncommands=");
        peer.send(&answer);
        thread::sleep(Duration::from_millis(100));
        assert!(!remote.stats().connected);
        let mut peer = RelpPeer::open(&listener);
        let got = peer.events(1);
        peer.ack(&got);
        wait_delivered(&remote, 1);
    }
}

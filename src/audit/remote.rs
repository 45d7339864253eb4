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
//!
//! This module owns the sink's settings, its handle ([`Remote`]) and the state shared with its
//! thread; the parts live below it: `backlog` (spool plus memory queue), `conn` (one connection
//! and its liveness), `tls` (certificates and the rustls client), `worker` (the thread), `relp`.

use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::spool::{Spool, SpoolError};
use super::syslog::Format;

mod backlog;
mod conn;
mod relp;
mod tls;
mod worker;

use backlog::{Backlog, Entry};
use conn::Kind;
use tls::tls_config;
use worker::Worker;

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

/// `t + d`, or `t` where that does not fit.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
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

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )]

    use std::io::{Read as _, Write as _};
    use std::net::{SocketAddr, TcpListener};
    use std::path::Path;

    use super::backlog::Batch;
    use super::conn::{Conn, Liveness};
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

//! The sink's thread: connects, sends, confirms what plain syslog cannot acknowledge (see the
//! [`super`] module docs), reads RELP answers, spools, and backs off.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread::{self};
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};

use super::backlog::Batch;
use super::conn::{Conn, Kind, Liveness, relp_open};
use super::relp;
use super::{
    BACKOFF_FIRST, BACKOFF_MAX, CLOSE_SETTLE, CONFIRM_AFTER, CONNECT_TIMEOUT, IO_TIMEOUT,
    MAX_ADDRESSES, MAX_HANDSHAKE_STEPS, READ_CHUNK, RELP_ACK_POLL, RELP_ACK_TIMEOUT, RELP_READS,
    SYNC_INTERVAL, Shared, UNCONFIRMED_MAX_BYTES, UNCONFIRMED_MAX_EVENTS, WARN_EVERY_FAILURES,
    later,
};

/// Events written on the current connection and not yet confirmed.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) at: Instant,
    pub(super) end: u64,
    pub(super) count: usize,
    pub(super) bytes: usize,
    pub(super) first: u64,
    pub(super) last: u64,
}

/// The sink's thread: connects, sends, confirms, spools.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    pub(super) address: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) kind: Kind,
    /// RELP over the connection `kind` makes.
    pub(super) relp: bool,
    /// The RELP session on `conn`.
    pub(super) session: Option<relp::Session>,
    pub(super) conn: Option<Conn>,
    /// Queue position up to which events were written on this connection.
    pub(super) sent_until: u64,
    pub(super) written: VecDeque<Written>,
    pub(super) unconfirmed_bytes: usize,
    pub(super) unconfirmed_events: usize,
    pub(super) backoff: Duration,
    pub(super) next_attempt: Instant,
    pub(super) last_sync: Instant,
    /// Connections that failed or broke in a row, without a delivery.
    pub(super) failures: u64,
}

/// Marks the sink finished when the thread ends, however it ends.
pub(super) struct Finished(pub(super) Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        let mut b = self.0.lock();
        b.finished = true;
        b.connected = false;
        self.0.wake.notify_all();
    }
}

impl Worker {
    pub(super) fn run(mut self) {
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
    pub(super) fn sync(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sync) < SYNC_INTERVAL {
            return;
        }
        self.last_sync = now;
        if let Err(e) = self.shared.lock().spool.sync() {
            tracing::error!(sink = %self.name, "cannot sync the audit spool: {e}");
        }
    }

    /// Waits until `until`, or until shutdown is asked.
    pub(super) fn pause(&self, until: Instant) {
        let b = self.shared.lock();
        if b.stop.is_some() && b.is_empty() {
            return;
        }
        drop(
            self.shared
                .wait(b, until.min(later(Instant::now(), SYNC_INTERVAL))),
        );
    }

    pub(super) fn connect(&mut self, now: Instant) {
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

    pub(super) fn open(&self) -> io::Result<Conn> {
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

    pub(super) fn open_to(&self, addr: SocketAddr) -> io::Result<Conn> {
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
    pub(super) fn lost_connection(&mut self, error: Option<io::Error>) {
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
    pub(super) fn log_lost(&self, error: Option<&io::Error>) {
        match error {
            Some(e) => {
                tracing::warn!(sink = %self.name, "connection to {} lost: {e}", self.address)
            }
            None => tracing::info!(sink = %self.name, "{} closed the connection", self.address),
        }
    }

    /// Closes the socket (cleanly, or at once after an error) and forgets its abort handle.
    pub(super) fn close_connection(&mut self, clean: bool) {
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
    pub(super) fn reconnect_later(&mut self) {
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
    pub(super) fn confirm_written(&mut self, now: Instant) {
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
    pub(super) fn delivered(&mut self, upto: u64) {
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
    pub(super) fn relp_step(&mut self, now: Instant) -> bool {
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
    pub(super) fn relp_send(&mut self, batch: &Batch) {
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
    pub(super) fn relp_receive(&mut self, wait: Duration) -> io::Result<()> {
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
    pub(super) fn relp_close(&mut self, until: Instant) {
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
    pub(super) fn relp_lost(&mut self, error: Option<io::Error>) {
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

    pub(super) fn forget_front(&mut self) {
        if let Some(w) = self.written.pop_front() {
            self.unconfirmed_bytes = self.unconfirmed_bytes.saturating_sub(w.bytes);
            self.unconfirmed_events = self.unconfirmed_events.saturating_sub(w.count);
        }
    }

    /// The next batch to write, or `None` after waiting a while for one.
    pub(super) fn next_batch(&mut self, now: Instant) -> Option<Batch> {
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

    pub(super) fn send(&mut self, batch: Batch) {
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
    pub(super) fn finish(&mut self) {
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

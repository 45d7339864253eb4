//! One connection to a receiver (UDP, TCP, TLS; RELP over TCP or TLS): opening it, writing
//! batches, and telling whether the receiver has closed or reset it.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::backlog::Batch;
use super::relp;
use super::{CHECK_READS, IO_TIMEOUT, READ_CHUNK, later};

#[derive(Debug)]
pub(super) enum Kind {
    Udp,
    Tcp,
    Tls(Arc<ClientConfig>, ServerName<'static>),
}

/// An open connection to the receiver.
pub(super) enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// What a look at the socket showed.
pub(super) enum Liveness {
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
    pub(super) fn check(&mut self) -> Liveness {
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
    pub(super) fn take_error(&self) -> Option<io::Error> {
        let sock = match self {
            Conn::Udp(s) => return s.take_error().unwrap_or_else(Some),
            Conn::Tcp(s) => s,
            Conn::Tls(s) => &s.sock,
        };
        sock.take_error().unwrap_or_else(Some)
    }

    pub(super) fn write(&mut self, batch: &Batch) -> io::Result<()> {
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
    pub(super) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
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
    pub(super) fn receive(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
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
    pub(super) fn close(self, polite: bool) {
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

    pub(super) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(s) => Some(s),
            Conn::Tls(s) => Some(&s.sock),
        }
    }
}

/// Runs `f` with the socket non-blocking.
pub(super) fn nonblocking(
    sock: &mut TcpStream,
    f: impl FnOnce(&mut TcpStream) -> Liveness,
) -> Liveness {
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
pub(super) fn relp_open(conn: &mut Conn) -> io::Result<relp::Session> {
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

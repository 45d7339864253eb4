//! The I/O loop around a sans-IO protocol session ([`Core`]): it reads from the client and the
//! device into the session's own buffers, wakes it on its timer and on reloads, and writes what
//! it queued. Everything a session decides happens in the session, without sockets, so that
//! unit tests drive it with bytes and instants.

use std::fmt::Debug;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{SessionError, SiteWatch};

/// What the loop does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow<E> {
    /// Write what is queued and wait for the next event.
    Continue,
    /// Write what is queued, tell the session ([`Core::closing`]), then close both sides.
    Close(E),
    /// Close both sides at once: nothing queued is written.
    Drop(E),
}

/// The session's buffers the loop reads into, and its reload watch, borrowed together for one
/// wait.
#[derive(Debug)]
pub struct Io<'a> {
    /// Free room after what the client sent and the session has not consumed.
    pub client: &'a mut [u8],
    pub device: &'a mut [u8],
    pub watch: &'a mut SiteWatch,
}

/// Bytes the session queued for each side, and how long each side has to take them.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub to_client: &'a mut Vec<u8>,
    pub to_device: &'a mut Vec<u8>,
    /// `limits.request_timeout`.
    pub limit: std::time::Duration,
}

/// A protocol session without I/O: it consumes bytes and events and queues bytes for each side.
pub trait Core {
    /// Why the session ended, for the log.
    type End: Debug + Copy;
    /// Whether to read from the client now (back-pressure: requests in flight, a full buffer).
    fn wants_client(&self) -> bool;
    fn wants_device(&self) -> bool;
    /// Whether a reload wakes the session (rather than being seen at its next request).
    fn follows_reloads(&self) -> bool;
    fn io(&mut self) -> Io<'_>;
    /// `n` bytes came from the client into [`Io::client`]; 0: it closed the connection.
    fn client_read(&mut self, n: usize, now: Instant) -> Flow<Self::End>;
    /// `n` bytes came from the device into [`Io::device`]; 0: it closed the connection.
    fn device_read(&mut self, n: usize, now: Instant) -> Flow<Self::End>;
    /// Reading from the device failed; the loop ends with [`SessionError::Device`].
    fn device_failed(&mut self, error: &std::io::Error);
    /// A reload replaced the site.
    fn reloaded(&mut self, now: Instant) -> Flow<Self::End>;
    /// The session's timer ([`Core::deadline`]) fired.
    fn timer_fired(&mut self, now: Instant) -> Flow<Self::End>;
    /// When the session wants [`Core::timer_fired`].
    fn deadline(&self) -> Instant;
    /// After what was queued on a [`Flow::Close`] was written.
    fn closing(&mut self, end: Self::End);
    /// The loop was busy writing for `busy` (a peer slow to take what was queued) and read
    /// nothing from the client meanwhile: a request the client began is not the client's to
    /// finish while nobody reads it.
    fn client_unread(&mut self, _busy: std::time::Duration) {}
    fn outgoing(&mut self) -> Outgoing<'_>;
}

/// A write that took longer than this is reported to the session ([`Core::client_unread`]):
/// shorter ones are the ordinary cost of a write, not a stall.
const UNREAD_NOTICE: std::time::Duration = std::time::Duration::from_millis(10);

enum Event {
    Client(std::io::Result<usize>),
    Device(std::io::Result<usize>),
    Reload,
    Timer,
}

/// Runs `core` between `client` and `device` (`None`: no device, the session answers alone)
/// until it ends.
pub async fn drive<C: Core>(
    core: &mut C,
    client: &mut TcpStream,
    mut device: Option<&mut TcpStream>,
) -> Result<C::End, SessionError> {
    // One timer per session, moved only when the session's deadline changes: setting a timer
    // per request costs more than the request's own parsing (see the sessions' deadlines).
    let timer = tokio::time::sleep_until(core.deadline());
    tokio::pin!(timer);
    loop {
        let read_client = core.wants_client();
        let read_device = device.is_some() && core.wants_device();
        let reloads = core.follows_reloads();
        let event = {
            let io = core.io();
            tokio::select! {
                r = client.read(io.client), if read_client => Event::Client(r),
                r = read_from(device.as_deref_mut(), io.device), if read_device => Event::Device(r),
                () = io.watch.reloaded(), if reloads => Event::Reload,
                () = &mut timer => Event::Timer,
            }
        };
        let flow = match event {
            Event::Client(r) => core.client_read(r.map_err(SessionError::Client)?, Instant::now()),
            Event::Device(Ok(n)) => core.device_read(n, Instant::now()),
            Event::Device(Err(e)) => {
                core.device_failed(&e);
                return Err(SessionError::Device(e));
            }
            Event::Reload => core.reloaded(Instant::now()),
            Event::Timer => core.timer_fired(Instant::now()),
        };
        if let Flow::Drop(end) = flow {
            return Ok(end);
        }
        let deadline = core.deadline();
        if deadline != timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        let writing = Instant::now();
        flush(core.outgoing(), client, device.as_deref_mut()).await?;
        let busy = writing.elapsed();
        if busy >= UNREAD_NOTICE {
            core.client_unread(busy);
        }
        if let Flow::Close(end) = flow {
            core.closing(end);
            return Ok(end);
        }
    }
}

async fn read_from(device: Option<&mut TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match device {
        Some(d) => d.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Writes what is queued for each side, the device first, and empties the queues.
async fn flush(
    out: Outgoing<'_>,
    client: &mut TcpStream,
    device: Option<&mut TcpStream>,
) -> Result<(), SessionError> {
    match device {
        Some(device) => super::flush(client, out.to_client, device, out.to_device, out.limit).await,
        None => super::flush_client(client, out.to_client, out.limit).await,
    }
}

//! One OPC UA connection through the gateway (OPC 10000-6 UA Binary over TCP).
//!
//! The client's Hello and the server's Acknowledge pass with their buffer sizes clamped to our
//! limits, so that neither side may send a chunk or message the proxy would refuse. The client's
//! OpenSecureChannel is judged at the `open` stage (security policy, certificate). Then every
//! message the proxy can read (SecurityPolicy None, or Sign mode) is reassembled, decoded and
//! judged before any of its chunks reach the server; a channel whose messages are encrypted is
//! judged once at the `uninspected` stage and then passes as it is.
//!
//! A refused request on a None channel is answered with a ServiceFault and dropped, and from then
//! on the proxy renumbers the chunks it forwards in both directions, so that each side still sees
//! consecutive sequence numbers. On a signed channel nothing can be forged or renumbered: a
//! refusal is an ERR message and the end of the connection.
//!
//! The server owes an answer to everything the proxy forwards but Publish (see `outstanding`)
//! within `limits.response_timeout`. When it does not answer a request on a None channel, the
//! proxy answers it with a ServiceFault `Bad_Timeout` and drops the late response; on a signed
//! channel, and for a Hello or OpenSecureChannel, it closes the connection with an ERR
//! `BadTimeout`. Encrypted channels are not timed: neither the request id nor the service of
//! their messages can be read, so they rely on the idle timeout.

mod outstanding;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opcua_types::NodeId;
use regorus::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use self::outstanding::{Handshake, MAX_ABANDONED, Outstanding, Pending, Response, has_deadline};
use super::verdict::{self, Action, Judged, Log};
use super::{Protocol, Route, SessionError, SiteWatch};
use crate::audit::{self, Audit};
use crate::config::{Mode, OnDeny, OpcUaFrames};
use crate::metrics::Limit;
use crate::policy::opcua::{
    CertificateFacts, ChannelFacts, ChannelValues, Item, SecurityMode, Stage, access,
    channel_input, service_input, service_items, session_identity,
};
use crate::policy::{ConnectionInput, Decision};
use crate::proto::opcua::{
    self, Acknowledge, Chunk, ChunkBody, ChunkType, HEADER_LEN, Hello, MAX_CHUNK_SIZE,
    MAX_PARTIAL_MESSAGES, OpcUaError, OpenHeader, Reassembler, STATUS_BAD_COMMUNICATION_ERROR,
    STATUS_BAD_SECURITY_POLICY_REJECTED, STATUS_BAD_SERVICE_UNSUPPORTED,
    STATUS_BAD_TCP_MESSAGE_TYPE_INVALID, STATUS_BAD_TIMEOUT, STATUS_BAD_USER_ACCESS_DENIED,
    SYMMETRIC_SEQUENCE_OFFSET, SequenceHeader, Service, ServiceRequest, SymmetricHeader,
    next_sequence_number,
};
/// How long a client has to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
// The server's connect timeout (then an ERR `BadCommunicationError`), the idle timeout (OPC UA
// clients keep sessions alive with Publish or Read requests well within it), the time a
// chunk once begun has to be completed (then ERR `BadTimeout`), the time the server has to
// answer (then a ServiceFault `Bad_Timeout` or ERR `BadTimeout`) and the responses it may owe
// at once are the site's `limits:`, read from the route so that they follow reloads.
/// Allowed reads, browses and subscription requests are audited as one count per connection at
/// most this often (and when it ends), not one event each.
pub const READ_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Bytes read from one side and not yet judged: two whole chunks.
const MAX_BUFFERED: usize = 2 * MAX_CHUNK_SIZE as usize;
/// Read at least this much at a time.
const READ_SIZE: usize = 16 * 1024;
/// Aliases a connection may hold (RegisterNodes); a response that would add more ends it.
pub const MAX_ALIASES: usize = 4096;
/// RegisterNodes requests whose responses a connection awaits at once.
const MAX_REGISTERING: usize = 16;
/// The rule of the refusal of a request whose service the gateway does not know.
pub const RULE_UNKNOWN_SERVICE: &str = "zonegate.opcua.unknown_service";
/// Decisions remembered per connection (see `Session::decisions`).
pub const MAX_CACHED_DECISIONS: usize = 512;

/// Where the connection is in the UA Connection Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but a Hello may come from the client.
    Hello,
    /// Hello passed: the client opens a secure channel next.
    Open,
    /// A secure channel is open: messages may flow.
    Channel,
}

/// Whether the proxy can read the channel's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readability {
    /// A secured channel whose first message has not been decoded yet.
    Unknown,
    /// SecurityPolicy None, or Sign mode: every request is judged.
    Readable,
    /// Encrypted (SignAndEncrypt), let through uninspected by policy.
    Uninspected,
}

/// Which end of the connection bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// What the caller does after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Flush what is queued, then close both connections.
    Close,
}

/// A ServiceFault the proxy sends in the server's place (None channels only).
#[derive(Debug, Clone, Copy)]
struct Fault {
    secure_channel_id: u32,
    token_id: u32,
    request_id: u32,
    request_handle: u32,
    status: u32,
}

/// `d` after `t` (saturating: a deadline that cannot be represented is `t`).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// Chunks of one client message, held back until the message is judged, and then until every
/// message the client began before it has gone on or been dropped: the server gets the chunks
/// in the order the client sent them, so that their sequence numbers still rise (on a signed
/// channel the proxy cannot renumber them).
#[derive(Debug)]
struct Held {
    /// `None` for a CloseSecureChannel or OpenSecureChannel waiting behind held messages.
    request_id: Option<u32>,
    bytes: Vec<u8>,
    /// Length and sequence number offset of each chunk in `bytes`, in order.
    chunks: Vec<(usize, usize)>,
    /// Judged and allowed: goes on once nothing unjudged is ahead of it.
    allowed: bool,
}

pub async fn session(
    mut client: TcpStream,
    client_addr: SocketAddr,
    device_addr: SocketAddr,
    route: Route,
    watch: SiteWatch,
    audit: Audit,
) -> Result<(), SessionError> {
    let mut s = Session::new(client_addr, device_addr, route, watch, audit);
    // The server sees nothing, not even a connection, before the client has sent a valid Hello.
    match tokio::time::timeout(HELLO_TIMEOUT, s.hello(&mut client)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            s.event_plain("opcua-hello-timeout", "no Hello within the time allowed");
            return Ok(());
        }
    }
    let connect_timeout = s.route.limits.connect_timeout;
    let connected = tokio::time::timeout(
        connect_timeout,
        super::connect_transparent(client_addr, device_addr),
    )
    .await;
    let mut server = match connected {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            return s
                .unreachable(&mut client, &format!("server unreachable: {e}"))
                .await;
        }
        Err(_) => {
            s.route.metrics.limit_hit(Limit::ConnectTimeout);
            let reason = format!(
                "server did not accept the connection within {} (limits.connect_timeout)",
                humantime::format_duration(connect_timeout)
            );
            return s.unreachable(&mut client, &reason).await;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let end = s.run(&mut client, &mut server).await;
    s.report_reads();
    if let Err(e @ SessionError::Stalled { .. }) = &end {
        s.event_plain("opcua-write-timeout", &format!("{e}; connection closed"));
    }
    end
}

struct Session {
    client_addr: SocketAddr,
    device_addr: SocketAddr,
    route: Route,
    /// Reloads replace `route` and `input` from the next message on.
    watch: SiteWatch,
    audit: Audit,
    channel: ChannelFacts,
    /// The policy's decisions for this connection and channel.
    judge: Judge,
    phase: Phase,
    readability: Readability,
    reassembler: Reassembler,
    /// The frame sizes negotiated at the Hello (`limits.opcua` then): kept for the connection,
    /// since a reload cannot renegotiate them.
    frames: OpcUaFrames,
    held: Vec<Held>,
    /// Aliases the server gave at RegisterNodes, and the node each stands for: a request that
    /// names an alias is judged as naming that node (Part 4 5.8.5).
    aliases: HashMap<NodeId, NodeId>,
    /// RegisterNodes requests forwarded, by request id, with the nodes they register: their
    /// responses are read for aliases before they reach the client.
    registering: Vec<(u32, Vec<NodeId>)>,
    /// Chunks of those responses.
    responses: Reassembler,
    /// The last sequence number sent to each side, on a None channel (where the proxy keeps
    /// them consecutive after dropping or adding a message).
    last_to_server: Option<u32>,
    last_to_client: Option<u32>,
    /// Whether the proxy has dropped or added a message: from then on it renumbers.
    renumber: bool,
    /// What the server owes, and by when.
    outstanding: Outstanding,
    /// ServiceFaults waiting for the end of the server's message in progress: a client takes
    /// the chunks of one message in a row, and a chunk of another message between them is a
    /// protocol error to it. The client is not read while any wait.
    faults_due: Vec<Fault>,
    /// The last server chunk passed to the client was an intermediate one.
    server_mid_message: bool,
    /// When the last bytes came from either side (the idle timeout counts from it).
    last_activity: Instant,
    /// The client's buffer lost whole chunks since the session's loop last looked: what is
    /// left of it (a chunk begun) is new.
    client_progress: bool,
    reads_allowed: u64,
    reads_reported: Instant,
    from_client: Vec<u8>,
    from_server: Vec<u8>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

impl Session {
    fn new(
        client_addr: SocketAddr,
        device_addr: SocketAddr,
        route: Route,
        watch: SiteWatch,
        audit: Audit,
    ) -> Self {
        let input = route.input(client_addr, device_addr, None);
        let frames = route.limits.opcua;
        Session {
            client_addr,
            device_addr,
            route,
            watch,
            audit,
            channel: ChannelFacts::default(),
            judge: Judge {
                input,
                channel_values: None,
                decisions: BTreeMap::new(),
            },
            phase: Phase::Hello,
            readability: Readability::Unknown,
            reassembler: Reassembler::with_limits(frames.max_chunks, frames.max_message_size),
            frames,
            held: Vec::new(),
            aliases: HashMap::new(),
            registering: Vec::new(),
            responses: Reassembler::with_limits(frames.max_chunks, frames.max_message_size),
            last_to_server: None,
            last_to_client: None,
            renumber: false,
            outstanding: Outstanding::default(),
            faults_due: Vec::new(),
            server_mid_message: false,
            last_activity: Instant::now(),
            client_progress: false,
            reads_allowed: 0,
            reads_reported: Instant::now(),
            from_client: Vec::with_capacity(READ_SIZE),
            from_server: Vec::with_capacity(READ_SIZE),
            to_server: Vec::new(),
            to_client: Vec::new(),
        }
    }

    /// Reads until the client's Hello is judged: true when it passed (the clamped Hello waits in
    /// `to_server`), false when the client left or was refused (and told so).
    async fn hello(&mut self, client: &mut TcpStream) -> Result<bool, SessionError> {
        loop {
            reserve(&mut self.from_client);
            if client
                .read_buf(&mut self.from_client)
                .await
                .map_err(SessionError::Client)?
                == 0
            {
                return Ok(false);
            }
            let flow = self.chunks(Side::Client);
            if flow == Flow::Close || self.from_client.len() >= MAX_BUFFERED {
                client
                    .write_all(&self.to_client)
                    .await
                    .map_err(SessionError::Client)?;
                return Ok(false);
            }
            if self.phase != Phase::Hello {
                return Ok(true);
            }
        }
    }

    async fn run(
        &mut self,
        client: &mut TcpStream,
        server: &mut TcpStream,
    ) -> Result<(), SessionError> {
        // One timer for the session, set after every event to the earliest of: the idle
        // deadline (or, while the client has begun a chunk and not finished it, that chunk's)
        // and the first deadline of what the server owes.
        let mut partial_since: Option<Instant> = None;
        // The Hello (and whatever the client sent with it) was judged before the server was
        // connected; the server owes its Acknowledge from now on.
        self.last_activity = Instant::now();
        let limits = self.route.limits;
        let acknowledge = after(self.last_activity, limits.response_timeout);
        self.outstanding.connected(acknowledge);
        let timer = tokio::time::sleep_until(
            acknowledge.min(after(self.last_activity, limits.idle_timeout)),
        );
        tokio::pin!(timer);
        self.flush(client, server).await?;
        loop {
            self.client_progress = false;
            let read_client = !self.client_paused() && self.from_client.len() < MAX_BUFFERED;
            let read_server = self.from_server.len() < MAX_BUFFERED;
            reserve(&mut self.from_client);
            reserve(&mut self.from_server);
            let mut flow = tokio::select! {
                r = client.read_buf(&mut self.from_client), if read_client => {
                    let n = r.map_err(SessionError::Client)?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.route.metrics.to_device(n);
                    self.last_activity = Instant::now();
                    self.chunks(Side::Client)
                }
                r = server.read_buf(&mut self.from_server), if read_server => {
                    let n = r.map_err(SessionError::Device)?;
                    if n == 0 {
                        self.flush(client, server).await?;
                        return Ok(());
                    }
                    self.route.metrics.to_client(n);
                    self.last_activity = Instant::now();
                    self.chunks(Side::Server)
                }
                () = &mut timer => self.timer_fired(partial_since),
                () = self.watch.reloaded() => self.follow_reload(),
            };
            // Whole chunks held back while the client was paused go on once it is not.
            if flow == Flow::Continue && !self.client_paused() && !self.from_client.is_empty() {
                flow = self.chunks(Side::Client);
            }
            let now = Instant::now();
            // A chunk begun is timed from when it became the first in the buffer; not while
            // the client is paused, since its rest may be waiting unread in the socket.
            partial_since = if self.client_paused() || self.from_client.is_empty() {
                None
            } else if self.client_progress || partial_since.is_none() {
                Some(now)
            } else {
                partial_since
            };
            let limits = self.route.limits;
            let base = match partial_since {
                Some(since) => after(since, limits.request_timeout),
                None => after(self.last_activity, limits.idle_timeout),
            };
            let next = self
                .outstanding
                .next_due()
                .map_or(base, |due| due.min(base));
            timer.as_mut().reset(next);
            if now.saturating_duration_since(self.reads_reported) >= READ_SUMMARY_INTERVAL {
                self.report_reads();
            }
            self.flush(client, server).await?;
            if flow == Flow::Close {
                return Ok(());
            }
        }
    }

    /// The client is not read while the server owes `limits.in_flight_per_connection`
    /// responses (back-pressure, as for Modbus; Publish requests do not count), nor while
    /// ServiceFaults wait for the server's message in progress, nor while a RegisterNodes
    /// response is due: the aliases it gives (node-opcua's are predictable) must be known
    /// before a request that may name one is judged.
    fn client_paused(&self) -> bool {
        self.outstanding.in_flight() >= self.route.limits.in_flight_per_connection
            || !self.faults_due.is_empty()
            || !self.registering.is_empty()
    }

    async fn flush(
        &mut self,
        client: &mut TcpStream,
        server: &mut TcpStream,
    ) -> Result<(), SessionError> {
        super::flush(
            client,
            &mut self.to_client,
            server,
            &mut self.to_server,
            self.route.limits.request_timeout,
        )
        .await
    }

    // ------------------------------------------------------------------ client -> server

    /// Handles every whole chunk that has come from `side`: judged (from the client) or passed
    /// on (from the server).
    fn chunks(&mut self, side: Side) -> Flow {
        // The next message after a reload is judged by the new site (an atomic load to know).
        if side == Side::Client && self.watch.changed() && self.follow_reload() == Flow::Close {
            return Flow::Close;
        }
        let buf = std::mem::take(match side {
            Side::Client => &mut self.from_client,
            Side::Server => &mut self.from_server,
        });
        let mut used = 0usize;
        let mut flow = Flow::Continue;
        while flow == Flow::Continue {
            // Back-pressure: the rest of the client's chunks wait (see `client_paused`).
            if side == Side::Client && self.client_paused() {
                break;
            }
            let rest = buf.get(used..).unwrap_or_default();
            match opcua::parse_chunk(rest, self.frames.max_chunk_size) {
                Ok(Some((chunk, n))) => {
                    flow = match side {
                        Side::Client => self.client_chunk(&chunk),
                        Side::Server => self.server_chunk(&chunk),
                    };
                    used = used.saturating_add(n);
                }
                Ok(None) => break,
                Err(e) => {
                    self.malformed(side, &e, rest);
                    match side {
                        Side::Client => self.refuse_connection(e.status(), &e.to_string()),
                        Side::Server => self.refuse_connection(
                            STATUS_BAD_COMMUNICATION_ERROR,
                            "the server sent a malformed message",
                        ),
                    }
                    flow = Flow::Close;
                }
            }
        }
        let mut buf = buf;
        buf.drain(..used.min(buf.len()));
        match side {
            Side::Client => {
                self.client_progress |= used > 0;
                self.from_client = buf;
            }
            Side::Server => self.from_server = buf,
        }
        flow
    }

    fn client_chunk(&mut self, chunk: &Chunk<'_>) -> Flow {
        match (self.phase, chunk.body) {
            (Phase::Hello, ChunkBody::Hello(hello)) => {
                self.channel.endpoint_url = hello.endpoint_url.to_owned();
                self.to_server
                    .extend_from_slice(&opcua::encode_hello(&clamp_hello(hello, self.frames)));
                self.phase = Phase::Open;
                Flow::Continue
            }
            (Phase::Open | Phase::Channel, ChunkBody::Open(open)) => self.open(chunk, &open),
            (Phase::Channel, ChunkBody::Message(header)) => self.message(chunk, &header),
            (Phase::Channel, ChunkBody::Close(_)) => {
                self.forward_in_order(None, chunk.bytes, SYMMETRIC_SEQUENCE_OFFSET);
                Flow::Continue
            }
            (phase, _) => {
                let what = chunk.header.message_type.as_str();
                let expected = match phase {
                    Phase::Hello => "a Hello",
                    Phase::Open => "an OpenSecureChannel",
                    Phase::Channel => "OpenSecureChannel, Message or CloseSecureChannel",
                };
                let reason = format!("client sent {what} where {expected} must come");
                self.event_plain("opcua-protocol-violation", &reason);
                self.refuse_connection(STATUS_BAD_TCP_MESSAGE_TYPE_INVALID, &reason);
                Flow::Close
            }
        }
    }

    /// OPN from the client: the `open` stage.
    fn open(&mut self, chunk: &Chunk<'_>, open: &OpenHeader<'_>) -> Flow {
        let uri = open.security_policy_uri;
        if self.phase == Phase::Channel && self.channel.security_policy_uri.as_deref() != Some(uri)
        {
            // A renewal keeps its channel's security policy (Part 4 5.5.2).
            let reason = format!("a renewal switches the security policy to {uri}");
            self.event_plain("opcua-protocol-violation", &reason);
            self.refuse_connection(STATUS_BAD_SECURITY_POLICY_REJECTED, &reason);
            return Flow::Close;
        }
        self.channel.security_policy_uri = Some(uri.to_owned());
        self.channel.client_certificate =
            open.sender_certificate.and_then(CertificateFacts::from_der);
        if open.is_security_none() {
            self.channel.security_mode = Some(SecurityMode::None);
            self.readability = Readability::Readable;
        }
        let decision = self.decide_channel(Stage::Open);
        self.route.metrics.request(
            "channel-open",
            verdict::decision_name(&decision, self.route.mode),
        );
        self.event_channel("opcua-channel", Stage::Open, &decision);
        if !decision.is_allow() && self.route.mode == Mode::Enforce {
            self.refuse_connection(
                STATUS_BAD_SECURITY_POLICY_REJECTED,
                &format!("secure channel refused: {}", reason(&decision)),
            );
            return Flow::Close;
        }
        let offset = chunk.bytes.len().saturating_sub(open.rest.len());
        self.forward_in_order(None, chunk.bytes, offset);
        self.phase = Phase::Channel;
        // No channel to answer on yet (or a renewal that must succeed): an OPN the server
        // does not answer ends the connection with an ERR.
        let request_id = open
            .is_security_none()
            .then(|| opcua::parse_sequence_header(open.rest).ok())
            .flatten()
            .map(|(sequence, _)| sequence.request_id);
        self.outstanding.await_handshake(
            Handshake::Open { request_id },
            after(Instant::now(), self.route.limits.response_timeout),
        );
        Flow::Continue
    }

    /// MSG from the client, on an open channel.
    fn message(&mut self, chunk: &Chunk<'_>, header: &SymmetricHeader<'_>) -> Flow {
        if self.readability == Readability::Uninspected {
            self.to_server.extend_from_slice(chunk.bytes);
            return Flow::Continue;
        }
        if chunk.header.chunk_type == ChunkType::Abort {
            return self.abort(chunk, header);
        }
        let mut chunk_held = false;
        match self.read_message(chunk, header, &mut chunk_held) {
            Ok(Some((sequence, mut request))) => {
                if !self.aliases.is_empty() {
                    let aliases = &self.aliases;
                    request.request.for_each_node_id(|id| {
                        if let Some(node) = aliases.get(id) {
                            *id = node.clone();
                        }
                    });
                }
                self.judge(sequence, &request, header, chunk.bytes)
            }
            Ok(None) => Flow::Continue,
            // Encrypted bytes name no service the gateway knows (about one chance in 10^11);
            // a first message that does and then fails to decode is a malformed one on a Sign
            // channel, not a reason to stop reading the channel.
            Err(e) if self.readability == Readability::Unknown && e.known_service().is_none() => {
                tracing::debug!(error = %e, "first message does not decode: an encrypted channel");
                self.uninspected(chunk, chunk_held)
            }
            Err(e) => {
                self.malformed(Side::Client, &e, chunk.bytes);
                self.refuse_connection(e.status(), &e.to_string());
                Flow::Close
            }
        }
    }

    /// An abort chunk ('A', Part 6 6.7.2.2): the client gives up a message it has begun. Its
    /// chunks were never judged, so they never reach the server: on a None channel they and the
    /// abort are dropped and the chunks after them renumbered; on a signed channel nothing can
    /// be dropped without breaking the signed sequence, so the connection ends.
    fn abort(&mut self, chunk: &Chunk<'_>, header: &SymmetricHeader<'_>) -> Flow {
        let request_id = match opcua::parse_sequence_header(header.rest) {
            Ok((sequence, _)) => sequence.request_id,
            Err(e) => {
                self.malformed(Side::Client, &e, chunk.bytes);
                self.refuse_connection(e.status(), &e.to_string());
                return Flow::Close;
            }
        };
        let _ = self.reassembler.push(request_id, ChunkType::Abort, &[]);
        if let Some(i) = self.unjudged(request_id) {
            self.held.remove(i);
        }
        if !self.channel.is_plaintext() {
            let reason = format!(
                "the client aborted request {request_id}: its chunks were not judged and cannot be dropped from a signed channel; connection closed"
            );
            self.event_plain("opcua-abort", &reason);
            self.refuse_connection(STATUS_BAD_COMMUNICATION_ERROR, &reason);
            return Flow::Close;
        }
        tracing::debug!(
            request_id,
            "aborted message dropped; later chunks renumbered"
        );
        self.renumber = true;
        self.release_in_order();
        Flow::Continue
    }

    /// The held message of `request_id` not judged yet.
    fn unjudged(&self, request_id: u32) -> Option<usize> {
        self.held
            .iter()
            .position(|h| !h.allowed && h.request_id == Some(request_id))
    }

    /// The message a chunk completes, decoded; `None` while more chunks are due (the chunk is
    /// held: `chunk_held`).
    fn read_message(
        &mut self,
        chunk: &Chunk<'_>,
        header: &SymmetricHeader<'_>,
        chunk_held: &mut bool,
    ) -> Result<Option<(SequenceHeader, ServiceRequest)>, OpcUaError> {
        let signature = if self.channel.is_plaintext() {
            0
        } else {
            let uri = self
                .channel
                .security_policy_uri
                .as_deref()
                .unwrap_or_default();
            // A policy whose signature length is unknown cannot be read.
            opcua::signature_len(uri).ok_or(OpcUaError::SequenceHeader { remaining: 0 })?
        };
        let (sequence, body) = opcua::parse_sequence_header(header.rest)?;
        let body = body
            .get(..body.len().saturating_sub(signature))
            .unwrap_or_default();
        let request_id = sequence.request_id;
        let held = self.unjudged(request_id);
        match (chunk.header.chunk_type, held) {
            // The common case: a message in one chunk, decoded where it lies.
            (ChunkType::Final, None) => Ok(Some((sequence, opcua::decode_request(body)?))),
            (chunk_type, _) => {
                let partial = self.held.iter().filter(|h| !h.allowed).count();
                if held.is_none() && partial >= MAX_PARTIAL_MESSAGES {
                    return Err(OpcUaError::TooManyPartialMessages {
                        request_id,
                        max: MAX_PARTIAL_MESSAGES,
                    });
                }
                let message = self.reassembler.push(request_id, chunk_type, body)?;
                let h = match held {
                    Some(i) => self.held.get_mut(i),
                    None => {
                        self.held.push(Held {
                            request_id: Some(request_id),
                            bytes: Vec::new(),
                            chunks: Vec::new(),
                            allowed: false,
                        });
                        self.held.last_mut()
                    }
                };
                if let Some(h) = h {
                    h.bytes.extend_from_slice(chunk.bytes);
                    h.chunks
                        .push((chunk.bytes.len(), SYMMETRIC_SEQUENCE_OFFSET));
                    *chunk_held = true;
                }
                match message {
                    Some(message) => Ok(Some((sequence, opcua::decode_request(&message)?))),
                    None => Ok(None),
                }
            }
        }
    }

    /// The first message of a secured channel does not decode: its messages are encrypted.
    /// Judged once at the `uninspected` stage.
    fn uninspected(&mut self, chunk: &Chunk<'_>, chunk_held: bool) -> Flow {
        self.channel.security_mode = Some(SecurityMode::SignAndEncrypt);
        self.reassembler =
            Reassembler::with_limits(self.frames.max_chunks, self.frames.max_message_size);
        let decision = self.decide_channel(Stage::Uninspected);
        self.route.metrics.request(
            "channel-uninspected",
            verdict::decision_name(&decision, self.route.mode),
        );
        self.event_channel("opcua-uninspected", Stage::Uninspected, &decision);
        if !decision.is_allow() && self.route.mode == Mode::Enforce {
            self.refuse_connection(
                STATUS_BAD_SECURITY_POLICY_REJECTED,
                &format!("encrypted channel refused: {}", reason(&decision)),
            );
            return Flow::Close;
        }
        self.readability = Readability::Uninspected;
        // What was held for decoding goes on as it came, then this chunk.
        for h in std::mem::take(&mut self.held) {
            self.to_server.extend_from_slice(&h.bytes);
        }
        if !chunk_held {
            self.to_server.extend_from_slice(chunk.bytes);
        }
        Flow::Continue
    }

    /// A whole readable request: judged (item by item where the service has items), then
    /// forwarded, or refused. `current` is the chunk that completed it.
    fn judge(
        &mut self,
        sequence: SequenceHeader,
        request: &ServiceRequest,
        header: &SymmetricHeader<'_>,
        current: &[u8],
    ) -> Flow {
        if self.readability == Readability::Unknown {
            self.readability = Readability::Readable;
            self.channel.security_mode = Some(SecurityMode::Sign);
            self.channel_changed();
        }
        // A service the gateway does not know was not decoded past its header: nothing vouches
        // for what the server would read in it, so it never passes, in either mode.
        let unknown = request.service == Service::Unknown;
        let (judge, channel) = (&mut self.judge, &self.channel);
        let verdict = verdict::judge(
            &mut self.route,
            &self.audit,
            access(request.service),
            request.service.name(),
            |route| {
                if unknown {
                    Judged::Unjudgeable(Arc::new(Decision::Deny {
                        reason: format!(
                            "type id {} is no service the gateway knows: its body cannot be judged",
                            request.type_id
                        ),
                        rule: RULE_UNKNOWN_SERVICE.into(),
                    }))
                } else {
                    Judged::Policy(judge.decide_request(route, channel, request))
                }
            },
        );
        let decision = verdict.decision.clone();
        match verdict.log {
            Log::Count => self.reads_allowed = self.reads_allowed.saturating_add(1),
            // Named in the conduit's mode also when the gateway refused it (as before the
            // shared tail; Modbus names those in enforce mode).
            Log::Event(_) => self.event_request(sequence, request, &decision),
        }
        let action = verdict.enforce(&self.route, self.client_addr, self.device_addr, |d| {
            Cow::Owned(reason(d))
        });
        if action == Action::Quarantine {
            self.refuse_connection(STATUS_BAD_USER_ACCESS_DENIED, "source quarantined");
            return Flow::Close;
        }
        if decision.is_allow()
            && let Some(identity) = session_identity(request)
        {
            self.channel.identity = Some(identity);
            self.channel_changed();
        }
        let held = self.unjudged(sequence.request_id);
        if action == Action::Forward {
            match held.and_then(|i| self.held.get_mut(i)) {
                Some(h) => h.allowed = true,
                None => {
                    self.forward_in_order(None, current, SYMMETRIC_SEQUENCE_OFFSET);
                }
            }
            self.release_in_order();
            self.track(sequence, request, header);
            return self.registered(sequence.request_id, request);
        }
        // Refused: its chunks never go on, and what waited behind them may.
        if let Some(i) = held {
            self.held.remove(i);
        }
        self.release_in_order();
        let why = format!("request refused: {}", reason(&decision));
        if self.route.on_deny == OnDeny::Close || !self.channel.is_plaintext() {
            // On a signed channel a fault cannot be forged, nor the sequence renumbered.
            self.refuse_connection(STATUS_BAD_USER_ACCESS_DENIED, &why);
            return Flow::Close;
        }
        // Dropped: the chunks after it are renumbered, and so are the server's after the fault.
        self.service_fault(Fault {
            secure_channel_id: header.secure_channel_id,
            token_id: header.token_id,
            request_id: sequence.request_id,
            request_handle: request.request_handle,
            status: if unknown {
                STATUS_BAD_SERVICE_UNSUPPORTED
            } else {
                STATUS_BAD_USER_ACCESS_DENIED
            },
        });
        Flow::Continue
    }

    /// A forwarded RegisterNodes: its response is to be read for aliases. A forwarded
    /// UnregisterNodes: the aliases it names stand for nothing any more.
    fn registered(&mut self, request_id: u32, request: &ServiceRequest) -> Flow {
        use crate::proto::opcua::DecodedRequest;
        match &request.request {
            DecodedRequest::RegisterNodes(r) => {
                if self.registering.len() >= MAX_REGISTERING {
                    let reason = format!(
                        "more than {MAX_REGISTERING} RegisterNodes requests unanswered at once: their aliases could not be followed; connection closed"
                    );
                    self.event_plain("opcua-protocol-violation", &reason);
                    self.refuse_connection(STATUS_BAD_COMMUNICATION_ERROR, &reason);
                    return Flow::Close;
                }
                let nodes = r.nodes_to_register.clone().unwrap_or_default();
                self.registering.push((request_id, nodes));
            }
            DecodedRequest::UnregisterNodes(r) => {
                for alias in r.nodes_to_unregister.iter().flatten() {
                    self.aliases.remove(alias);
                }
            }
            _ => {}
        }
        Flow::Continue
    }

    /// A chunk of the server's response to a RegisterNodes request: its aliases are learnt
    /// before its last chunk reaches the client, so that no request sent after the client
    /// knows an alias is judged without it. A response that cannot be read, or aliases
    /// beyond [`MAX_ALIASES`], end the connection.
    fn register_response(&mut self, chunk: &Chunk<'_>, header: &SymmetricHeader<'_>) -> Flow {
        let Ok((sequence, body)) = opcua::parse_sequence_header(header.rest) else {
            return Flow::Continue;
        };
        let Some(index) = self
            .registering
            .iter()
            .position(|(id, _)| *id == sequence.request_id)
        else {
            return Flow::Continue;
        };
        let signature = if self.channel.is_plaintext() {
            0
        } else {
            self.channel
                .security_policy_uri
                .as_deref()
                .and_then(opcua::signature_len)
                .unwrap_or(0)
        };
        let body = body
            .get(..body.len().saturating_sub(signature))
            .unwrap_or_default();
        let message = match self
            .responses
            .push(sequence.request_id, chunk.header.chunk_type, body)
        {
            Ok(Some(message)) => message,
            Ok(None) if chunk.header.chunk_type == ChunkType::Intermediate => {
                return Flow::Continue;
            }
            Ok(None) => {
                self.registering.swap_remove(index);
                return Flow::Continue;
            }
            Err(e) => return self.unreadable_register_response(&e.to_string(), chunk.bytes),
        };
        let (_, requested) = self.registering.swap_remove(index);
        match opcua::decode_register_nodes_response(&message) {
            Ok(Some(registered)) => {
                for (node, alias) in requested.into_iter().zip(registered) {
                    if node == alias {
                        continue;
                    }
                    if self.aliases.len() >= MAX_ALIASES && !self.aliases.contains_key(&alias) {
                        let reason = format!(
                            "the server gave more than {MAX_ALIASES} RegisterNodes aliases on this connection; connection closed"
                        );
                        self.event_plain("opcua-protocol-violation", &reason);
                        self.refuse_connection(STATUS_BAD_COMMUNICATION_ERROR, &reason);
                        return Flow::Close;
                    }
                    self.aliases.insert(alias, node);
                }
                Flow::Continue
            }
            Ok(None) => Flow::Continue,
            Err(e) => self.unreadable_register_response(&e.to_string(), chunk.bytes),
        }
    }

    fn unreadable_register_response(&mut self, error: &str, bytes: &[u8]) -> Flow {
        let e = OpcUaError::Decode {
            service: Service::RegisterNodes,
            offset: 0,
            reason: format!("the response to RegisterNodes: {error}"),
        };
        self.malformed(Side::Server, &e, bytes);
        self.refuse_connection(
            STATUS_BAD_COMMUNICATION_ERROR,
            "the server sent a RegisterNodes response the gateway cannot read",
        );
        Flow::Close
    }

    /// A request forwarded: the server owes its response within `limits.response_timeout`
    /// (but for Publish, see [`has_deadline`]).
    fn track(
        &mut self,
        sequence: SequenceHeader,
        request: &ServiceRequest,
        header: &SymmetricHeader<'_>,
    ) {
        if !has_deadline(request.service) {
            return;
        }
        self.outstanding.sent(Pending {
            request_id: sequence.request_id,
            request_handle: request.request_handle,
            service: request.service,
            secure_channel_id: header.secure_channel_id,
            token_id: header.token_id,
            deadline: after(Instant::now(), self.route.limits.response_timeout),
        });
        if self.outstanding.in_flight() >= self.route.limits.in_flight_per_connection {
            self.route.metrics.limit_hit(Limit::InFlight);
        }
    }

    /// Answers a request in the server's place with a ServiceFault (None channels only). From
    /// then on the proxy renumbers: it added a message for the client, and drops the request
    /// (a refusal) or the server's late response (a timeout). The fault waits while a message
    /// of the server is half-way to the client.
    fn service_fault(&mut self, fault: Fault) {
        self.renumber = true;
        if self.server_mid_message {
            self.faults_due.push(fault);
        } else {
            self.send_fault(fault);
        }
    }

    fn send_fault(&mut self, f: Fault) {
        let number = self.last_to_client.map_or(1, next_sequence_number);
        self.last_to_client = Some(number);
        self.to_client
            .extend_from_slice(&opcua::encode_service_fault(
                f.secure_channel_id,
                f.token_id,
                number,
                f.request_id,
                f.request_handle,
                f.status,
                ua_now(),
            ));
    }

    /// A whole chunk (or message) allowed to go on: now, or behind the held messages the
    /// client began before it.
    fn forward_in_order(&mut self, request_id: Option<u32>, chunk: &[u8], offset: usize) {
        if self.held.is_empty() {
            self.forward_to_server(chunk, offset);
        } else {
            // It overtakes nothing, but chunks the client sent after it may now reach the
            // server before it (a message the client began earlier and finishes later): on a
            // None channel the proxy renumbers from now on so the sequence still rises. A
            // signed channel cannot be renumbered; servers refuse interleaved messages there
            // as they do without the gateway.
            self.renumber = true;
            self.held.push(Held {
                request_id,
                bytes: chunk.to_vec(),
                chunks: vec![(chunk.len(), offset)],
                allowed: true,
            });
        }
    }

    /// Forwards the allowed messages at the front of the queue, up to the first one not judged.
    fn release_in_order(&mut self) {
        while self.held.first().is_some_and(|h| h.allowed) {
            let h = self.held.remove(0);
            self.forward_held(&h);
        }
    }

    fn forward_held(&mut self, held: &Held) {
        let mut at = 0usize;
        for &(len, offset) in &held.chunks {
            let end = at.saturating_add(len);
            if let Some(bytes) = held.bytes.get(at..end) {
                self.forward_to_server(bytes, offset);
            }
            at = end;
        }
    }

    /// Queues a chunk for the server. On a None channel its sequence number (at `offset`) is
    /// made the one after the last sent, once the proxy has dropped a message.
    fn forward_to_server(&mut self, chunk: &[u8], offset: usize) {
        let plaintext = self.channel.is_plaintext();
        let last = forward(
            &mut self.to_server,
            chunk,
            offset,
            plaintext && self.renumber,
            self.last_to_server,
        );
        if plaintext {
            self.last_to_server = last.or(self.last_to_server);
        }
    }

    fn forward_to_client(&mut self, chunk: &[u8], offset: usize) {
        let plaintext = self.channel.is_plaintext();
        let last = forward(
            &mut self.to_client,
            chunk,
            offset,
            plaintext && self.renumber,
            self.last_to_client,
        );
        if plaintext {
            self.last_to_client = last.or(self.last_to_client);
        }
    }

    // ------------------------------------------------------------------ server -> client

    fn server_chunk(&mut self, chunk: &Chunk<'_>) -> Flow {
        match chunk.body {
            ChunkBody::Acknowledge(ack) if self.phase != Phase::Hello => {
                self.outstanding.acknowledged();
                self.to_client
                    .extend_from_slice(&opcua::encode_acknowledge(&clamp_acknowledge(
                        ack,
                        self.frames,
                    )));
                Flow::Continue
            }
            ChunkBody::Error(_) => {
                self.to_client.extend_from_slice(chunk.bytes);
                Flow::Close
            }
            ChunkBody::Open(open) => {
                self.outstanding.opened();
                let offset = chunk.bytes.len().saturating_sub(open.rest.len());
                self.forward_to_client(chunk.bytes, offset);
                Flow::Continue
            }
            ChunkBody::Message(header) => {
                if self.late_response(chunk, &header) {
                    return Flow::Continue;
                }
                if !self.registering.is_empty()
                    && self.readability == Readability::Readable
                    && self.register_response(chunk, &header) == Flow::Close
                {
                    return Flow::Close;
                }
                self.forward_to_client(chunk.bytes, SYMMETRIC_SEQUENCE_OFFSET);
                self.server_mid_message = chunk.header.chunk_type == ChunkType::Intermediate;
                if !self.server_mid_message {
                    for fault in std::mem::take(&mut self.faults_due) {
                        self.send_fault(fault);
                    }
                }
                Flow::Continue
            }
            ChunkBody::Close(_) => {
                self.forward_to_client(chunk.bytes, SYMMETRIC_SEQUENCE_OFFSET);
                Flow::Continue
            }
            ChunkBody::Hello(_) | ChunkBody::ReverseHello(_) | ChunkBody::Acknowledge(_) => {
                let reason = format!(
                    "server sent {} where it must not",
                    chunk.header.message_type.as_str()
                );
                self.event_plain("opcua-protocol-violation", &reason);
                self.refuse_connection(STATUS_BAD_COMMUNICATION_ERROR, &reason);
                Flow::Close
            }
        }
    }

    /// A chunk of the server's message on a readable channel answers its request. True when
    /// it belongs to a late response to a request the proxy has answered with Bad_Timeout: it
    /// is dropped (its sequence number goes to the fault, which came first).
    fn late_response(&mut self, chunk: &Chunk<'_>, header: &SymmetricHeader<'_>) -> bool {
        if self.readability != Readability::Readable {
            return false;
        }
        let Ok((sequence, _)) = opcua::parse_sequence_header(header.rest) else {
            return false;
        };
        match self
            .outstanding
            .response(sequence.request_id, chunk.header.chunk_type)
        {
            Response::Forward => false,
            Response::Drop => {
                tracing::debug!(
                    request_id = sequence.request_id,
                    "late response to a request answered with Bad_Timeout: dropped"
                );
                true
            }
        }
    }

    // ------------------------------------------------------------------ deadlines

    /// The session's timer fired: the client's unfinished chunk took too long, the server
    /// owes something past its deadline, or nothing came from either side for the idle time.
    fn timer_fired(&mut self, partial_since: Option<Instant>) -> Flow {
        let now = Instant::now();
        let limits = self.route.limits;
        if let Some(since) = partial_since
            && after(since, limits.request_timeout) <= now
        {
            return self.request_timed_out();
        }
        if self.expire(now) == Flow::Close {
            return Flow::Close;
        }
        if partial_since.is_none() && after(self.last_activity, limits.idle_timeout) <= now {
            return self.idle_timed_out();
        }
        Flow::Continue
    }

    /// What the server has not answered by `now`, answered by the proxy: a request on a None
    /// channel with a ServiceFault `Bad_Timeout` (its late response will be dropped); anything
    /// else with an ERR `BadTimeout` and the end of the connection, since a signed channel
    /// cannot carry a forged fault and a Hello or OpenSecureChannel has no channel to answer on.
    fn expire(&mut self, now: Instant) -> Flow {
        let expired = self.outstanding.expire(now);
        let limit = humantime::format_duration(self.route.limits.response_timeout);
        if let Some(handshake) = expired.handshake {
            self.route.metrics.limit_hit(Limit::ResponseTimeout);
            let (service, awaited, request_id) = match handshake {
                Handshake::Acknowledge => ("hello", "Acknowledge to the Hello", None),
                Handshake::Open { request_id } => (
                    Service::OpenSecureChannel.name(),
                    "response to OpenSecureChannel",
                    request_id,
                ),
            };
            let reason = match request_id {
                Some(id) => format!(
                    "no {awaited} (request {id}) within {limit} (limits.response_timeout); connection closed"
                ),
                None => format!(
                    "no {awaited} within {limit} (limits.response_timeout); connection closed"
                ),
            };
            self.event_server_timeout(&reason, service, request_id, None, "error");
            self.refuse_connection(STATUS_BAD_TIMEOUT, &reason);
            return Flow::Close;
        }
        for p in expired.requests {
            self.route.metrics.limit_hit(Limit::ResponseTimeout);
            let service = p.service.name();
            let id = p.request_id;
            // The connection ends, with an ERR, where the proxy cannot answer for the server.
            let close = if !self.channel.is_plaintext() {
                Some(
                    "; a signed channel cannot be answered for the server: connection closed"
                        .to_owned(),
                )
            } else if p.service == Service::RegisterNodes {
                // Its late response would give aliases the proxy never learns, and the
                // server's are predictable: a request naming one would be judged as naming
                // the alias, not the node.
                Some(
                    "; the aliases it may give could not be followed: connection closed".to_owned(),
                )
            } else if !self.outstanding.abandon(id) {
                Some(format!(
                    ", and {MAX_ABANDONED} earlier ones still unanswered: connection closed"
                ))
            } else {
                None
            };
            if let Some(why) = close {
                let reason = format!(
                    "no response to request {id} ({service}) within {limit} (limits.response_timeout){why}"
                );
                self.event_server_timeout(
                    &reason,
                    service,
                    Some(id),
                    Some(p.request_handle),
                    "error",
                );
                self.refuse_connection(STATUS_BAD_TIMEOUT, &reason);
                return Flow::Close;
            }
            let reason = format!(
                "no response to request {id} ({service}) within {limit} (limits.response_timeout); answered Bad_Timeout"
            );
            self.event_server_timeout(
                &reason,
                service,
                Some(id),
                Some(p.request_handle),
                "service_fault",
            );
            self.service_fault(Fault {
                secure_channel_id: p.secure_channel_id,
                token_id: p.token_id,
                request_id: id,
                request_handle: p.request_handle,
                status: STATUS_BAD_TIMEOUT,
            });
        }
        Flow::Continue
    }

    /// `opcua-server-timeout`: what the server did not answer, and how the client was told
    /// (`service_fault`, or `error`: an ERR and the end of the connection).
    fn event_server_timeout(
        &self,
        reason: &str,
        service: &str,
        request_id: Option<u32>,
        request_handle: Option<u32>,
        answer: &str,
    ) {
        let mut e = self.event(
            "opcua-server-timeout",
            "failure",
            "refuse",
            reason.to_owned(),
        );
        e.opcua = Some(serde_json::json!({
            "service": service,
            "request_id": request_id,
            "request_handle": request_handle,
            "security_mode": self.channel.security_mode.map(SecurityMode::as_str),
            "answer": answer,
        }));
        self.audit.emit(e);
    }

    // ------------------------------------------------------------------ decisions and audit

    /// After a reload: the connection's route and policy in the new site; decisions taken under
    /// the old one are forgotten. Closes (telling the client) when the conduit is gone.
    fn follow_reload(&mut self) -> Flow {
        let site = self.watch.current();
        let registry = self.route.metrics.registry().clone();
        let quarantine = self.route.quarantine.clone();
        let Some(route) = Route::resolve(
            &site,
            Protocol::OpcUa,
            self.client_addr,
            self.device_addr,
            &registry,
            &quarantine,
        ) else {
            let reason = "a reload removed this connection's conduit; connection closed";
            self.event_plain("opcua-conduit-removed", reason);
            self.refuse_connection(STATUS_BAD_USER_ACCESS_DENIED, reason);
            return Flow::Close;
        };
        self.report_reads();
        self.judge.input = route.input(self.client_addr, self.device_addr, None);
        self.route = route;
        self.channel_changed();
        Flow::Continue
    }

    /// A decision at a channel stage; the channel's facts have just changed.
    fn decide_channel(&mut self, stage: Stage) -> Decision {
        self.channel_changed();
        let values = self.judge.channel_values(&self.channel);
        self.judge
            .decide(&self.route, channel_input(stage, &values))
    }

    /// After the channel's facts change: its input is made anew, and decisions taken on the old
    /// facts are forgotten.
    fn channel_changed(&mut self) {
        self.judge.channel_values = None;
        self.judge.decisions.clear();
    }

    /// The client's unfinished chunk took too long: it is told with an ERR `BadTimeout`.
    fn request_timed_out(&mut self) -> Flow {
        self.route.metrics.limit_hit(Limit::RequestTimeout);
        let reason = format!(
            "a chunk begun was not completed within {} (limits.request_timeout; {} bytes of it received); connection closed",
            humantime::format_duration(self.route.limits.request_timeout),
            self.from_client.len()
        );
        self.event_plain("opcua-request-timeout", &reason);
        self.refuse_connection(STATUS_BAD_TIMEOUT, &reason);
        Flow::Close
    }

    /// Nothing came from either side for the idle time: the client is told with an ERR
    /// `BadTimeout`.
    fn idle_timed_out(&mut self) -> Flow {
        self.route.metrics.limit_hit(Limit::IdleTimeout);
        let reason = format!(
            "nothing received for {} (limits.idle_timeout); connection closed",
            humantime::format_duration(self.route.limits.idle_timeout)
        );
        let mut e = self.event("opcua-idle-timeout", "success", "refuse", reason.clone());
        // Closing an idle connection is housekeeping, not an attack.
        e.event.kind = "event";
        self.audit.emit(e);
        self.refuse_connection(STATUS_BAD_TIMEOUT, &reason);
        Flow::Close
    }

    /// Tells the client why the connection ends (an ERR message); the caller closes it.
    fn refuse_connection(&mut self, status: u32, reason: &str) {
        self.to_client
            .extend_from_slice(&opcua::encode_error(status, reason));
    }

    /// No server to talk to: the client learns it from an ERR instead of waiting.
    async fn unreachable(
        &mut self,
        client: &mut TcpStream,
        reason: &str,
    ) -> Result<(), SessionError> {
        self.event_plain("opcua-server-unreachable", reason);
        client
            .write_all(&opcua::encode_error(STATUS_BAD_COMMUNICATION_ERROR, reason))
            .await
            .map_err(SessionError::Client)
    }

    fn event(
        &self,
        action: &'static str,
        outcome: &'static str,
        decision: &'static str,
        reason: String,
    ) -> audit::Event {
        self.route.event(
            self.client_addr,
            self.device_addr,
            action,
            outcome,
            decision,
            reason,
        )
    }

    fn channel_json(&self) -> serde_json::Value {
        let c = &self.channel;
        let mut o = serde_json::json!({
            "endpoint_url": c.endpoint_url,
            "security_policy": c.security_policy_uri.as_deref().map(opcua::security_policy_name),
            "security_mode": c.security_mode.map(SecurityMode::as_str),
        });
        if let (Some(cert), Some(map)) = (&c.client_certificate, o.as_object_mut()) {
            map.insert(
                "client_certificate".into(),
                serde_json::json!({
                    "thumbprint": cert.thumbprint,
                    "subject": cert.subject,
                    "application_uri": cert.application_uri,
                }),
            );
        }
        o
    }

    fn event_channel(&self, action: &'static str, stage: Stage, decision: &Decision) {
        let (name, outcome, reason, rule) = verdict::names(decision, self.route.mode);
        let mut e = self.event(action, outcome, name, reason);
        e.rule = Some(audit::Rule { name: rule });
        let mut detail = self.channel_json();
        if let Some(map) = detail.as_object_mut() {
            map.insert("stage".into(), stage.as_str().into());
            if stage == Stage::Uninspected && decision.is_allow() {
                map.insert("inspected".into(), serde_json::Value::Bool(false));
            }
        }
        e.opcua = Some(detail);
        self.audit.emit(e);
    }

    fn event_request(
        &self,
        sequence: SequenceHeader,
        request: &ServiceRequest,
        decision: &Decision,
    ) {
        let (name, outcome, reason, rule) = verdict::names(decision, self.route.mode);
        let mut e = self.event("opcua-request", outcome, name, reason);
        e.rule = Some(audit::Rule { name: rule });
        e.opcua = Some(serde_json::json!({
            "service": request.service.name(),
            "type_id": request.type_id,
            "request_id": sequence.request_id,
            "request_handle": request.request_handle,
            "access": access(request.service).as_str(),
            "security_mode": self.channel.security_mode.map(SecurityMode::as_str),
            "nodes": audit_nodes(request),
        }));
        self.audit.emit(e);
    }

    fn event_plain(&self, action: &'static str, reason: &str) {
        let e = self.event(action, "failure", "refuse", reason.to_owned());
        self.audit.emit(e);
    }

    fn malformed(&self, side: Side, error: &OpcUaError, bytes: &[u8]) {
        self.route.metrics.malformed();
        let mut e = self.event("opcua-malformed", "failure", "refuse", error.to_string());
        let head: String = bytes
            .iter()
            .take(HEADER_LEN.saturating_mul(8))
            .map(|b| format!("{b:02x}"))
            .collect();
        let from = match side {
            Side::Client => "client",
            Side::Server => "server",
        };
        e.opcua = Some(serde_json::json!({ "error": error.kind(), "from": from, "raw_hex": head }));
        self.audit.emit(e);
        if side == Side::Client {
            // A violation; the connection closes anyway.
            self.route
                .violation(self.client_addr, self.device_addr, &error.to_string());
        }
    }

    /// Reports allowed reads, browses and subscription requests counted since the last report.
    fn report_reads(&mut self) {
        if self.reads_allowed == 0 {
            return;
        }
        let count = self.reads_allowed;
        self.reads_allowed = 0;
        self.reads_reported = Instant::now();
        let mut e = self.event("opcua-reads", "success", "allow", String::new());
        e.opcua = Some(serde_json::json!({ "allowed_requests": count }));
        self.audit.emit(e);
    }
}

/// The conduit's policy for one connection, with its decision cache.
struct Judge {
    input: ConnectionInput,
    /// The channel's facts as policy input, made anew after they change (`None` then).
    channel_values: Option<ChannelValues>,
    /// Decisions by item, for the channel as it is now: a request the connection sent before
    /// (a cyclic Read, Publish) needs no second evaluation; policies are pure functions of their
    /// input, which holds no request handle or timestamp. Cleared when the channel's facts
    /// change, and whole when full.
    decisions: BTreeMap<Item, Arc<Decision>>,
}

impl Judge {
    fn decide(&self, route: &Route, opcua: Value) -> Decision {
        let started = std::time::Instant::now();
        let decision = route.policy.decide(self.input.opcua_input(opcua));
        route.metrics.decision_time(started.elapsed());
        decision
    }

    /// One decision per item; the first denial refuses the request whole.
    fn decide_request(
        &mut self,
        route: &Route,
        channel: &ChannelFacts,
        request: &ServiceRequest,
    ) -> Arc<Decision> {
        let mut decision = None;
        for item in service_items(request) {
            let d = self.decide_item(route, channel, item);
            let deny = !d.is_allow();
            decision = Some(d);
            if deny {
                break;
            }
        }
        decision.unwrap_or_else(|| {
            Arc::new(Decision::Deny {
                reason: "the request has nothing to judge".into(),
                rule: crate::policy::RULE_UNDEFINED.into(),
            })
        })
    }

    /// The decision on one item of a request, from the cache when the connection asked it
    /// before on this channel.
    fn decide_item(&mut self, route: &Route, channel: &ChannelFacts, item: Item) -> Arc<Decision> {
        if let Some(d) = self.decisions.get(&item) {
            return d.clone();
        }
        let values = self.channel_values(channel);
        let decision = Arc::new(self.decide(route, service_input(&values, &item)));
        if self.decisions.len() >= MAX_CACHED_DECISIONS {
            self.decisions.clear();
        }
        self.decisions.insert(item, decision.clone());
        decision
    }

    /// The channel facts as policy input, made once after each change.
    fn channel_values(&mut self, channel: &ChannelFacts) -> ChannelValues {
        match &self.channel_values {
            Some(v) => v.clone(),
            None => {
                let v = channel.values();
                self.channel_values = Some(v.clone());
                v
            }
        }
    }
}

/// Appends `chunk` to `out`; with `renumber`, gives it the sequence number after `last` (at
/// `offset`). Returns the sequence number it carries now, if it has one.
fn forward(
    out: &mut Vec<u8>,
    chunk: &[u8],
    offset: usize,
    renumber: bool,
    last: Option<u32>,
) -> Option<u32> {
    let start = out.len();
    out.extend_from_slice(chunk);
    let end = offset.checked_add(4)?;
    let field: [u8; 4] = chunk.get(offset..end)?.try_into().ok()?;
    let original = u32::from_le_bytes(field);
    let number = match (renumber, last) {
        (true, Some(last)) => next_sequence_number(last),
        _ => original,
    };
    if number != original
        && let Some(slot) = out.get_mut(start.checked_add(offset)?..start.checked_add(end)?)
    {
        slot.copy_from_slice(&number.to_le_bytes());
    }
    Some(number)
}

fn reason(decision: &Decision) -> String {
    match decision {
        Decision::Deny { reason, rule } if reason.is_empty() => rule.clone(),
        Decision::Deny { reason, .. } => reason.clone(),
        Decision::Allow { rule } => rule.clone(),
    }
}

/// The node ids a request names, for its audit event (at most a few).
fn audit_nodes(request: &ServiceRequest) -> Vec<String> {
    use crate::proto::opcua::DecodedRequest as R;
    const MAX: usize = 16;
    let list = |ids: Vec<String>| ids.into_iter().take(MAX).collect::<Vec<_>>();
    match &request.request {
        R::Write(r) => list(
            r.nodes_to_write
                .iter()
                .flatten()
                .map(|w| w.node_id.to_string())
                .collect(),
        ),
        R::Call(r) => list(
            r.methods_to_call
                .iter()
                .flatten()
                .map(|c| c.method_id.to_string())
                .collect(),
        ),
        R::DeleteNodes(r) => list(
            r.nodes_to_delete
                .iter()
                .flatten()
                .map(|n| n.node_id.to_string())
                .collect(),
        ),
        _ => Vec::new(),
    }
}

/// The client's Hello with buffer sizes within `ours` (`limits.opcua`): the server then sends
/// no chunk larger than `ours.max_chunk_size` and no message larger than
/// `ours.max_message_size`.
fn clamp_hello(h: Hello<'_>, ours: OpcUaFrames) -> Hello<'_> {
    Hello {
        receive_buffer_size: h.receive_buffer_size.min(ours.max_chunk_size),
        send_buffer_size: h.send_buffer_size.min(ours.max_chunk_size),
        max_message_size: cap(h.max_message_size, ours.max_message_size),
        max_chunk_count: cap(h.max_chunk_count, ours.max_chunks),
        ..h
    }
}

/// The server's Acknowledge, likewise for what the client sends.
fn clamp_acknowledge(a: Acknowledge, ours: OpcUaFrames) -> Acknowledge {
    Acknowledge {
        receive_buffer_size: a.receive_buffer_size.min(ours.max_chunk_size),
        send_buffer_size: a.send_buffer_size.min(ours.max_chunk_size),
        max_message_size: cap(a.max_message_size, ours.max_message_size),
        max_chunk_count: cap(a.max_chunk_count, ours.max_chunks),
        ..a
    }
}

/// A negotiated limit within ours; 0 ("no limit") becomes ours.
fn cap(value: u32, ours: usize) -> u32 {
    let ours = u32::try_from(ours).unwrap_or(u32::MAX);
    if value == 0 { ours } else { value.min(ours) }
}

/// Room for the next read.
fn reserve(buf: &mut Vec<u8>) {
    if buf.capacity().saturating_sub(buf.len()) < READ_SIZE / 2 {
        buf.reserve(READ_SIZE);
    }
}

/// Now as an OPC UA DateTime: 100 ns intervals since 1601-01-01 UTC.
fn ua_now() -> i64 {
    /// 1601-01-01 to 1970-01-01 in 100 ns intervals.
    const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ticks = i64::try_from(since.as_nanos() / 100).unwrap_or(i64::MAX);
    ticks.saturating_add(UNIX_EPOCH_TICKS)
}

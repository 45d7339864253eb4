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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use regorus::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Protocol, Route, SessionError, SiteWatch};
use crate::audit::{self, Audit};
use crate::config::{Mode, OnDeny};
use crate::metrics::Limit;
use crate::policy::opcua::{
    CertificateFacts, ChannelFacts, ChannelValues, Item, SecurityMode, Stage, access,
    channel_input, service_input, service_items, session_identity,
};
use crate::policy::{ConnectionInput, Decision};
use crate::proto::opcua::{
    self, Acknowledge, Chunk, ChunkBody, ChunkType, HEADER_LEN, Hello, MAX_CHUNK_COUNT,
    MAX_CHUNK_SIZE, MAX_MESSAGE_SIZE, MAX_PARTIAL_MESSAGES, OpcUaError, OpenHeader, Reassembler,
    STATUS_BAD_COMMUNICATION_ERROR, STATUS_BAD_SECURITY_POLICY_REJECTED,
    STATUS_BAD_TCP_MESSAGE_TYPE_INVALID, STATUS_BAD_TIMEOUT, STATUS_BAD_USER_ACCESS_DENIED,
    SYMMETRIC_SEQUENCE_OFFSET, SequenceHeader, ServiceRequest, SymmetricHeader,
    next_sequence_number,
};
/// How long a client has to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
// The server's connect timeout (then an ERR `BadCommunicationError`), the idle timeout (OPC UA
// clients keep sessions alive with Publish or Read requests well within it) and the time a
// chunk once begun has to be completed (then ERR `BadTimeout`) are the site's `limits:`, read
// from the route so that they follow reloads.
/// Allowed reads, browses and subscription requests are audited as one count per connection at
/// most this often (and when it ends), not one event each.
pub const READ_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Bytes read from one side and not yet judged: two whole chunks.
const MAX_BUFFERED: usize = 2 * MAX_CHUNK_SIZE as usize;
/// Read at least this much at a time.
const READ_SIZE: usize = 16 * 1024;
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

/// Chunks of one client message, held back until the message is judged.
#[derive(Debug)]
struct Held {
    request_id: u32,
    bytes: Vec<u8>,
    /// Lengths of the chunks in `bytes`, in order.
    chunks: Vec<usize>,
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
    end
}

struct Session {
    client_addr: SocketAddr,
    device_addr: SocketAddr,
    route: Route,
    /// Reloads replace `route` and `input` from the next message on.
    watch: SiteWatch,
    audit: Audit,
    input: ConnectionInput,
    channel: ChannelFacts,
    /// `channel` as policy input, made anew after it changes (`None` then).
    channel_values: Option<ChannelValues>,
    /// Decisions by item, for the channel as it is now: a request the connection sent before
    /// (a cyclic Read, Publish) needs no second evaluation; policies are pure functions of their
    /// input, which holds no request handle or timestamp. Cleared when the channel's facts
    /// change, and whole when full.
    decisions: BTreeMap<Item, Decision>,
    phase: Phase,
    readability: Readability,
    reassembler: Reassembler,
    held: Vec<Held>,
    /// The last sequence number sent to each side, on a None channel (where the proxy keeps
    /// them consecutive after dropping or adding a message).
    last_to_server: Option<u32>,
    last_to_client: Option<u32>,
    /// Whether the proxy has dropped or added a message: from then on it renumbers.
    renumber: bool,
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
        Session {
            client_addr,
            device_addr,
            route,
            watch,
            audit,
            input,
            channel: ChannelFacts::default(),
            channel_values: None,
            decisions: BTreeMap::new(),
            phase: Phase::Hello,
            readability: Readability::Unknown,
            reassembler: Reassembler::default(),
            held: Vec::new(),
            last_to_server: None,
            last_to_client: None,
            renumber: false,
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
        // One timer for the session, pushed back on activity (which tokio does without the
        // timer driver's lock): the idle deadline, or while the client has begun a chunk and
        // not finished it, that chunk's.
        let mut partial_since: Option<Instant> = None;
        let idle = tokio::time::sleep(self.route.limits.idle_timeout);
        tokio::pin!(idle);
        // The Hello (and whatever the client sent with it) was judged before the server was
        // connected.
        self.flush(client, server).await?;
        loop {
            let read_client = self.from_client.len() < MAX_BUFFERED;
            let read_server = self.from_server.len() < MAX_BUFFERED;
            reserve(&mut self.from_client);
            reserve(&mut self.from_server);
            let flow = tokio::select! {
                r = client.read_buf(&mut self.from_client), if read_client => {
                    let n = r.map_err(SessionError::Client)?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.route.metrics.to_device(n);
                    let buffered = self.from_client.len();
                    let flow = self.chunks(Side::Client);
                    partial_since = if self.from_client.is_empty() {
                        None
                    } else if self.from_client.len() < buffered || partial_since.is_none() {
                        Some(Instant::now())
                    } else {
                        partial_since
                    };
                    flow
                }
                r = server.read_buf(&mut self.from_server), if read_server => {
                    let n = r.map_err(SessionError::Device)?;
                    if n == 0 {
                        self.flush(client, server).await?;
                        return Ok(());
                    }
                    self.route.metrics.to_client(n);
                    self.chunks(Side::Server)
                }
                () = &mut idle => self.timed_out(partial_since),
                () = self.watch.reloaded() => self.follow_reload(),
            };
            let now = Instant::now();
            let limits = self.route.limits;
            let next = match partial_since {
                Some(since) => since.checked_add(limits.request_timeout).unwrap_or(since),
                None => now.checked_add(limits.idle_timeout).unwrap_or(now),
            };
            idle.as_mut().reset(next);
            if now.saturating_duration_since(self.reads_reported) >= READ_SUMMARY_INTERVAL {
                self.report_reads();
            }
            self.flush(client, server).await?;
            if flow == Flow::Close {
                return Ok(());
            }
        }
    }

    async fn flush(
        &mut self,
        client: &mut TcpStream,
        server: &mut TcpStream,
    ) -> Result<(), SessionError> {
        super::flush(client, &mut self.to_client, server, &mut self.to_server).await
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
            let rest = buf.get(used..).unwrap_or_default();
            match opcua::parse_chunk(rest, MAX_CHUNK_SIZE) {
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
            Side::Client => self.from_client = buf,
            Side::Server => self.from_server = buf,
        }
        flow
    }

    fn client_chunk(&mut self, chunk: &Chunk<'_>) -> Flow {
        match (self.phase, chunk.body) {
            (Phase::Hello, ChunkBody::Hello(hello)) => {
                self.channel.endpoint_url = hello.endpoint_url.to_owned();
                self.to_server
                    .extend_from_slice(&opcua::encode_hello(&clamp_hello(hello)));
                self.phase = Phase::Open;
                Flow::Continue
            }
            (Phase::Open | Phase::Channel, ChunkBody::Open(open)) => self.open(chunk, &open),
            (Phase::Channel, ChunkBody::Message(header)) => self.message(chunk, &header),
            (Phase::Channel, ChunkBody::Close(_)) => {
                self.forward_to_server(chunk.bytes, SYMMETRIC_SEQUENCE_OFFSET);
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
            super::decision_name(&decision, self.route.mode),
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
        self.forward_to_server(chunk.bytes, offset);
        self.phase = Phase::Channel;
        Flow::Continue
    }

    /// MSG from the client, on an open channel.
    fn message(&mut self, chunk: &Chunk<'_>, header: &SymmetricHeader<'_>) -> Flow {
        if self.readability == Readability::Uninspected {
            self.to_server.extend_from_slice(chunk.bytes);
            return Flow::Continue;
        }
        let mut chunk_held = false;
        match self.read_message(chunk, header, &mut chunk_held) {
            Ok(Some((sequence, request))) => self.judge(sequence, &request, header, chunk.bytes),
            Ok(None) => Flow::Continue,
            Err(e) if self.readability == Readability::Unknown => {
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

    /// The message a chunk completes, decoded; `None` while more chunks are due (the chunk is
    /// held: `chunk_held`) or after an abort (the held chunks and the abort go to the server,
    /// which discards them as the proxy does).
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
        let held = self.held.iter().position(|h| h.request_id == request_id);
        match (chunk.header.chunk_type, held) {
            // The common case: a message in one chunk, decoded where it lies.
            (ChunkType::Final, None) => Ok(Some((sequence, opcua::decode_request(body)?))),
            (ChunkType::Abort, _) => {
                self.reassembler.push(request_id, ChunkType::Abort, body)?;
                if let Some(i) = held {
                    let h = self.held.swap_remove(i);
                    self.forward_held(&h);
                }
                self.forward_to_server(chunk.bytes, SYMMETRIC_SEQUENCE_OFFSET);
                Ok(None)
            }
            (chunk_type, _) => {
                if held.is_none() && self.held.len() >= MAX_PARTIAL_MESSAGES {
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
                            request_id,
                            bytes: Vec::new(),
                            chunks: Vec::new(),
                        });
                        self.held.last_mut()
                    }
                };
                if let Some(h) = h {
                    h.bytes.extend_from_slice(chunk.bytes);
                    h.chunks.push(chunk.bytes.len());
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
        self.reassembler = Reassembler::default();
        let decision = self.decide_channel(Stage::Uninspected);
        self.route.metrics.request(
            "channel-uninspected",
            super::decision_name(&decision, self.route.mode),
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
        // Nothing is allowed that cannot be audited (audit.when_full: fail_closed).
        let audit_down = !self.audit.healthy();
        // One decision per item; the first denial refuses the request whole.
        let mut decision = audit_down.then(super::audit_unavailable);
        let items = if audit_down {
            Vec::new()
        } else {
            service_items(request)
        };
        for item in items {
            let d = self.decide_item(item);
            let deny = !d.is_allow();
            decision = Some(d);
            if deny {
                break;
            }
        }
        let mut decision = decision.unwrap_or_else(|| Decision::Deny {
            reason: "the request has nothing to judge".into(),
            rule: crate::policy::RULE_UNDEFINED.into(),
        });
        // Allowed writes, calls and node changes take from the conduit's bucket; over the
        // rate, the request is refused as a policy deny would be.
        if decision.is_allow()
            && matches!(
                access(request.service),
                "write" | "call" | "node_management"
            )
            && let Some(bucket) = &self.route.write_rate
            && !bucket.take()
        {
            self.route.metrics.limit_hit(Limit::WriteRate);
            decision = Decision::Deny {
                reason: super::modbus::REASON_WRITE_RATE.into(),
                rule: super::modbus::RULE_WRITE_RATE.into(),
            };
        }
        let counted = if audit_down {
            "deny"
        } else {
            super::decision_name(&decision, self.route.mode)
        };
        self.route.metrics.request(request.service.name(), counted);
        let summarized = matches!(
            access(request.service),
            "read" | "browse" | "subscribe" | "session" | "discovery"
        );
        if decision.is_allow() && summarized && self.audit.reads() == audit::Reads::Count {
            self.reads_allowed = self.reads_allowed.saturating_add(1);
        } else {
            self.event_request(sequence, request, &decision);
        }
        if !decision.is_allow()
            && !audit_down
            && self
                .route
                .violation(self.client_addr, self.device_addr, &reason(&decision))
        {
            self.refuse_connection(STATUS_BAD_USER_ACCESS_DENIED, "source quarantined");
            return Flow::Close;
        }
        if decision.is_allow()
            && let Some(identity) = session_identity(request)
        {
            self.channel.identity = Some(identity);
            self.channel_changed();
        }
        let held = self
            .held
            .iter()
            .position(|h| h.request_id == sequence.request_id)
            .map(|i| self.held.swap_remove(i));
        if decision.is_allow() || (self.route.mode == Mode::Monitor && !audit_down) {
            match &held {
                Some(h) => self.forward_held(h),
                None => self.forward_to_server(current, SYMMETRIC_SEQUENCE_OFFSET),
            }
            return Flow::Continue;
        }
        let why = format!("request refused: {}", reason(&decision));
        if self.route.on_deny == OnDeny::Close || !self.channel.is_plaintext() {
            // On a signed channel a fault cannot be forged, nor the sequence renumbered.
            self.refuse_connection(STATUS_BAD_USER_ACCESS_DENIED, &why);
            return Flow::Close;
        }
        // Dropped: the chunks after it are renumbered, and so are the server's after the fault.
        self.renumber = true;
        let number = self.last_to_client.map_or(1, next_sequence_number);
        self.last_to_client = Some(number);
        self.to_client
            .extend_from_slice(&opcua::encode_service_fault(
                header.secure_channel_id,
                header.token_id,
                number,
                sequence.request_id,
                request.request_handle,
                STATUS_BAD_USER_ACCESS_DENIED,
                ua_now(),
            ));
        Flow::Continue
    }

    fn forward_held(&mut self, held: &Held) {
        let mut at = 0usize;
        for len in &held.chunks {
            let end = at.saturating_add(*len);
            if let Some(bytes) = held.bytes.get(at..end) {
                self.forward_to_server(bytes, SYMMETRIC_SEQUENCE_OFFSET);
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
                self.to_client
                    .extend_from_slice(&opcua::encode_acknowledge(&clamp_acknowledge(ack)));
                Flow::Continue
            }
            ChunkBody::Error(_) => {
                self.to_client.extend_from_slice(chunk.bytes);
                Flow::Close
            }
            ChunkBody::Open(open) => {
                let offset = chunk.bytes.len().saturating_sub(open.rest.len());
                self.forward_to_client(chunk.bytes, offset);
                Flow::Continue
            }
            ChunkBody::Message(_) | ChunkBody::Close(_) => {
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
        self.input = route.input(self.client_addr, self.device_addr, None);
        self.route = route;
        self.channel_changed();
        Flow::Continue
    }

    fn decide(&self, opcua: Value) -> Decision {
        let started = std::time::Instant::now();
        let decision = self.route.policy.decide(self.input.opcua_input(opcua));
        self.route.metrics.decision_time(started.elapsed());
        decision
    }

    /// The decision on one item of a request, from the cache when the connection asked it
    /// before on this channel.
    fn decide_item(&mut self, item: Item) -> Decision {
        if let Some(d) = self.decisions.get(&item) {
            return d.clone();
        }
        let values = self.channel_values();
        let decision = self.decide(service_input(&values, &item));
        if self.decisions.len() >= MAX_CACHED_DECISIONS {
            self.decisions.clear();
        }
        self.decisions.insert(item, decision.clone());
        decision
    }

    /// A decision at a channel stage; the channel's facts have just changed.
    fn decide_channel(&mut self, stage: Stage) -> Decision {
        self.channel_changed();
        let values = self.channel_values();
        self.decide(channel_input(stage, &values))
    }

    /// The channel facts as policy input, made once after each change.
    fn channel_values(&mut self) -> ChannelValues {
        match &self.channel_values {
            Some(v) => v.clone(),
            None => {
                let v = self.channel.values();
                self.channel_values = Some(v.clone());
                v
            }
        }
    }

    /// After the channel's facts change: its input is made anew, and decisions taken on the old
    /// facts are forgotten.
    fn channel_changed(&mut self) {
        self.channel_values = None;
        self.decisions.clear();
    }

    /// The session's timer fired: the client's unfinished chunk took too long, or nothing came
    /// from either side for the idle time. The client is told with an ERR `BadTimeout`.
    fn timed_out(&mut self, partial_since: Option<Instant>) -> Flow {
        let limits = self.route.limits;
        if partial_since.is_some() {
            self.route.metrics.limit_hit(Limit::RequestTimeout);
            let reason = format!(
                "a chunk begun was not completed within {} (limits.request_timeout; {} bytes of it received); connection closed",
                humantime::format_duration(limits.request_timeout),
                self.from_client.len()
            );
            self.event_plain("opcua-request-timeout", &reason);
            self.refuse_connection(STATUS_BAD_TIMEOUT, &reason);
        } else {
            self.route.metrics.limit_hit(Limit::IdleTimeout);
            let reason = format!(
                "nothing received for {} (limits.idle_timeout); connection closed",
                humantime::format_duration(limits.idle_timeout)
            );
            let mut e = self.event("opcua-idle-timeout", "success", "refuse", reason.clone());
            // Closing an idle connection is housekeeping, not an attack.
            e.event.kind = "event";
            self.audit.emit(e);
            self.refuse_connection(STATUS_BAD_TIMEOUT, &reason);
        }
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
        let (name, outcome, reason, rule) = super::verdict(decision, self.route.mode);
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
        let (name, outcome, reason, rule) = super::verdict(decision, self.route.mode);
        let mut e = self.event("opcua-request", outcome, name, reason);
        e.rule = Some(audit::Rule { name: rule });
        e.opcua = Some(serde_json::json!({
            "service": request.service.name(),
            "type_id": request.type_id,
            "request_id": sequence.request_id,
            "request_handle": request.request_handle,
            "access": access(request.service),
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

/// The client's Hello with buffer sizes within ours: the server then sends no chunk larger
/// than [`MAX_CHUNK_SIZE`] and no message larger than [`MAX_MESSAGE_SIZE`].
fn clamp_hello(h: Hello<'_>) -> Hello<'_> {
    Hello {
        receive_buffer_size: h.receive_buffer_size.min(MAX_CHUNK_SIZE),
        send_buffer_size: h.send_buffer_size.min(MAX_CHUNK_SIZE),
        max_message_size: cap(h.max_message_size, MAX_MESSAGE_SIZE),
        max_chunk_count: cap(h.max_chunk_count, MAX_CHUNK_COUNT),
        ..h
    }
}

/// The server's Acknowledge, likewise for what the client sends.
fn clamp_acknowledge(a: Acknowledge) -> Acknowledge {
    Acknowledge {
        receive_buffer_size: a.receive_buffer_size.min(MAX_CHUNK_SIZE),
        send_buffer_size: a.send_buffer_size.min(MAX_CHUNK_SIZE),
        max_message_size: cap(a.max_message_size, MAX_MESSAGE_SIZE),
        max_chunk_count: cap(a.max_chunk_count, MAX_CHUNK_COUNT),
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

//! One Modbus/TCP session through the gateway: requests from the client are parsed, judged by the
//! conduit's policy and forwarded or refused; responses from the device are matched to the
//! requests in flight by transaction id and only then passed back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::driver::{self, Core, Flow, Io, Outgoing};
use super::verdict::{self, Action, Judged, Log};
use super::{Protocol, Route, SessionError, SiteWatch};
use crate::audit::{self, Audit, Event};
use crate::config::{Mode, OnDeny};
use crate::metrics::{Limit, Metrics};
use crate::policy::{ConnectionInput, Decision, Policy, RULE_BUDGET, RegisterMap};
use crate::proto::modbus::{self, ExceptionCode, MAX_ADU_LEN, ModbusError, Response};

// The bounds of a session (requests in flight, connect, response, request and idle timeouts)
// are the site's `limits:` (`crate::config::Limits`), read from the route so that they follow
// reloads: in flight beyond the bound, the client is not read until the device answers; a
// device that does not accept the connection in time gets requests 0x0A Gateway Path
// Unavailable, one that does not answer in time 0x0B Gateway Target Device Failed to Respond.

/// Decisions remembered per connection. Policies are pure functions of their input, and for one
/// connection the input is fixed but for the request itself, so a request seen before (polling
/// reads, a repeated heartbeat) needs no second evaluation. Cleared whole when full.
pub const MAX_CACHED_DECISIONS: usize = 512;
/// Allowed reads are audited as one count per conduit and connection at most this often (and
/// when the connection ends), not one event each: polling would drown the SOC.
pub const READ_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Read buffer per direction: room for a few whole frames, so one read can carry a batch.
const BUF_LEN: usize = 8 * MAX_ADU_LEN;

/// `d` after `t` (saturating: a deadline that cannot be represented is `t`).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// A forwarded request awaiting its response.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    transaction_id: u16,
    unit_id: u8,
    function: u8,
    deadline: Instant,
}

/// Why a session ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClosed,
    DeviceClosed,
    Refused,
    Idle,
    /// A reload removed the connection's conduit.
    ConduitRemoved,
    /// A request begun was not completed within `limits.request_timeout`.
    RequestTimeout,
}

pub async fn session(
    mut client: TcpStream,
    client_addr: SocketAddr,
    device_addr: SocketAddr,
    route: Route,
    register_map: Option<Arc<RegisterMap>>,
    watch: SiteWatch,
    audit: Audit,
) -> Result<(), SessionError> {
    let mut s = ModbusSession::new(
        client_addr,
        device_addr,
        route,
        register_map,
        watch,
        audit,
        Instant::now(),
    );
    let connect_timeout = s.route.limits.connect_timeout;
    let mut device = match tokio::time::timeout(
        connect_timeout,
        super::connect_transparent(client_addr, device_addr),
    )
    .await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            s.device_unreachable(&format!("device unreachable: {e}"), Instant::now());
            return driver::drive(&mut s, &mut client, None).await.map(|_| ());
        }
        Err(_) => {
            s.route.metrics.limit_hit(Limit::ConnectTimeout);
            s.device_unreachable(
                &format!(
                    "device did not accept the connection within {} (limits.connect_timeout)",
                    humantime::format_duration(connect_timeout)
                ),
                Instant::now(),
            );
            return driver::drive(&mut s, &mut client, None).await.map(|_| ());
        }
    };
    let _ = client.set_nodelay(true);
    let _ = device.set_nodelay(true);
    s.connected(Instant::now());
    let end = driver::drive(&mut s, &mut client, Some(&mut device)).await;
    s.report_reads(Instant::now());
    if let Err(e @ SessionError::Stalled { .. }) = &end {
        s.event_plain(
            "modbus-write-timeout",
            "failure",
            &format!("{e}; connection closed"),
        );
    }
    let end = end?;
    tracing::debug!(client = %client_addr, device = %device_addr, ?end, "modbus session ended");
    Ok(())
}

/// The conduit's policy for one connection, with its decision cache.
struct Judge {
    policy: Arc<Policy>,
    input: ConnectionInput,
    /// Decisions by request (unit id + PDU): see [`MAX_CACHED_DECISIONS`].
    decisions: HashMap<Box<[u8]>, Arc<Decision>>,
    key: Vec<u8>,
    /// Time spent in evaluations (cache hits are not measured).
    evaluation: prometheus_client::metrics::histogram::Histogram,
    /// For `limit_hits{limit="policy_time"}`.
    metrics: Arc<Metrics>,
}

impl Judge {
    fn new(
        policy: Arc<Policy>,
        input: ConnectionInput,
        evaluation: prometheus_client::metrics::histogram::Histogram,
        metrics: Arc<Metrics>,
    ) -> Judge {
        Judge {
            policy,
            input,
            // Grown as requests are seen, not reserved: most connections poll a handful of
            // requests, and an idle connection should cost little (scripts/soak).
            decisions: HashMap::new(),
            key: Vec::with_capacity(MAX_ADU_LEN),
            evaluation,
            metrics,
        }
    }

    /// The policy's decision for this request, from the cache when it was seen before.
    fn decide(&mut self, frame: &modbus::RequestFrame<'_>) -> Arc<Decision> {
        self.key.clear();
        self.key.push(frame.header.unit_id);
        self.key.extend_from_slice(frame.pdu);
        if let Some(d) = self.decisions.get(self.key.as_slice()) {
            return d.clone();
        }
        let started = std::time::Instant::now();
        let input = self.input.modbus_input(frame.header.unit_id, &frame.body);
        let decision = Arc::new(self.policy.decide(input));
        self.evaluation.observe(started.elapsed().as_secs_f64());
        if let Decision::Deny { rule, .. } = &*decision
            && rule == RULE_BUDGET
        {
            self.metrics.limit_hit(Limit::PolicyTime);
        }
        if self.decisions.len() >= MAX_CACHED_DECISIONS {
            self.decisions.clear();
        }
        self.decisions
            .insert(self.key.as_slice().into(), decision.clone());
        decision
    }
}

/// One Modbus/TCP connection through the gateway, without I/O: [`driver::drive`] feeds it what
/// each side sends and its timer, and writes what it queues (see [`Core`]).
pub struct ModbusSession {
    client_addr: SocketAddr,
    device_addr: SocketAddr,
    route: Route,
    /// Reloads replace `route` and `judge` from the next request on.
    watch: SiteWatch,
    audit: Audit,
    judge: Judge,
    /// Allowed reads not yet audited, and when they were last reported.
    reads_allowed: u64,
    reads_reported: Instant,
    in_flight: Vec<InFlight>,
    from_client: Box<[u8; BUF_LEN]>,
    from_client_len: usize,
    from_device: Box<[u8; BUF_LEN]>,
    from_device_len: usize,
    to_device: Vec<u8>,
    to_client: Vec<u8>,
    /// When the last bytes came from the client.
    last_activity: Instant,
    /// When the client's unfinished request began (see [`ModbusSession::partial_since`]).
    partial_since: Option<Instant>,
    /// When the session's one timer fires: never earlier than needed by much and rarely
    /// moved. It is brought forward only when a request's deadline falls before it (the first
    /// request after a quiet spell), and each time it fires the session works out what is
    /// really due and pushes it back, which tokio does without taking the timer driver's lock.
    /// The same timer cuts off a client that began a request and did not finish it: one that
    /// sends half a header and waits holds a connection, not the gateway.
    timer: Instant,
    /// With no device to talk to, each well-formed request is answered with this exception
    /// until the client leaves (or idles out), so that it learns the path is down instead of
    /// hanging.
    device_down: Option<ExceptionCode>,
}

impl std::fmt::Debug for ModbusSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSession")
            .field("client", &self.client_addr)
            .field("device", &self.device_addr)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl ModbusSession {
    /// The session of a connection from `client_addr` to `device_addr` along `route`, begun
    /// at `now`; the device's `register_map` goes into the policy input.
    pub fn new(
        client_addr: SocketAddr,
        device_addr: SocketAddr,
        route: Route,
        register_map: Option<Arc<RegisterMap>>,
        watch: SiteWatch,
        audit: Audit,
        now: Instant,
    ) -> ModbusSession {
        let input = route.input(client_addr, device_addr, register_map);
        ModbusSession {
            client_addr,
            device_addr,
            judge: Judge::new(
                route.policy.clone(),
                input,
                route.metrics.decision_histogram(),
                route.metrics.registry().clone(),
            ),
            in_flight: Vec::with_capacity(route.limits.in_flight_per_connection),
            timer: after(now, route.limits.idle_timeout),
            route,
            watch,
            audit,
            reads_allowed: 0,
            reads_reported: now,
            from_client: Box::new([0; BUF_LEN]),
            from_client_len: 0,
            from_device: Box::new([0; BUF_LEN]),
            from_device_len: 0,
            // Grown on first use and kept (cleared, not freed, after each flush).
            to_device: Vec::new(),
            to_client: Vec::new(),
            last_activity: now,
            partial_since: None,
            device_down: None,
        }
    }

    /// The connection to the device is up at `now`: the idle timeout counts from here.
    pub fn connected(&mut self, now: Instant) {
        self.last_activity = now;
        self.timer = after(now, self.route.limits.idle_timeout);
    }

    /// The device could not be reached (`reason`): audited, and from now on every request is
    /// answered 0x0A Gateway Path Unavailable.
    pub fn device_unreachable(&mut self, reason: &str, now: Instant) {
        self.event_plain("modbus-device-unreachable", "failure", reason);
        self.device_down = Some(ExceptionCode::GatewayPathUnavailable);
        self.timer = after(now, self.route.limits.idle_timeout);
    }

    /// After the requests in the client buffer were judged at `now` (`buffered` bytes were
    /// there before): the unfinished request's start, and the timer brought forward to the
    /// earliest deadline if that falls before it.
    fn judged(&mut self, buffered: usize, now: Instant) {
        self.partial_since = self.partial_since(self.partial_since, buffered, now);
        if let Some(due) = self.next_due(self.partial_since)
            && due < self.timer
        {
            self.timer = due;
        }
    }

    /// Bytes from the client with no device: each well-formed request is answered with
    /// the exception of [`ModbusSession::device_down`], a malformed one as a device would.
    fn answer_alone(&mut self, code: ExceptionCode, now: Instant) -> Flow<End> {
        let mut used_total = 0usize;
        let mut flow = Flow::Continue;
        loop {
            let rest = self
                .from_client
                .get(used_total..self.from_client_len)
                .unwrap_or_default();
            match modbus::parse_request(rest) {
                Ok(Some((frame, used))) => {
                    self.to_client
                        .extend_from_slice(&modbus::exception_response(
                            &frame.header,
                            frame.body.function_code(),
                            code,
                        ));
                    used_total = used_total.saturating_add(used);
                }
                Ok(None) => break,
                // What the device would answer, whether it is there or not.
                Err(e) => match self.invalid_request(rest, e) {
                    Invalid::Answered {
                        response,
                        used,
                        quarantined,
                    } => {
                        self.to_client.extend_from_slice(&response);
                        used_total = used_total.saturating_add(used);
                        if quarantined {
                            flow = Flow::Drop(End::Refused);
                            break;
                        }
                    }
                    Invalid::Incomplete => break,
                    Invalid::Framing => {
                        flow = Flow::Drop(End::Refused);
                        break;
                    }
                },
            }
        }
        self.from_client
            .copy_within(used_total..self.from_client_len, 0);
        self.from_client_len = self.from_client_len.saturating_sub(used_total);
        // A request begun must still be finished in time; else the idle bound applies.
        let wait = if self.from_client_len > 0 {
            self.route.limits.request_timeout
        } else {
            self.route.limits.idle_timeout
        };
        self.timer = after(now, wait);
        flow
    }

    /// When the client's unfinished request began: `None` when the buffer holds none (or only
    /// whole requests held back by the in-flight bound); `now` when this read left a new one
    /// (`buffered` was the length before judging); else unchanged.
    fn partial_since(
        &self,
        was: Option<Instant>,
        buffered: usize,
        now: Instant,
    ) -> Option<Instant> {
        if self.from_client_len == 0
            || self.in_flight.len() >= self.route.limits.in_flight_per_connection
        {
            None
        } else if self.from_client_len < buffered || was.is_none() {
            Some(now)
        } else {
            was
        }
    }

    /// The earliest deadline: a response due, or the unfinished request's.
    fn next_due(&self, partial_since: Option<Instant>) -> Option<Instant> {
        let partial = partial_since.map(|p| after(p, self.route.limits.request_timeout));
        let response = self.in_flight.iter().map(|f| f.deadline).min();
        match (partial, response) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// After a reload: the connection's route and policy in the new site. False when the
    /// conduit is gone (the connection must close).
    fn follow_reload(&mut self, now: Instant) -> bool {
        let site = self.watch.current();
        let registry = self.route.metrics.registry().clone();
        let quarantine = self.route.quarantine.clone();
        let Some(route) = Route::resolve(
            &site,
            Protocol::Modbus,
            self.client_addr,
            self.device_addr,
            &registry,
            &quarantine,
        ) else {
            self.event_plain(
                "modbus-conduit-removed",
                "failure",
                "a reload removed this connection's conduit; connection closed",
            );
            return false;
        };
        // Reads allowed so far were allowed on the old route.
        self.report_reads(now);
        let map = route
            .device_asset
            .as_deref()
            .and_then(|a| site.register_map(a))
            .cloned();
        let input = route.input(self.client_addr, self.device_addr, map);
        self.judge = Judge::new(
            route.policy.clone(),
            input,
            route.metrics.decision_histogram(),
            route.metrics.registry().clone(),
        );
        self.route = route;
        true
    }

    /// Judges every complete request in the client buffer. True when the connection must close.
    fn requests(&mut self, now: Instant) -> bool {
        // The next request after a reload is judged by the new site (an atomic load to know).
        if self.watch.changed() && !self.follow_reload(now) {
            return true;
        }
        let mut used_total = 0usize;
        let mut close = false;
        loop {
            let rest = self
                .from_client
                .get(used_total..self.from_client_len)
                .unwrap_or_default();
            match modbus::parse_request(rest) {
                Ok(Some((frame, used))) => {
                    let raw = rest.get(..used).unwrap_or_default();
                    let header = frame.header;
                    let function = frame.body.function_code();
                    if self
                        .in_flight
                        .iter()
                        .any(|f| f.transaction_id == header.transaction_id)
                    {
                        self.event_malformed(&format!(
                            "transaction id {} reused while still in flight",
                            header.transaction_id
                        ));
                        close = true;
                        break;
                    }
                    let access = frame.body.access();
                    let judge = &mut self.judge;
                    let verdict = verdict::judge(
                        &mut self.route,
                        &self.audit,
                        access,
                        frame.body.name(),
                        |_| Judged::Policy(judge.decide(&frame)),
                    );
                    match verdict.log {
                        Log::Count => self.reads_allowed = self.reads_allowed.saturating_add(1),
                        Log::Event(mode) => self.event_decision_in(&frame, &verdict.decision, mode),
                    }
                    let action = verdict.enforce(
                        &self.route,
                        self.client_addr,
                        self.device_addr,
                        verdict::deny_reason,
                    );
                    let answer = match action {
                        Action::Forward => None,
                        Action::Refuse => Some(match self.route.on_deny {
                            OnDeny::IllegalDataAddress => ExceptionCode::IllegalDataAddress,
                            OnDeny::IllegalFunction | OnDeny::Close => {
                                ExceptionCode::IllegalFunction
                            }
                        }),
                        // Nothing is allowed that cannot be audited (audit.when_full:
                        // fail_closed); the gateway's path is what is unavailable.
                        Action::Unavailable => Some(ExceptionCode::GatewayPathUnavailable),
                        // Quarantined: this connection ends now, the kernel drops the rest.
                        Action::Close | Action::Quarantine => {
                            close = true;
                            used_total = used_total.saturating_add(used);
                            break;
                        }
                    };
                    let forward = answer.is_none();
                    if forward {
                        self.to_device.extend_from_slice(raw);
                        self.in_flight.push(InFlight {
                            transaction_id: header.transaction_id,
                            unit_id: header.unit_id,
                            function,
                            deadline: after(now, self.route.limits.response_timeout),
                        });
                    } else if let Some(code) = answer {
                        self.to_client
                            .extend_from_slice(&modbus::exception_response(
                                &header, function, code,
                            ));
                    }
                    used_total = used_total.saturating_add(used);
                    if self.in_flight.len() >= self.route.limits.in_flight_per_connection {
                        self.route.metrics.limit_hit(Limit::InFlight);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => match self.invalid_request(rest, e) {
                    Invalid::Answered {
                        response,
                        used,
                        quarantined,
                    } => {
                        self.to_client.extend_from_slice(&response);
                        used_total = used_total.saturating_add(used);
                        if quarantined {
                            close = true;
                            break;
                        }
                    }
                    Invalid::Incomplete => break,
                    Invalid::Framing => {
                        close = true;
                        break;
                    }
                },
            }
        }
        self.from_client
            .copy_within(used_total..self.from_client_len, 0);
        self.from_client_len = self.from_client_len.saturating_sub(used_total);
        close
    }

    /// Reports allowed reads counted since the last report, if any.
    fn report_reads(&mut self, now: Instant) {
        if self.reads_allowed == 0 {
            return;
        }
        let count = self.reads_allowed;
        self.reads_allowed = 0;
        self.reads_reported = now;
        let mut e = self.base_event("modbus-reads", "success", "allow", String::new());
        e.modbus = Some(serde_json::json!({ "allowed_reads": count }));
        self.audit.emit(e);
    }

    /// Passes back responses that answer a request in flight; drops the rest.
    fn responses(&mut self) -> bool {
        let mut used_total = 0usize;
        let mut close = false;
        loop {
            let rest = self
                .from_device
                .get(used_total..self.from_device_len)
                .unwrap_or_default();
            match modbus::parse_response(rest) {
                Ok(Some((frame, used))) => {
                    let raw = rest.get(..used).unwrap_or_default();
                    let function = match frame.body {
                        Response::Normal { function, .. }
                        | Response::Exception { function, .. } => function,
                    };
                    let pos = self.in_flight.iter().position(|f| {
                        f.transaction_id == frame.header.transaction_id
                            && f.unit_id == frame.header.unit_id
                            && f.function == function
                    });
                    match pos {
                        Some(i) => {
                            self.in_flight.swap_remove(i);
                            self.to_client.extend_from_slice(raw);
                        }
                        None => {
                            // A late answer to a request already answered 0x0B, a reply to
                            // something the client never asked, or a device confused about
                            // transaction ids: the client must not take it for an answer.
                            self.route.metrics.malformed();
                            let mut e = self.base_event(
                                "modbus-unsolicited-response",
                                "failure",
                                "drop",
                                format!(
                                    "response with transaction id {} unit id {} function {function:#04x} matches no request in flight; dropped",
                                    frame.header.transaction_id, frame.header.unit_id
                                ),
                            );
                            e.modbus = Some(serde_json::json!({
                                "transaction_id": frame.header.transaction_id,
                                "unit_id": frame.header.unit_id,
                                "function": {"code": function, "name": modbus::function_name(function)},
                                "raw_hex": hex(raw),
                            }));
                            self.audit.emit(e);
                        }
                    }
                    used_total = used_total.saturating_add(used);
                }
                Ok(None) => break,
                Err(e) => {
                    self.route.metrics.malformed();
                    self.event_plain(
                        "modbus-malformed-response",
                        "failure",
                        &format!("malformed response from the device: {e}"),
                    );
                    close = true;
                    break;
                }
            }
        }
        self.from_device
            .copy_within(used_total..self.from_device_len, 0);
        self.from_device_len = self.from_device_len.saturating_sub(used_total);
        close
    }

    /// Requests the device did not answer by `now` get 0x0B.
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(f) = self.in_flight.get(i).copied() {
            if f.deadline <= now {
                self.in_flight.swap_remove(i);
                let header = modbus::Mbap {
                    transaction_id: f.transaction_id,
                    protocol_id: 0,
                    length: 3,
                    unit_id: f.unit_id,
                };
                self.to_client
                    .extend_from_slice(&modbus::exception_response(
                        &header,
                        f.function,
                        ExceptionCode::GatewayTargetDevice,
                    ));
                self.route.metrics.limit_hit(Limit::ResponseTimeout);
                self.event_plain(
                    "modbus-device-timeout",
                    "failure",
                    &format!(
                        "no response to transaction {} within {} (limits.response_timeout); answered 0x0B",
                        f.transaction_id,
                        humantime::format_duration(self.route.limits.response_timeout)
                    ),
                );
            } else {
                i = i.saturating_add(1);
            }
        }
    }

    fn base_event(
        &self,
        action: &'static str,
        outcome: &'static str,
        decision: &'static str,
        reason: String,
    ) -> Event {
        self.route.event(
            self.client_addr,
            self.device_addr,
            action,
            outcome,
            decision,
            reason,
        )
    }

    fn event_plain(&self, action: &'static str, outcome: &'static str, reason: &str) {
        let e = self.base_event(action, outcome, "refuse", reason.to_owned());
        self.audit.emit(e);
    }

    /// A malformed request: audited, and a violation (the connection closes anyway).
    fn event_malformed(&self, reason: &str) {
        self.route.metrics.malformed();
        let e = self.base_event("modbus-malformed", "failure", "refuse", reason.to_owned());
        self.audit.emit(e);
        self.route
            .violation(self.client_addr, self.device_addr, reason);
    }

    /// A request that did not parse: a well-framed one asking for something no device does is
    /// answered as a conforming device would, never forwarded, and the connection goes on (its
    /// exception waits until the whole ADU is in); after a framing error, where the next frame
    /// starts can no longer be trusted and nothing more from this client reaches the device.
    fn invalid_request(&self, rest: &[u8], error: ModbusError) -> Invalid {
        match modbus::refusal(rest, error) {
            Ok(Some(refusal)) => {
                let raw = rest.get(..refusal.len).unwrap_or_default();
                Invalid::Answered {
                    response: refusal.response(),
                    used: refusal.len,
                    quarantined: self.event_refusal(&error, &refusal, raw),
                }
            }
            Ok(None) => Invalid::Incomplete,
            Err(e) => {
                self.event_parse_error(&e, rest);
                Invalid::Framing
            }
        }
    }

    /// A request refused for its content and answered with `refusal`'s exception: audited as
    /// malformed and a violation. True when that violation quarantined the client (the
    /// connection must close).
    fn event_refusal(&self, error: &ModbusError, refusal: &modbus::Refusal, raw: &[u8]) -> bool {
        self.route.metrics.malformed();
        let reason = format!("{error}; answered exception {:#04x}", refusal.code.code());
        let mut e = self.base_event("modbus-malformed", "failure", "refuse", reason.clone());
        e.modbus = Some(serde_json::json!({
            "transaction_id": refusal.header.transaction_id,
            "unit_id": refusal.header.unit_id,
            "function": {
                "code": refusal.function,
                "name": modbus::function_name(refusal.function & !modbus::EXCEPTION_BIT),
            },
            "error": error.kind(),
            "exception": refusal.code.code(),
            "raw_hex": hex(raw),
        }));
        self.audit.emit(e);
        self.route
            .violation(self.client_addr, self.device_addr, &reason)
    }

    fn event_parse_error(&self, error: &ModbusError, bytes: &[u8]) {
        self.route.metrics.malformed();
        let mut e = self.base_event("modbus-malformed", "failure", "refuse", error.to_string());
        e.modbus = Some(serde_json::json!({ "error": error.kind(), "raw_hex": hex(bytes) }));
        self.audit.emit(e);
        self.route
            .violation(self.client_addr, self.device_addr, &error.to_string());
    }

    fn event_decision_in(&self, frame: &modbus::RequestFrame<'_>, decision: &Decision, mode: Mode) {
        let (decision_name, outcome, reason, rule) = verdict::names(decision, mode);
        let mut e = self.base_event("modbus-request", outcome, decision_name, reason);
        e.rule = Some(audit::Rule { name: rule });
        let req = &frame.body;
        e.modbus = Some(serde_json::json!({
            "transaction_id": frame.header.transaction_id,
            "unit_id": frame.header.unit_id,
            "function": {"code": req.function_code(), "name": req.name()},
            "access": req.access().as_str(),
            "table": req.table().map(|t| t.as_str()),
            "address": req.address(),
            "quantity": req.quantity(),
            "values": written_values(req),
        }));
        self.audit.emit(e);
    }
}

impl Core for ModbusSession {
    type End = End;

    fn wants_client(&self) -> bool {
        // In flight beyond the bound, the client is not read until the device answers.
        (self.device_down.is_some()
            || self.in_flight.len() < self.route.limits.in_flight_per_connection)
            && self.from_client_len < BUF_LEN
    }

    fn wants_device(&self) -> bool {
        self.device_down.is_none() && self.from_device_len < BUF_LEN
    }

    fn follows_reloads(&self) -> bool {
        self.device_down.is_none()
    }

    fn io(&mut self) -> Io<'_> {
        Io {
            client: self
                .from_client
                .get_mut(self.from_client_len..)
                .unwrap_or_default(),
            device: self
                .from_device
                .get_mut(self.from_device_len..)
                .unwrap_or_default(),
            watch: &mut self.watch,
        }
    }

    fn client_read(&mut self, n: usize, now: Instant) -> Flow<End> {
        if n == 0 {
            return Flow::Drop(End::ClientClosed);
        }
        self.from_client_len = self.from_client_len.saturating_add(n);
        if let Some(code) = self.device_down {
            return self.answer_alone(code, now);
        }
        self.route.metrics.to_device(n);
        self.last_activity = now;
        let buffered = self.from_client_len;
        let refused = self.requests(now);
        self.judged(buffered, now);
        if now.saturating_duration_since(self.reads_reported) >= READ_SUMMARY_INTERVAL {
            self.report_reads(now);
        }
        if refused {
            Flow::Close(End::Refused)
        } else {
            Flow::Continue
        }
    }

    fn device_read(&mut self, n: usize, now: Instant) -> Flow<End> {
        if n == 0 {
            self.event_plain(
                "modbus-device-closed",
                "failure",
                "the device closed the connection",
            );
            return Flow::Drop(End::DeviceClosed);
        }
        self.from_device_len = self.from_device_len.saturating_add(n);
        self.route.metrics.to_client(n);
        let mut refused = self.responses();
        // Requests held back while the in-flight bound was reached are complete in the
        // buffer: judge them now, the client is waiting for their answers.
        if !refused
            && self.from_client_len > 0
            && self.in_flight.len() < self.route.limits.in_flight_per_connection
        {
            let buffered = self.from_client_len;
            refused = self.requests(now);
            self.judged(buffered, now);
        }
        if refused {
            Flow::Close(End::Refused)
        } else {
            Flow::Continue
        }
    }

    fn device_failed(&mut self, error: &std::io::Error) {
        // A reset or a dead path: the requests in flight will not be answered, and the SOC
        // should know the device side broke.
        self.event_plain(
            "modbus-device-closed",
            "failure",
            &format!("reading from the device failed: {error}; connection closed"),
        );
    }

    fn reloaded(&mut self, now: Instant) -> Flow<End> {
        if self.follow_reload(now) {
            Flow::Continue
        } else {
            Flow::Close(End::ConduitRemoved)
        }
    }

    fn timer_fired(&mut self, now: Instant) -> Flow<End> {
        let limits = self.route.limits;
        if self.device_down.is_some() {
            return if now < self.timer {
                Flow::Continue
            } else if self.from_client_len > 0 {
                self.route.metrics.limit_hit(Limit::RequestTimeout);
                Flow::Drop(End::RequestTimeout)
            } else {
                self.route.metrics.limit_hit(Limit::IdleTimeout);
                Flow::Drop(End::Idle)
            };
        }
        self.expire(now);
        if let Some(since) = self.partial_since
            && after(since, limits.request_timeout) <= now
        {
            // Audited once the 0x0B answers are written (`closing`).
            return Flow::Close(End::RequestTimeout);
        }
        let idle = after(self.last_activity, limits.idle_timeout);
        self.timer = match self.next_due(self.partial_since) {
            Some(due) => due,
            None if now >= idle => {
                self.route.metrics.limit_hit(Limit::IdleTimeout);
                let mut e = self.base_event(
                    "modbus-idle-timeout",
                    "success",
                    "refuse",
                    format!(
                        "nothing received for {} (limits.idle_timeout); connection closed",
                        humantime::format_duration(limits.idle_timeout)
                    ),
                );
                // Closing an idle connection is housekeeping, not an attack.
                e.event.kind = "event";
                self.audit.emit(e);
                return Flow::Drop(End::Idle);
            }
            None => idle,
        };
        Flow::Continue
    }

    fn deadline(&self) -> Instant {
        self.timer
    }

    fn closing(&mut self, end: End) {
        if end == End::RequestTimeout && self.device_down.is_none() {
            self.route.metrics.limit_hit(Limit::RequestTimeout);
            self.event_plain(
                "modbus-request-timeout",
                "failure",
                &format!(
                    "a request begun was not completed within {} (limits.request_timeout; {} bytes of it received); connection closed",
                    humantime::format_duration(self.route.limits.request_timeout),
                    self.from_client_len
                ),
            );
        }
    }

    fn client_unread(&mut self, busy: std::time::Duration) {
        // The clock of an unfinished request runs only while the proxy reads: its rest may be
        // waiting in the kernel behind a write to a client that does not read its answers,
        // which `limits.request_timeout` ends as a stalled write instead.
        if let Some(since) = self.partial_since {
            self.partial_since = Some(after(since, busy));
        }
    }

    fn outgoing(&mut self) -> Outgoing<'_> {
        Outgoing {
            to_client: &mut self.to_client,
            to_device: &mut self.to_device,
            limit: self.route.limits.request_timeout,
        }
    }
}

/// What became of a request that did not parse (see `Session::invalid_request`).
enum Invalid {
    /// Answered with an exception; `used` bytes consumed; the violation quarantined the client
    /// (the connection must close).
    Answered {
        response: [u8; 9],
        used: usize,
        quarantined: bool,
    },
    /// Well framed so far, but its exception waits for the rest of the ADU.
    Incomplete,
    /// A framing error: the connection closes.
    Framing,
}

#[cfg(test)]
mod tests;

/// The first bytes of a frame (at most an ADU's worth), in hex, for an audit event.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(MAX_ADU_LEN)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a write request would write, for the audit event: the SOC's first question about a
/// refused or allowed write. `null` for requests that write nothing.
fn written_values(request: &modbus::Request<'_>) -> serde_json::Value {
    use modbus::Request;
    match *request {
        Request::WriteSingleCoil { value, .. } => serde_json::json!([value]),
        Request::WriteSingleRegister { value, .. } => serde_json::json!([value]),
        Request::WriteMultipleCoils { values, .. } => {
            serde_json::Value::from(values.iter().collect::<Vec<bool>>())
        }
        Request::WriteMultipleRegisters { values, .. }
        | Request::ReadWriteMultipleRegisters { values, .. } => {
            serde_json::Value::from(values.iter().collect::<Vec<u16>>())
        }
        _ => serde_json::Value::Null,
    }
}

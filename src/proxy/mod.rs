//! The transparent deep-inspection proxy. nftables TPROXYs new connections on inspected conduits
//! to a local port (see `nft::ruleset`); the accepted socket's local address is the device the
//! client addressed. The proxy connects to that device from the client's own address (so PLC
//! access lists keep working), marked so that the kernel lets it out and brings replies back.

pub mod driver;
pub mod modbus;
pub mod opcua;
pub mod routing;
#[cfg(test)]
pub mod testkit;
pub mod verdict;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use socket2::{Domain, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::admission;
pub use crate::admission::Protocol;
use crate::audit::{self, Audit, Event};
use crate::config::{Conduit, Limits, Mode, OnDeny};
use crate::metrics::{ConnectionMetrics, Limit, Metrics};
use crate::nft::ruleset::UPSTREAM_MARK;
use crate::policy::{ConnectionInput, Peer, Policy, RegisterMap};
use crate::quarantine::{Quarantine, Violation};
use crate::site::Site;

/// Accept queue length of each listener (the kernel caps it at net.core.somaxconn, 4096 by
/// default). A burst of connections beyond the queue makes the kernel drop handshakes it then
/// has to retry; scripts/soak saw 200 such overflows opening 3,000 connections with 1024.
const LISTEN_BACKLOG: i32 = 4096;
/// After a failed accept (EMFILE, ENOMEM), wait this long before the next.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
/// Failed accepts are logged at most once per this interval.
const ACCEPT_FAILURE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Routing(#[from] routing::RoutingError),
}

/// The site in force, replaced whole by each successful reload. Sessions read it when they
/// start and again when it changes.
pub type Sites = watch::Receiver<Arc<Site>>;

/// A listening proxy for one protocol (IPv4 and IPv6).
#[derive(Debug)]
pub struct Proxy {
    protocol: Protocol,
    listeners: Vec<TcpListener>,
}

impl Proxy {
    /// Binds transparent listeners on the protocol's divert port: IPv4, and IPv6 when the host
    /// has it (see [`routing::ipv6_available`]).
    pub fn bind(protocol: Protocol, port: u16, ipv6: bool) -> Result<Proxy, ProxyError> {
        let mut listeners = Vec::new();
        let mut ips = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        if ipv6 {
            ips.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        }
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            listeners.push(
                transparent_listener(addr).map_err(|source| ProxyError::Listen { addr, source })?,
            );
        }
        Ok(Proxy {
            protocol,
            listeners,
        })
    }

    /// Accepts and serves connections until the task is dropped.
    pub async fn serve(self, shared: Shared) {
        let mut tasks = tokio::task::JoinSet::new();
        let wakers = Wakers::default();
        tasks.spawn(wakers.clone().wake_on_reload(shared.sites.clone()));
        for listener in self.listeners {
            tasks.spawn(accept_loop(
                self.protocol,
                listener,
                shared.clone(),
                wakers.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// What the proxies of all protocols share: the site in force, the audit trail, the connection
/// limits, the metrics and the quarantine.
#[derive(Debug, Clone)]
pub struct Shared {
    pub sites: Sites,
    pub audit: Audit,
    /// Counts connections against `limits.connections` and `connections_per_source`.
    pub connections: Arc<admission::Connections>,
    pub metrics: Arc<Metrics>,
    pub quarantine: Arc<Quarantine>,
}

/// The connection limits of `limits` (bound at start-up), for [`Shared`]; the process's open
/// file limit is raised to carry them (see [`admission::fit_file_descriptors`]).
pub fn connection_limit(limits: &Limits) -> Arc<admission::Connections> {
    let total = admission::fit_file_descriptors(limits.connections);
    admission::Connections::new(total, limits.connections_per_source)
}

async fn accept_loop(protocol: Protocol, listener: TcpListener, shared: Shared, wakers: Wakers) {
    // Failed accepts (out of file descriptors or memory) are logged once per interval, with
    // how many there were, not once each.
    let mut failed: u64 = 0;
    let mut failure_logged: Option<std::time::Instant> = None;
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                failed = failed.saturating_add(1);
                if failure_logged.is_none_or(|t| t.elapsed() >= ACCEPT_FAILURE_LOG_INTERVAL) {
                    tracing::warn!(error = %e, failed, "accept failed");
                    failed = 0;
                    failure_logged = Some(std::time::Instant::now());
                }
                // The connection waits in the accept queue: do not spin on it.
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        // Refused at once rather than left in the accept queue: the client learns it, and the
        // SOC sees who is exhausting the gateway.
        let permit = match shared.connections.admit(normalize(client).ip()) {
            Ok(p) => p,
            Err(limit) => {
                shared.metrics.limit_hit(limit);
                refuse_connection(
                    protocol,
                    &stream,
                    client,
                    limit,
                    &shared.connections,
                    &shared.audit,
                );
                drop(stream);
                continue;
            }
        };
        let watch = SiteWatch::new(shared.sites.clone(), Some(&wakers));
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(protocol, stream, client, watch, shared).await;
            drop(permit);
        });
    }
}

/// Serves one accepted connection: its route in the site in force, then the protocol's session.
async fn handle(
    protocol: Protocol,
    stream: TcpStream,
    client: SocketAddr,
    mut watch: SiteWatch,
    shared: Shared,
) {
    // With TPROXY the accepted socket keeps the original destination as its local address.
    let device = match stream.local_addr() {
        Ok(a) => normalize(a),
        Err(_) => return,
    };
    let client = normalize(client);
    let site = watch.current();
    let Some(route) = Route::resolve(
        &site,
        protocol,
        client,
        device,
        &shared.metrics,
        &shared.quarantine,
    ) else {
        shared.metrics.no_conduit(protocol.as_str());
        let (action, reason) = match protocol {
            Protocol::Modbus => (
                "modbus-no-conduit",
                "no modbus conduit joins this client and device",
            ),
            Protocol::OpcUa => (
                "opcua-no-conduit",
                "no opcua conduit joins this client and device",
            ),
        };
        no_conduit(&shared.audit, action, reason, client, device);
        return;
    };
    route.metrics.accepted();
    let ended = match protocol {
        Protocol::Modbus => {
            let register_map = route
                .device_asset
                .as_deref()
                .and_then(|a| site.register_map(a))
                .cloned();
            modbus::session(
                stream,
                client,
                device,
                route,
                register_map,
                watch,
                shared.audit,
            )
            .await
        }
        Protocol::OpcUa => opcua::session(stream, client, device, route, watch, shared.audit).await,
    };
    match ended {
        Ok(()) => {}
        Err(e @ SessionError::Stalled { .. }) => {
            // Audited by the session (`modbus-write-timeout`, `opcua-write-timeout`).
            shared.metrics.limit_hit(Limit::RequestTimeout);
            tracing::debug!(%client, %device, protocol = protocol.as_str(), error = %e, "connection closed");
        }
        Err(e) => {
            tracing::debug!(%client, %device, protocol = protocol.as_str(), error = %e, "session error");
        }
    }
}

/// What a session knows about its connection, resolved once when it is accepted: the conduit,
/// the policy that judges it, and the assets at both ends.
#[derive(Debug)]
pub struct Route {
    pub site: Arc<Site>,
    pub protocol: Protocol,
    pub conduit: Conduit,
    pub mode: Mode,
    pub on_deny: OnDeny,
    pub policy: Arc<Policy>,
    /// The site's `limits:` (timeouts and in-flight bound follow reloads with the route).
    pub limits: Limits,
    /// The conduit's write rate bucket, if it has one.
    pub write_rate: Option<Arc<admission::TokenBucket>>,
    pub client_asset: Option<String>,
    pub device_asset: Option<String>,
    /// The connection's metric handles; it counts as active while the route lives.
    pub metrics: ConnectionMetrics,
    /// Where the session reports violations (denied or malformed requests).
    pub quarantine: Arc<Quarantine>,
}

impl Route {
    /// The route of a `protocol` connection from `client` to `device` in `site`: `None` when
    /// no inspected conduit of that protocol joins them.
    pub fn resolve(
        site: &Arc<Site>,
        protocol: Protocol,
        client: SocketAddr,
        device: SocketAddr,
        metrics: &Arc<Metrics>,
        quarantine: &Arc<Quarantine>,
    ) -> Option<Route> {
        let (conduit, policy) = match protocol {
            Protocol::Modbus => {
                let c = site.modbus_conduit(client.ip(), device)?;
                (c, site.policy(&c.name)?)
            }
            Protocol::OpcUa => {
                let c = site.opcua_conduit(client.ip(), device)?;
                (c, site.opcua_policy(&c.name)?)
            }
        };
        Route::along(
            site, protocol, conduit, policy, client, device, metrics, quarantine,
        )
    }

    /// The route along `conduit` (which must be inspected) judged by `policy`.
    #[allow(clippy::too_many_arguments)]
    fn along(
        site: &Arc<Site>,
        protocol: Protocol,
        conduit: &Conduit,
        policy: &Arc<Policy>,
        client: SocketAddr,
        device: SocketAddr,
        metrics: &Arc<Metrics>,
        quarantine: &Arc<Quarantine>,
    ) -> Option<Route> {
        let inspection = conduit.inspection.as_ref()?;
        let asset = |a: SocketAddr| site.model.asset_at(a.ip()).map(|a| a.name.clone());
        Some(Route {
            site: site.clone(),
            protocol,
            conduit: conduit.clone(),
            mode: inspection.mode,
            on_deny: inspection.on_deny,
            policy: policy.clone(),
            limits: site.model.limits,
            write_rate: site.write_rate(&conduit.name).cloned(),
            client_asset: asset(client),
            device_asset: asset(device),
            metrics: metrics.connection(&conduit.name, protocol.as_str()),
            quarantine: quarantine.clone(),
        })
    }

    /// The policy input's fields fixed for the connection (and the device's register map).
    pub fn input(
        &self,
        client: SocketAddr,
        device: SocketAddr,
        map: Option<Arc<RegisterMap>>,
    ) -> ConnectionInput {
        let model = &self.site.model;
        let peer = |addr: SocketAddr, port: Option<u16>| {
            let asset = model.asset_at(addr.ip());
            Peer {
                address: addr.ip(),
                port,
                zone: model.zone_of(addr.ip()).map_or("", |z| z.name.as_str()),
                asset: asset.map(|a| a.name.as_str()),
                kind: asset.map(|a| a.kind.as_str()),
            }
        };
        ConnectionInput::new(
            &self.conduit.name,
            self.mode.as_str(),
            peer(client, None),
            peer(device, Some(device.port())),
            map,
        )
    }

    /// Reports a violation by `client` (a denied or malformed request, `what`) to the
    /// quarantine. True when the source is now quarantined: the caller closes the connection.
    pub fn violation(&self, client: SocketAddr, device: SocketAddr, what: &str) -> bool {
        let critical_asset = || {
            self.client_asset
                .as_deref()
                .and_then(|a| self.site.model.asset(a))
                .filter(|a| a.critical)
                .map(|a| a.name.as_str())
        };
        let event = |outcome, decision, reason| {
            self.event(client, device, "quarantine", outcome, decision, reason)
        };
        self.quarantine.violation(&Violation {
            conduit: &self.conduit.name,
            settings: self.conduit.inspection.as_ref().and_then(|i| i.quarantine),
            client,
            device,
            mode: self.mode,
            what,
            critical_asset: &critical_asset,
            event: &event,
        })
    }

    /// A write refused by the conduit's `write_rate`: back-pressure, not an attack, so a
    /// violation only where the conduit's quarantine says `count_rate_limits: true`.
    pub fn rate_limit_violation(&self, client: SocketAddr, device: SocketAddr, what: &str) -> bool {
        let counted = self
            .conduit
            .inspection
            .as_ref()
            .and_then(|i| i.quarantine)
            .is_some_and(|q| q.count_rate_limits);
        counted && self.violation(client, device, what)
    }

    /// An audit event about this connection; `kind` is `alert` for failures.
    pub fn event(
        &self,
        client: SocketAddr,
        device: SocketAddr,
        action: &'static str,
        outcome: &'static str,
        decision: &'static str,
        reason: String,
    ) -> Event {
        let model = &self.site.model;
        let mut e = Event::traffic(action, decision).with_places(
            audit::Place::of(model, client.ip()),
            audit::Place::of(model, device.ip()),
        );
        e.event.outcome = outcome;
        e.message = message(
            action,
            decision,
            client,
            device,
            Some(&self.conduit.name),
            &reason,
        );
        e.source = Some(audit::Endpoint::new(client));
        e.destination = Some(audit::Endpoint::new(device));
        e.network = Some(audit::Network::new(
            "tcp",
            Some(self.protocol.as_str()),
            client.ip(),
        ));
        e.zonegate.conduit = Some(self.conduit.name.clone());
        e.zonegate.reason = reason;
        e.zonegate.mode = Some(self.mode.as_str());
        e.zonegate.policy_revision = Some(self.policy.revision().to_owned());
        e
    }
}

/// The site a session judges by, following reloads: a session looks for a new site before
/// each batch of requests (an atomic load), and an idle one is woken by the reload, so that a
/// connection whose conduit a reload removed is closed even when it sends nothing.
///
/// The wake-up is a waker of the session's own, woken by [`Wakers`]: a session polls its
/// reload branch on every wake-up, and polling a `watch` channel's own wait would take a lock
/// shared by every session each time (measured: about 1 us per request at 64 connections).
pub struct SiteWatch {
    sites: Sites,
    waker: Arc<AtomicWaker>,
}

impl std::fmt::Debug for SiteWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteWatch").finish_non_exhaustive()
    }
}

impl SiteWatch {
    /// A watch on `sites`, woken through `wakers` (none: only [`SiteWatch::changed`] sees
    /// reloads).
    pub fn new(sites: Sites, wakers: Option<&Wakers>) -> SiteWatch {
        let waker = Arc::new(AtomicWaker::new());
        if let Some(w) = wakers {
            w.add(&waker);
        }
        SiteWatch { sites, waker }
    }

    /// True when a reload has replaced the site since [`SiteWatch::current`] last looked.
    pub fn changed(&self) -> bool {
        self.sites.has_changed().unwrap_or(false)
    }

    /// The site in force, marked seen; [`SiteWatch::reloaded`] then waits for the next one.
    pub fn current(&mut self) -> Arc<Site> {
        self.sites.borrow_and_update().clone()
    }

    /// Completes when a reload replaced the site seen last; call [`SiteWatch::current`] then.
    /// Cancel-safe, for `select!`. Pending for ever once the daemon stops sending sites.
    pub async fn reloaded(&mut self) {
        std::future::poll_fn(|cx| {
            if self.changed() {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A reload between the look and the registration has already woken the old waker.
            if self.changed() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
}

/// The wakers of the live sessions of a proxy, all woken by each reload.
#[derive(Debug, Clone, Default)]
pub struct Wakers {
    sessions: Arc<std::sync::Mutex<Vec<std::sync::Weak<AtomicWaker>>>>,
}

impl Wakers {
    /// Registers a session's waker (once per connection). Ended sessions' entries are pruned
    /// when the list has doubled since the last pruning.
    fn add(&self, waker: &Arc<AtomicWaker>) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        if sessions.len() == sessions.capacity() {
            sessions.retain(|w| w.strong_count() > 0);
        }
        sessions.push(Arc::downgrade(waker));
    }

    /// Wakes every live session after each change of `sites`, until the sender is gone.
    pub async fn wake_on_reload(self, mut sites: Sites) {
        while sites.changed().await.is_ok() {
            sites.borrow_and_update();
            let Ok(mut sessions) = self.sessions.lock() else {
                return;
            };
            sessions.retain(|w| match w.upgrade() {
                Some(waker) => {
                    waker.wake();
                    true
                }
                None => false,
            });
        }
    }
}

/// The event's one-line summary: what was decided about whom, and why.
fn message(
    action: &str,
    decision: &str,
    client: SocketAddr,
    device: SocketAddr,
    conduit: Option<&str>,
    reason: &str,
) -> String {
    let mut m = format!("{action}: {decision} {client} -> {device}");
    if let Some(c) = conduit {
        m.push_str(" on conduit ");
        m.push_str(c);
    }
    if !reason.is_empty() {
        m.push_str(": ");
        m.push_str(reason);
    }
    m
}

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client: {0}")]
    Client(#[source] std::io::Error),
    #[error("device: {0}")]
    Device(#[source] std::io::Error),
    /// A peer that stops taking what the proxy writes to it (a client that never reads its
    /// answers, a device that stopped reading) would hold the session in the write for ever,
    /// deaf to its own timers.
    #[error(
        "the {side} took nothing of what was written to it for {limit:?} (limits.request_timeout)"
    )]
    Stalled { side: &'static str, limit: Duration },
}

/// Writes what is queued for each side, the device first, and empties the queues. Each side
/// must take its bytes within `limit` (`limits.request_timeout`).
pub async fn flush(
    client: &mut TcpStream,
    to_client: &mut Vec<u8>,
    device: &mut TcpStream,
    to_device: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), SessionError> {
    write_queued(device, to_device, limit, "device", SessionError::Device).await?;
    flush_client(client, to_client, limit).await
}

/// Writes what is queued for the client and empties the queue, for a session without a device.
pub async fn flush_client(
    client: &mut TcpStream,
    to_client: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), SessionError> {
    write_queued(client, to_client, limit, "client", SessionError::Client).await
}

/// Writes `queued` to `side` within `limit` and empties it; a peer that takes nothing for that
/// long is [`SessionError::Stalled`].
async fn write_queued(
    stream: &mut TcpStream,
    queued: &mut Vec<u8>,
    limit: Duration,
    side: &'static str,
    failed: fn(std::io::Error) -> SessionError,
) -> Result<(), SessionError> {
    if !queued.is_empty() {
        tokio::time::timeout(limit, stream.write_all(queued))
            .await
            .map_err(|_| SessionError::Stalled { side, limit })?
            .map_err(failed)?;
        queued.clear();
    }
    Ok(())
}

/// A connection over a connection limit: audited (`connection-limit`); the caller closes it.
fn refuse_connection(
    protocol: Protocol,
    stream: &TcpStream,
    client: SocketAddr,
    limit: Limit,
    connections: &admission::Connections,
    audit: &Audit,
) {
    let client = normalize(client);
    let device = stream.local_addr().map_or(client, normalize);
    let (total, per_source) = connections.limits();
    let reason = match limit {
        Limit::ConnectionsPerSource => format!(
            "connection limit: {client_ip} already has {per_source} connections (limits.connections_per_source)",
            client_ip = client.ip()
        ),
        _ => format!("connection limit: {total} connections at once (limits.connections)"),
    };
    let mut e = Event::traffic("connection-limit", "refuse");
    e.message = message("connection-limit", "refuse", client, device, None, &reason);
    e.zonegate.reason = reason;
    e.rule = Some(audit::Rule {
        name: format!("zonegate.limits.{}", limit.as_str()),
    });
    e.source = Some(audit::Endpoint::new(client));
    e.destination = Some(audit::Endpoint::new(device));
    e.network = Some(audit::Network::new(
        "tcp",
        Some(protocol.as_str()),
        client.ip(),
    ));
    audit.emit(e);
}

/// A diverted connection that no conduit of its protocol explains: audited and closed.
fn no_conduit(
    audit: &Audit,
    action: &'static str,
    reason: &str,
    client: SocketAddr,
    device: SocketAddr,
) {
    let mut e = Event::traffic(action, "refuse");
    e.message = message(action, "refuse", client, device, None, reason);
    e.zonegate.reason = reason.into();
    e.source = Some(audit::Endpoint::new(client));
    e.destination = Some(audit::Endpoint::new(device));
    e.network = Some(audit::Network::new("tcp", None, client.ip()));
    audit.emit(e);
}

/// IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d; the model speaks plain IPv4.
fn normalize(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn transparent_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    match addr {
        SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
        SocketAddr::V6(_) => {
            socket.set_only_v6(true)?;
            socket.set_ip_transparent_v6(true)?;
        }
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Connects to `device` from `client`'s address and port-less: a transparent socket may bind a
/// foreign address, and the mark lets it through the output chain and brings replies back here.
pub async fn connect_transparent(
    client: SocketAddr,
    device: SocketAddr,
) -> std::io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(device),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    match device {
        SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
        SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
    }
    socket.set_mark(UPSTREAM_MARK)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(client.ip(), 0).into())?;
    let std_stream: std::net::TcpStream = socket.into();
    TcpSocket::from_std_stream(std_stream).connect(device).await
}

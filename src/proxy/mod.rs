//! The transparent deep-inspection proxy. nftables TPROXYs new connections on inspected conduits
//! to a local port (see `nft::ruleset`); the accepted socket's local address is the device the
//! client addressed. The proxy connects to that device from the client's own address (so PLC
//! access lists keep working), marked so that the kernel lets it out and brings replies back.

pub mod modbus;
pub mod routing;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::audit::{self, Audit, Event, EventMeta};
use crate::nft::ruleset::UPSTREAM_MARK;
use crate::site::Site;

/// Proxied connections at once, all conduits together; further clients wait in the kernel's
/// accept queue.
pub const MAX_CONNECTIONS: usize = 1024;
/// Accept queue length of each listener.
const LISTEN_BACKLOG: i32 = 1024;

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

/// A listening Modbus proxy (IPv4 and IPv6).
#[derive(Debug)]
pub struct ModbusProxy {
    listeners: Vec<TcpListener>,
}

impl ModbusProxy {
    /// Binds transparent listeners on the Modbus divert port.
    pub fn bind(port: u16) -> Result<ModbusProxy, ProxyError> {
        let mut listeners = Vec::new();
        for ip in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            let addr = SocketAddr::new(ip, port);
            listeners.push(
                transparent_listener(addr).map_err(|source| ProxyError::Listen { addr, source })?,
            );
        }
        Ok(ModbusProxy { listeners })
    }

    /// Accepts and serves connections until the task is dropped.
    pub async fn serve(self, site: Arc<Site>, audit: Audit) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            tasks.spawn(accept_loop(
                listener,
                site.clone(),
                audit.clone(),
                limit.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn accept_loop(listener: TcpListener, site: Arc<Site>, audit: Audit, limit: Arc<Semaphore>) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, client) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let site = site.clone();
        let audit = audit.clone();
        tokio::spawn(async move {
            handle(stream, client, site, audit).await;
            drop(permit);
        });
    }
}

async fn handle(stream: TcpStream, client: SocketAddr, site: Arc<Site>, audit: Audit) {
    // With TPROXY the accepted socket keeps the original destination as its local address.
    let device = match stream.local_addr() {
        Ok(a) => normalize(a),
        Err(_) => return,
    };
    let client = normalize(client);
    let Some(route) = route(&site, client, device) else {
        let mut e = Event::now(
            EventMeta {
                kind: "alert",
                category: &["network", "intrusion_detection"],
                action: "modbus-no-conduit",
                outcome: "failure",
            },
            audit::Zonegate {
                conduit: None,
                decision: "refuse",
                reason: "no modbus conduit joins this client and device".into(),
                mode: None,
                policy_revision: None,
            },
        );
        e.source = Some(audit::Endpoint::new(client, None, None));
        e.destination = Some(audit::Endpoint::new(device, None, None));
        audit.emit(e);
        return;
    };
    if let Err(e) = modbus::session(stream, client, device, route, audit).await {
        tracing::debug!(%client, %device, error = %e, "modbus session error");
    }
}

fn route(site: &Arc<Site>, client: SocketAddr, device: SocketAddr) -> Option<modbus::Route> {
    let conduit = site.modbus_conduit(client.ip(), device)?.clone();
    let inspection = conduit.inspection.clone()?;
    let policy = site.policy(&conduit.name)?.clone();
    let device_asset = site.model.asset_at(device.ip()).map(|a| a.name.clone());
    let register_map = device_asset
        .as_deref()
        .and_then(|a| site.register_map(a))
        .cloned();
    Some(modbus::Route {
        site: site.clone(),
        mode: inspection.mode,
        on_deny: inspection.on_deny,
        policy,
        register_map,
        client_asset: site.model.asset_at(client.ip()).map(|a| a.name.clone()),
        device_asset,
        conduit,
    })
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
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
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
        Some(Protocol::TCP),
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

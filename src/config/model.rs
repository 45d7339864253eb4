//! The validated model of a plant, as types: zones, assets and conduits that are known to be
//! consistent, and the queries on them. Everything downstream (nftables rendering, the proxy,
//! policy input) takes a [`Model`] and can rely on it: every name resolves, every address sits
//! in its zone, no two zones overlap. The checks that make it so are in `config::validate`;
//! the warnings `zonegate check` shows about a valid model, in `config::review`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::files::{self, NamedFile};
pub use super::problems::MAX_NAME_LEN;
use super::problems::Problems;
use super::{Diagnostic, Pos};

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Default local port of the Modbus/TCP inspection proxy.
pub const DEFAULT_MODBUS_PROXY_PORT: u16 = 15020;
/// Default local port of the OPC UA inspection proxy.
pub const DEFAULT_OPCUA_PROXY_PORT: u16 = 14840;
/// Default netlink log group for dropped packets (read by the audit subsystem).
pub const DEFAULT_DROP_LOG_GROUP: u16 = 1;
/// Default kernel rate limit for drop log messages.
pub const DEFAULT_DROP_LOG_PER_SECOND: u32 = 10;
/// Modbus/TCP's registered port.
pub const MODBUS_PORT: u16 = 502;
/// OPC UA's registered port (opc.tcp).
pub const OPCUA_PORT: u16 = 4840;
/// Largest `quarantine.after`: the daemon keeps up to this many violation times per source and
/// conduit, so the bound keeps its memory small.
pub const MAX_QUARANTINE_AFTER: u32 = 100;
/// Longest `quarantine.within`.
pub const MAX_QUARANTINE_WITHIN: Duration = Duration::from_secs(3600);
/// Longest `quarantine.for`: a week; longer is a decision for a person, not a timer.
pub const MAX_QUARANTINE_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// A validated plant.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub gateway: Gateway,
    pub zones: Vec<Zone>,
    pub assets: Vec<Asset>,
    pub conduits: Vec<Conduit>,
    pub audit: super::audit::Settings,
    /// Bounds of the inspection proxy (`limits:`).
    pub limits: super::Limits,
    /// Every file named above for zonegate to read, with where it is named.
    pub files: Vec<NamedFile>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub management: Option<Management>,
    pub modbus_proxy_port: u16,
    pub opcua_proxy_port: u16,
    pub drop_log_group: u16,
    pub drop_log_per_second: u32,
    /// What crosses zones while zonegate is down (killed, crashed, stopped).
    pub failure_mode: FailureMode,
    /// Where `failure_mode` is written, for warnings; default when it is not.
    pub failure_mode_at: Pos,
}

/// What crosses zones while zonegate is not running (or has stopped renewing its liveness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Nothing crosses between zones, not even established flows (security first).
    #[default]
    Closed,
    /// L4 conduits keep working and deep-inspected conduits fall back to an uninspected L4
    /// allow of their services (process safety first).
    Open,
}

impl FailureMode {
    /// As zones.yaml writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Closed => "closed",
            FailureMode::Open => "open",
        }
    }
}

/// The only place where the gateway itself accepts connections.
#[derive(Debug, Clone, PartialEq)]
pub struct Management {
    pub address: IpAddr,
    pub interface: Option<String>,
    /// Empty: any source may reach the management ports.
    pub allow_from: Vec<IpNet>,
    pub tcp_ports: Vec<u16>,
    /// The management API, served on `address` only.
    pub api: Option<Api>,
    /// Peers the gateway itself may connect to besides `allow_from` (`egress:`).
    pub egress: Vec<super::EgressPeer>,
}

/// The management API (`/healthz`, `/readyz`, `/status`, `/metrics`). At least one of
/// `api_key_file` and `tls.client_ca` is set; its port is one of the management `tcp_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub port: u16,
    /// Clients send the file's content as `Authorization: Bearer <key>`.
    pub api_key_file: Option<PathBuf>,
    /// Without it the API speaks plain HTTP (only with an API key; `check` warns).
    pub tls: Option<ApiTls>,
}

/// TLS on the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    /// PEM certificate chain, the server's first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle: a client certificate it signs authenticates the client.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub description: Option<String>,
    pub level: PurdueLevel,
    pub security_level: SecurityLevel,
    pub networks: Vec<IpNet>,
    pub interfaces: Vec<String>,
    /// False when some of the written networks were invalid (already reported), so that checks
    /// against the zone's networks do not pile up follow-on errors.
    pub(super) networks_complete: bool,
    pub defined_at: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub name: String,
    pub zone: String,
    pub address: IpAddr,
    pub kind: AssetKind,
    pub description: Option<String>,
    /// Device profile (register map) as written; relative to the zones.yaml directory.
    pub register_map: Option<PathBuf>,
    /// Never quarantined: losing it would cost more than its violations (they are still audited).
    pub critical: bool,
    pub defined_at: Pos,
}

/// One direction of allowed traffic between two zones; replies ride conntrack.
#[derive(Debug, Clone, PartialEq)]
pub struct Conduit {
    pub name: String,
    pub description: Option<String>,
    pub from: String,
    pub to: String,
    pub services: Vec<Service>,
    /// Empty: the whole initiator zone.
    pub sources: Vec<Endpoint>,
    /// Empty: the whole responder zone.
    pub destinations: Vec<Endpoint>,
    /// Present exactly when the conduit has deep-inspected services.
    pub inspection: Option<Inspection>,
    pub defined_at: Pos,
}

/// How the proxy judges a conduit's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The .rego file, as written; relative to the zones.yaml directory. It judges Modbus
    /// requests, and OPC UA ones when there is no `opcua_policy`.
    pub policy: PathBuf,
    /// The .rego file that judges OPC UA channels and requests, if not `policy`.
    pub opcua_policy: Option<PathBuf>,
    pub mode: Mode,
    pub on_deny: OnDeny,
    /// Writes allowed per second on the conduit, all its connections together.
    pub write_rate: Option<super::WriteRate>,
    /// When a source is dropped in the kernel for its violations; `None`: never.
    pub quarantine: Option<QuarantineSettings>,
}

/// A source that commits more than `after` violations (denied or malformed requests) on the
/// conduit within `within` is dropped in the kernel for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineSettings {
    pub after: u32,
    pub within: Duration,
    /// Whole seconds, as nftables timeouts count.
    pub duration: Duration,
    /// A write refused by `write_rate` is back-pressure, not an attack: it counts as a
    /// violation only when the conduit says so.
    pub count_rate_limits: bool,
}

impl QuarantineSettings {
    /// `quarantine.after` when not given.
    pub const DEFAULT_AFTER: u32 = 3;
    /// `quarantine.within` when not given.
    pub const DEFAULT_WITHIN: Duration = Duration::from_secs(60);
    /// `quarantine.for` when not given.
    pub const DEFAULT_FOR: Duration = Duration::from_secs(600);
}

/// `enforce`: refuse what policy denies. `monitor`: decide and record, but forward everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Monitor,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

/// What a client gets for a denied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeny {
    /// Modbus exception 0x01 Illegal Function.
    IllegalFunction,
    /// Modbus exception 0x02 Illegal Data Address.
    IllegalDataAddress,
    /// Close the client's connection.
    Close,
}

impl OnDeny {
    /// As zones.yaml writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDeny::IllegalFunction => "illegal-function",
            OnDeny::IllegalDataAddress => "illegal-data-address",
            OnDeny::Close => "close",
        }
    }
}

/// A narrowing of a conduit end: a named asset or a network inside the zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Asset { name: String, address: IpAddr },
    Network(IpNet),
}

impl Endpoint {
    /// The addresses this endpoint stands for.
    pub fn net(&self) -> IpNet {
        match self {
            Endpoint::Asset { address, .. } => IpNet::from(*address),
            Endpoint::Network(net) => *net,
        }
    }
}

/// What may cross a conduit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Tcp(PortRange),
    Udp(PortRange),
    /// ICMP / ICMPv6 echo requests (ping); errors and replies ride conntrack.
    Icmp,
    /// Modbus/TCP, diverted to the deep-inspection proxy.
    Modbus {
        port: u16,
    },
    /// OPC UA binary (opc.tcp), diverted to the deep-inspection proxy.
    OpcUa {
        port: u16,
    },
}

impl Service {
    /// Deep-inspected services never cross in the forward path: the proxy carries them.
    pub fn is_inspected(&self) -> bool {
        matches!(self, Service::Modbus { .. } | Service::OpcUa { .. })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Tcp(r) => write!(f, "tcp/{r}"),
            Service::Udp(r) => write!(f, "udp/{r}"),
            Service::Icmp => f.write_str("icmp"),
            Service::Modbus { port } => write!(f, "modbus/{port}"),
            Service::OpcUa { port } => write!(f, "opcua/{port}"),
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Purdue reference model level; 3.5 is the industrial DMZ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PurdueLevel {
    L0,
    L1,
    L2,
    L3,
    L3_5,
    L4,
    L5,
}

impl PurdueLevel {
    const ALL: [(PurdueLevel, f64); 7] = [
        (PurdueLevel::L0, 0.0),
        (PurdueLevel::L1, 1.0),
        (PurdueLevel::L2, 2.0),
        (PurdueLevel::L3, 3.0),
        (PurdueLevel::L3_5, 3.5),
        (PurdueLevel::L4, 4.0),
        (PurdueLevel::L5, 5.0),
    ];

    pub(super) fn from_number(n: f64) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, v)| (*v - n).abs() < f64::EPSILON)
            .map(|(l, _)| *l)
    }

    /// The level as zones.yaml writes it (3.5 for the DMZ).
    pub fn number(self) -> f64 {
        Self::ALL
            .iter()
            .find(|(l, _)| *l == self)
            .map_or(0.0, |(_, v)| *v)
    }

    /// Position on the ladder, counting the DMZ as a step of its own.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for PurdueLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            PurdueLevel::L0 => "0",
            PurdueLevel::L1 => "1",
            PurdueLevel::L2 => "2",
            PurdueLevel::L3 => "3",
            PurdueLevel::L3_5 => "3.5",
            PurdueLevel::L4 => "4",
            PurdueLevel::L5 => "5",
        };
        f.write_str(s)
    }
}

/// IEC 62443 target security level of a zone (SL-T 1..=4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecurityLevel(pub(super) u8);

impl SecurityLevel {
    pub fn value(self) -> u8 {
        self.0
    }
}

/// What an asset is; policies and diagrams key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetKind {
    BessInverter,
    BessController,
    Cnc,
    Plc,
    Rtu,
    Ied,
    Hmi,
    Scada,
    Historian,
    EngineeringWorkstation,
    Server,
    Other,
}

impl AssetKind {
    const ALL: [(AssetKind, &'static str); 12] = [
        (AssetKind::BessInverter, "bess-inverter"),
        (AssetKind::BessController, "bess-controller"),
        (AssetKind::Cnc, "cnc"),
        (AssetKind::Plc, "plc"),
        (AssetKind::Rtu, "rtu"),
        (AssetKind::Ied, "ied"),
        (AssetKind::Hmi, "hmi"),
        (AssetKind::Scada, "scada"),
        (AssetKind::Historian, "historian"),
        (AssetKind::EngineeringWorkstation, "engineering-workstation"),
        (AssetKind::Server, "server"),
        (AssetKind::Other, "other"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("other", |(_, s)| s)
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }

    pub(super) fn names() -> String {
        Self::ALL
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A legal but risky finding, shown by `zonegate check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub pos: Pos,
    pub message: String,
}

impl Model {
    pub fn zone(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| z.name == name)
    }

    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }

    /// The asset with this address, if one is named.
    pub fn asset_at(&self, address: IpAddr) -> Option<&Asset> {
        self.assets.iter().find(|a| a.address == address)
    }

    /// The zone whose networks hold this address.
    pub fn zone_of(&self, address: IpAddr) -> Option<&Zone> {
        self.zones
            .iter()
            .find(|z| z.networks.iter().any(|n| n.contains(&address)))
    }

    /// Makes the relative paths of files zonegate writes (audit file, spool) relative to `dir`
    /// (the zones.yaml directory). Files it reads were resolved by [`Model::from_raw`].
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        self.audit.resolve_paths(dir);
    }

    /// One diagnostic per file the model names that cannot be read, at the line and column
    /// naming it: what `check` and `run` refuse before reading any of them.
    pub fn unreadable_files(&self) -> Vec<Diagnostic> {
        files::unreadable(&self.files)
    }
}

/// A peer the gateway may connect to, on these services.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressPeer {
    pub name: String,
    /// One address (a /32 or /128) or a network.
    pub network: IpNet,
    /// TCP and UDP ports and ICMP echo; never a deep-inspected service.
    pub services: Vec<Service>,
    pub defined_at: Pos,
}

/// `tcp/443`, `tcp/8000-8010`, `udp/514`, `icmp`, `modbus`, `modbus/5020`, `opcua`, `opcua/4841`.
pub(super) fn service(s: &Spanned<String>, p: &mut Problems) -> Option<Service> {
    let text = s.value.trim();
    let (proto, port) = match text.split_once('/') {
        Some((proto, port)) => (proto, Some(port)),
        None => (text, None),
    };
    let bad = |p: &mut Problems, why: String| {
        p.at(
            s,
            format!("service `{text}`: {why}"),
            Some(
                "write tcp/PORT, tcp/FIRST-LAST, udp/PORT, icmp, modbus[/PORT] or opcua[/PORT]"
                    .into(),
            ),
        );
        None
    };
    let single = |port: &str| port.parse::<u16>().ok().filter(|p| *p != 0);
    match (proto, port) {
        ("icmp", None) => Some(Service::Icmp),
        ("modbus", None) => Some(Service::Modbus { port: MODBUS_PORT }),
        ("opcua", None) => Some(Service::OpcUa { port: OPCUA_PORT }),
        ("modbus" | "opcua", Some(port)) => match single(port) {
            Some(port) if proto == "modbus" => Some(Service::Modbus { port }),
            Some(port) => Some(Service::OpcUa { port }),
            None => bad(p, format!("`{port}` is not a port (1-65535)")),
        },
        ("tcp" | "udp", Some(ports)) => {
            let range = match ports.split_once('-') {
                Some((a, b)) => match (single(a), single(b)) {
                    (Some(first), Some(last)) if first <= last => Some(PortRange { first, last }),
                    _ => None,
                },
                None => single(ports).map(|p| PortRange { first: p, last: p }),
            };
            match (range, proto) {
                (Some(r), "tcp") => Some(Service::Tcp(r)),
                (Some(r), _) => Some(Service::Udp(r)),
                (None, _) => bad(
                    p,
                    format!("`{ports}` is not a port or ascending port range"),
                ),
            }
        }
        ("tcp" | "udp", None) => bad(p, "a port is required".into()),
        ("icmp", Some(_)) => bad(p, "icmp takes no port".into()),
        _ => bad(p, format!("unknown protocol `{proto}`")),
    }
}

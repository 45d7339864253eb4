//! The shape of `zones.yaml` exactly as written: serde structs that refuse unknown fields. Nothing here
//! is trusted; [`super::model`] turns it into the validated model. Values that a later check may
//! complain about carry their YAML location ([`Spanned`]) so that the complaint can name line and column.
//! Zone, asset and conduit names are spanned map keys: problems with a whole entry point at its name.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub gateway: Option<Spanned<RawGateway>>,
    pub zones: IndexMap<Spanned<String>, Spanned<RawZone>>,
    #[serde(default)]
    pub assets: IndexMap<Spanned<String>, Spanned<RawAsset>>,
    #[serde(default)]
    pub conduits: IndexMap<Spanned<String>, Spanned<RawConduit>>,
    #[serde(default)]
    pub audit: Option<Spanned<RawAudit>>,
    #[serde(default)]
    pub limits: Option<Spanned<RawLimits>>,
}

/// Where audit events go and how they are sealed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `count` (default) or `each`.
    #[serde(default)]
    pub reads: Option<Spanned<String>>,
    /// `drop_oldest` (default) or `fail_closed`.
    #[serde(default)]
    pub when_full: Option<Spanned<String>>,
    /// HMAC key for the hash chain.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
    /// Signed checkpoints.
    #[serde(default)]
    pub checkpoint: Option<Spanned<RawCheckpoint>>,
    #[serde(default)]
    pub file: Option<Spanned<RawAuditFile>>,
    #[serde(default)]
    pub spool: Option<Spanned<RawSpool>>,
    #[serde(default)]
    pub syslog: Vec<Spanned<RawSyslog>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoint {
    /// Ed25519 private key, PKCS#8 PEM.
    pub signing_key_file: Spanned<String>,
    /// humantime, default 60s.
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditFile {
    pub path: Spanned<String>,
    #[serde(default)]
    pub max_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub keep: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    #[serde(default)]
    pub directory: Option<Spanned<String>>,
    #[serde(default)]
    pub max_bytes: Option<Spanned<u64>>,
}

/// A remote syslog receiver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyslog {
    /// host:port
    pub address: Spanned<String>,
    /// `udp`, `tcp` or `tls`.
    pub transport: Spanned<String>,
    /// `rfc5424` (default) or `cef`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// PEM CA bundle that verifies the receiver (tls).
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub client_cert: Option<Spanned<String>>,
    #[serde(default)]
    pub client_key: Option<Spanned<String>>,
}

/// Settings of the gateway itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    #[serde(default)]
    pub management: Option<Spanned<RawManagement>>,
    #[serde(default)]
    pub proxy: Option<RawProxy>,
    #[serde(default)]
    pub drop_log: Option<RawDropLog>,
    /// `closed` (default) or `open`: what crosses zones while zonegate is down.
    #[serde(default)]
    pub failure_mode: Option<Spanned<String>>,
}

/// The one address on which the gateway accepts connections for itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManagement {
    pub address: Spanned<String>,
    #[serde(default)]
    pub interface: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_from: Vec<Spanned<String>>,
    #[serde(default)]
    pub tcp_ports: Vec<Spanned<u16>>,
    /// zonegate's management API (health, status, metrics); none without it.
    #[serde(default)]
    pub api: Option<Spanned<RawApi>>,
    /// Named peers the gateway itself may connect to besides its management peers (NTP, DNS).
    #[serde(default)]
    pub egress: IndexMap<Spanned<String>, Spanned<RawEgress>>,
}

/// One peer of `management.egress`: where, and which services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    /// An address or a CIDR network.
    pub address: Spanned<String>,
    /// `tcp/PORT`, `udp/PORT` (or ranges) and `icmp`, as in conduits.
    pub services: Spanned<Vec<Spanned<String>>>,
}

/// The management API listener, on the management address only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub port: Spanned<u16>,
    /// A file holding the key clients send as `Authorization: Bearer <key>`.
    #[serde(default)]
    pub api_key_file: Option<Spanned<String>>,
    #[serde(default)]
    pub tls: Option<Spanned<RawApiTls>>,
}

/// The API's server certificate and, for client certificates, the CA that signs them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiTls {
    pub certificate: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default)]
    pub client_ca: Option<Spanned<String>>,
}

/// Local ports of the deep-inspection proxy that `modbus` and `opcua` conduits are diverted to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    #[serde(default)]
    pub modbus_port: Option<Spanned<u16>>,
    #[serde(default)]
    pub opcua_port: Option<Spanned<u16>>,
}

/// Kernel logging of dropped packets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDropLog {
    #[serde(default)]
    pub group: Option<Spanned<u16>>,
    #[serde(default)]
    pub per_second: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    #[serde(default)]
    pub description: Option<String>,
    pub level: Spanned<f64>,
    pub security_level: Spanned<u8>,
    #[serde(default)]
    pub networks: Vec<Spanned<String>>,
    #[serde(default)]
    pub interfaces: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsset {
    pub zone: Spanned<String>,
    pub address: Spanned<String>,
    pub kind: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Device profile naming the asset's registers (path relative to zones.yaml).
    #[serde(default)]
    pub register_map: Option<Spanned<String>>,
    /// An asset the plant cannot lose (e.g. the SCADA server): never quarantined.
    #[serde(default)]
    pub critical: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConduit {
    #[serde(default)]
    pub description: Option<String>,
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub services: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub sources: Vec<Spanned<String>>,
    #[serde(default)]
    pub destinations: Vec<Spanned<String>>,
    /// Required for conduits with deep-inspected services (modbus, opcua).
    #[serde(default)]
    pub inspection: Option<Spanned<RawInspection>>,
}

/// How the proxy judges a conduit's requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInspection {
    /// A .rego file (path relative to zones.yaml); decisions come from `data.<package>.decision`.
    pub policy: Spanned<String>,
    /// The policy for the conduit's OPC UA channels and requests, when it is not `policy`.
    #[serde(default)]
    pub opcua_policy: Option<Spanned<String>>,
    /// `enforce` (default) or `monitor`.
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// `illegal-function` (default), `illegal-data-address` or `close`.
    #[serde(default)]
    pub on_deny: Option<Spanned<String>>,
    /// A token bucket for the conduit's writes, shared by its connections.
    #[serde(default)]
    pub write_rate: Option<Spanned<RawWriteRate>>,
    /// Drop a source in the kernel for a while after too many violations; absent: never.
    #[serde(default)]
    pub quarantine: Option<Spanned<RawQuarantine>>,
}

/// `inspection.write_rate`: writes per second, and how many may come at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWriteRate {
    pub per_second: Spanned<u32>,
    #[serde(default)]
    pub burst: Option<Spanned<u32>>,
}

/// Gateway-wide bounds of the inspection proxy; durations as humantime strings (`300s`, `50ms`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub connections: Option<Spanned<u32>>,
    #[serde(default)]
    pub connections_per_source: Option<Spanned<u32>>,
    #[serde(default)]
    pub in_flight_per_connection: Option<Spanned<u32>>,
    #[serde(default)]
    pub idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub response_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub policy_time: Option<Spanned<String>>,
    #[serde(default)]
    pub opcua: Option<Spanned<RawOpcUaLimits>>,
}

/// `limits.opcua`: the OPC UA frame sizes the proxy accepts and negotiates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpcUaLimits {
    #[serde(default)]
    pub max_chunk_size: Option<Spanned<u32>>,
    #[serde(default)]
    pub max_message_size: Option<Spanned<u32>>,
    #[serde(default)]
    pub max_chunks: Option<Spanned<u32>>,
}

/// `quarantine: {after: N, within: T, for: D, count_rate_limits: B}` on an inspected conduit;
/// every field optional (defaults in `config::model`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuarantine {
    /// Violations tolerated within `within`; one more quarantines the source.
    #[serde(default)]
    pub after: Option<Spanned<u32>>,
    /// The sliding window, a humantime duration (`10s`, `1m`).
    #[serde(default)]
    pub within: Option<Spanned<String>>,
    /// How long the source stays dropped (`for` in YAML).
    #[serde(default, rename = "for")]
    pub duration: Option<Spanned<String>>,
    /// Whether a write refused by the conduit's `write_rate` counts as a violation.
    #[serde(default)]
    pub count_rate_limits: Option<bool>,
}

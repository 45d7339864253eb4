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
}

//! The audit event: one JSON object per security-relevant fact. Field names follow Elastic Common
//! Schema (`@timestamp`, `event.*`, `source.*`, `destination.*`, `network.*`, `rule.name`,
//! `observer.*`); what ECS has no name for is under `zonegate.*` (conduit, zones and Purdue levels,
//! assets, decision), `modbus.*` and `opcua.*`. The JSON Schema is `schema/audit-event.schema.json`.
//!
//! Field order is part of the format: `zonegate` is the last member of every event, because the
//! writer appends the hash chain (`zonegate.chain`) to the serialized event as its final member
//! (see [`super::chain`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::SystemTime;

use serde::Serialize;

use super::checkpoint::Checkpoint;
use crate::config::Model;

/// One audit event. Built only where something happened that a SOC must see.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// A sentence for people reading the event in a SIEM list.
    pub message: String,
    pub event: EventMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// ECS `http.*` of a management API request: method and status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
    /// ECS `url.*` of a management API request: its path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<serde_json::Value>,
    pub observer: Observer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modbus: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcua: Option<serde_json::Value>,
    /// Last, see the module comment.
    pub zonegate: Zonegate,
}

/// ECS `event.*`.
#[derive(Debug, Clone, Serialize)]
pub struct EventMeta {
    /// `event` or `alert` (something a SOC should look at: denials, malformed traffic, lost events).
    pub kind: &'static str,
    pub category: &'static [&'static str],
    #[serde(rename = "type")]
    pub types: &'static [&'static str],
    /// What happened, e.g. `modbus-request`, `network-drop`, `daemon-start`.
    pub action: &'static str,
    /// `success`, `failure` or `unknown`.
    pub outcome: &'static str,
    /// Syslog severity number (2 critical ... 6 informational), also the syslog header's.
    pub severity: u8,
    /// Position in the audit stream, from 1, without gaps: set by the writer.
    pub sequence: u64,
    pub dataset: &'static str,
}

/// Syslog severities zonegate uses (RFC 5424 numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Audit itself failed: events were lost.
    Critical = 2,
    /// Denials, refusals, malformed traffic.
    Warning = 4,
    /// Changes: configuration, daemon start and stop.
    Notice = 5,
    Info = 6,
}

/// ECS `source` / `destination`: the address as seen on the wire.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            ip: addr.ip().to_string(),
            port: Some(addr.port()),
        }
    }

    pub fn ip(ip: IpAddr, port: Option<u16>) -> Self {
        Endpoint {
            ip: ip.to_string(),
            port,
        }
    }
}

/// ECS `network.*`.
#[derive(Debug, Clone, Serialize)]
pub struct Network {
    /// `tcp`, `udp`, `icmp`, `ipv6-icmp` ...
    pub transport: &'static str,
    /// Application protocol: `modbus`, `opcua`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub family: &'static str,
}

impl Network {
    pub fn new(transport: &'static str, protocol: Option<&'static str>, ip: IpAddr) -> Self {
        Network {
            transport,
            protocol,
            family: if ip.is_ipv4() { "ipv4" } else { "ipv6" },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
}

/// ECS `observer.*`: the gateway that saw it. Zones also appear here, where ECS-aware tools
/// look for a firewall's zones.
#[derive(Debug, Clone, Serialize)]
pub struct Observer {
    pub vendor: &'static str,
    pub product: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: &'static str,
    pub hostname: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<ObserverZone>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<ObserverZone>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObserverZone {
    pub zone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    pub name: String,
}

/// zonegate's own fields.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Zonegate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conduit: Option<String>,
    /// `allow`, `deny`, `would_deny` (monitor mode), `refuse` (malformed, no policy asked),
    /// `drop` (the kernel's default deny), `quarantine` or `would_quarantine` (a critical
    /// source, or monitor mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// `enforce` or `monitor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// Where the initiator sits in the plant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Place>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Place>,
    /// Kind-specific details: `drop` (chain, interfaces), `config` (hashes), `gap`, `daemon`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<serde_json::Value>,
    /// A management API request: the credential that authenticated it (`api_key`,
    /// `certificate` with its subject, or `none`), never the key itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<serde_json::Value>,
    /// A source quarantined (or that would be): the settings, the violations, until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<serde_json::Value>,
    /// `audit-checkpoint`: the chain's position, signed (see [`super::checkpoint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A zone and, when known, the asset at an address.
#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub zone: String,
    /// Purdue level, 3.5 for the DMZ (whole levels as integers).
    #[serde(serialize_with = "level")]
    pub level: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_kind: Option<String>,
}

fn level<S: serde::Serializer>(level: &f64, s: S) -> Result<S::Ok, S::Error> {
    if level.fract() == 0.0 && (0.0..=5.0).contains(level) {
        // Exact: whole levels 0 to 5.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        s.serialize_u8(*level as u8)
    } else {
        s.serialize_f64(*level)
    }
}

impl Place {
    /// The zone (and asset) of an address in the model; `None` outside every zone.
    pub fn of(model: &Model, ip: IpAddr) -> Option<Place> {
        let zone = model.zone_of(ip)?;
        let asset = model.asset_at(ip);
        Some(Place {
            zone: zone.name.clone(),
            level: zone.level.number(),
            asset: asset.map(|a| a.name.clone()),
            asset_kind: asset.map(|a| a.kind.as_str().to_owned()),
        })
    }

    /// A zone by name.
    pub fn zone(model: &Model, name: &str) -> Option<Place> {
        let zone = model.zones.iter().find(|z| z.name == name)?;
        Some(Place {
            zone: zone.name.clone(),
            level: zone.level.number(),
            asset: None,
            asset_kind: None,
        })
    }
}

impl Event {
    /// An event happening now; the writer sets its sequence number.
    pub fn now(
        action: &'static str,
        kind: &'static str,
        category: &'static [&'static str],
        types: &'static [&'static str],
        outcome: &'static str,
        severity: Severity,
    ) -> Event {
        Event {
            timestamp: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            message: String::new(),
            event: EventMeta {
                kind,
                category,
                types,
                action,
                outcome,
                severity: severity as u8,
                sequence: 0,
                dataset: "zonegate.audit",
            },
            source: None,
            destination: None,
            network: None,
            rule: None,
            http: None,
            url: None,
            observer: Observer::here(),
            modbus: None,
            opcua: None,
            zonegate: Zonegate::default(),
        }
    }

    /// A decision on network traffic: `decision` names the event type and its outcome.
    pub fn traffic(action: &'static str, decision: &'static str) -> Event {
        let (kind, types, outcome, severity) = match decision {
            "allow" => (
                "event",
                &["allowed", "connection"][..],
                "success",
                Severity::Info,
            ),
            "would_deny" | "would_quarantine" => (
                "alert",
                &["allowed", "connection"][..],
                "success",
                Severity::Warning,
            ),
            _ => (
                "alert",
                &["denied", "connection"][..],
                "failure",
                Severity::Warning,
            ),
        };
        let mut e = Event::now(
            action,
            kind,
            &["network", "intrusion_detection"],
            types,
            outcome,
            severity,
        );
        e.zonegate.decision = Some(decision);
        e
    }

    /// Zones as ECS `observer.ingress/egress.zone`, from `zonegate.source/destination`.
    pub fn with_places(mut self, source: Option<Place>, destination: Option<Place>) -> Event {
        self.observer.ingress = source.as_ref().map(|p| ObserverZone {
            zone: p.zone.clone(),
            interface: None,
        });
        self.observer.egress = destination.as_ref().map(|p| ObserverZone {
            zone: p.zone.clone(),
            interface: None,
        });
        self.zonegate.source = source;
        self.zonegate.destination = destination;
        self
    }

    /// The `audit-checkpoint` event carrying `checkpoint`.
    pub fn audit_checkpoint(checkpoint: Checkpoint) -> Event {
        let mut e = Event::now(
            "audit-checkpoint",
            "event",
            &["process"],
            &["info"],
            "success",
            Severity::Info,
        );
        let what = if checkpoint.from_sequence > checkpoint.sequence {
            "no events".to_owned()
        } else {
            format!(
                "events {} to {}",
                checkpoint.from_sequence, checkpoint.sequence
            )
        };
        e.message = format!(
            "audit checkpoint ({}): {what}, chain head {}, {}",
            checkpoint.reason.as_str(),
            checkpoint.head,
            if checkpoint.signature.is_some() {
                "signed"
            } else {
                "not signed"
            }
        );
        e.zonegate.checkpoint = Some(checkpoint);
        e
    }

    /// `network-drop`: a packet the kernel's default deny dropped and logged (rate-limited), with
    /// the zones it came from and was headed to, by address or else by interface.
    pub fn network_drop(model: &Model, drop: &crate::nft::droplog::Drop) -> Event {
        let place = |ip: IpAddr, interface: Option<&String>| {
            Place::of(model, ip).or_else(|| {
                let name = interface?;
                let zone = model.zones.iter().find(|z| z.interfaces.contains(name))?;
                Place::zone(model, &zone.name)
            })
        };
        let source = place(drop.source, drop.in_interface.as_ref());
        let destination = place(drop.destination, drop.out_interface.as_ref());
        let zone_name = |p: &Option<Place>| {
            p.as_ref()
                .map_or_else(|| "no zone".to_owned(), |p| format!("zone {}", p.zone))
        };
        let endpoint = |ip: IpAddr, port: Option<u16>| match port {
            Some(port) => SocketAddr::new(ip, port).to_string(),
            None => ip.to_string(),
        };
        let mut e = Event::traffic("network-drop", "drop");
        e.message = format!(
            "network-drop: {} {} -> {} from {} to {}: no conduit allows it",
            drop.transport,
            endpoint(drop.source, drop.source_port),
            endpoint(drop.destination, drop.destination_port),
            zone_name(&source),
            zone_name(&destination),
        );
        e = e.with_places(source, destination);
        for (zone, interface) in [
            (&mut e.observer.ingress, &drop.in_interface),
            (&mut e.observer.egress, &drop.out_interface),
        ] {
            if let (Some(zone), Some(name)) = (zone.as_mut(), interface) {
                zone.interface = Some(Interface { name: name.clone() });
            }
        }
        e.source = Some(Endpoint::ip(drop.source, drop.source_port));
        e.destination = Some(Endpoint::ip(drop.destination, drop.destination_port));
        e.network = Some(Network::new(drop.transport, None, drop.source));
        e.rule = Some(Rule {
            name: format!("zonegate.{}.default-deny", drop.chain),
        });
        e.zonegate.reason = "no conduit allows it".into();
        let mut details = serde_json::json!({
            "chain": drop.chain,
            "in_interface": drop.in_interface,
            "out_interface": drop.out_interface,
            "iana_number": drop.iana_number,
            "length": drop.length,
        });
        // A packet to the gateway has no output interface (and one from it no input one): the
        // field is left out, as the schema says, rather than null.
        if let Some(fields) = details.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        e.zonegate.drop = Some(details);
        e
    }

    pub fn severity(&self) -> Severity {
        match self.event.severity {
            0..=2 => Severity::Critical,
            3 | 4 => Severity::Warning,
            5 => Severity::Notice,
            _ => Severity::Info,
        }
    }
}

impl Observer {
    fn here() -> Observer {
        Observer {
            vendor: "zonegate",
            product: "zonegate",
            kind: "firewall",
            version: env!("CARGO_PKG_VERSION"),
            hostname: hostname(),
            ingress: None,
            egress: None,
        }
    }
}

/// This machine's name, read once: the kernel's, as `hostname` prints it.
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

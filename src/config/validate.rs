//! Validation: zones.yaml as read ([`super::raw`]) into a consistent [`Model`], with every
//! problem found at once. The sections with settings of their own validate in their modules
//! ([`super::audit`], [`super::limits`], [`super::egress`]); this module checks the gateway,
//! zones, assets and conduits and that they fit together.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::Diagnostic;
use super::Pos;
use super::files::Base;
use super::model::{
    Api, ApiTls, Asset, AssetKind, Conduit, DEFAULT_DROP_LOG_GROUP, DEFAULT_DROP_LOG_PER_SECOND,
    DEFAULT_MODBUS_PROXY_PORT, DEFAULT_OPCUA_PROXY_PORT, Endpoint, FailureMode, Gateway,
    Inspection, MAX_IFNAME_LEN, MAX_QUARANTINE_AFTER, MAX_QUARANTINE_FOR, MAX_QUARANTINE_WITHIN,
    Management, Mode, Model, OnDeny, PurdueLevel, QuarantineSettings, SecurityLevel, Service, Zone,
    service,
};
use super::problems::{Problems, check_name, network};
use super::raw::{
    RawApi, RawAsset, RawConduit, RawFile, RawGateway, RawInspection, RawQuarantine, RawZone,
};

impl TryFrom<RawFile> for Model {
    type Error = Vec<Diagnostic>;

    /// Paths as written: relative ones to the current directory, credentials unresolved.
    fn try_from(raw: RawFile) -> Result<Self, Self::Error> {
        Model::from_raw(raw, Base::default())
    }
}

impl Model {
    /// Validates `raw`; the files it names are resolved against `base`.
    pub fn from_raw(raw: RawFile, base: Base) -> Result<Self, Vec<Diagnostic>> {
        let mut p = Problems {
            base,
            ..Problems::default()
        };
        let gateway = gateway(raw.gateway.as_ref(), &mut p);
        let zones = zones(&raw, &mut p);
        let assets = assets(&raw, &zones, &mut p);
        let conduits = conduits(&raw, &zones, &assets, &mut p);
        let audit = super::audit::settings(raw.audit.as_ref(), &mut p);
        let limits = super::limits::limits(raw.limits.as_ref(), &mut p);
        if p.found.is_empty() {
            Ok(Model {
                gateway,
                zones,
                assets,
                conduits,
                audit,
                limits,
                files: p.files,
            })
        } else {
            Err(p.found)
        }
    }
}

fn gateway(raw: Option<&Spanned<RawGateway>>, p: &mut Problems) -> Gateway {
    let mut gw = Gateway {
        management: None,
        modbus_proxy_port: DEFAULT_MODBUS_PROXY_PORT,
        opcua_proxy_port: DEFAULT_OPCUA_PROXY_PORT,
        drop_log_group: DEFAULT_DROP_LOG_GROUP,
        drop_log_per_second: DEFAULT_DROP_LOG_PER_SECOND,
        failure_mode: FailureMode::default(),
        failure_mode_at: Pos::default(),
    };
    let Some(raw) = raw else { return gw };
    if let Some(mode) = &raw.value.failure_mode {
        gw.failure_mode_at = Pos::of(mode);
        match mode.value.as_str() {
            "closed" => gw.failure_mode = FailureMode::Closed,
            "open" => gw.failure_mode = FailureMode::Open,
            other => p.at(
                mode,
                format!("unknown gateway.failure_mode `{other}`"),
                Some(
                    "use `closed` (nothing crosses zones while zonegate is down) or `open` \
                     (deep-inspected conduits pass uninspected while zonegate is down)"
                        .into(),
                ),
            ),
        }
    }
    if let Some(m) = &raw.value.management {
        let address = match m.value.address.value.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.at(
                    &m.value.address,
                    format!("`{}` is not an IP address", m.value.address.value),
                    Some(
                        "write a single address such as 10.99.0.1, without a prefix length".into(),
                    ),
                );
                None
            }
        };
        let interface = m.value.interface.as_ref().map(|i| {
            check_ifname(i, p);
            i.value.clone()
        });
        let allow_from = m
            .value
            .allow_from
            .iter()
            .filter_map(|n| network(n, p))
            .collect();
        let mut tcp_ports = Vec::new();
        for port in &m.value.tcp_ports {
            if port.value == 0 {
                p.at(port, "port 0 is not a port", None);
            } else if tcp_ports.contains(&port.value) {
                p.at(port, format!("port {} is listed twice", port.value), None);
            } else {
                tcp_ports.push(port.value);
            }
        }
        if m.value.tcp_ports.is_empty() {
            p.at(
                m,
                "gateway.management lists no tcp_ports",
                Some(
                    "name the ports the gateway serves there, e.g. `tcp_ports: [22, 9443]`".into(),
                ),
            );
        }
        let api = m.value.api.as_ref().and_then(|a| api(a, &tcp_ports, p));
        let egress = super::egress::peers(&m.value.egress, p);
        gw.management = address.map(|address| Management {
            address,
            interface,
            allow_from,
            tcp_ports,
            api,
            egress,
        });
    }
    if let Some(proxy) = &raw.value.proxy {
        if let Some(port) = &proxy.modbus_port {
            gw.modbus_proxy_port = nonzero_port(port, p);
        }
        if let Some(port) = &proxy.opcua_port {
            gw.opcua_proxy_port = nonzero_port(port, p);
            if gw.opcua_proxy_port == gw.modbus_proxy_port {
                p.at(port, "the OPC UA and Modbus proxy ports must differ", None);
            }
        }
    }
    if let Some(log) = &raw.value.drop_log {
        if let Some(group) = &log.group {
            gw.drop_log_group = group.value;
        }
        if let Some(rate) = &log.per_second {
            if rate.value == 0 {
                p.at(
                    rate,
                    "drop_log.per_second must be at least 1",
                    Some("drops are always counted; this only limits log messages".into()),
                );
            }
            gw.drop_log_per_second = rate.value;
        }
    }
    gw
}

/// The management API section; `None` (with problems reported) when it is unusable.
fn api(raw: &Spanned<RawApi>, tcp_ports: &[u16], p: &mut Problems) -> Option<Api> {
    let a = &raw.value;
    let port = a.port.value;
    if port == 0 {
        p.at(&a.port, "port 0 is not a port", None);
        return None;
    }
    if !tcp_ports.contains(&port) {
        p.at(
            &a.port,
            format!("the management API port {port} is not one of gateway.management.tcp_ports"),
            Some(format!(
                "add {port} to tcp_ports: the gateway admits connections to itself only on those ports"
            )),
        );
    }
    let client_ca = a.tls.as_ref().is_some_and(|t| t.value.client_ca.is_some());
    if a.api_key_file.is_none() && !client_ca {
        p.at(
            raw,
            "gateway.management.api names no way to authenticate clients",
            Some("set `api_key_file`, or `tls.client_ca` for client certificates, or both".into()),
        );
        return None;
    }
    const API: &str = "gateway.management.api";
    Some(Api {
        port,
        api_key_file: a
            .api_key_file
            .as_ref()
            .map(|k| p.file(k, format!("{API}.api_key_file"))),
        tls: a.tls.as_ref().map(|t| ApiTls {
            certificate: p.file(&t.value.certificate, format!("{API}.tls.certificate")),
            key: p.file(&t.value.key, format!("{API}.tls.key")),
            client_ca: t
                .value
                .client_ca
                .as_ref()
                .map(|c| p.file(c, format!("{API}.tls.client_ca"))),
        }),
    })
}

fn nonzero_port(port: &Spanned<u16>, p: &mut Problems) -> u16 {
    if port.value == 0 {
        p.at(port, "port 0 is not a port", None);
    }
    port.value
}

fn check_ifname(name: &Spanned<String>, p: &mut Problems) {
    let n = &name.value;
    let ok = !n.is_empty()
        && n.len() <= MAX_IFNAME_LEN
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        p.at(
            name,
            format!("`{n}` is not a Linux interface name"),
            Some(format!(
                "use up to {MAX_IFNAME_LEN} letters, digits, `.`, `-` or `_`, e.g. eth0.40 for VLAN 40"
            )),
        );
    }
}

fn zones(raw: &RawFile, p: &mut Problems) -> Vec<Zone> {
    let mut out: Vec<Zone> = Vec::new();
    let mut seen_ifnames: HashMap<String, String> = HashMap::new();
    for (key, z) in &raw.zones {
        let name = &key.value;
        check_name("zone", name, key, p);
        let RawZone {
            description,
            level,
            security_level,
            networks,
            interfaces,
        } = &z.value;
        let level = match PurdueLevel::from_number(level.value) {
            Some(l) => l,
            None => {
                p.at(
                    level,
                    format!("zone `{name}`: level {} is not a Purdue level", level.value),
                    Some("use 0, 1, 2, 3, 3.5 (DMZ), 4 or 5".into()),
                );
                PurdueLevel::L0
            }
        };
        if !(1..=4).contains(&security_level.value) {
            p.at(
                security_level,
                format!(
                    "zone `{name}`: security_level {} is outside IEC 62443 SL 1-4",
                    security_level.value
                ),
                None,
            );
        }
        let mut nets = Vec::new();
        for n in networks {
            let Some(net) = network(n, p) else { continue };
            for (other, other_net) in out
                .iter()
                .flat_map(|o| o.networks.iter().map(move |on| (&o.name, on)))
                .chain(nets.iter().map(|on| (name, on)))
            {
                if overlaps(&net, other_net) {
                    p.at(
                        n,
                        format!(
                            "zone `{name}`: network {net} overlaps {other_net} of zone `{other}`"
                        ),
                        Some("every address must belong to exactly one zone".into()),
                    );
                }
            }
            nets.push(net);
        }
        for i in interfaces {
            check_ifname(i, p);
            if let Some(other) = seen_ifnames.insert(i.value.clone(), name.clone()) {
                p.at(
                    i,
                    format!(
                        "zone `{name}`: interface `{}` already belongs to zone `{other}`",
                        i.value
                    ),
                    None,
                );
            }
        }
        if networks.is_empty() && interfaces.is_empty() {
            p.at(
                key,
                format!("zone `{name}` has neither networks nor interfaces"),
                Some(
                    "list the zone's CIDRs under `networks:` and/or its ports under `interfaces:`"
                        .into(),
                ),
            );
        }
        out.push(Zone {
            name: name.clone(),
            description: description.clone(),
            level,
            security_level: SecurityLevel(security_level.value),
            networks_complete: nets.len() == networks.len(),
            networks: nets,
            interfaces: interfaces.iter().map(|i| i.value.clone()).collect(),
            defined_at: Pos::of(key),
        });
    }
    out
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn assets(raw: &RawFile, zones: &[Zone], p: &mut Problems) -> Vec<Asset> {
    let mut out: Vec<Asset> = Vec::new();
    for (key, a) in &raw.assets {
        let name = &key.value;
        check_name("asset", name, key, p);
        let RawAsset {
            zone,
            address,
            kind,
            description,
            register_map,
            critical,
        } = &a.value;
        if raw.zones.keys().any(|z| z.value == *name) {
            p.at(
                key,
                format!("asset `{name}` has the same name as a zone"),
                Some(
                    "conduit sources and destinations name assets; keep zone and asset names apart"
                        .into(),
                ),
            );
        }
        let z = zones.iter().find(|z| z.name == zone.value);
        if z.is_none() {
            p.at(
                zone,
                format!("asset `{name}`: unknown zone `{}`", zone.value),
                Some(format!(
                    "known zones: {}",
                    names(zones.iter().map(|z| &z.name))
                )),
            );
        }
        let addr = match address.value.parse::<IpAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                p.at(
                    address,
                    format!("asset `{name}`: `{}` is not an IP address", address.value),
                    Some("write one address such as 10.20.0.11, without a prefix length".into()),
                );
                None
            }
        };
        if let (Some(z), Some(addr)) = (z, addr) {
            // A zone whose own networks had errors cannot judge its assets; those errors suffice.
            if z.networks_complete
                && !z.networks.is_empty()
                && !z.networks.iter().any(|n| n.contains(&addr))
            {
                p.at(
                    address,
                    format!(
                        "asset `{name}`: address {addr} is outside zone `{}` ({})",
                        z.name,
                        names(z.networks.iter())
                    ),
                    Some("correct the address or the zone, or add the network to the zone".into()),
                );
            }
            if let Some(other) = out.iter().find(|o| o.address == addr) {
                p.at(
                    address,
                    format!(
                        "asset `{name}`: address {addr} is already asset `{}`",
                        other.name
                    ),
                    None,
                );
            }
        }
        let parsed_kind = AssetKind::parse(&kind.value);
        if parsed_kind.is_none() {
            p.at(
                kind,
                format!("asset `{name}`: unknown kind `{}`", kind.value),
                Some(format!("use one of: {}", AssetKind::names())),
            );
        }
        if let (Some(addr), Some(kind)) = (addr, parsed_kind) {
            out.push(Asset {
                name: name.clone(),
                zone: zone.value.clone(),
                address: addr,
                kind,
                description: description.clone(),
                register_map: register_map
                    .as_ref()
                    .map(|m| p.file(m, format!("asset `{name}`: register_map"))),
                critical: critical.as_ref().is_some_and(|c| c.value),
                defined_at: Pos::of(key),
            });
        }
    }
    out
}

fn conduits(raw: &RawFile, zones: &[Zone], assets: &[Asset], p: &mut Problems) -> Vec<Conduit> {
    let mut out = Vec::new();
    for (key, c) in &raw.conduits {
        let name = &key.value;
        check_name("conduit", name, key, p);
        let RawConduit {
            description,
            from,
            to,
            services,
            sources,
            destinations,
            inspection,
        } = &c.value;
        let zone = |s: &Spanned<String>, p: &mut Problems| {
            let z = zones.iter().find(|z| z.name == s.value);
            if z.is_none() {
                p.at(
                    s,
                    format!("conduit `{name}`: unknown zone `{}`", s.value),
                    Some(format!(
                        "known zones: {}",
                        names(zones.iter().map(|z| &z.name))
                    )),
                );
            }
            z
        };
        let from_zone = zone(from, p);
        let to_zone = zone(to, p);
        if from.value == to.value {
            p.at(
                to,
                format!(
                    "conduit `{name}` starts and ends in zone `{}`",
                    from.value
                ),
                Some("a conduit joins two different zones; traffic inside a zone does not cross the gateway".into()),
            );
        }
        let mut parsed = Vec::new();
        if services.value.is_empty() {
            p.at(
                services,
                format!("conduit `{name}` lists no services"),
                Some("e.g. `services: [tcp/443, icmp, modbus]`".into()),
            );
        }
        for s in &services.value {
            if let Some(svc) = service(s, p) {
                if parsed.contains(&svc) {
                    p.at(
                        s,
                        format!("conduit `{name}`: service {svc} is listed twice"),
                        None,
                    );
                } else {
                    parsed.push(svc);
                }
            }
        }
        let sources = from_zone
            .map(|z| endpoints(name, "sources", sources, z, assets, raw, p))
            .unwrap_or_default();
        let destinations = to_zone
            .map(|z| endpoints(name, "destinations", destinations, z, assets, raw, p))
            .unwrap_or_default();
        let inspected = parsed.iter().any(Service::is_inspected);
        let inspection = match (inspection, inspected) {
            (Some(i), true) => {
                let opcua = parsed.iter().any(|s| matches!(s, Service::OpcUa { .. }));
                match &i.value.opcua_policy {
                    Some(op) if !opcua => {
                        p.at(
                            op,
                            format!("conduit `{name}` has `inspection.opcua_policy` but no opcua service"),
                            Some("remove it, or add `opcua` to the conduit's services".into()),
                        );
                        None
                    }
                    _ => self::inspection(name, &i.value, p),
                }
            }
            (Some(i), false) => {
                p.at(
                    i,
                    format!("conduit `{name}` has `inspection:` but no modbus or opcua service"),
                    Some(
                        "only deep-inspected services are judged by a policy; remove the block"
                            .into(),
                    ),
                );
                None
            }
            (None, true) => {
                p.at(
                    key,
                    format!("conduit `{name}` carries deep-inspected services but names no policy"),
                    Some("add `inspection: {policy: policies/<file>.rego}`; without one every request would be refused".into()),
                );
                None
            }
            (None, false) => None,
        };
        out.push(Conduit {
            name: name.clone(),
            description: description.clone(),
            from: from.value.clone(),
            to: to.value.clone(),
            inspection,
            services: parsed,
            sources,
            destinations,
            defined_at: Pos::of(key),
        });
    }
    out
}

fn inspection(conduit: &str, raw: &RawInspection, p: &mut Problems) -> Option<Inspection> {
    let mode = match raw.mode.as_ref().map(|m| (m, m.value.as_str())) {
        None | Some((_, "enforce")) => Mode::Enforce,
        Some((_, "monitor")) => Mode::Monitor,
        Some((m, other)) => {
            p.at(
                m,
                format!("conduit `{conduit}`: unknown inspection mode `{other}`"),
                Some(
                    "use `enforce` (refuse what policy denies) or `monitor` (record, forward all)"
                        .into(),
                ),
            );
            return None;
        }
    };
    let on_deny = match raw.on_deny.as_ref().map(|d| (d, d.value.as_str())) {
        None | Some((_, "illegal-function")) => OnDeny::IllegalFunction,
        Some((_, "illegal-data-address")) => OnDeny::IllegalDataAddress,
        Some((_, "close")) => OnDeny::Close,
        Some((d, other)) => {
            p.at(
                d,
                format!("conduit `{conduit}`: unknown on_deny `{other}`"),
                Some("use `illegal-function` (exception 01), `illegal-data-address` (exception 02) or `close`".into()),
            );
            return None;
        }
    };
    for (field, value) in [
        ("policy", Some(&raw.policy)),
        ("opcua_policy", raw.opcua_policy.as_ref()),
    ] {
        if let Some(v) = value
            && v.value.trim().is_empty()
        {
            p.at(
                v,
                format!("conduit `{conduit}`: inspection.{field} is empty"),
                None,
            );
            return None;
        }
    }
    let write_rate = match &raw.write_rate {
        Some(w) => Some(super::limits::write_rate(conduit, w, p)?),
        None => None,
    };
    let quarantine = match &raw.quarantine {
        Some(q) => Some(quarantine(conduit, &q.value, p)?),
        None => None,
    };
    Some(Inspection {
        policy: p.file(
            &raw.policy,
            format!("conduit `{conduit}`: inspection.policy"),
        ),
        opcua_policy: raw
            .opcua_policy
            .as_ref()
            .map(|v| p.file(v, format!("conduit `{conduit}`: inspection.opcua_policy"))),
        mode,
        on_deny,
        write_rate,
        quarantine,
    })
}

/// `quarantine: {after, within, for, count_rate_limits}`: every value given within its bounds,
/// durations as humantime; defaults for the rest.
fn quarantine(conduit: &str, raw: &RawQuarantine, p: &mut Problems) -> Option<QuarantineSettings> {
    let mut ok = true;
    if let Some(after) = &raw.after
        && !(1..=MAX_QUARANTINE_AFTER).contains(&after.value)
    {
        p.at(
            after,
            format!(
                "conduit `{conduit}`: quarantine.after {} is outside 1-{MAX_QUARANTINE_AFTER}",
                after.value
            ),
            Some("the number of violations tolerated within `within`; one more quarantines the source".into()),
        );
        ok = false;
    }
    let mut duration = |field: &str,
                        s: Option<&Spanned<String>>,
                        default: Duration,
                        max: Duration,
                        p: &mut Problems| {
        let Some(s) = s else {
            return default;
        };
        let d = match humantime::parse_duration(s.value.trim()) {
            Ok(d) => d,
            Err(e) => {
                p.at(
                    s,
                    format!(
                        "conduit `{conduit}`: quarantine.{field} `{}` is not a duration: {e}",
                        s.value
                    ),
                    Some("write e.g. `30s`, `10m` or `1h`".into()),
                );
                ok = false;
                return Duration::ZERO;
            }
        };
        if d < Duration::from_secs(1) || d > max || d.subsec_nanos() != 0 {
            p.at(
                s,
                format!(
                    "conduit `{conduit}`: quarantine.{field} `{}` is outside 1s-{}",
                    s.value,
                    humantime::format_duration(max)
                ),
                Some("use whole seconds (nftables timeouts count seconds)".into()),
            );
            ok = false;
        }
        d
    };
    let within = duration(
        "within",
        raw.within.as_ref(),
        QuarantineSettings::DEFAULT_WITHIN,
        MAX_QUARANTINE_WITHIN,
        p,
    );
    let for_ = duration(
        "for",
        raw.duration.as_ref(),
        QuarantineSettings::DEFAULT_FOR,
        MAX_QUARANTINE_FOR,
        p,
    );
    ok.then_some(QuarantineSettings {
        after: raw
            .after
            .as_ref()
            .map_or(QuarantineSettings::DEFAULT_AFTER, |a| a.value),
        within,
        duration: for_,
        count_rate_limits: raw.count_rate_limits.unwrap_or(false),
    })
}

fn endpoints(
    conduit: &str,
    field: &str,
    raw: &[Spanned<String>],
    zone: &Zone,
    assets: &[Asset],
    raw_file: &RawFile,
    p: &mut Problems,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    let mut seen = HashSet::new();
    for item in raw {
        let text = item.value.trim();
        if !seen.insert(text) {
            p.at(
                item,
                format!("conduit `{conduit}`: `{text}` is listed twice in {field}"),
                None,
            );
            continue;
        }
        let looks_like_address = text.contains('/') || text.parse::<IpAddr>().is_ok();
        let endpoint = if looks_like_address {
            let Some(net) = network(item, p) else {
                continue;
            };
            if zone.networks_complete
                && !zone.networks.is_empty()
                && !zone.networks.iter().any(|z| z.contains(&net))
            {
                p.at(
                    item,
                    format!(
                        "conduit `{conduit}`: {field} entry {net} is outside zone `{}` ({})",
                        zone.name,
                        names(zone.networks.iter())
                    ),
                    None,
                );
                continue;
            }
            Endpoint::Network(net)
        } else {
            match assets.iter().find(|a| a.name == text) {
                Some(a) if a.zone == zone.name => Endpoint::Asset {
                    name: a.name.clone(),
                    address: a.address,
                },
                Some(a) => {
                    p.at(
                        item,
                        format!(
                            "conduit `{conduit}`: asset `{text}` in {field} is in zone `{}`, not `{}`",
                            a.zone, zone.name
                        ),
                        None,
                    );
                    continue;
                }
                // Defined, but rejected for errors of its own that are already reported.
                None if raw_file.assets.keys().any(|k| k.value == text) => continue,
                None => {
                    let in_zone: Vec<_> = assets.iter().filter(|a| a.zone == zone.name).collect();
                    p.at(
                        item,
                        format!("conduit `{conduit}`: unknown asset `{text}` in {field}"),
                        Some(if in_zone.is_empty() {
                            format!("zone `{}` has no assets; name a network instead", zone.name)
                        } else {
                            format!(
                                "assets in zone `{}`: {}",
                                zone.name,
                                names(in_zone.iter().map(|a| &a.name))
                            )
                        }),
                    );
                    continue;
                }
            }
        };
        out.push(endpoint);
    }
    out
}

fn names<'a, T: fmt::Display + 'a>(items: impl Iterator<Item = &'a T>) -> String {
    let v: Vec<String> = items.map(ToString::to_string).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::{PortRange, parse};

    fn one_service(s: &str) -> Result<Service, String> {
        let inspection = if s.starts_with("modbus") || s.starts_with("opcua") {
            ", inspection: {policy: p.rego}"
        } else {
            ""
        };
        let yaml = format!(
            "zones:\n  a: {{level: 3, security_level: 2, networks: [10.1.0.0/24]}}\n  b: {{level: 2, security_level: 2, networks: [10.2.0.0/24]}}\nconduits:\n  c: {{from: a, to: b, services: ['{s}']{inspection}}}\n"
        );
        match parse(&yaml) {
            Ok(m) => Ok(m.conduits[0].services[0]),
            Err(d) => Err(d[0].message.clone()),
        }
    }

    #[test]
    fn services() {
        let tcp = |first, last| Ok(Service::Tcp(PortRange { first, last }));
        assert_eq!(one_service("tcp/443"), tcp(443, 443));
        assert_eq!(one_service("tcp/8000-8010"), tcp(8000, 8010));
        assert_eq!(
            one_service("udp/514"),
            Ok(Service::Udp(PortRange {
                first: 514,
                last: 514
            }))
        );
        assert_eq!(one_service("icmp"), Ok(Service::Icmp));
        assert_eq!(one_service("modbus"), Ok(Service::Modbus { port: 502 }));
        assert_eq!(
            one_service("modbus/5020"),
            Ok(Service::Modbus { port: 5020 })
        );
        assert_eq!(one_service("opcua"), Ok(Service::OpcUa { port: 4840 }));
        for bad in [
            "tcp",
            "tcp/0",
            "tcp/65536",
            "tcp/10-5",
            "icmp/1",
            "http",
            "modbus/x",
            "tcp/1-",
        ] {
            assert!(one_service(bad).is_err(), "{bad} must be refused");
        }
    }

    fn quarantine_of(settings: &str) -> Result<QuarantineSettings, String> {
        let yaml = format!(
            "zones:\n  a: {{level: 3, security_level: 2, networks: [10.1.0.0/24]}}\n  b: {{level: 2, security_level: 2, networks: [10.2.0.0/24]}}\nconduits:\n  c: {{from: a, to: b, services: [modbus], inspection: {{policy: p.rego, quarantine: {settings}}}}}\n"
        );
        match parse(&yaml) {
            Ok(m) => m.conduits[0]
                .inspection
                .as_ref()
                .and_then(|i| i.quarantine)
                .ok_or_else(|| "no quarantine".to_owned()),
            Err(d) => Err(d[0].message.clone()),
        }
    }

    #[test]
    fn quarantine_fields_left_out_take_their_documented_defaults() {
        let q = quarantine_of("{}").unwrap();
        assert_eq!(q.after, 3);
        assert_eq!(q.within, Duration::from_secs(60));
        assert_eq!(q.duration, Duration::from_secs(600));
        assert!(!q.count_rate_limits, "rate limits do not count by default");
        let q = quarantine_of("{after: 5, count_rate_limits: true}").unwrap();
        assert_eq!((q.after, q.within), (5, Duration::from_secs(60)));
        assert!(q.count_rate_limits);
        assert!(quarantine_of("{count_rate_limits: 1}").is_err());
    }

    #[test]
    fn purdue_levels() {
        assert_eq!(PurdueLevel::from_number(3.5), Some(PurdueLevel::L3_5));
        assert_eq!(PurdueLevel::from_number(2.5), None);
        assert_eq!(PurdueLevel::from_number(-1.0), None);
        assert!(PurdueLevel::L3_5.rank() == PurdueLevel::L3.rank() + 1);
    }

    #[test]
    fn warnings_name_risky_conduits() {
        let yaml = "
gateway: {management: {address: 10.9.0.1, tcp_ports: [22]}}
zones:
  office: {level: 4, security_level: 1, networks: [10.4.0.0/24]}
  dmz: {level: 3.5, security_level: 2, networks: [10.35.0.0/24]}
  field: {level: 1, security_level: 3, networks: [10.1.0.0/24]}
assets:
  rtu: {zone: field, address: 10.1.0.5, kind: rtu}
conduits:
  direct: {from: office, to: field, destinations: [rtu], services: [tcp/20000]}
  mirror: {from: office, to: dmz, services: [tcp/443]}
";
        let warnings: Vec<String> = parse(yaml)
            .unwrap()
            .warnings()
            .into_iter()
            .map(|w| w.message)
            .collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("reaches level 1"));
        assert!(warnings[1].contains("lets all of zone `office`"));
    }

    #[test]
    fn failure_mode_open_is_a_warning_and_closed_the_default() {
        let yaml = "
gateway: {failure_mode: open, management: {address: 10.9.0.1, tcp_ports: [22]}}
zones:
  ops: {level: 3, security_level: 2, networks: [10.3.0.0/24]}
  field: {level: 2, security_level: 3, networks: [10.2.0.0/24]}
assets:
  plc: {zone: field, address: 10.2.0.5, kind: plc}
conduits:
  mb: {from: ops, to: field, destinations: [plc], services: [modbus], inspection: {policy: p.rego}}
";
        let model = parse(yaml).unwrap();
        assert_eq!(model.gateway.failure_mode, FailureMode::Open);
        let warnings = model.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0].pos,
            Pos {
                line: 2,
                column: 25
            }
        );
        assert!(
            warnings[0].message.contains("conduit(s) `mb`"),
            "{warnings:?}"
        );
        let closed = parse(&yaml.replace("failure_mode: open, ", "")).unwrap();
        assert_eq!(closed.gateway.failure_mode, FailureMode::Closed);
        assert!(closed.warnings().is_empty());
    }

    #[test]
    fn limits_default_to_the_old_constants_and_are_checked() {
        use std::time::Duration;
        let yaml = "
zones:
  ops: {level: 3, security_level: 2, networks: [10.3.0.0/24]}
  field: {level: 2, security_level: 3, networks: [10.2.0.0/24]}
assets:
  plc: {zone: field, address: 10.2.0.5, kind: plc}
conduits:
  mb: {from: ops, to: field, destinations: [plc], services: [modbus], inspection: {policy: p.rego}}
";
        let model = parse(yaml).unwrap();
        assert_eq!(model.limits, crate::config::Limits::default());
        assert_eq!(model.limits.connections, 1024);
        let set = format!(
            "{yaml}limits: {{connections: 10, connections_per_source: 2, request_timeout: 750ms, idle_timeout: 1m, policy_time: 20ms, opcua: {{max_chunk_size: 8192, max_message_size: 65536}}}}\n"
        );
        let set = set.replace("p.rego}", "p.rego, write_rate: {per_second: 5}}");
        let model = parse(&set).unwrap();
        assert_eq!(model.limits.connections, 10);
        assert_eq!(model.limits.connections_per_source, 2);
        assert_eq!(model.limits.request_timeout, Duration::from_millis(750));
        assert_eq!(model.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(model.limits.policy_time, Duration::from_millis(20));
        assert_eq!(model.limits.connect_timeout, Duration::from_secs(3));
        assert_eq!(model.limits.opcua.max_chunk_size, 8192);
        assert_eq!(model.limits.opcua.max_message_size, 65536);
        assert_eq!(
            model.limits.opcua.max_chunks,
            crate::proto::opcua::MAX_CHUNK_COUNT
        );
        let rate = model.conduits[0].inspection.as_ref().unwrap().write_rate;
        assert_eq!(
            rate,
            Some(crate::config::WriteRate {
                per_second: 5,
                burst: 5
            })
        );
        for (bad, message) in [
            ("connections: 0", "limits.connections 0 is out of range"),
            (
                "connections: 4, connections_per_source: 8",
                "is more than limits.connections 4",
            ),
            ("idle_timeout: 300", "is not a duration"),
            (
                "response_timeout: 10m",
                "limits.response_timeout 10m is out of range",
            ),
            ("policy_time: 5s", "limits.policy_time 5s is out of range"),
            (
                "opcua: {max_chunk_size: 4096}",
                "limits.opcua.max_chunk_size 4096 is out of range",
            ),
            (
                "opcua: {max_message_size: 16777216}",
                "limits.opcua.max_message_size 16777216 is out of range",
            ),
            (
                "opcua: {max_chunks: 0}",
                "limits.opcua.max_chunks 0 is out of range",
            ),
        ] {
            let errors = parse(&format!("{yaml}limits: {{{bad}}}\n")).unwrap_err();
            assert!(
                errors.iter().any(|e| e.message.contains(message)),
                "{bad}: {errors:?}"
            );
        }
    }
}

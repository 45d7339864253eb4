//! `gateway.management.egress`: the peers the gateway itself may open connections to besides its
//! management peers (an NTP server, a DNS resolver, a SIEM outside the management network), each
//! named, so that the output chain admits exactly what zones.yaml says and nothing else.

use std::net::SocketAddr;

use indexmap::IndexMap;
use serde_saphyr::Spanned;

use super::audit::SyslogTransport;
use super::model::{EgressPeer, Model, Warning, service};
use super::problems::{Problems, check_name, network};
use super::raw::RawEgress;
use super::{Pos, Service};

/// Validated egress peers, in the order written.
pub(super) fn peers(
    raw: &IndexMap<Spanned<String>, Spanned<RawEgress>>,
    p: &mut Problems,
) -> Vec<EgressPeer> {
    let mut out = Vec::new();
    for (key, peer) in raw {
        let name = &key.value;
        check_name("egress peer", name, key, p);
        let network = network(&peer.value.address, p);
        let listed = &peer.value.services;
        if listed.value.is_empty() {
            p.at(
                listed,
                format!("egress peer `{name}` lists no services"),
                Some("e.g. `services: [udp/123]`".into()),
            );
        }
        let mut services = Vec::new();
        for s in &listed.value {
            match service(s, p) {
                Some(svc) if svc.is_inspected() => p.at(
                    s,
                    format!("egress peer `{name}`: {svc} is inspected between zones, not a service of the gateway's own"),
                    Some("name its port instead, e.g. `tcp/502`".into()),
                ),
                Some(svc) if services.contains(&svc) => p.at(
                    s,
                    format!("egress peer `{name}`: service {svc} is listed twice"),
                    None,
                ),
                Some(svc) => services.push(svc),
                None => {}
            }
        }
        if let Some(network) = network {
            out.push(EgressPeer {
                name: name.clone(),
                network,
                services,
                defined_at: Pos::of(key),
            });
        }
    }
    out
}

/// The audit syslog receivers written as an address (not a host name), with the transport
/// protocol they are reached over: the output chain admits these by themselves.
pub fn syslog_receivers(model: &Model) -> Vec<(SocketAddr, SyslogTransport)> {
    model
        .audit
        .syslog
        .iter()
        .filter_map(|s| Some((s.address.parse::<SocketAddr>().ok()?, s.transport)))
        .collect()
}

/// Egress that zones.yaml leaves the output chain unable to admit, or admits too widely.
pub(super) fn warnings(model: &Model) -> Vec<Warning> {
    let mut out = Vec::new();
    let egress: &[EgressPeer] = model
        .gateway
        .management
        .as_ref()
        .map_or(&[], |m| m.egress.as_slice());
    for s in &model.audit.syslog {
        if s.address.parse::<SocketAddr>().is_ok() {
            continue;
        }
        // Named by host name: its address is known only when the daemon resolves it.
        let port = s
            .address
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        let udp = s.transport == SyslogTransport::Udp;
        let covered = port.is_some_and(|port| {
            egress.iter().any(|peer| {
                peer.services.iter().any(|svc| match svc {
                    Service::Tcp(r) => !udp && (r.first..=r.last).contains(&port),
                    Service::Udp(r) => udp && (r.first..=r.last).contains(&port),
                    _ => false,
                })
            })
        });
        if !covered {
            out.push(Warning {
                pos: Pos::default(),
                message: format!(
                    "audit.syslog receiver `{}` is named by host name: the output chain admits the \
                     gateway's own connections by address only; write its address, or list it \
                     (and the DNS resolver, udp/53) under gateway.management.egress",
                    s.address
                ),
            });
        }
    }
    if let Some(m) = &model.gateway.management
        && m.interface.is_none()
    {
        for net in &m.allow_from {
            for z in &model.zones {
                if let Some(zn) = z
                    .networks
                    .iter()
                    .find(|zn| zn.contains(net) || net.contains(*zn))
                {
                    out.push(Warning {
                        pos: Pos::default(),
                        message: format!(
                            "gateway.management.allow_from {net} overlaps {zn} of zone `{}` and \
                             no management interface is set: hosts there reach the management \
                             ports, and the gateway may connect to them; set \
                             gateway.management.interface",
                            z.name
                        ),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::{Diagnostic, PortRange, parse};
    use ipnet::IpNet;

    const ZONES: &str = "
zones:
  ops: {level: 3, security_level: 2, networks: [10.30.0.0/24]}
  ctl: {level: 2, security_level: 3, networks: [10.20.0.0/24]}
";

    fn with(management: &str, audit: &str) -> Result<Model, Vec<Diagnostic>> {
        parse(&format!(
            "gateway:\n  management: {management}\n{ZONES}{audit}"
        ))
    }

    fn messages(r: Result<Model, Vec<Diagnostic>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn egress_peers_are_named_addressed_and_limited_to_their_services() {
        let m = with(
            "{address: 10.99.0.1, tcp_ports: [22], egress: {ntp: {address: 10.30.0.5, services: [udp/123]}, \
             dns: {address: 10.30.0.0/29, services: [udp/53, tcp/53, icmp]}}}",
            "",
        )
        .unwrap();
        let egress = &m.gateway.management.unwrap().egress;
        assert_eq!(egress.len(), 2);
        assert_eq!(egress[0].name, "ntp");
        assert_eq!(egress[0].network, "10.30.0.5/32".parse::<IpNet>().unwrap());
        assert_eq!(
            egress[0].services,
            vec![Service::Udp(PortRange {
                first: 123,
                last: 123
            })]
        );
        assert_eq!(egress[1].network, "10.30.0.0/29".parse::<IpNet>().unwrap());
        assert_eq!(egress[1].services.len(), 3);
        assert!(egress[0].defined_at.line > 0);
    }

    #[test]
    fn egress_peers_that_cannot_be_enforced_as_written_are_refused() {
        let mgmt = |egress: &str| {
            messages(with(
                &format!("{{address: 10.99.0.1, tcp_ports: [22], egress: {{{egress}}}}}"),
                "",
            ))
        };
        assert!(
            mgmt("plc: {address: 10.20.0.5, services: [modbus]}")[0]
                .contains("egress peer `plc`: modbus/502 is inspected between zones")
        );
        assert!(
            mgmt("ntp: {address: 10.30.0.5, services: []}")[0]
                .contains("egress peer `ntp` lists no services")
        );
        assert!(
            mgmt("ntp: {address: 10.30.0.5, services: [udp/123, udp/123]}")[0]
                .contains("service udp/123 is listed twice")
        );
        assert!(
            mgmt("NTP: {address: 10.30.0.5, services: [udp/123]}")[0]
                .contains("egress peer name `NTP` is not valid")
        );
        assert!(
            mgmt("ntp: {address: 10.30.0.5/24, services: [udp/123]}")[0]
                .contains("has host bits set")
        );
        assert!(
            mgmt("ntp: {address: ntp.example, services: [udp/123]}")[0]
                .contains("`ntp.example` is not an IPv4 or IPv6 network")
        );
        assert!(mgmt("ntp: {address: 10.30.0.5, services: [ntp]}")[0].contains("unknown protocol"));
        assert!(
            mgmt("ntp: {address: 10.30.0.5, services: [udp/123], port: 123}")[0]
                .contains("unknown field `port`")
        );
    }

    #[test]
    fn a_syslog_receiver_named_by_host_name_is_admitted_only_through_egress() {
        let audit = "audit:\n  syslog:\n    - {address: 'siem.example:6514', transport: tcp}\n    - {address: '10.99.0.20:514', transport: udp}\n";
        let warned = |management: &str| -> Vec<String> {
            with(management, audit)
                .unwrap()
                .warnings()
                .into_iter()
                .map(|w| w.message)
                .filter(|m| m.contains("audit.syslog receiver"))
                .collect()
        };
        let plain = warned("{address: 10.99.0.1, interface: mgmt0, tcp_ports: [22]}");
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert!(plain[0].contains("`siem.example:6514` is named by host name"));
        // An egress peer on its port and protocol: the operator has named its address.
        assert!(
            warned(
                "{address: 10.99.0.1, interface: mgmt0, tcp_ports: [22], \
                 egress: {siem: {address: 10.50.0.8, services: [tcp/6514]}}}"
            )
            .is_empty()
        );
        // The wrong protocol does not cover it.
        assert_eq!(
            warned(
                "{address: 10.99.0.1, interface: mgmt0, tcp_ports: [22], \
                 egress: {siem: {address: 10.50.0.8, services: [udp/6514]}}}"
            )
            .len(),
            1
        );
        let m = with("{address: 10.99.0.1, tcp_ports: [22]}", audit).unwrap();
        assert_eq!(
            syslog_receivers(&m),
            vec![("10.99.0.20:514".parse().unwrap(), SyslogTransport::Udp)]
        );
    }

    #[test]
    fn allow_from_overlapping_a_zone_without_an_interface_is_warned_about() {
        let overlap = |management: &str| -> Vec<String> {
            with(management, "")
                .unwrap()
                .warnings()
                .into_iter()
                .map(|w| w.message)
                .filter(|m| m.contains("allow_from"))
                .collect()
        };
        let w = overlap("{address: 10.99.0.1, allow_from: [10.0.0.0/8], tcp_ports: [22]}");
        assert_eq!(w.len(), 2, "both zones: {w:?}");
        assert!(w[0].contains("allow_from 10.0.0.0/8 overlaps 10.30.0.0/24 of zone `ops`"));
        assert!(
            overlap(
                "{address: 10.99.0.1, interface: mgmt0, allow_from: [10.0.0.0/8], tcp_ports: [22]}"
            )
            .is_empty()
        );
        assert!(
            overlap("{address: 10.99.0.1, allow_from: [10.99.0.0/24], tcp_ports: [22]}").is_empty()
        );
    }
}

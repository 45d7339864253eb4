//! Unit tests of the rendered ruleset: what each chain admits, diverts and drops, by model.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use crate::config::parse;

fn chain<'a>(rs: &'a Ruleset, name: &str) -> &'a Chain {
    rs.chains.iter().find(|c| c.name == name).unwrap()
}

fn comments(c: &Chain) -> Vec<&str> {
    c.rules.iter().map(|r| r.comment.as_str()).collect()
}

const TWO_ZONES: &str = "
zones:
  ops: {level: 3, security_level: 2, networks: [10.30.0.0/24, 'fd00:30::/64'], interfaces: [ops0]}
  ctl: {level: 2, security_level: 3, networks: [10.20.0.0/24]}
  cell: {level: 2, security_level: 3, interfaces: [cell0]}
assets:
  plc: {zone: ctl, address: 10.20.0.5, kind: plc}
conduits:
  web: {from: ops, to: ctl, services: [tcp/8000-8010, udp/161, icmp]}
  mb: {from: ops, to: ctl, destinations: [plc], services: [modbus], inspection: {policy: p.rego}}
  cellweb: {from: ops, to: cell, services: [tcp/80]}
";

#[test]
fn every_forward_rule_is_counted_and_inspected_services_are_never_forwarded() {
    let rs = render(&parse(TWO_ZONES).unwrap());
    let forward = chain(&rs, "forward");
    for r in &forward.rules {
        if r.comment.starts_with("conduit ") {
            assert!(r.stmts.contains(&Stmt::Accept));
            assert!(
                matches!(r.stmts.first(), Some(Stmt::Counter(c)) if c.starts_with("conduit_")),
                "{r:?}"
            );
        }
    }
    assert!(!comments(forward).iter().any(|c| c.contains("modbus")));
    assert!(
        comments(chain(&rs, "divert"))
            .iter()
            .any(|c| c.contains("conduit mb:"))
    );
    // default deny is the last word in every filter chain
    for name in ["input", "forward", "output"] {
        assert_eq!(chain(&rs, name).policy, Policy::Drop);
        assert_eq!(
            chain(&rs, name).rules.last().unwrap().stmts.last(),
            Some(&Stmt::Drop)
        );
    }
}

#[test]
fn rules_exist_only_for_families_both_ends_have() {
    let rs = render(&parse(TWO_ZONES).unwrap());
    let web: Vec<&Rule> = chain(&rs, "forward")
        .rules
        .iter()
        .filter(|r| r.comment.starts_with("conduit web:"))
        .collect();
    // ctl is IPv4 only: one rule per service, all IPv4
    assert_eq!(web.len(), 3);
    assert!(web.iter().all(|r| {
        r.matches
            .contains(&Match::Saddr(Family::V4, Addrs::Set("zone_ops_v4".into())))
    }));
    // cell has interfaces only: both families, told apart by nfproto, matched by interface
    let cell: Vec<&Rule> = chain(&rs, "forward")
        .rules
        .iter()
        .filter(|r| r.comment.starts_with("conduit cellweb:"))
        .collect();
    assert_eq!(cell.len(), 2);
    assert!(
        cell.iter()
            .all(|r| r.matches.contains(&Match::OifName(vec!["cell0".into()])))
    );
    assert!(
        cell[0]
            .matches
            .contains(&Match::Saddr(Family::V4, Addrs::Set("zone_ops_v4".into())))
    );
    assert!(
        cell[1]
            .matches
            .contains(&Match::Saddr(Family::V6, Addrs::Set("zone_ops_v6".into())))
    );
}

#[test]
fn divert_matches_the_route_not_the_output_interface() {
    let model = parse(
        TWO_ZONES
            .replace(
                "destinations: [plc], services: [modbus]",
                "services: [modbus]",
            )
            .replace(
                "to: ctl, services: [modbus]",
                "to: cell, services: [modbus]",
            )
            .as_str(),
    )
    .unwrap();
    let rs = render(&model);
    let divert = chain(&rs, "divert");
    let mb = divert
        .rules
        .iter()
        .find(|r| r.comment.starts_with("conduit mb:"))
        .unwrap();
    assert!(
        mb.matches
            .contains(&Match::RouteOifName(vec!["cell0".into()]))
    );
    assert!(
        !mb.matches.iter().any(|m| matches!(m, Match::OifName(_))),
        "oifname is unknown in prerouting"
    );
    assert!(mb.stmts.contains(&Stmt::TProxy {
        family: Family::V4,
        port: 15020
    }));
}

#[test]
fn the_proxys_connections_to_devices_have_a_conntrack_zone_of_their_own() {
    let rs = render(&parse(TWO_ZONES).unwrap());
    let out = chain(&rs, "upstream_zone_out");
    assert_eq!((out.hook, out.priority), (Hook::Output, PRIORITY_RAW));
    assert_eq!(out.rules.len(), 1);
    assert_eq!(out.rules[0].matches, vec![Match::Mark(UPSTREAM_MARK)]);
    assert_eq!(out.rules[0].stmts, vec![Stmt::CtZoneSet(UPSTREAM_CT_ZONE)]);
    // The devices' packets back: from the conduit's devices and service port to its
    // sources, only while zonegate serves (else they are a forwarded flow's replies).
    let back = chain(&rs, "upstream_zone_in");
    assert_eq!((back.hook, back.priority), (Hook::Prerouting, PRIORITY_RAW));
    let mb = back
        .rules
        .iter()
        .find(|r| r.comment.starts_with("conduit mb:"))
        .unwrap();
    assert_eq!(mb.matches.first(), Some(&Match::Alive));
    assert!(mb.matches.contains(&Match::Sport(
        L4::Tcp,
        vec![PortRange {
            first: 502,
            last: 502
        }]
    )));
    assert!(mb.matches.iter().any(|m| matches!(m, Match::Saddr(..))));
    assert!(mb.matches.iter().any(|m| matches!(m, Match::Daddr(..))));
    assert_eq!(mb.stmts, vec![Stmt::CtZoneSet(UPSTREAM_CT_ZONE)]);
    // Without inspected conduits there is no proxy and no such chains.
    let l4 = render(
        &parse(&TWO_ZONES.replace(
            "services: [modbus], inspection: {policy: p.rego}",
            "services: [tcp/502]",
        ))
        .unwrap(),
    );
    assert!(
        l4.chains
            .iter()
            .all(|c| !c.name.starts_with("upstream_zone"))
    );
}

#[test]
fn nothing_but_a_divert_rule_or_a_connection_of_the_proxys_reaches_a_proxy_port() {
    let model = parse(TWO_ZONES).unwrap();
    let rs = render(&model);
    assert_eq!(proxy_ports(&model), vec![14840, 15020]);
    let ports: Vec<PortRange> = [14840, 15020]
        .map(|p| PortRange { first: p, last: p })
        .to_vec();
    // What marks without TPROXY relies on a socket lookup, which finds the listener when
    // no connection matches: it must leave the proxy ports out.
    let established: Vec<&Rule> = chain(&rs, "divert")
        .rules
        .iter()
        .filter(|r| {
            r.stmts.contains(&Stmt::MarkSet(PROXY_MARK))
                && !r.stmts.iter().any(|s| matches!(s, Stmt::TProxy { .. }))
        })
        .collect();
    assert_eq!(established.len(), 1, "{established:#?}");
    assert_eq!(
        established[0].matches,
        vec![
            Match::Alive,
            Match::L4ProtoTcp,
            Match::NotDport(L4::Tcp, ports.clone()),
            Match::SocketTransparent
        ]
    );
    // Unmarked, they meet the default deny and its counter; from the gateway itself
    // (loopback, accepted otherwise) they are dropped first.
    let input = chain(&rs, "input");
    assert_eq!(
        input.rules.last().unwrap().stmts,
        vec![Stmt::Counter(DROP_INPUT_COUNTER.into()), Stmt::Drop]
    );
    assert_eq!(
        input.rules[0].matches,
        vec![
            Match::IifName(vec!["lo".into()]),
            Match::L4ProtoTcp,
            Match::Dport(L4::Tcp, ports)
        ]
    );
    assert_eq!(
        input.rules[0].stmts,
        vec![Stmt::Counter(DROP_INPUT_COUNTER.into()), Stmt::Drop]
    );
    assert_eq!(input.rules[1].comment, "loopback");
    let text = crate::nft::text::render(&rs);
    assert!(
        text.contains(
            "meta l4proto tcp tcp dport != { 14840, 15020 } socket transparent 1 meta mark set"
        ),
        "{text}"
    );
    // Without inspected conduits there is no proxy to protect.
    let l4 = render(
        &parse(&TWO_ZONES.replace(
            "services: [modbus], inspection: {policy: p.rego}",
            "services: [tcp/502]",
        ))
        .unwrap(),
    );
    assert_eq!(chain(&l4, "input").rules[0].comment, "loopback");
}

fn with_failure_mode(mode: &str) -> Ruleset {
    render(&parse(&format!("gateway: {{failure_mode: {mode}}}\n{TWO_ZONES}")).unwrap())
}

#[test]
fn closed_failure_mode_drops_everything_forwarded_first_while_down() {
    let default = render(&parse(TWO_ZONES).unwrap());
    assert_eq!(
        default,
        with_failure_mode("closed"),
        "closed is the default"
    );
    let forward = chain(&default, "forward");
    let first = &forward.rules[0];
    assert_eq!(first.matches, vec![Match::NotAlive]);
    assert_eq!(
        first.stmts,
        vec![Stmt::Counter(DROP_DOWN_COUNTER.into()), Stmt::Drop]
    );
    assert!(first.comment.contains("failure_mode closed"));
    // ahead of the rule that lets established flows through
    assert_eq!(
        forward.rules[1].matches,
        vec![Match::CtState(vec!["established", "related"])]
    );
    assert_eq!(
        forward
            .rules
            .iter()
            .filter(|r| r.matches.contains(&Match::NotAlive))
            .count(),
        1
    );
    assert!(default.counters.contains(&DROP_DOWN_COUNTER.to_owned()));
    // management access to the gateway itself is not gated
    for name in ["input", "output"] {
        assert!(
            chain(&default, name).rules.iter().all(
                |r| !r.matches.contains(&Match::NotAlive) && !r.matches.contains(&Match::Alive)
            )
        );
    }
}

#[test]
fn divert_happens_only_while_alive_in_both_modes() {
    for mode in ["closed", "open"] {
        let rs = with_failure_mode(mode);
        let divert = chain(&rs, "divert");
        assert!(
            divert
                .rules
                .iter()
                .all(|r| r.matches.first() == Some(&Match::Alive)),
            "{mode}: {divert:?}"
        );
    }
}

#[test]
fn open_failure_mode_forwards_inspected_services_at_l4_only_while_down() {
    let rs = with_failure_mode("open");
    assert!(!rs.counters.contains(&DROP_DOWN_COUNTER.to_owned()));
    let forward = chain(&rs, "forward");
    assert_eq!(
        forward.rules[0].matches,
        vec![Match::CtState(vec!["established", "related"])],
        "nothing is dropped for being down"
    );
    let bypass: Vec<&Rule> = forward
        .rules
        .iter()
        .filter(|r| r.matches.contains(&Match::NotAlive))
        .collect();
    // one rule: conduit mb, its one service, IPv4 (ctl has no IPv6)
    assert_eq!(bypass.len(), 1, "{bypass:#?}");
    let mb = bypass[0];
    assert!(mb.comment.starts_with("conduit mb:"));
    assert!(
        mb.comment
            .ends_with("failure_mode open: uninspected while zonegate is down")
    );
    assert_eq!(mb.matches.first(), Some(&Match::NotAlive));
    for m in [
        Match::IifName(vec!["ops0".into()]),
        Match::Saddr(Family::V4, Addrs::Set("zone_ops_v4".into())),
        Match::Daddr(
            Family::V4,
            Addrs::Nets(vec!["10.20.0.5/32".parse().unwrap()]),
        ),
        Match::Dport(
            L4::Tcp,
            vec![PortRange {
                first: 502,
                last: 502,
            }],
        ),
        Match::CtState(vec!["new"]),
    ] {
        assert!(mb.matches.contains(&m), "{m:?} missing: {mb:?}");
    }
    assert_eq!(
        mb.stmts,
        vec![Stmt::Counter(conduit_counter("mb")), Stmt::Accept]
    );
    // everything else is as in closed mode, minus the closed mode's drop rule
    let closed = with_failure_mode("closed");
    let strip = |rs: &Ruleset| -> Vec<Rule> {
        chain(rs, "forward")
            .rules
            .iter()
            .filter(|r| !r.matches.contains(&Match::NotAlive))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&rs), strip(&closed));
    assert_eq!(chain(&rs, "divert"), chain(&closed, "divert"));
}

#[test]
fn the_daemon_s_liveness_expires_and_a_one_shot_apply_s_does_not() {
    let rs = render(&parse(TWO_ZONES).unwrap());
    assert_eq!(
        rs.liveness,
        Some(Liveness::Expiring(crate::nft::liveness::TIMEOUT))
    );
    assert!(crate::nft::liveness::RENEW_INTERVAL * 3 <= crate::nft::liveness::TIMEOUT);
    assert_eq!(
        rs.clone().with_permanent_liveness().liveness,
        Some(Liveness::Permanent)
    );
    // the early block has no liveness set and gains none
    assert_eq!(early_block().with_permanent_liveness().liveness, None);
}

#[test]
fn quarantine_drops_first_in_prerouting_and_only_when_configured() {
    assert_eq!(render(&parse(TWO_ZONES).unwrap()).quarantine, None);
    let model = parse(&TWO_ZONES.replace(
        "inspection: {policy: p.rego}",
        "inspection: {policy: p.rego, quarantine: {after: 3, within: 10s, for: 5m}}",
    ))
    .unwrap();
    let rs = render(&model);
    assert_eq!(rs.quarantine, Some(vec![]));
    assert!(rs.counters.contains(&DROP_QUARANTINE_COUNTER.to_owned()));
    let divert = chain(&rs, "divert");
    for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
        let r = &divert.rules[i];
        assert_eq!(
            r.matches,
            vec![
                Match::Saddr(family, Addrs::Set(Ruleset::quarantine_set(family).into())),
                Match::NotLocal
            ],
            "before TPROXY and the established-connection rule"
        );
        assert_eq!(
            r.stmts,
            vec![Stmt::Counter(DROP_QUARANTINE_COUNTER.into()), Stmt::Drop]
        );
    }
    let held = vec![Quarantined {
        address: "10.30.0.10".parse().unwrap(),
        timeout: Duration::from_secs(42),
    }];
    let text = crate::nft::text::render(&rs.clone().with_quarantined(held.clone()));
    assert!(
        text.contains("elements = { 10.30.0.10 timeout 42s }"),
        "{text}"
    );
    assert!(
        crate::nft::text::render(&rs).contains("set quarantine_v6"),
        "empty sets are still declared"
    );
    // a ruleset without quarantine sets gains none
    let plain = render(&parse(TWO_ZONES).unwrap());
    assert_eq!(plain.clone().with_quarantined(held), plain);
}

#[test]
fn conduits_that_name_ipv6_networks_are_known() {
    // web and mb reach ctl (IPv4 only), cellweb an interface-only zone from a dual-stack
    // one: its IPv6 rule matches ops' IPv6 set.
    assert_eq!(
        ipv6_conduits(&parse(TWO_ZONES).unwrap()),
        vec!["cellweb".to_owned()]
    );
    let v4 = TWO_ZONES.replace(", 'fd00:30::/64'", "");
    assert!(ipv6_conduits(&parse(&v4).unwrap()).is_empty());
}

#[test]
fn names_become_nft_identifiers() {
    assert_eq!(ident("cnc-cell"), "cnc_cell");
    assert_eq!(conduit_counter("scada-bess"), "conduit_scada_bess");
}

/// TWO_ZONES with `management` and three audit receivers: one on the management network,
/// one in zone ops, one named by host name.
fn managed(management: &str) -> Ruleset {
    render(
        &parse(&format!(
            "gateway:\n  management: {management}\n{TWO_ZONES}\
audit:\n  syslog:\n    - {{address: '10.99.0.20:6514', transport: tcp}}\n    - {{address: '10.30.0.20:514', transport: udp}}\n    - {{address: 'siem.example:6514', transport: tcp}}\n"
        ))
        .unwrap(),
    )
}

const MGMT: &str = "{address: 10.99.0.1, interface: mgmt0, allow_from: [10.99.0.0/24], \
                    tcp_ports: [22], egress: {ntp: {address: 10.30.0.5, services: [udp/123, icmp]}}}";

fn net(s: &str) -> Addrs {
    Addrs::Nets(vec![s.parse().unwrap()])
}

#[test]
fn the_gateway_s_own_connections_leave_only_to_peers_zones_yaml_names() {
    let rs = managed(MGMT);
    let output = chain(&rs, "output");
    // Whatever address a process on the gateway binds to, an accepted packet either
    // belongs to a connection already allowed, is the proxy's (marked), or goes to a
    // destination zones.yaml names.
    for r in output
        .rules
        .iter()
        .filter(|r| r.stmts.contains(&Stmt::Accept))
    {
        assert!(
            r.matches.iter().any(|m| matches!(
                m,
                Match::Daddr(..) | Match::Mark(UPSTREAM_MARK) | Match::NeighbourDiscovery
            )) || r.matches == vec![Match::OifName(vec!["lo".into()])]
                || r.matches == vec![Match::CtState(vec!["established", "related"])],
            "accepts by source alone: {r:?}"
        );
    }
    let find = |comment: &str| {
        output
            .rules
            .iter()
            .find(|r| r.comment.starts_with(comment))
            .unwrap_or_else(|| panic!("no rule {comment}: {output:#?}"))
    };
    assert_eq!(
        find("the gateway's own connections to its management peers").matches,
        vec![
            Match::OifName(vec!["mgmt0".into()]),
            Match::Saddr(Family::V4, net("10.99.0.1/32")),
            Match::Daddr(Family::V4, net("10.99.0.0/24")),
        ]
    );
    let port = |p| vec![PortRange { first: p, last: p }];
    let ntp = find("egress ntp: 10.30.0.5/32 udp/123");
    assert_eq!(
        ntp.matches,
        vec![
            Match::Daddr(Family::V4, net("10.30.0.5/32")),
            Match::Dport(L4::Udp, port(123)),
            Match::CtState(vec!["new"]),
        ]
    );
    assert_eq!(
        find("egress ntp: 10.30.0.5/32 icmp").matches[1],
        Match::IcmpEchoRequest(Family::V4)
    );
    // The audit receivers named by address, each on its transport's protocol and port.
    assert_eq!(
        find("audit syslog receiver 10.99.0.20:6514 (tcp)").matches,
        vec![
            Match::Daddr(Family::V4, net("10.99.0.20/32")),
            Match::Dport(L4::Tcp, port(6514)),
            Match::CtState(vec!["new"]),
        ]
    );
    assert_eq!(
        find("audit syslog receiver 10.30.0.20:514 (udp)").matches[1],
        Match::Dport(L4::Udp, port(514))
    );
    assert!(
        !comments(output).iter().any(|c| c.contains("siem.example")),
        "a host name cannot be matched (check warns)"
    );
    // The rest is logged and counted.
    let n = output.rules.len();
    assert_eq!(output.rules[n - 2].comment, "log drops, rate-limited");
    assert_eq!(
        output.rules[n - 1].stmts,
        vec![Stmt::Counter(DROP_OUTPUT_COUNTER.into()), Stmt::Drop]
    );
    let text = crate::nft::text::render(&rs);
    for line in [
        "oifname \"mgmt0\" ip saddr 10.99.0.1 ip daddr 10.99.0.0/24 accept",
        "ip daddr 10.30.0.5 udp dport 123 ct state new accept comment \"egress ntp: 10.30.0.5/32 udp/123\"",
        "ip daddr 10.30.0.5 icmp type echo-request ct state new accept",
        "ip daddr 10.99.0.20 tcp dport 6514 ct state new accept",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
}

#[test]
fn operators_ping_the_management_address_from_the_management_network_only() {
    let rs = managed(MGMT);
    let input = chain(&rs, "input");
    let ping: Vec<&Rule> = input
        .rules
        .iter()
        .filter(|r| {
            r.matches
                .iter()
                .any(|m| matches!(m, Match::IcmpEchoRequest(_)))
        })
        .collect();
    assert_eq!(ping.len(), 1, "{input:#?}");
    assert_eq!(
        ping[0].matches,
        vec![
            Match::IifName(vec!["mgmt0".into()]),
            Match::Saddr(Family::V4, net("10.99.0.0/24")),
            Match::Daddr(Family::V4, net("10.99.0.1/32")),
            Match::IcmpEchoRequest(Family::V4),
        ]
    );
    assert_eq!(ping[0].stmts, vec![Stmt::Accept]);
    // Without management, nothing of the gateway answers a ping.
    let plain = render(&parse(TWO_ZONES).unwrap());
    assert!(!chain(&plain, "input").rules.iter().any(|r| {
        r.matches
            .iter()
            .any(|m| matches!(m, Match::IcmpEchoRequest(_)))
    }));
}

#[test]
fn without_an_interface_or_allow_from_the_management_address_reaches_no_one() {
    let rs = managed("{address: 10.99.0.1, tcp_ports: [22]}");
    let from_management = Match::Saddr(Family::V4, net("10.99.0.1/32"));
    assert!(
        !chain(&rs, "output")
            .rules
            .iter()
            .any(|r| r.matches.contains(&from_management)),
        "only the interface or allow_from tell management peers from zone hosts"
    );
    // With the interface alone: whatever leaves through it from the management address.
    let rs = managed("{address: 10.99.0.1, interface: mgmt0, tcp_ports: [22]}");
    let peers = chain(&rs, "output")
        .rules
        .iter()
        .find(|r| r.comment.contains("management peers"))
        .unwrap();
    assert_eq!(
        peers.matches,
        vec![
            Match::OifName(vec!["mgmt0".into()]),
            Match::Saddr(Family::V4, net("10.99.0.1/32")),
        ]
    );
}

#[test]
fn allow_from_of_the_other_family_admits_no_one() {
    // An IPv4 management address, IPv6 management networks: no packet can match both, so
    // neither management access nor the peers' rule may fall back to "any address".
    let rs = managed("{address: 10.99.0.1, allow_from: ['fd00:99::/64'], tcp_ports: [22]}");
    let input = chain(&rs, "input");
    assert!(
        !input
            .rules
            .iter()
            .any(|r| r.comment.starts_with("management")),
        "{input:#?}"
    );
    assert!(
        !comments(chain(&rs, "output"))
            .iter()
            .any(|c| c.contains("management peers"))
    );
}

#[test]
fn rendering_is_deterministic() {
    let model = parse(TWO_ZONES).unwrap();
    assert_eq!(render(&model), render(&model));
}

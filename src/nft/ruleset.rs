//! The ruleset as data, and the pure function that derives it from a [`Model`]. Two renderers turn
//! it into `nft` text for people ([`super::text`]) and JSON for the kernel ([`super::json`]); keeping
//! one source for both is what makes `zonegate plan` show exactly what `zonegate apply` installs.

use std::time::Duration;

use ipnet::IpNet;

use crate::config::audit::SyslogTransport;
use crate::config::{
    Conduit, Endpoint, FailureMode, Management, Model, PortRange, Service, Zone, syslog_receivers,
};

/// The one table zonegate owns. It is replaced whole on every apply and nothing else is touched.
pub const TABLE: &str = "zonegate";
/// Packet mark of traffic diverted to the deep-inspection proxy. Policy routing for this mark
/// delivers TPROXY'd packets (and device replies to the proxy's transparent sockets) locally.
pub const PROXY_MARK: u32 = 0x5a47;
/// Packet mark the proxy sets on its own connections to devices, so that the output chain lets
/// exactly those out. It must differ from [`PROXY_MARK`], or policy routing would send the
/// proxy's SYNs to loopback.
pub const UPSTREAM_MARK: u32 = 0x5a48;
/// Counter of packets dropped in the forward path (between zones).
pub const DROP_FORWARD_COUNTER: &str = "drop_forward";
/// Counter of packets to the gateway itself that were dropped.
pub const DROP_INPUT_COUNTER: &str = "drop_input";
/// Counter of packets from the gateway itself that were dropped.
pub const DROP_OUTPUT_COUNTER: &str = "drop_output";
/// Counter of packets dropped between zones because zonegate is down (`failure_mode: closed`).
pub const DROP_DOWN_COUNTER: &str = "drop_zonegate_down";
/// The liveness set: while it holds its elements, zonegate is up. The daemon installs them with a
/// timeout and renews them ([`super::liveness`]); when it dies, the kernel expires them by itself.
pub const ALIVE_SET: &str = "alive";
/// The liveness set's elements, keyed on `meta nfproto`: every packet an `inet` table sees is
/// IPv4 or IPv6, and the kernel always knows which, so one element per family covers every
/// forwarded packet whatever its interfaces or addresses (zones may have either).
pub const ALIVE_ELEMENTS: [Family; 2] = [Family::V4, Family::V6];
/// Counter of packets dropped because their source is quarantined.
pub const DROP_QUARANTINE_COUNTER: &str = "drop_quarantine";
/// The quarantine sets: sources that broke an inspected conduit's policy too often, each with
/// a timeout after which the kernel lets them in again by itself.
pub const QUARANTINE_V4: &str = "quarantine_v4";
/// See [`QUARANTINE_V4`].
pub const QUARANTINE_V6: &str = "quarantine_v6";
/// Log prefix of kernel drop messages; the audit reader keys on it. The chain name follows.
pub const DROP_LOG_PREFIX: &str = "zonegate drop ";
/// Burst of the drop log rate limit, in packets.
pub const DROP_LOG_BURST: u32 = 20;
/// nftables' `raw` priority (NF_IP_PRI_RAW): before conntrack, where a conntrack zone is set.
pub const PRIORITY_RAW: i32 = -300;
/// The conntrack zone of the proxy's own connections to devices. They leave from the client's
/// address with a port the gateway picks, which may be the port of a live client connection:
/// in one zone the two would be one conntrack entry, and the device's replies would corrupt the
/// client connection's state (its FIN then counts as invalid and is dropped).
pub const UPSTREAM_CT_ZONE: u16 = 1;
/// nftables' priority for mangle-stage filter chains (NF_IP_PRI_MANGLE).
pub const PRIORITY_MANGLE: i32 = -150;
/// nftables' `filter` priority.
pub const PRIORITY_FILTER: i32 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Named counters: one per conduit, plus the drop counters.
    pub counters: Vec<String>,
    pub sets: Vec<AddrSet>,
    /// The liveness set [`ALIVE_SET`] and how its elements are installed; `None`: no such set.
    pub liveness: Option<Liveness>,
    /// The quarantine sets [`QUARANTINE_V4`] and [`QUARANTINE_V6`] with the sources held now;
    /// `None`: no conduit quarantines, no such sets.
    pub quarantine: Option<Vec<Quarantined>>,
    pub chains: Vec<Chain>,
}

/// A quarantined source and how long it stays dropped from the moment the ruleset is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantined {
    pub address: std::net::IpAddr,
    pub timeout: Duration,
}

/// How long liveness lasts without renewal: how long a dead daemon goes unnoticed at most
/// ([`super::liveness`] renews it).
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

/// How the elements of the liveness set are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// They expire after this long unless renewed: `zonegate run`, which renews them every
    /// second, so that the kernel notices a dead daemon without any process's help.
    Expiring(Duration),
    /// They never expire: `zonegate apply` and `plan`, after which no daemon renews anything.
    Permanent,
}

impl Ruleset {
    /// The same ruleset with liveness elements that never expire, for a one-shot apply.
    #[must_use]
    pub fn with_permanent_liveness(mut self) -> Self {
        if self.liveness.is_some() {
            self.liveness = Some(Liveness::Permanent);
        }
        self
    }

    /// The same ruleset with `held` in its quarantine sets (when it has them), so that
    /// replacing the table does not release quarantined sources.
    #[must_use]
    pub fn with_quarantined(mut self, held: Vec<Quarantined>) -> Self {
        if self.quarantine.is_some() {
            self.quarantine = Some(held);
        }
        self
    }

    /// The quarantine set for an address of `family`.
    pub fn quarantine_set(family: Family) -> &'static str {
        match family {
            Family::V4 => QUARANTINE_V4,
            Family::V6 => QUARANTINE_V6,
        }
    }
}

/// A named interval set of networks of one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSet {
    pub name: String,
    pub family: Family,
    pub elements: Vec<IpNet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// The family as `meta nfproto` names it.
pub(crate) fn nfproto(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

impl Family {
    /// The family of an address.
    pub fn of_addr(addr: std::net::IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
    pub rules: Vec<Rule>,
}

/// Matches, then statements; every rule carries a comment that says why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    IifName(Vec<String>),
    OifName(Vec<String>),
    /// The interface the routing table will send the packet out of (`fib daddr oifname`): in
    /// prerouting `oifname` is not known yet.
    RouteOifName(Vec<String>),
    NfProto(Family),
    L4ProtoTcp,
    Saddr(Family, Addrs),
    Daddr(Family, Addrs),
    Dport(L4, Vec<PortRange>),
    IcmpEchoRequest(Family),
    /// IPv6 neighbour discovery and multicast listener reports, without which IPv6 stops
    /// working on the link.
    NeighbourDiscovery,
    CtState(Vec<&'static str>),
    Mark(u32),
    SocketTransparent,
    /// Destination port not in these ranges (`tcp dport != { ... }`).
    NotDport(L4, Vec<PortRange>),
    /// Source port (replies of a service, in the conntrack zone chains).
    Sport(L4, Vec<PortRange>),
    /// zonegate is up: the packet's family is in [`ALIVE_SET`] (`meta nfproto @alive`).
    Alive,
    /// zonegate is down: the liveness elements expired or were withdrawn.
    NotAlive,
    /// Not addressed to the gateway itself (`fib daddr type != local`).
    NotLocal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

/// The address side of a match: a named set or literal networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addrs {
    Set(String),
    Nets(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Counter(String),
    Limit {
        per_second: u32,
        burst: u32,
    },
    Log {
        prefix: String,
        group: u16,
    },
    MarkSet(u32),
    /// `ct zone set`: conntrack tracks the packet in this zone.
    CtZoneSet(u16),
    TProxy {
        family: Family,
        port: u16,
    },
    Accept,
    Drop,
}

/// Link-local ICMPv6 an IPv6 host needs: neighbour discovery (RFC 4861) and multicast listener
/// reports (RFC 3810), which switches with MLD snooping need to deliver neighbour solicitations.
pub const ND_TYPES: [&str; 6] = [
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-report",
    "mld2-listener-report",
];

/// nftables identifiers cannot contain `-`; model names are validated so that this stays unique.
pub fn ident(name: &str) -> String {
    name.replace('-', "_")
}

pub fn conduit_counter(conduit: &str) -> String {
    format!("conduit_{}", ident(conduit))
}

fn zone_set(zone: &str, family: Family) -> String {
    match family {
        Family::V4 => format!("zone_{}_v4", ident(zone)),
        Family::V6 => format!("zone_{}_v6", ident(zone)),
    }
}

/// Derives the whole ruleset from the model, as `zonegate run` installs it: liveness elements
/// expire after [`LIVENESS_TIMEOUT`] unless renewed (see [`Ruleset::with_permanent_liveness`]).
/// Pure: no I/O, same model in, same ruleset out. Built chain by chain: the divert and upstream
/// chains exist only where a conduit is inspected.
pub fn render(model: &Model) -> Ruleset {
    let quarantines = model.conduits.iter().any(|c| {
        c.inspection
            .as_ref()
            .is_some_and(|i| i.quarantine.is_some())
    });
    let flows = conduit_flows(model);
    let proxy_ports: Vec<PortRange> = proxy_ports(model)
        .into_iter()
        .map(|p| PortRange { first: p, last: p })
        .collect();
    let mut chains = Vec::new();
    let divert = divert_chain(model, &flows, proxy_ports.clone(), quarantines);
    let diverting = divert.is_some();
    if let Some(divert) = divert {
        chains.extend([
            divert,
            upstream_zone_in_chain(&flows),
            upstream_zone_out_chain(),
        ]);
    }
    chains.extend([
        input_chain(model, diverting, proxy_ports),
        forward_chain(model, &flows),
        output_chain(model, &flows),
    ]);
    Ruleset {
        counters: counters(model, quarantines),
        sets: zone_sets(model),
        liveness: Some(Liveness::Expiring(LIVENESS_TIMEOUT)),
        quarantine: quarantines.then(Vec::new),
        chains,
    }
}

/// One service of a conduit in one family both of its ends have: the unit every conduit rule is
/// made for, in the order of the conduits, their services and the families.
struct Flow<'a> {
    conduit: &'a Conduit,
    from: &'a Zone,
    to: &'a Zone,
    service: Service,
    family: Family,
}

impl Flow<'_> {
    /// The matches that say which zones (and which ends of the conduit) the flow is between; the
    /// family for interface-only zones, so that v4 and v6 rules differ and icmp/tproxy know which
    /// protocol they handle.
    fn matches(&self) -> Vec<Match> {
        let mut m = zone_matches(self.from, self.to, self.conduit, self.family);
        if !m
            .iter()
            .any(|m| matches!(m, Match::Saddr(..) | Match::Daddr(..)))
        {
            m.insert(0, Match::NfProto(self.family));
        }
        m
    }

    fn counter(&self) -> Stmt {
        Stmt::Counter(conduit_counter(&self.conduit.name))
    }

    fn comment(&self) -> String {
        let c = self.conduit;
        format!(
            "conduit {}: {} -> {} {}",
            c.name, c.from, c.to, self.service
        )
    }

    /// The TCP port of an inspected service (Modbus, OPC UA), which the proxy serves.
    fn inspected_port(&self) -> Option<u16> {
        match self.service {
            Service::Modbus { port } | Service::OpcUa { port } => Some(port),
            Service::Tcp(_) | Service::Udp(_) | Service::Icmp => None,
        }
    }
}

fn conduit_flows(model: &Model) -> Vec<Flow<'_>> {
    let mut flows = Vec::new();
    for c in &model.conduits {
        let (Some(from), Some(to)) = (model.zone(&c.from), model.zone(&c.to)) else {
            continue;
        };
        for &service in &c.services {
            for family in families(from, to, c) {
                flows.push(Flow {
                    conduit: c,
                    from,
                    to,
                    service,
                    family,
                });
            }
        }
    }
    flows
}

fn single_port(port: u16) -> Vec<PortRange> {
    vec![PortRange {
        first: port,
        last: port,
    }]
}

/// A named counter per conduit and per place packets are dropped.
fn counters(model: &Model, quarantines: bool) -> Vec<String> {
    let mut counters: Vec<String> = model
        .conduits
        .iter()
        .map(|c| conduit_counter(&c.name))
        .collect();
    counters.extend(
        [
            DROP_FORWARD_COUNTER,
            DROP_INPUT_COUNTER,
            DROP_OUTPUT_COUNTER,
        ]
        .map(String::from),
    );
    if model.gateway.failure_mode == FailureMode::Closed {
        counters.push(DROP_DOWN_COUNTER.into());
    }
    if quarantines {
        counters.push(DROP_QUARANTINE_COUNTER.into());
    }
    counters
}

/// A set of addresses per zone and family, for the zones that have networks in it.
fn zone_sets(model: &Model) -> Vec<AddrSet> {
    let mut sets = Vec::new();
    for z in &model.zones {
        for family in [Family::V4, Family::V6] {
            let elements: Vec<IpNet> = z
                .networks
                .iter()
                .filter(|n| Family::of(n) == family)
                .copied()
                .collect();
            if !elements.is_empty() {
                sets.push(AddrSet {
                    name: zone_set(&z.name, family),
                    family,
                    elements,
                });
            }
        }
    }
    sets
}

/// The rate-limited log rule before a chain's default deny (the drop log reads its prefix).
fn drop_log(model: &Model, chain: &str) -> Rule {
    rule(
        vec![],
        vec![
            Stmt::Limit {
                per_second: model.gateway.drop_log_per_second,
                burst: DROP_LOG_BURST,
            },
            Stmt::Log {
                prefix: format!("{DROP_LOG_PREFIX}{chain} "),
                group: model.gateway.drop_log_group,
            },
        ],
        "log drops, rate-limited",
    )
}

/// Prerouting (mangle): quarantined sources dropped first, then the packets of the proxy's
/// established connections, then each inspected conduit diverted to its proxy port by TPROXY.
/// `None` when no conduit is inspected.
fn divert_chain(
    model: &Model,
    flows: &[Flow<'_>],
    proxy_ports: Vec<PortRange>,
    quarantines: bool,
) -> Option<Chain> {
    let mut divert = Vec::new();
    for flow in flows {
        let Some(port) = flow.inspected_port() else {
            continue;
        };
        let mut m = flow.matches();
        // Diverted only while zonegate is up, so that a dead proxy's conduit
        // falls through to the forward chain's failure mode.
        m.insert(0, Match::Alive);
        for m in &mut m {
            if let Match::OifName(names) = m {
                *m = Match::RouteOifName(std::mem::take(names));
            }
        }
        let proxy_port = match flow.service {
            Service::Modbus { .. } => model.gateway.modbus_proxy_port,
            _ => model.gateway.opcua_proxy_port,
        };
        m.push(Match::Dport(L4::Tcp, single_port(port)));
        divert.push(rule(
            m,
            vec![
                flow.counter(),
                Stmt::TProxy {
                    family: flow.family,
                    port: proxy_port,
                },
                Stmt::MarkSet(PROXY_MARK),
                Stmt::Accept,
            ],
            &format!("{} to inspection proxy", flow.comment()),
        ));
    }
    if divert.is_empty() {
        return None;
    }
    // The socket lookup finds a connection of the proxy's or, failing that, a listener:
    // the proxy's are bound to every address, so a SYN to a proxy port, on a gateway
    // address or on a device address no conduit diverts, would be marked and delivered
    // to the proxy. No connection of the proxy's has a proxy port as its own (the
    // listeners hold them; a device served on one is diverted by its conduit's rule,
    // whose TPROXY finds established sockets first), so excluding those ports leaves
    // out exactly the listeners. Such packets meet the input or forward chain's default
    // deny.
    divert.insert(
        0,
        rule(
            vec![
                Match::Alive,
                Match::L4ProtoTcp,
                Match::NotDport(L4::Tcp, proxy_ports),
                Match::SocketTransparent,
            ],
            vec![Stmt::MarkSet(PROXY_MARK), Stmt::Accept],
            "packets of established proxy connections, never to a proxy port's listener",
        ),
    );
    if quarantines {
        // First of all, in prerouting: before TPROXY and before the forward chain's
        // established/related accept, so that new and established connections of the
        // source stop, inspected or not. Packets to the gateway itself pass on to the
        // input chain, which admits only management access.
        for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            divert.insert(
                i,
                rule(
                    vec![
                        Match::Saddr(family, Addrs::Set(Ruleset::quarantine_set(family).into())),
                        Match::NotLocal,
                    ],
                    vec![
                        Stmt::Counter(DROP_QUARANTINE_COUNTER.into()),
                        Stmt::Drop,
                    ],
                    &format!(
                        "quarantine: {} source broke an inspected conduit's policy too often; dropped until its timeout",
                        nfproto(family)
                    ),
                ),
            );
        }
    }
    Some(Chain {
        name: "divert",
        hook: Hook::Prerouting,
        priority: PRIORITY_MANGLE,
        policy: Policy::Accept,
        rules: divert,
    })
}

/// Prerouting (raw), see [`UPSTREAM_CT_ZONE`]: the devices' packets back to the proxy, in the
/// proxy's conntrack zone.
fn upstream_zone_in_chain(flows: &[Flow<'_>]) -> Chain {
    let mut rules = Vec::new();
    for flow in flows {
        let Some(port) = flow.inspected_port() else {
            continue;
        };
        let (from, to, c, family) = (flow.from, flow.to, flow.conduit, flow.family);
        // The device's packets back to the proxy, whatever state the proxy's
        // socket is in (a socket lookup misses those in TIME_WAIT): from the
        // conduit's devices and port, to its sources.
        let mut back = Vec::new();
        if !to.interfaces.is_empty() {
            back.push(Match::IifName(to.interfaces.clone()));
        }
        if let Some(a) = side_addrs(to, &c.destinations, family) {
            back.push(Match::Saddr(family, a));
        }
        if let Some(a) = side_addrs(from, &c.sources, family) {
            back.push(Match::Daddr(family, a));
        }
        if !back
            .iter()
            .any(|m| matches!(m, Match::Saddr(..) | Match::Daddr(..)))
        {
            back.insert(0, Match::NfProto(family));
        }
        // Only while the proxy serves: in failure mode `open` the conduit's
        // flows are forwarded directly, both ways in the default zone.
        back.insert(0, Match::Alive);
        back.push(Match::Sport(L4::Tcp, single_port(port)));
        rules.push(rule(
            back,
            vec![Stmt::CtZoneSet(UPSTREAM_CT_ZONE)],
            &format!(
                "{} device to proxy: the proxy's conntrack zone",
                flow.comment()
            ),
        ));
    }
    Chain {
        name: "upstream_zone_in",
        hook: Hook::Prerouting,
        priority: PRIORITY_RAW,
        policy: Policy::Accept,
        rules,
    }
}

/// Output (raw), see [`UPSTREAM_CT_ZONE`]: the proxy's connections to devices, in the proxy's
/// conntrack zone.
fn upstream_zone_out_chain() -> Chain {
    Chain {
        name: "upstream_zone_out",
        hook: Hook::Output,
        priority: PRIORITY_RAW,
        policy: Policy::Accept,
        rules: vec![rule(
            vec![Match::Mark(UPSTREAM_MARK)],
            vec![Stmt::CtZoneSet(UPSTREAM_CT_ZONE)],
            "the proxy's connections to devices: a conntrack zone apart from client connections with the same addresses and ports",
        )],
    }
}

/// Input: loopback, replies, neighbour discovery, diverted connections, management access;
/// everything else logged and dropped.
fn input_chain(model: &Model, diverting: bool, proxy_ports: Vec<PortRange>) -> Chain {
    let mut input = Vec::new();
    if diverting {
        // Diverted packets keep their interface; on loopback a proxy port could only be
        // reached directly, and the proxy would connect on to itself.
        input.push(rule(
            vec![
                Match::IifName(vec!["lo".into()]),
                Match::L4ProtoTcp,
                Match::Dport(L4::Tcp, proxy_ports),
            ],
            vec![Stmt::Counter(DROP_INPUT_COUNTER.into()), Stmt::Drop],
            "proxy ports take diverted connections only, none from the gateway itself",
        ));
    }
    input.extend([
        rule(
            vec![Match::IifName(vec!["lo".into()])],
            vec![Stmt::Accept],
            "loopback",
        ),
        rule(
            vec![Match::CtState(vec!["established", "related"])],
            vec![Stmt::Accept],
            "replies to the gateway's own connections",
        ),
        rule(
            vec![Match::CtState(vec!["invalid"])],
            vec![Stmt::Drop],
            "packets conntrack cannot place",
        ),
        rule(
            vec![Match::NeighbourDiscovery],
            vec![Stmt::Accept],
            "IPv6 neighbour discovery and multicast listener reports",
        ),
    ]);
    if diverting {
        input.push(rule(
            vec![Match::Mark(PROXY_MARK)],
            vec![Stmt::Accept],
            "diverted to the inspection proxy",
        ));
    }
    if let Some(mgmt) = &model.gateway.management {
        input.extend(management_access(mgmt));
    }
    input.push(drop_log(model, "input"));
    input.push(rule(
        vec![],
        vec![Stmt::Counter(DROP_INPUT_COUNTER.into()), Stmt::Drop],
        "default deny to the gateway",
    ));
    Chain {
        name: "input",
        hook: Hook::Input,
        priority: PRIORITY_FILTER,
        policy: Policy::Drop,
        rules: input,
    }
}

/// Who may reach the management address: its TCP ports, and ping.
fn management_access(mgmt: &Management) -> Vec<Rule> {
    let Some(peers) = management_peers(mgmt) else {
        return Vec::new();
    };
    let family = Family::of_addr(mgmt.address);
    let mut m = Vec::new();
    if let Some(i) = &mgmt.interface {
        m.push(Match::IifName(vec![i.clone()]));
    }
    if let Some(nets) = peers {
        m.push(Match::Saddr(family, Addrs::Nets(nets)));
    }
    m.push(Match::Daddr(
        family,
        Addrs::Nets(vec![IpNet::from(mgmt.address)]),
    ));
    let mut ping = m.clone();
    m.push(Match::Dport(
        L4::Tcp,
        mgmt.tcp_ports
            .iter()
            .map(|&p| PortRange { first: p, last: p })
            .collect(),
    ));
    ping.push(Match::IcmpEchoRequest(family));
    vec![
        rule(m, vec![Stmt::Accept], "management access"),
        rule(
            ping,
            vec![Stmt::Accept],
            "management: operators ping the management address",
        ),
    ]
}

/// Forward: the failure mode's drop while down (closed), replies, each conduit's L4 services
/// (and, in failure mode open, its inspected ones while down); everything else logged and
/// dropped.
fn forward_chain(model: &Model, flows: &[Flow<'_>]) -> Chain {
    let failure_mode = model.gateway.failure_mode;
    let mut forward = Vec::new();
    if failure_mode == FailureMode::Closed {
        // Before `ct state established`: when zonegate is down, flows it allowed stop too.
        forward.push(rule(
            vec![Match::NotAlive],
            vec![Stmt::Counter(DROP_DOWN_COUNTER.into()), Stmt::Drop],
            "failure_mode closed: zonegate is down (liveness expired or withdrawn), nothing crosses zones",
        ));
    }
    forward.extend([
        rule(
            vec![Match::CtState(vec!["established", "related"])],
            vec![Stmt::Accept],
            "replies and related traffic of allowed flows",
        ),
        rule(
            vec![Match::CtState(vec!["invalid"])],
            vec![Stmt::Drop],
            "packets conntrack cannot place",
        ),
    ]);
    for flow in flows {
        let mut m = flow.matches();
        let comment = flow.comment();
        match flow.service {
            Service::Tcp(r) => {
                m.extend([Match::Dport(L4::Tcp, vec![r]), Match::CtState(vec!["new"])]);
            }
            Service::Udp(r) => {
                m.extend([Match::Dport(L4::Udp, vec![r]), Match::CtState(vec!["new"])]);
            }
            Service::Icmp => {
                m.extend([
                    Match::IcmpEchoRequest(flow.family),
                    Match::CtState(vec!["new"]),
                ]);
            }
            Service::Modbus { port } | Service::OpcUa { port } => {
                if failure_mode != FailureMode::Open {
                    continue;
                }
                // The bypass: only while zonegate is down, and only what the
                // conduit names, at L4, as if it were a tcp/PORT service.
                m.insert(0, Match::NotAlive);
                m.extend([
                    Match::Dport(L4::Tcp, single_port(port)),
                    Match::CtState(vec!["new"]),
                ]);
                forward.push(rule(
                    m,
                    vec![flow.counter(), Stmt::Accept],
                    &format!("{comment}: failure_mode open: uninspected while zonegate is down"),
                ));
                continue;
            }
        }
        forward.push(rule(m, vec![flow.counter(), Stmt::Accept], &comment));
    }
    forward.push(drop_log(model, "forward"));
    forward.push(rule(
        vec![],
        vec![Stmt::Counter(DROP_FORWARD_COUNTER.into()), Stmt::Drop],
        "default deny between zones",
    ));
    Chain {
        name: "forward",
        hook: Hook::Forward,
        priority: PRIORITY_FILTER,
        policy: Policy::Drop,
        rules: forward,
    }
}

/// Output: loopback, replies, neighbour discovery, the proxy's connections to devices, the
/// gateway's own connections to management peers and syslog receivers; everything else logged
/// and dropped.
fn output_chain(model: &Model, flows: &[Flow<'_>]) -> Chain {
    let mut output = vec![
        rule(
            vec![Match::OifName(vec!["lo".into()])],
            vec![Stmt::Accept],
            "loopback",
        ),
        rule(
            vec![Match::CtState(vec!["established", "related"])],
            vec![Stmt::Accept],
            "replies from the gateway's services",
        ),
        rule(
            vec![Match::NeighbourDiscovery],
            vec![Stmt::Accept],
            "IPv6 neighbour discovery and multicast listener reports",
        ),
    ];
    output.extend(proxy_upstream(flows));
    if let Some(mgmt) = &model.gateway.management {
        output.extend(management_egress(mgmt));
    }
    output.extend(syslog_egress(model));
    output.push(drop_log(model, "output"));
    output.push(rule(
        vec![],
        vec![Stmt::Counter(DROP_OUTPUT_COUNTER.into()), Stmt::Drop],
        "default deny from the gateway: it is no way into a zone",
    ));
    Chain {
        name: "output",
        hook: Hook::Output,
        priority: PRIORITY_FILTER,
        policy: Policy::Drop,
        rules: output,
    }
}

/// The proxy's connections to each inspected conduit's devices (marked [`UPSTREAM_MARK`]).
fn proxy_upstream(flows: &[Flow<'_>]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for flow in flows {
        let Some(port) = flow.inspected_port() else {
            continue;
        };
        let mut up = vec![Match::Mark(UPSTREAM_MARK)];
        up.extend(to_matches(flow.to, flow.conduit, flow.family, true));
        if !up.iter().any(|m| matches!(m, Match::Daddr(..))) {
            up.insert(0, Match::NfProto(flow.family));
        }
        up.push(Match::Dport(L4::Tcp, single_port(port)));
        rules.push(rule(
            up,
            vec![Stmt::Accept],
            &format!("{} proxy to device", flow.comment()),
        ));
    }
    rules
}

/// The gateway's connections to the audit syslog receivers.
fn syslog_egress(model: &Model) -> Vec<Rule> {
    syslog_receivers(model)
        .into_iter()
        .map(|(address, transport)| {
            let family = Family::of_addr(address.ip());
            let l4 = if transport == SyslogTransport::Udp {
                L4::Udp
            } else {
                L4::Tcp
            };
            rule(
                vec![
                    Match::Daddr(family, Addrs::Nets(vec![IpNet::from(address.ip())])),
                    Match::Dport(l4, single_port(address.port())),
                    Match::CtState(vec!["new"]),
                ],
                vec![Stmt::Accept],
                &format!("audit syslog receiver {address} ({})", transport.as_str()),
            )
        })
        .collect()
}

/// The boot-time ruleset: nothing is forwarded until zonegate has applied the real one. It uses the
/// same table, so the first apply replaces it in one transaction without a gap.
pub fn early_block() -> Ruleset {
    Ruleset {
        counters: vec![DROP_FORWARD_COUNTER.into()],
        sets: vec![],
        liveness: None,
        quarantine: None,
        chains: vec![Chain {
            name: "forward",
            hook: Hook::Forward,
            priority: PRIORITY_FILTER,
            policy: Policy::Drop,
            rules: vec![rule(
                vec![],
                vec![Stmt::Counter(DROP_FORWARD_COUNTER.into()), Stmt::Drop],
                "early block: zonegate is not running yet",
            )],
        }],
    }
}

/// The ports the proxy listens on, sorted; packets reach them only through a divert rule.
pub fn proxy_ports(model: &Model) -> Vec<u16> {
    let mut ports = vec![
        model.gateway.modbus_proxy_port,
        model.gateway.opcua_proxy_port,
    ];
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Who may reach the management address, in its family: `None` inside means anyone
/// (`allow_from` is empty); `None` outside means no one (`allow_from` lists only networks of
/// the other family, which can never reach the address).
fn management_peers(mgmt: &Management) -> Option<Option<Vec<IpNet>>> {
    if mgmt.allow_from.is_empty() {
        return Some(None);
    }
    let family = Family::of_addr(mgmt.address);
    let nets: Vec<IpNet> = mgmt
        .allow_from
        .iter()
        .filter(|n| Family::of(n) == family)
        .copied()
        .collect();
    (!nets.is_empty()).then_some(Some(nets))
}

/// The gateway's own connections that leave it: to its management peers, and to the egress
/// peers zones.yaml names. Nothing else the gateway starts gets out, whatever address it
/// binds to.
fn management_egress(mgmt: &Management) -> Vec<Rule> {
    let mut out = Vec::new();
    let family = Family::of_addr(mgmt.address);
    let mut m = Vec::new();
    if let Some(i) = &mgmt.interface {
        m.push(Match::OifName(vec![i.clone()]));
    }
    m.push(Match::Saddr(
        family,
        Addrs::Nets(vec![IpNet::from(mgmt.address)]),
    ));
    match management_peers(mgmt) {
        Some(Some(nets)) => m.push(Match::Daddr(family, Addrs::Nets(nets))),
        // Anyone may manage the gateway, but only the interface tells the management network
        // from a zone: without one, the gateway's management address reaches no one.
        Some(None) if mgmt.interface.is_some() => {}
        Some(None) | None => m.clear(),
    }
    if !m.is_empty() {
        out.push(rule(
            m,
            vec![Stmt::Accept],
            "the gateway's own connections to its management peers, from its management address",
        ));
    }
    for peer in &mgmt.egress {
        let family = Family::of(&peer.network);
        for service in &peer.services {
            let mut m = vec![Match::Daddr(family, Addrs::Nets(vec![peer.network]))];
            match *service {
                Service::Tcp(r) => m.push(Match::Dport(L4::Tcp, vec![r])),
                Service::Udp(r) => m.push(Match::Dport(L4::Udp, vec![r])),
                Service::Icmp => m.push(Match::IcmpEchoRequest(family)),
                // Refused by the configuration: they cross between zones through the proxy.
                Service::Modbus { .. } | Service::OpcUa { .. } => continue,
            }
            m.push(Match::CtState(vec!["new"]));
            out.push(rule(
                m,
                vec![Stmt::Accept],
                &format!("egress {}: {} {service}", peer.name, peer.network),
            ));
        }
    }
    out
}

fn rule(matches: Vec<Match>, stmts: Vec<Stmt>, comment: &str) -> Rule {
    Rule {
        matches,
        stmts,
        comment: comment.to_owned(),
    }
}

/// Address families a conduit needs rules for: both ends must be reachable in that family.
fn families(from: &Zone, to: &Zone, c: &Conduit) -> Vec<Family> {
    let side = |zone: &Zone, narrowing: &[Endpoint], family: Family| -> Option<bool> {
        // Some(true): addresses of this family exist; Some(false): none; None: interface-only, any.
        if !narrowing.is_empty() {
            return Some(narrowing.iter().any(|e| Family::of(&e.net()) == family));
        }
        if zone.networks.is_empty() {
            return None;
        }
        Some(zone.networks.iter().any(|n| Family::of(n) == family))
    };
    [Family::V4, Family::V6]
        .into_iter()
        .filter(|&f| {
            side(from, &c.sources, f) != Some(false) && side(to, &c.destinations, f) != Some(false)
        })
        .collect()
}

/// Conduits whose IPv6 rules name IPv6 networks (their zones' or their `sources` and
/// `destinations`): what a host without IPv6 cannot serve. Conduits between interface-only
/// zones name no network and serve whichever family the host has.
pub fn ipv6_conduits(model: &Model) -> Vec<String> {
    model
        .conduits
        .iter()
        .filter(|c| {
            let (Some(from), Some(to)) = (model.zone(&c.from), model.zone(&c.to)) else {
                return false;
            };
            families(from, to, c).contains(&Family::V6)
                && (side_addrs(from, &c.sources, Family::V6).is_some()
                    || side_addrs(to, &c.destinations, Family::V6).is_some())
        })
        .map(|c| c.name.clone())
        .collect()
}

/// Interface and address matches that place a packet on this conduit, in this family.
fn zone_matches(from: &Zone, to: &Zone, c: &Conduit, family: Family) -> Vec<Match> {
    let mut m = Vec::new();
    if !from.interfaces.is_empty() {
        m.push(Match::IifName(from.interfaces.clone()));
    }
    if !to.interfaces.is_empty() {
        m.push(Match::OifName(to.interfaces.clone()));
    }
    if let Some(addrs) = side_addrs(from, &c.sources, family) {
        m.push(Match::Saddr(family, addrs));
    }
    m.extend(to_matches(to, c, family, false));
    m
}

fn to_matches(to: &Zone, c: &Conduit, family: Family, with_oif: bool) -> Vec<Match> {
    let mut m = Vec::new();
    if with_oif && !to.interfaces.is_empty() {
        m.push(Match::OifName(to.interfaces.clone()));
    }
    if let Some(addrs) = side_addrs(to, &c.destinations, family) {
        m.push(Match::Daddr(family, addrs));
    }
    m
}

/// The narrowing if there is one, else the zone's own set, else nothing (interface-only zone).
fn side_addrs(zone: &Zone, narrowing: &[Endpoint], family: Family) -> Option<Addrs> {
    if !narrowing.is_empty() {
        let nets: Vec<IpNet> = narrowing
            .iter()
            .map(Endpoint::net)
            .filter(|n| Family::of(n) == family)
            .collect();
        return Some(Addrs::Nets(nets));
    }
    if zone.networks.iter().any(|n| Family::of(n) == family) {
        return Some(Addrs::Set(zone_set(&zone.name, family)));
    }
    None
}

#[cfg(test)]
mod tests;

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
/// Pure: no I/O, same model in, same ruleset out.
pub fn render(model: &Model) -> Ruleset {
    let failure_mode = model.gateway.failure_mode;
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
    if failure_mode == FailureMode::Closed {
        counters.push(DROP_DOWN_COUNTER.into());
    }
    let quarantines = model.conduits.iter().any(|c| {
        c.inspection
            .as_ref()
            .is_some_and(|i| i.quarantine.is_some())
    });
    if quarantines {
        counters.push(DROP_QUARANTINE_COUNTER.into());
    }

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

    let mut divert = Vec::new();
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
    let mut proxy_upstream = Vec::new();
    let mut upstream_zone_in = Vec::new();
    for c in &model.conduits {
        let (Some(from), Some(to)) = (model.zone(&c.from), model.zone(&c.to)) else {
            continue;
        };
        for service in &c.services {
            for family in families(from, to, c) {
                let mut m = zone_matches(from, to, c, family);
                if !m
                    .iter()
                    .any(|m| matches!(m, Match::Saddr(..) | Match::Daddr(..)))
                {
                    // interface-only zones: say the family, so that v4 and v6 rules differ and
                    // icmp/tproxy know which protocol they handle
                    m.insert(0, Match::NfProto(family));
                }
                let counter = Stmt::Counter(conduit_counter(&c.name));
                let comment = format!("conduit {}: {} -> {} {}", c.name, c.from, c.to, service);
                match *service {
                    Service::Tcp(r) => {
                        m.extend([Match::Dport(L4::Tcp, vec![r]), Match::CtState(vec!["new"])]);
                        forward.push(rule(m, vec![counter, Stmt::Accept], &comment));
                    }
                    Service::Udp(r) => {
                        m.extend([Match::Dport(L4::Udp, vec![r]), Match::CtState(vec!["new"])]);
                        forward.push(rule(m, vec![counter, Stmt::Accept], &comment));
                    }
                    Service::Icmp => {
                        m.extend([Match::IcmpEchoRequest(family), Match::CtState(vec!["new"])]);
                        forward.push(rule(m, vec![counter, Stmt::Accept], &comment));
                    }
                    Service::Modbus { port } | Service::OpcUa { port } => {
                        let dport = Match::Dport(
                            L4::Tcp,
                            vec![PortRange {
                                first: port,
                                last: port,
                            }],
                        );
                        if failure_mode == FailureMode::Open {
                            // The bypass: only while zonegate is down, and only what the
                            // conduit names, at L4, as if it were a tcp/PORT service.
                            let mut bypass = vec![Match::NotAlive];
                            bypass.extend(m.iter().cloned());
                            bypass.extend([dport.clone(), Match::CtState(vec!["new"])]);
                            forward.push(rule(
                                bypass,
                                vec![counter.clone(), Stmt::Accept],
                                &format!(
                                    "{comment}: failure_mode open: uninspected while zonegate is down"
                                ),
                            ));
                        }
                        // Diverted only while zonegate is up, so that a dead proxy's conduit
                        // falls through to the forward chain's failure mode.
                        m.insert(0, Match::Alive);
                        for m in &mut m {
                            if let Match::OifName(names) = m {
                                *m = Match::RouteOifName(std::mem::take(names));
                            }
                        }
                        let proxy_port = match service {
                            Service::Modbus { .. } => model.gateway.modbus_proxy_port,
                            _ => model.gateway.opcua_proxy_port,
                        };
                        m.push(dport);
                        divert.push(rule(
                            m,
                            vec![
                                counter,
                                Stmt::TProxy {
                                    family,
                                    port: proxy_port,
                                },
                                Stmt::MarkSet(PROXY_MARK),
                                Stmt::Accept,
                            ],
                            &format!("{comment} to inspection proxy"),
                        ));
                        let mut up = vec![Match::Mark(UPSTREAM_MARK)];
                        up.extend(to_matches(to, c, family, true));
                        if !up.iter().any(|m| matches!(m, Match::Daddr(..))) {
                            up.insert(0, Match::NfProto(family));
                        }
                        up.push(Match::Dport(
                            L4::Tcp,
                            vec![PortRange {
                                first: port,
                                last: port,
                            }],
                        ));
                        proxy_upstream.push(rule(
                            up,
                            vec![Stmt::Accept],
                            &format!("{comment} proxy to device"),
                        ));
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
                        back.push(Match::Sport(
                            L4::Tcp,
                            vec![PortRange {
                                first: port,
                                last: port,
                            }],
                        ));
                        upstream_zone_in.push(rule(
                            back,
                            vec![Stmt::CtZoneSet(UPSTREAM_CT_ZONE)],
                            &format!("{comment} device to proxy: the proxy's conntrack zone"),
                        ));
                    }
                }
            }
        }
    }
    let log = |chain: &str| {
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
    };
    forward.push(log("forward"));
    forward.push(rule(
        vec![],
        vec![Stmt::Counter(DROP_FORWARD_COUNTER.into()), Stmt::Drop],
        "default deny between zones",
    ));

    let proxy_ports: Vec<PortRange> = proxy_ports(model)
        .into_iter()
        .map(|p| PortRange { first: p, last: p })
        .collect();
    let mut input = Vec::new();
    if !divert.is_empty() {
        // Diverted packets keep their interface; on loopback a proxy port could only be
        // reached directly, and the proxy would connect on to itself.
        input.push(rule(
            vec![
                Match::IifName(vec!["lo".into()]),
                Match::L4ProtoTcp,
                Match::Dport(L4::Tcp, proxy_ports.clone()),
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
    if !divert.is_empty() {
        input.push(rule(
            vec![Match::Mark(PROXY_MARK)],
            vec![Stmt::Accept],
            "diverted to the inspection proxy",
        ));
    }
    if let Some(mgmt) = &model.gateway.management
        && let Some(peers) = management_peers(mgmt)
    {
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
        input.push(rule(m, vec![Stmt::Accept], "management access"));
        ping.push(Match::IcmpEchoRequest(family));
        input.push(rule(
            ping,
            vec![Stmt::Accept],
            "management: operators ping the management address",
        ));
    }
    input.push(log("input"));
    input.push(rule(
        vec![],
        vec![Stmt::Counter(DROP_INPUT_COUNTER.into()), Stmt::Drop],
        "default deny to the gateway",
    ));

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
    output.extend(proxy_upstream);
    if let Some(mgmt) = &model.gateway.management {
        output.extend(management_egress(mgmt));
    }
    for (address, transport) in syslog_receivers(model) {
        let family = Family::of_addr(address.ip());
        let l4 = if transport == SyslogTransport::Udp {
            L4::Udp
        } else {
            L4::Tcp
        };
        let port = address.port();
        output.push(rule(
            vec![
                Match::Daddr(family, Addrs::Nets(vec![IpNet::from(address.ip())])),
                Match::Dport(
                    l4,
                    vec![PortRange {
                        first: port,
                        last: port,
                    }],
                ),
                Match::CtState(vec!["new"]),
            ],
            vec![Stmt::Accept],
            &format!("audit syslog receiver {address} ({})", transport.as_str()),
        ));
    }
    output.push(log("output"));
    output.push(rule(
        vec![],
        vec![Stmt::Counter(DROP_OUTPUT_COUNTER.into()), Stmt::Drop],
        "default deny from the gateway: it is no way into a zone",
    ));

    let mut chains = Vec::new();
    if !divert.is_empty() {
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
        chains.push(Chain {
            name: "divert",
            hook: Hook::Prerouting,
            priority: PRIORITY_MANGLE,
            policy: Policy::Accept,
            rules: divert,
        });
        // See UPSTREAM_CT_ZONE: the proxy's connections to devices, both ways, in a conntrack
        // zone of their own.
        chains.push(Chain {
            name: "upstream_zone_in",
            hook: Hook::Prerouting,
            priority: PRIORITY_RAW,
            policy: Policy::Accept,
            rules: upstream_zone_in,
        });
        chains.push(Chain {
            name: "upstream_zone_out",
            hook: Hook::Output,
            priority: PRIORITY_RAW,
            policy: Policy::Accept,
            rules: vec![rule(
                vec![Match::Mark(UPSTREAM_MARK)],
                vec![Stmt::CtZoneSet(UPSTREAM_CT_ZONE)],
                "the proxy's connections to devices: a conntrack zone apart from client connections with the same addresses and ports",
            )],
        });
    }
    chains.extend([
        Chain {
            name: "input",
            hook: Hook::Input,
            priority: PRIORITY_FILTER,
            policy: Policy::Drop,
            rules: input,
        },
        Chain {
            name: "forward",
            hook: Hook::Forward,
            priority: PRIORITY_FILTER,
            policy: Policy::Drop,
            rules: forward,
        },
        Chain {
            name: "output",
            hook: Hook::Output,
            priority: PRIORITY_FILTER,
            policy: Policy::Drop,
            rules: output,
        },
    ]);
    Ruleset {
        counters,
        sets,
        liveness: Some(Liveness::Expiring(LIVENESS_TIMEOUT)),
        quarantine: quarantines.then(Vec::new),
        chains,
    }
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
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
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
            assert!(chain(&default, name).rules.iter().all(
                |r| !r.matches.contains(&Match::NotAlive) && !r.matches.contains(&Match::Alive)
            ));
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
}

//! The ruleset as `nft` text for review. The output is a complete `nft -f` file that replaces the
//! table atomically, so `nft -c -f` can check it and an engineer could load it by hand.

use std::fmt::Write as _;

use ipnet::IpNet;

use super::ruleset::{
    ALIVE_ELEMENTS, ALIVE_SET, Addrs, Chain, Family, Hook, L4, Liveness, Match, ND_TYPES, Policy,
    Rule, Ruleset, Stmt, TABLE, nfproto,
};
use crate::config::PortRange;

pub fn render(rs: &Ruleset) -> String {
    let mut out = String::new();
    // `table` then `delete table` then the new table: one transaction that replaces it whole, and
    // that also works when the table does not exist yet.
    let _ = writeln!(out, "table inet {TABLE}\ndelete table inet {TABLE}\n");
    let _ = writeln!(out, "table inet {TABLE} {{");
    for c in &rs.counters {
        let _ = writeln!(out, "\tcounter {c} {{\n\t}}\n");
    }
    for s in &rs.sets {
        let ty = match s.family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        let elems: Vec<String> = s.elements.iter().map(net).collect();
        let _ = writeln!(
            out,
            "\tset {} {{\n\t\ttype {ty}\n\t\tflags interval\n\t\telements = {{ {} }}\n\t}}\n",
            s.name,
            elems.join(", ")
        );
    }
    if let Some(liveness) = rs.liveness {
        let (timeout, note) = match liveness {
            Liveness::Expiring(t) => (
                format!(" timeout {}", duration(t)),
                "renewed every second by zonegate run; expire when it dies",
            ),
            Liveness::Permanent => (
                String::new(),
                "permanent (zonegate apply); zonegate run installs them with a timeout and renews them",
            ),
        };
        let elems: Vec<String> = ALIVE_ELEMENTS
            .iter()
            .map(|f| format!("{}{timeout}", nfproto(*f)))
            .collect();
        let _ = writeln!(
            out,
            "\t# zonegate is up while this set holds its elements: {note}\n\tset {ALIVE_SET} {{\n\t\ttype nf_proto\n\t\tflags timeout\n\t\telements = {{ {} }}\n\t}}\n",
            elems.join(", ")
        );
    }
    if let Some(held) = &rs.quarantine {
        for family in [Family::V4, Family::V6] {
            let ty = match family {
                Family::V4 => "ipv4_addr",
                Family::V6 => "ipv6_addr",
            };
            let elems: Vec<String> = held
                .iter()
                .filter(|q| Family::of_addr(q.address) == family)
                .map(|q| format!("{} timeout {}", q.address, duration(q.timeout)))
                .collect();
            // nft refuses an empty `elements = { }`.
            let elements = if elems.is_empty() {
                String::new()
            } else {
                format!("\t\telements = {{ {} }}\n", elems.join(", "))
            };
            let _ = writeln!(
                out,
                "\t# sources quarantined for their violations; the kernel releases each at its timeout\n\tset {} {{\n\t\ttype {ty}\n\t\tflags timeout\n{elements}\t}}\n",
                Ruleset::quarantine_set(family)
            );
        }
    }
    for (i, chain) in rs.chains.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        write_chain(&mut out, chain);
    }
    out.push_str("}\n");
    out
}

fn write_chain(out: &mut String, c: &Chain) {
    let hook = match c.hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
    };
    let policy = match c.policy {
        Policy::Accept => "accept",
        Policy::Drop => "drop",
    };
    let _ = writeln!(
        out,
        "\tchain {} {{\n\t\ttype filter hook {hook} priority {}; policy {policy};",
        c.name, c.priority
    );
    for r in &c.rules {
        let _ = writeln!(out, "\t\t{}", rule(r));
    }
    out.push_str("\t}\n");
}

pub fn rule(r: &Rule) -> String {
    let mut parts: Vec<String> = r.matches.iter().map(matcher).collect();
    parts.extend(r.stmts.iter().map(stmt));
    parts.push(format!("comment {}", quote(&r.comment)));
    parts.join(" ")
}

fn matcher(m: &Match) -> String {
    match m {
        Match::IifName(names) => format!("iifname {}", strings(names)),
        Match::OifName(names) => format!("oifname {}", strings(names)),
        Match::RouteOifName(names) => format!("fib daddr oifname {}", strings(names)),
        Match::NfProto(f) => format!("meta nfproto {}", nfproto(*f)),
        Match::L4ProtoTcp => "meta l4proto tcp".into(),
        Match::Saddr(f, a) => format!("{} saddr {}", ipproto(*f), addrs(a)),
        Match::Daddr(f, a) => format!("{} daddr {}", ipproto(*f), addrs(a)),
        Match::Dport(l4, ranges) | Match::Sport(l4, ranges) | Match::NotDport(l4, ranges) => {
            let proto = match l4 {
                L4::Tcp => "tcp",
                L4::Udp => "udp",
            };
            let field = match m {
                Match::Dport(..) => "dport",
                Match::NotDport(..) => "dport !=",
                _ => "sport",
            };
            let items: Vec<String> = ranges.iter().map(port_range).collect();
            format!("{proto} {field} {}", set_of(&items))
        }
        Match::IcmpEchoRequest(Family::V4) => "icmp type echo-request".into(),
        Match::IcmpEchoRequest(Family::V6) => "icmpv6 type echo-request".into(),
        Match::NeighbourDiscovery => {
            let items: Vec<String> = ND_TYPES.iter().map(|s| (*s).to_owned()).collect();
            format!("icmpv6 type {}", set_of(&items))
        }
        Match::CtState(states) => {
            let items: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
            format!("ct state {}", set_of(&items))
        }
        Match::Mark(m) => format!("meta mark {m:#x}"),
        Match::SocketTransparent => "socket transparent 1".into(),
        Match::Alive => format!("meta nfproto @{ALIVE_SET}"),
        Match::NotAlive => format!("meta nfproto != @{ALIVE_SET}"),
        Match::NotLocal => "fib daddr type != local".into(),
    }
}

fn stmt(s: &Stmt) -> String {
    match s {
        Stmt::Counter(name) => format!("counter name {}", quote(name)),
        Stmt::Limit { per_second, burst } => {
            format!("limit rate {per_second}/second burst {burst} packets")
        }
        Stmt::Log { prefix, group } => format!("log prefix {} group {group}", quote(prefix)),
        Stmt::MarkSet(m) => format!("meta mark set {m:#x}"),
        Stmt::CtZoneSet(z) => format!("ct zone set {z}"),
        Stmt::TProxy { family, port } => format!("tproxy {} to :{port}", ipproto(*family)),
        Stmt::Accept => "accept".into(),
        Stmt::Drop => "drop".into(),
    }
}

/// Whole seconds, at least one, as nft writes a timeout.
pub(super) fn duration(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

pub(super) fn ipproto(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

fn addrs(a: &Addrs) -> String {
    match a {
        Addrs::Set(name) => format!("@{name}"),
        Addrs::Nets(nets) => {
            let items: Vec<String> = nets.iter().map(net).collect();
            set_of(&items)
        }
    }
}

/// A host is written as an address, a network as a CIDR.
pub(super) fn net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn port_range(r: &PortRange) -> String {
    r.to_string()
}

/// One item stands alone; several form an anonymous set.
fn set_of(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        many => format!("{{ {} }}", many.join(", ")),
    }
}

fn strings(names: &[String]) -> String {
    let q: Vec<String> = names.iter().map(|n| quote(n)).collect();
    set_of(&q)
}

/// Names and comments come from a validated model, but quote defensively anyway.
fn quote(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    format!("\"{clean}\"")
}

//! The ruleset as one libnftables JSON transaction (`nft -j -f -`), built from the `nftables` crate's
//! schema types. The batch adds the table, deletes it and adds it again with its contents, so the
//! kernel swaps the old table for the new one atomically, or keeps the old one if anything fails.
//! The liveness set is the one object written by hand: the crate has no `nf_proto` set type.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::IpNet;
use nftables::expr::{
    self, CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload,
    PayloadField, Prefix, SetItem, Socket, SocketAttr,
};
use nftables::schema::{
    self, NfCmd, NfListObject, NfObject, Nftables, SetFlag, SetType, SetTypeValue,
};
use nftables::stmt::{self, Counter, Limit, Log, Mangle, Operator, Statement, TProxy};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::{Value, json};

use super::ruleset::{
    ALIVE_ELEMENTS, ALIVE_SET, Addrs, Chain, Family, Hook, L4, Liveness, Match, ND_TYPES, Policy,
    Quarantined, Rule, Ruleset, Stmt, TABLE, nfproto,
};
use super::text::{ipproto, net};
use crate::config::PortRange;

/// The replace-whole-table transaction, as the JSON document `nft -j -f -` reads.
pub fn transaction(rs: &Ruleset) -> Result<Value, serde_json::Error> {
    let mut doc = serde_json::to_value(typed_transaction(rs))?;
    if let (Some(liveness), Some(cmds)) = (
        rs.liveness,
        doc.get_mut("nftables").and_then(Value::as_array_mut),
    ) {
        // After the other sets, as the text form has it (the kernel lists sets in the order
        // they were added), and before any chain's rule refers to it.
        let at = cmds
            .iter()
            .position(|c| c.get("add").and_then(|a| a.get("chain")).is_some())
            .unwrap_or(cmds.len());
        cmds.insert(at, json!({ "add": { "set": alive_set(liveness) } }));
    }
    if let (Some(held), Some(cmds)) = (
        &rs.quarantine,
        doc.get_mut("nftables").and_then(Value::as_array_mut),
    ) {
        let at = cmds
            .iter()
            .position(|c| c.get("add").and_then(|a| a.get("chain")).is_some())
            .unwrap_or(cmds.len());
        for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            cmds.insert(
                at.saturating_add(i),
                json!({ "add": { "set": quarantine_set(family, held) } }),
            );
        }
    }
    Ok(doc)
}

/// A quarantine set with the sources held now, each with its remaining time, as libnftables
/// JSON (written by hand, as the liveness set: elements with timeouts).
fn quarantine_set(family: Family, held: &[Quarantined]) -> Value {
    let elem: Vec<Value> = held
        .iter()
        .filter(|q| Family::of_addr(q.address) == family)
        .map(|q| quarantine_element(q.address, q.timeout))
        .collect();
    let mut set = json!({
        "family": "inet",
        "table": TABLE,
        "name": Ruleset::quarantine_set(family),
        "type": match family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        },
        "flags": ["timeout"],
    });
    if !elem.is_empty()
        && let Some(map) = set.as_object_mut()
    {
        map.insert("elem".into(), Value::Array(elem));
    }
    set
}

/// One quarantine element: the address and its timeout in whole seconds (at least one: a
/// timeout of 0 would mean none).
pub(super) fn quarantine_element(address: std::net::IpAddr, timeout: std::time::Duration) -> Value {
    json!({ "elem": { "val": address.to_string(), "timeout": timeout.as_secs().max(1) } })
}

/// The liveness set with its elements, as libnftables JSON.
fn alive_set(liveness: Liveness) -> Value {
    json!({
        "family": "inet",
        "table": TABLE,
        "name": ALIVE_SET,
        "type": "nf_proto",
        "flags": ["timeout"],
        "elem": alive_elements(liveness),
    })
}

/// The liveness elements: with their timeout (seconds) when they expire.
pub(super) fn alive_elements(liveness: Liveness) -> Vec<Value> {
    ALIVE_ELEMENTS
        .iter()
        .map(|f| match liveness {
            Liveness::Expiring(t) => {
                json!({ "elem": { "val": nfproto(*f), "timeout": t.as_secs().max(1) } })
            }
            Liveness::Permanent => json!(nfproto(*f)),
        })
        .collect()
}

/// Everything but the liveness set, in the crate's schema types.
fn typed_transaction(rs: &Ruleset) -> Nftables<'static> {
    let table = || schema::Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    };
    let mut cmds = vec![
        NfCmd::Add(NfListObject::Table(table())),
        NfCmd::Delete(NfListObject::Table(table())),
        NfCmd::Add(NfListObject::Table(table())),
    ];
    for c in &rs.counters {
        cmds.push(NfCmd::Add(NfListObject::Counter(schema::Counter {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: c.clone().into(),
            handle: None,
            packets: Some(0),
            bytes: Some(0),
        })));
    }
    for s in &rs.sets {
        let set_type = match s.family {
            Family::V4 => SetType::Ipv4Addr,
            Family::V6 => SetType::Ipv6Addr,
        };
        cmds.push(NfCmd::Add(NfListObject::Set(Box::new(schema::Set {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: s.name.clone().into(),
            handle: None,
            set_type: SetTypeValue::Single(set_type),
            policy: None,
            flags: Some(HashSet::from([SetFlag::Interval])),
            elem: Some(s.elements.iter().map(addr_expr).collect::<Vec<_>>().into()),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        }))));
    }
    for c in &rs.chains {
        cmds.push(NfCmd::Add(NfListObject::Chain(chain(c))));
    }
    for c in &rs.chains {
        for r in &c.rules {
            cmds.push(NfCmd::Add(NfListObject::Rule(rule(c.name, r))));
        }
    }
    Nftables {
        objects: cmds
            .into_iter()
            .map(NfObject::CmdObject)
            .collect::<Vec<_>>()
            .into(),
    }
}

fn chain(c: &Chain) -> schema::Chain<'static> {
    schema::Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: c.name.into(),
        newname: None,
        handle: None,
        _type: Some(NfChainType::Filter),
        hook: Some(match c.hook {
            Hook::Prerouting => NfHook::Prerouting,
            Hook::Input => NfHook::Input,
            Hook::Forward => NfHook::Forward,
            Hook::Output => NfHook::Output,
        }),
        prio: Some(c.priority),
        dev: None,
        policy: Some(match c.policy {
            Policy::Accept => NfChainPolicy::Accept,
            Policy::Drop => NfChainPolicy::Drop,
        }),
    }
}

fn rule(chain: &'static str, r: &Rule) -> schema::Rule<'static> {
    let mut expr: Vec<Statement<'static>> = r.matches.iter().map(matcher).collect();
    expr.extend(r.stmts.iter().map(statement));
    schema::Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: expr.into(),
        handle: None,
        index: None,
        comment: Some(r.comment.clone().into()),
    }
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(stmt::Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn string(s: impl Into<Cow<'static, str>>) -> Expression<'static> {
    Expression::String(s.into())
}

/// One item stands alone; several form an anonymous set (as in the text form).
fn set_of(items: Vec<Expression<'static>>) -> Expression<'static> {
    if items.len() == 1 {
        if let Some(one) = items.into_iter().next() {
            return one;
        }
        return Expression::List(vec![]);
    }
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

fn addr_expr(n: &IpNet) -> Expression<'static> {
    if n.prefix_len() == n.max_prefix_len() {
        string(net(n))
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(string(n.network().to_string())),
            len: u32::from(n.prefix_len()),
        }))
    }
}

fn port_expr(r: &PortRange) -> Expression<'static> {
    if r.first == r.last {
        Expression::Number(u32::from(r.first))
    } else {
        Expression::Range(Box::new(expr::Range {
            range: [
                Expression::Number(u32::from(r.first)),
                Expression::Number(u32::from(r.last)),
            ],
        }))
    }
}

fn strings(items: &[impl AsRef<str>]) -> Expression<'static> {
    set_of(
        items
            .iter()
            .map(|s| string(s.as_ref().to_owned()))
            .collect(),
    )
}

fn matcher(m: &Match) -> Statement<'static> {
    match m {
        Match::IifName(names) => eq(meta(MetaKey::Iifname), strings(names)),
        Match::OifName(names) => eq(meta(MetaKey::Oifname), strings(names)),
        Match::RouteOifName(names) => eq(
            Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Oifname,
                flags: HashSet::from([FibFlag::Daddr]),
            })),
            strings(names),
        ),
        Match::NfProto(f) => eq(meta(MetaKey::Nfproto), string(nfproto(*f))),
        Match::L4ProtoTcp => eq(meta(MetaKey::L4proto), string("tcp")),
        Match::Saddr(f, a) => eq(payload(ipproto(*f), "saddr"), addrs(a)),
        Match::Daddr(f, a) => eq(payload(ipproto(*f), "daddr"), addrs(a)),
        Match::Dport(l4, ranges) | Match::Sport(l4, ranges) | Match::NotDport(l4, ranges) => {
            let proto = match l4 {
                L4::Tcp => "tcp",
                L4::Udp => "udp",
            };
            let field = if matches!(m, Match::Sport(..)) {
                "sport"
            } else {
                "dport"
            };
            Statement::Match(stmt::Match {
                left: payload(proto, field),
                right: set_of(ranges.iter().map(port_expr).collect()),
                op: if matches!(m, Match::NotDport(..)) {
                    Operator::NEQ
                } else {
                    Operator::EQ
                },
            })
        }
        Match::IcmpEchoRequest(Family::V4) => eq(payload("icmp", "type"), string("echo-request")),
        Match::IcmpEchoRequest(Family::V6) => eq(payload("icmpv6", "type"), string("echo-request")),
        Match::NeighbourDiscovery => eq(payload("icmpv6", "type"), strings(&ND_TYPES)),
        Match::CtState(states) => {
            let left = Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            }));
            if let [one] = states.as_slice() {
                // `ct state new` in nft text is a bitmask test, not an equality
                Statement::Match(stmt::Match {
                    left,
                    right: string(*one),
                    op: Operator::IN,
                })
            } else {
                eq(left, strings(states))
            }
        }
        Match::Mark(m) => eq(meta(MetaKey::Mark), Expression::Number(*m)),
        Match::Alive => eq(meta(MetaKey::Nfproto), string(format!("@{ALIVE_SET}"))),
        Match::NotAlive => Statement::Match(stmt::Match {
            left: meta(MetaKey::Nfproto),
            right: string(format!("@{ALIVE_SET}")),
            op: Operator::NEQ,
        }),
        Match::NotLocal => Statement::Match(stmt::Match {
            left: Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: HashSet::from([FibFlag::Daddr]),
            })),
            right: string("local"),
            op: Operator::NEQ,
        }),
        Match::SocketTransparent => eq(
            Expression::Named(NamedExpression::Socket(Socket {
                key: Cow::Owned(SocketAttr::Transparent),
            })),
            Expression::Number(1),
        ),
    }
}

fn addrs(a: &Addrs) -> Expression<'static> {
    match a {
        Addrs::Set(name) => string(format!("@{name}")),
        Addrs::Nets(nets) => set_of(nets.iter().map(addr_expr).collect()),
    }
}

fn statement(s: &Stmt) -> Statement<'static> {
    match s {
        Stmt::Counter(name) => Statement::Counter(Counter::Named(name.clone().into())),
        Stmt::Limit { per_second, burst } => Statement::Limit(Limit {
            rate: *per_second,
            rate_unit: None,
            per: Some("second".into()),
            burst: Some(*burst),
            burst_unit: None,
            inv: None,
        }),
        Stmt::Log { prefix, group } => Statement::Log(Some(Log {
            prefix: Some(prefix.clone().into()),
            group: Some(u32::from(*group)),
            snaplen: None,
            queue_threshold: None,
            level: None,
            flags: None,
        })),
        Stmt::MarkSet(m) => Statement::Mangle(Mangle {
            key: meta(MetaKey::Mark),
            value: Expression::Number(*m),
        }),
        Stmt::CtZoneSet(z) => Statement::Mangle(Mangle {
            key: Expression::Named(NamedExpression::CT(CT {
                key: "zone".into(),
                family: None,
                dir: None,
            })),
            value: Expression::Number(u32::from(*z)),
        }),
        Stmt::TProxy { family, port } => Statement::TProxy(TProxy {
            family: Some(ipproto(*family).into()),
            port: *port,
            addr: None,
        }),
        Stmt::Accept => Statement::Accept(None),
        Stmt::Drop => Statement::Drop(None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::parse;

    const ZONES: &str = "
zones:
  a: {level: 3, security_level: 2, networks: [10.1.0.0/24]}
  b: {level: 2, security_level: 2, networks: [10.2.0.0/24]}
conduits:
  c: {from: a, to: b, services: [tcp/80]}
";

    fn alive_cmd(doc: &Value) -> (usize, Value) {
        let cmds = doc["nftables"].as_array().unwrap();
        let at = cmds
            .iter()
            .position(|c| c["add"]["set"]["name"] == ALIVE_SET)
            .unwrap();
        let first_rule = cmds
            .iter()
            .position(|c| c["add"].get("rule").is_some())
            .unwrap();
        assert!(at < first_rule, "the set exists before rules use it");
        (at, cmds[at]["add"]["set"].clone())
    }

    #[test]
    fn the_liveness_set_is_in_the_transaction_with_or_without_timeouts() {
        let rs = crate::nft::render(&parse(ZONES).unwrap());
        let doc = transaction(&rs).unwrap();
        let (at, set) = alive_cmd(&doc);
        assert!(
            doc["nftables"][at - 1]["add"]["set"]["name"]
                .as_str()
                .unwrap()
                .starts_with("zone_"),
            "after the zone sets"
        );
        assert_eq!(set["type"], "nf_proto");
        assert_eq!(set["flags"], json!(["timeout"]));
        assert_eq!(
            set["elem"],
            json!([
                {"elem": {"val": "ipv4", "timeout": 5}},
                {"elem": {"val": "ipv6", "timeout": 5}}
            ])
        );
        let (_, permanent) = alive_cmd(&transaction(&rs.with_permanent_liveness()).unwrap());
        assert_eq!(permanent["elem"], json!(["ipv4", "ipv6"]));
        assert_eq!(
            alive_elements(Liveness::Expiring(Duration::from_millis(10))),
            vec![
                json!({"elem": {"val": "ipv4", "timeout": 1}}),
                json!({"elem": {"val": "ipv6", "timeout": 1}})
            ],
            "never a timeout of 0 (which would mean none)"
        );
    }

    #[test]
    fn the_early_block_has_no_liveness_set() {
        let doc = transaction(&crate::nft::early_block()).unwrap();
        assert!(
            !doc.to_string().contains(ALIVE_SET),
            "nothing to renew before zonegate runs"
        );
    }
}

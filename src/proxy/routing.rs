//! Policy routing for TPROXY: packets the divert chain marked must be delivered locally, to the
//! proxy's transparent sockets, although they are addressed to devices. One rule and one route
//! per address family, installed idempotently in the gateway's network namespace; IPv6's only
//! where IPv6 is available ([`ipv6_available`]).

use std::process::Command;

use crate::config::Model;
use crate::nft::ruleset::{PROXY_MARK, ipv6_conduits};

/// Where the kernel says whether loopback carries IPv6 (per network namespace: /proc/sys/net
/// shows the reader's). Absent when the kernel has no IPv6 (`ipv6.disable=1`).
const LO_DISABLE_IPV6: &str = "/proc/sys/net/ipv6/conf/lo/disable_ipv6";

/// Routing table for marked packets; the mark's value, so that `ip rule` output reads plainly.
pub const TPROXY_TABLE: u32 = PROXY_MARK;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot run `ip` (install iproute2): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
}

/// Whether this host (its network namespace) carries IPv6: the kernel has it and loopback,
/// the device of the route that delivers diverted packets, has not had it disabled
/// (`net.ipv6.conf.all.disable_ipv6=1` disables it on every interface, loopback included).
pub fn ipv6_available() -> bool {
    std::fs::read_to_string(LO_DISABLE_IPV6).is_ok_and(|v| v.trim() == "0")
}

/// The warning for a host without IPv6 whose conduits name IPv6 networks: their IPv6 part
/// cannot be served (the rules are in the ruleset, but no IPv6 packet arrives and nothing
/// listens or routes for them). `None` when no conduit names an IPv6 network.
pub fn ipv6_unavailable_warning(model: &Model) -> Option<String> {
    let conduits = ipv6_conduits(model);
    (!conduits.is_empty()).then(|| {
        format!(
            "IPv6 is disabled on this host: conduit(s) {} name IPv6 networks, which cannot be \
             served (their IPv4 part is); enable IPv6 and restart zonegate to serve them",
            conduits.join(", ")
        )
    })
}

/// Installs `ip rule fwmark MARK lookup TABLE` and `local default dev lo` in TABLE for IPv4 and,
/// with `ipv6`, for IPv6: on a host with IPv6 disabled the kernel refuses IPv6 routes.
/// Re-running replaces rather than duplicates.
pub fn install(ipv6: bool) -> Result<(), RoutingError> {
    let mark = format!("{PROXY_MARK:#x}");
    let table = TPROXY_TABLE.to_string();
    let families: &[&str] = if ipv6 { &["-4", "-6"] } else { &["-4"] };
    for &family in families {
        // `ip rule add` appends a duplicate each time; delete ours first (fails once none is left).
        while ip(&[family, "rule", "del", "fwmark", &mark, "lookup", &table]).is_ok() {}
        ip(&[family, "rule", "add", "fwmark", &mark, "lookup", &table])?;
        let default = if family == "-4" { "0.0.0.0/0" } else { "::/0" };
        ip(&[
            family, "route", "replace", "local", default, "dev", "lo", "table", &table,
        ])?;
    }
    Ok(())
}

/// Removes what [`install`] added; used when no conduit needs the proxy any more. Without
/// IPv6 the IPv6 commands fail, and there is nothing of ours to remove there.
pub fn remove() {
    let mark = format!("{PROXY_MARK:#x}");
    let table = TPROXY_TABLE.to_string();
    for family in ["-4", "-6"] {
        while ip(&[family, "rule", "del", "fwmark", &mark, "lookup", &table]).is_ok() {}
        let _ = ip(&[family, "route", "flush", "table", &table]);
    }
}

fn ip(args: &[&str]) -> Result<(), RoutingError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(RoutingError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RoutingError::Command {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

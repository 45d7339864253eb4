//! Policy routing for TPROXY: packets the divert chain marked must be delivered locally, to the
//! proxy's transparent sockets, although they are addressed to devices. One rule and one route
//! per address family, installed idempotently in the gateway's network namespace.

use std::process::Command;

use crate::nft::ruleset::PROXY_MARK;

/// Routing table for marked packets; the mark's value, so that `ip rule` output reads plainly.
pub const TPROXY_TABLE: u32 = PROXY_MARK;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot run `ip` (install iproute2): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Command { args: String, stderr: String },
}

/// Installs `ip rule fwmark MARK lookup TABLE` and `local default dev lo` in TABLE for IPv4 and
/// IPv6. Re-running replaces rather than duplicates.
pub fn install() -> Result<(), RoutingError> {
    let mark = format!("{PROXY_MARK:#x}");
    let table = TPROXY_TABLE.to_string();
    for family in ["-4", "-6"] {
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

/// Removes what [`install`] added; used when no conduit needs the proxy any more.
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

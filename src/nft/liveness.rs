//! zonegate's liveness, kept in the kernel: the elements of set [`ALIVE_SET`] in table
//! `inet zonegate` carry a timeout, and the running daemon renews them every [`RENEW_INTERVAL`].
//! When the daemon dies, even by `kill -9`, nobody renews them and the kernel expires them by
//! itself within [`TIMEOUT`]; the ruleset's `failure_mode` rules then take over (closed: nothing
//! crosses zones; open: deep-inspected conduits pass uninspected at L4). A clean stop withdraws
//! them at once.
//!
//! Plain synchronous functions with nft's stderr captured, so that a watchdog thread can renew
//! liveness only while the data path really serves.

use std::time::Duration;

use serde_json::{Value, json};

use super::ruleset::{ALIVE_SET, Liveness, TABLE};
use super::{NftError, json::alive_elements, run_nft};

/// How long liveness lasts without renewal: how long a dead daemon goes unnoticed at most (the
/// ruleset installs its elements with this timeout, so it is the ruleset's).
pub use super::ruleset::LIVENESS_TIMEOUT as TIMEOUT;
/// How often the daemon renews liveness; several renewals fit in one [`TIMEOUT`], so that one
/// slow `nft` run does not trip the failure mode.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("cannot run `nft` (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    /// Typically: table `inet zonegate` or its liveness set is not in the kernel (flushed by
    /// hand, or replaced by the early block); re-applying the ruleset restores both.
    #[error("cannot {action} zonegate's liveness in the kernel: {stderr}")]
    Refused {
        action: &'static str,
        stderr: String,
    },
}

/// Replaces the liveness elements with fresh ones that expire after [`TIMEOUT`], in one
/// transaction (flush and add), so that there is no moment without them.
pub fn renew() -> Result<(), LivenessError> {
    let doc = json!({ "nftables": [
        { "flush": { "set": set_ref() } },
        { "add": { "element": {
            "family": "inet",
            "table": TABLE,
            "name": ALIVE_SET,
            "elem": alive_elements(Liveness::Expiring(TIMEOUT)),
        } } },
    ] });
    send("renew", &doc)
}

/// Removes the liveness elements now: the failure mode takes over at once (a clean stop).
pub fn withdraw() -> Result<(), LivenessError> {
    send(
        "withdraw",
        &json!({ "nftables": [{ "flush": { "set": set_ref() } }] }),
    )
}

fn set_ref() -> Value {
    json!({ "family": "inet", "table": TABLE, "name": ALIVE_SET })
}

fn send(action: &'static str, doc: &Value) -> Result<(), LivenessError> {
    let bytes = doc.to_string();
    match run_nft(&["-j", "-f", "-"], Some(bytes.as_bytes())) {
        Ok(_) => Ok(()),
        Err(NftError::Spawn(e)) => Err(LivenessError::Spawn(e)),
        Err(e) => Err(LivenessError::Refused {
            action,
            stderr: match e {
                NftError::Command { stderr, .. } => stderr,
                other => other.to_string(),
            },
        }),
    }
}

//! Adding a source to the quarantine sets of table `inet zonegate` at runtime, in one small
//! transaction (as [`super::liveness`] renews its set). The kernel drops the source's packets
//! from then on and removes the element by itself when its timeout ends.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::json::quarantine_element;
use super::ruleset::{Family, Ruleset, TABLE};
use super::{NftError, run_nft};

#[derive(Debug, thiserror::Error)]
pub enum QuarantineNftError {
    #[error("cannot run `nft` (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    /// Typically: the quarantine set is not in the kernel (the table was flushed by hand);
    /// the next re-apply installs it with every source held.
    #[error("cannot quarantine {address} in the kernel: {stderr}")]
    Refused { address: IpAddr, stderr: String },
}

/// Puts `address` in its family's quarantine set for `timeout` (whole seconds, at least one).
/// Add, delete, add in one transaction: an element that is still there (the kernel had not yet
/// expired it) gets the new timeout rather than keeping its old one.
pub fn add(address: IpAddr, timeout: Duration) -> Result<(), QuarantineNftError> {
    let set = Ruleset::quarantine_set(Family::of_addr(address));
    let element = |elem| json!({ "element": { "family": "inet", "table": TABLE, "name": set, "elem": [elem] } });
    let plain = json!(address.to_string());
    let doc = json!({ "nftables": [
        { "add": element(plain.clone()) },
        { "delete": element(plain) },
        { "add": element(quarantine_element(address, timeout)) },
    ] });
    let bytes = doc.to_string();
    match run_nft(&["-j", "-f", "-"], Some(bytes.as_bytes())) {
        Ok(_) => Ok(()),
        Err(NftError::Spawn(e)) => Err(QuarantineNftError::Spawn(e)),
        Err(NftError::Command { stderr, .. }) => {
            Err(QuarantineNftError::Refused { address, stderr })
        }
        Err(other) => Err(QuarantineNftError::Refused {
            address,
            stderr: other.to_string(),
        }),
    }
}

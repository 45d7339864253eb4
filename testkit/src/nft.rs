//! The kernel's counters in a plant's gateway, read back as a user would: `zonegate counters
//! --json` in the gateway namespace.

use serde_json::Value;

use crate::plant::Plant;
use crate::zonegate_bin;

/// Packets of the named counter of zonegate's table (a conduit's, `drop_forward`,
/// `drop_quarantine` ...).
pub fn counter(plant: &Plant, name: &str) -> u64 {
    let out = plant.gateway_cmd(&[zonegate_bin(), "counters", "--json"]);
    assert!(
        out.status.success(),
        "counters failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["name"] == name)
        .and_then(|v| v["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name}"))
}

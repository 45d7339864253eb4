//! The commands a network engineer reads output from, without touching the kernel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::process::Command;

use support::{ZONEGATE, shipped_zones};

fn run(args: &[&str]) -> String {
    let out = Command::new(ZONEGATE).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn diagram_shows_every_zone_level_and_conduit() {
    let model = zonegate::config::load(&shipped_zones()).unwrap();
    let text = run(&["diagram", shipped_zones().to_str().unwrap()]);
    assert!(text.starts_with("flowchart TB\n"));
    for z in &model.zones {
        assert!(
            text.contains(&format!("<b>{}</b>", z.name)),
            "zone {}",
            z.name
        );
        assert!(
            text.contains(&format!("\"Level {}\"", z.level)),
            "level {}",
            z.level
        );
    }
    for c in &model.conduits {
        assert!(
            text.contains(&format!("\"{}: ", c.name)),
            "conduit {}",
            c.name
        );
    }
    // deep-inspected conduits are drawn differently, so a reviewer can tell them apart
    assert!(text.contains("==>|\"scada-bess: modbus/502 inspected, icmp\"|"));
}

#[test]
fn plan_json_is_one_replace_table_transaction() {
    let doc: serde_json::Value =
        serde_json::from_str(&run(&["plan", "--json", shipped_zones().to_str().unwrap()])).unwrap();
    let cmds = doc["nftables"].as_array().unwrap();
    let table = serde_json::json!({"family": "inet", "name": "zonegate"});
    assert_eq!(cmds[0], serde_json::json!({"add": {"table": table}}));
    assert_eq!(cmds[1], serde_json::json!({"delete": {"table": table}}));
    assert_eq!(cmds[2], serde_json::json!({"add": {"table": table}}));
    // nothing outside table inet zonegate
    for c in &cmds[3..] {
        let obj = c["add"].as_object().unwrap().values().next().unwrap();
        assert_eq!(obj["table"], "zonegate");
        assert_eq!(obj["family"], "inet");
    }
}

#[test]
fn compliance_maps_the_shipped_plant_to_iec_62443_3_3() {
    let zones = shipped_zones();
    let text = run(&["compliance", zones.to_str().unwrap()]);
    assert!(
        text.starts_with("# IEC 62443-3-3 system requirements: "),
        "{text}"
    );
    // The content hash of the file the report speaks about.
    let hash = zonegate::policy::revision(&std::fs::read(&zones).unwrap());
    assert!(text.contains(&hash));
    let row = |sr: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {sr} | ")))
            .unwrap_or_else(|| panic!("no row {sr}"))
            .to_owned()
    };
    assert!(
        row("SR 5.2").contains("| configured | 6 conduit(s); drops logged to group 1 at 10/s |")
    );
    assert!(row("SR 2.10").contains("| partly | drop_oldest"));
    assert!(row("SR 6.1").contains("| not configured |"));
    // What zonegate does not do is said, not left out.
    assert!(row("SR 1.1").contains("Human user identification and authentication"));
}

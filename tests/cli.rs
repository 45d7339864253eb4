//! The commands a network engineer reads output from, without touching the kernel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::process::Command;

use support::{shipped_zones, zonegate_bin};

fn run(args: &[&str]) -> String {
    let out = Command::new(zonegate_bin()).args(args).output().unwrap();
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
    assert!(row("SR 5.2").contains(
        "| configured | 6 conduit(s); drops logged to group 1 at 10/s; gateway egress peers: none |"
    ));
    assert!(row("SR 2.10").contains("| partly | drop_oldest"));
    assert!(row("SR 6.1").contains("| not configured |"));
    // What zonegate does not do is said, not left out.
    assert!(row("SR 1.1").contains("Human user identification and authentication"));
    // All 51 SRs of IEC 62443-3-3 (FR 1: 13, FR 2: 12, FR 3: 9, FR 4: 3, FR 5: 4, FR 6: 2,
    // FR 7: 8), each exactly once.
    let per_fr = [13, 12, 9, 3, 4, 2, 8];
    let mut all = Vec::new();
    for (fr, n) in per_fr.iter().enumerate() {
        for i in 1..=*n {
            all.push(format!("SR {}.{i}", fr + 1));
        }
    }
    assert_eq!(all.len(), 51);
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| SR "))
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split(" | ").next())
        .collect();
    assert_eq!(listed.len(), 51, "{listed:?}");
    for sr in &all {
        assert_eq!(
            text.matches(&format!("| {sr} | ")).count(),
            1,
            "{sr} listed once"
        );
    }
    assert!(
        text.contains("SRs addressed") && text.contains("51 SRs of IEC 62443-3-3"),
        "{text}"
    );
    // The ones added for the whole list, with their concrete settings.
    assert!(
        row("SR 2.7").contains("limits.connections_per_source 64"),
        "{}",
        row("SR 2.7")
    );
    assert!(
        row("SR 5.3").contains("| configured | no conduit allows"),
        "{}",
        row("SR 5.3")
    );
    assert!(
        row("SR 7.2").contains("write_rate on:"),
        "{}",
        row("SR 7.2")
    );
    assert!(
        row("SR 4.1").contains("| not configured |"),
        "{}",
        row("SR 4.1")
    );
}

/// The shipped units as systemd reads them: both valid, and zonegate.service exposed no more
/// than 2.0 on `systemd-analyze security`'s scale (0 best, 10 worst). Also with the unit's
/// commented `LoadCredential=` lines in force, as the README's install steps have them.
#[test]
fn systemd_units_verify_and_zonegate_service_exposes_at_most_2_0() {
    systemd_units_verify(|_, text| text.to_owned());
    systemd_units_verify(|name, text| {
        let uncommented = text.replace("\n#LoadCredential=", "\nLoadCredential=");
        if name == "zonegate.service" {
            assert!(
                uncommented.matches("\nLoadCredential=").count() >= 3,
                "the unit offers LoadCredential= lines for the API key, TLS key and audit key"
            );
        }
        uncommented
    });
}

fn systemd_units_verify(edit: impl Fn(&str, &str) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let units: Vec<std::path::PathBuf> = ["zonegate.service", "zonegate-early-block.service"]
        .iter()
        .map(|name| {
            let text =
                std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR")))
                    .unwrap();
            // verify wants the binaries to exist: this build's stands in for the installed one.
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                edit(name, &text).replace("/usr/local/bin/zonegate", zonegate_bin()),
            )
            .unwrap();
            path
        })
        .collect();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/setup installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&units[0])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}");
    assert!(
        report.contains("Overall exposure level for zonegate.service: "),
        "{report}"
    );
}

/// A compliance report speaks about the configuration, so it can be made where the secrets it
/// names are not (an auditor's copy): a credential without `$CREDENTIALS_DIRECTORY` is named as
/// written.
#[test]
fn compliance_does_not_need_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let zones = support::bess::zones_variant(dir.path(), |t| {
        t.replace(
            "  # key_file: credential:audit-key",
            "  key_file: credential:audit-key",
        )
    });
    let out = Command::new(zonegate_bin())
        .arg("compliance")
        .arg(&zones)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().any(|l| l.starts_with("| SR 3.9 | ")
            && l.contains("| configured | HMAC-SHA-256 with credential:audit-key |")),
        "{text}"
    );
}

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
/// commented `LoadCredential=` lines in force, as docs/operations.md's install steps have them.
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
            && l.contains("| configured | HMAC-SHA-256 with credential:audit-key;")),
        "{text}"
    );
}

/// The Markdown files a reader follows links through: README.md and everything under docs/.
fn documentation_files() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A Markdown file's lines outside fenced code blocks, with inline code spans blanked, so that
/// neither an example nor a `[x](y)` inside backticks is taken for a link or a heading.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut prose = String::new();
        for (i, part) in line.split('`').enumerate() {
            // Odd parts are inside a code span: keep their text (headings are slugged with it),
            // but not as link syntax.
            if i % 2 == 0 {
                prose.push_str(part);
            } else {
                prose.push_str(&part.replace(['[', ']', '(', ')'], " "));
            }
        }
        lines.push(prose);
    }
    lines
}

/// The anchors GitHub makes of a file's headings: lowercase, punctuation dropped, spaces as
/// hyphens, and `-1`, `-2` ... for repeats.
fn heading_anchors(text: &str) -> Vec<String> {
    let mut anchors = Vec::new();
    let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(title) = line.strip_prefix('#').filter(|_| !fenced) else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = seen.entry(slug.clone()).or_insert(0);
        anchors.push(if *repeats == 0 {
            slug
        } else {
            format!("{slug}-{repeats}")
        });
        *repeats = (*repeats).saturating_add(1);
    }
    anchors
}

/// Every `[text](target)` and `[label]: target` in a file's prose.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at..][2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((_, target)) = trimmed.split_once("]: ")
        {
            targets.push(target.trim().to_owned());
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_docs_points_to_a_file_and_heading_that_exist() {
    let files = documentation_files();
    assert!(files.len() > 10, "only {files:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !linked.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if anchor.is_empty() || linked.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let anchors = heading_anchors(&std::fs::read_to_string(&linked).unwrap());
            if !anchors.iter().any(|a| a == anchor) {
                broken.push(format!(
                    "{}: {target}: no heading #{anchor} in {}",
                    file.display(),
                    linked.display()
                ));
            }
        }
    }
    assert!(checked > 50, "only {checked} links checked");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `a` with `b` laid over it: mappings merged key by key, anything else replaced.
fn overlay(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                overlay(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Every ```yaml example of zones.yaml in README.md and docs/, laid over the shipped zones.yaml,
/// validates: no key the reference shows is unknown, misspelt or out of its bounds. (The one
/// YAML example that is not zones.yaml, Prometheus's scrape job, is told by its `scrape_configs`.)
#[test]
fn every_zones_yaml_example_in_the_docs_validates() {
    let shipped: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(shipped_zones()).unwrap()).unwrap();
    let mut checked = Vec::new();
    for file in documentation_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let example = block.split("```").next().unwrap();
            if example.contains("scrape_configs:") {
                continue;
            }
            let fragment: serde_json::Value = serde_saphyr::from_str(example)
                .unwrap_or_else(|e| panic!("{}: {e}:\n{example}", file.display()));
            let mut merged = shipped.clone();
            overlay(&mut merged, fragment);
            // JSON is YAML: the merged file goes through the same parser zones.yaml does.
            if let Err(diagnostics) = zonegate::config::parse(&merged.to_string()) {
                panic!(
                    "{}: the example does not validate: {diagnostics:?}\n{example}",
                    file.display()
                );
            }
            checked.push(file.display().to_string());
        }
    }
    for page in ["zones-yaml.md", "audit.md", "api.md", "operations.md"] {
        assert!(
            checked.iter().any(|f| f.ends_with(page)),
            "no zones.yaml example checked in {page}: {checked:?}"
        );
    }
}

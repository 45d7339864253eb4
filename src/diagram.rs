//! The plant as a Mermaid flowchart: Purdue levels top to bottom, zones with their assets, and one
//! arrow per conduit labelled with its services, so a reviewer can look instead of read.

use std::fmt::Write as _;

use crate::config::{Model, PurdueLevel};

pub fn mermaid(model: &Model) -> String {
    let mut out = String::from("flowchart TB\n");
    let mut levels: Vec<PurdueLevel> = model.zones.iter().map(|z| z.level).collect();
    levels.sort();
    levels.dedup();
    // Highest level first, as Purdue diagrams are drawn.
    for level in levels.iter().rev() {
        let _ = writeln!(
            out,
            "  subgraph L{}[\"Level {level}\"]",
            id(&level.to_string())
        );
        for z in model.zones.iter().filter(|z| z.level == *level) {
            let assets: Vec<String> = model
                .assets
                .iter()
                .filter(|a| a.zone == z.name)
                .map(|a| format!("{} ({}, {})", a.name, a.kind.as_str(), a.address))
                .collect();
            let nets: Vec<String> = z.networks.iter().map(ToString::to_string).collect();
            let mut label = format!("<b>{}</b><br/>SL-T {}", z.name, z.security_level.value());
            if !nets.is_empty() {
                let _ = write!(label, "<br/>{}", nets.join(", "));
            }
            for a in &assets {
                let _ = write!(label, "<br/>{a}");
            }
            let _ = writeln!(out, "    z_{}[\"{}\"]", id(&z.name), escape(&label));
        }
        out.push_str("  end\n");
    }
    for c in &model.conduits {
        let services: Vec<String> = c
            .services
            .iter()
            .map(|s| {
                if s.is_inspected() {
                    format!("{s} inspected")
                } else {
                    s.to_string()
                }
            })
            .collect();
        let arrow = if c.services.iter().any(|s| s.is_inspected()) {
            "==>"
        } else {
            "-->"
        };
        let _ = writeln!(
            out,
            "  z_{} {arrow}|\"{}: {}\"| z_{}",
            id(&c.from),
            escape(&c.name),
            escape(&services.join(", ")),
            id(&c.to)
        );
    }
    out
}

fn id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

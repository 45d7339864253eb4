//! `zonegate compliance`: the running configuration mapped to the system requirements (SRs) of
//! IEC 62443-3-3, as the Markdown table security teams write by hand: for each SR zonegate
//! contributes to, the mechanism, whether this configuration uses it, and the concrete setting.
//! SRs that zonegate does not address are listed too, so that nobody reads silence as coverage.
//! A pure function of the validated model.

use std::fmt::Write as _;

use crate::audit::{SyslogTransport, WhenFull};
use crate::config::{FailureMode, Mode, Model, PurdueLevel, Service};

/// How far this configuration meets an SR with zonegate's means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// The mechanism is in force as configured.
    Configured,
    /// In force for part of the plant, or with a weaker setting than it offers.
    Partly,
    /// zonegate offers it, this configuration does not use it.
    NotConfigured,
}

impl Coverage {
    fn as_str(self) -> &'static str {
        match self {
            Coverage::Configured => "configured",
            Coverage::Partly => "partly",
            Coverage::NotConfigured => "not configured",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub sr: &'static str,
    pub title: &'static str,
    pub mechanism: &'static str,
    pub coverage: Coverage,
    pub setting: String,
}

/// SRs outside what a zone boundary gateway does: they need the host, the devices or other
/// systems.
const NOT_ADDRESSED: &[(&str, &str)] = &[
    ("SR 1.1", "Human user identification and authentication"),
    ("SR 1.3", "Account management"),
    ("SR 1.4", "Identifier management"),
    ("SR 1.5", "Authenticator management"),
    ("SR 1.6", "Wireless access management"),
    ("SR 1.7", "Strength of password-based authentication"),
    ("SR 1.10", "Authenticator feedback"),
    ("SR 1.11", "Unsuccessful login attempts"),
    ("SR 1.12", "System use notification"),
    ("SR 2.2", "Wireless use control"),
    ("SR 2.3", "Use control for portable and mobile devices"),
    ("SR 2.4", "Mobile code"),
    ("SR 2.5", "Session lock"),
    ("SR 2.6", "Remote session termination"),
    ("SR 3.2", "Malicious code protection"),
    ("SR 3.3", "Security functionality verification"),
    ("SR 3.4", "Software and information integrity"),
    ("SR 4.2", "Information persistence"),
    ("SR 7.3", "Control system backup"),
    ("SR 7.4", "Control system recovery and reconstitution"),
    ("SR 7.5", "Emergency power"),
];

/// Well-known ports of person-to-person communication (SR 5.3): mail, chat, file sharing.
const MESSAGING_PORTS: &[(u16, &str)] = &[
    (25, "SMTP"),
    (110, "POP3"),
    (143, "IMAP"),
    (465, "SMTPS"),
    (587, "mail submission"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (445, "SMB"),
    (1863, "MSN"),
    (5060, "SIP"),
    (5222, "XMPP"),
    (6667, "IRC"),
];

/// The report's rows for `model`.
pub fn rows(model: &Model) -> Vec<Row> {
    let inspected: Vec<_> = model
        .conduits
        .iter()
        .filter_map(|c| Some((c, c.inspection.as_ref()?)))
        .collect();
    let opcua: Vec<&str> = model
        .conduits
        .iter()
        .filter(|c| {
            c.services
                .iter()
                .any(|s| matches!(s, Service::OpcUa { .. }))
        })
        .map(|c| c.name.as_str())
        .collect();
    let monitor: Vec<&str> = inspected
        .iter()
        .filter(|(_, i)| i.mode == Mode::Monitor)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let l4: Vec<&str> = model
        .conduits
        .iter()
        .filter(|c| c.inspection.is_none())
        .map(|c| c.name.as_str())
        .collect();
    let unnarrowed: Vec<&str> = model
        .conduits
        .iter()
        .filter(|c| c.sources.is_empty() || c.destinations.is_empty())
        .map(|c| c.name.as_str())
        .collect();
    let level = |zone: &str| model.zones.iter().find(|z| z.name == zone).map(|z| z.level);
    let untrusted: Vec<String> = model
        .conduits
        .iter()
        .filter(|c| {
            level(&c.from).is_some_and(|l| l >= PurdueLevel::L4)
                && level(&c.to).is_some_and(|l| l <= PurdueLevel::L3)
        })
        .map(|c| format!("{} ({} -> {})", c.name, c.from, c.to))
        .collect();
    let audit = &model.audit;
    let sinks = audit_sinks(model);
    let list = |names: &[&str]| {
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let api = model
        .gateway
        .management
        .as_ref()
        .and_then(|m| m.api.as_ref());
    let api_tls = api.and_then(|a| a.tls.as_ref());
    let tls_syslog: Vec<&crate::audit::SyslogSettings> = audit
        .syslog
        .iter()
        .filter(|s| s.transport == SyslogTransport::Tls)
        .collect();
    let plain_syslog = audit.syslog.len().saturating_sub(tls_syslog.len());
    // Certificates zonegate itself presents or checks (SR 1.8, 1.9, 4.1).
    let mut certificates = Vec::new();
    if let Some(t) = api_tls {
        certificates.push(format!(
            "management API server certificate {}{}",
            t.certificate.display(),
            if t.client_ca.is_some() {
                ", client certificates checked against its client_ca"
            } else {
                ""
            }
        ));
    }
    for s in &tls_syslog {
        certificates.push(format!(
            "TLS syslog {}: server checked against {}{}",
            s.address,
            s.ca.as_ref()
                .map_or("the system's roots".to_owned(), |c| c.display().to_string()),
            if s.client_cert.is_some() {
                ", with a client certificate"
            } else {
                ""
            }
        ));
    }
    // Conduits that let person-to-person messaging cross (SR 5.3): mail, chat, file sharing.
    let messaging: Vec<String> = model
        .conduits
        .iter()
        .filter_map(|c| {
            let ports: Vec<String> = c
                .services
                .iter()
                .filter_map(|s| match s {
                    Service::Tcp(r) | Service::Udp(r) => Some(r),
                    _ => None,
                })
                .flat_map(|r| {
                    MESSAGING_PORTS
                        .iter()
                        .filter(move |(p, _)| (r.first..=r.last).contains(p))
                })
                .map(|(p, what)| format!("{p} {what}"))
                .collect();
            (!ports.is_empty()).then(|| format!("{} ({})", c.name, ports.join(", ")))
        })
        .collect();
    let mut rows = Vec::new();
    let mut row = |sr, title, mechanism, coverage, setting: String| {
        rows.push(Row {
            sr,
            title,
            mechanism,
            coverage,
            setting,
        });
    };
    row(
        "SR 1.2",
        "Software process and device identification and authentication",
        "OPC UA secure channels judged by policy: security policy, mode and client certificate thumbprint",
        if opcua.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Partly
        },
        format!(
            "OPC UA conduits: {} (what they require is in their policy); Modbus/TCP has no device authentication",
            list(&opcua)
        ),
    );
    row(
        "SR 1.8",
        "Public key infrastructure certificates",
        "X.509 certificates on the management API (server, optionally client certificates against a CA) and on TLS syslog (the receiver's certificate checked against a CA, optionally a client certificate); OPC UA client certificates judged by thumbprint in policy",
        if certificates.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Partly
        },
        if certificates.is_empty() {
            "no TLS on the management API or audit sinks".to_owned()
        } else {
            certificates.join("; ")
        },
    );
    row(
        "SR 1.9",
        "Strength of public key authentication",
        "Peers' certificate chains are validated to a configured trust anchor with rustls/webpki (signature, validity period, name); revocation lists are not checked yet",
        if certificates.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Partly
        },
        format!(
            "TLS with certificate validation: {}; no CRL or OCSP checking",
            if certificates.is_empty() {
                "none configured".to_owned()
            } else {
                format!("{} endpoint(s)", certificates.len())
            }
        ),
    );
    row(
        "SR 1.13",
        "Access via untrusted networks",
        "Only declared one-way conduits cross zones; a conduit from level 4 or above into level 3 or below is a warning of `zonegate check`",
        if untrusted.is_empty() {
            Coverage::Configured
        } else {
            Coverage::Partly
        },
        if untrusted.is_empty() {
            "no conduit from level 4+ into level 3 or below".to_owned()
        } else {
            format!(
                "conduits from level 4+ into level 3 or below: {}",
                untrusted.join(", ")
            )
        },
    );
    row(
        "SR 2.1",
        "Authorization enforcement",
        "Every Modbus/OPC UA request on an inspected conduit is decided by the conduit's Rego policy; fail-closed on errors",
        match (inspected.is_empty(), monitor.is_empty()) {
            (true, _) => Coverage::NotConfigured,
            (false, true) => Coverage::Configured,
            (false, false) => Coverage::Partly,
        },
        format!(
            "{} inspected conduit(s): {}; in monitor mode (decide, record, forward all): {}",
            inspected.len(),
            list(
                &inspected
                    .iter()
                    .map(|(c, _)| c.name.as_str())
                    .collect::<Vec<_>>()
            ),
            list(&monitor)
        ),
    );
    row(
        "SR 2.7",
        "Concurrent session control",
        "Proxied connections are bounded per source address and in all; one more is refused and counted",
        if inspected.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Configured
        },
        format!(
            "limits.connections_per_source {}, limits.connections {}",
            model.limits.connections_per_source, model.limits.connections
        ),
    );
    row(
        "SR 2.8",
        "Auditable events",
        "Audit events (ECS JSON): denials and allowed writes, counted reads, drops between zones, malformed traffic, start/stop, configuration changes",
        Coverage::Configured,
        format!(
            "allowed reads: {}; sinks: {sinks}",
            match audit.reads {
                crate::audit::Reads::Count => "counted per connection",
                crate::audit::Reads::Each => "each one an event",
            }
        ),
    );
    row(
        "SR 2.9",
        "Audit storage capacity",
        "Size-rotated audit file with a bounded number of files; a bounded spool per syslog receiver",
        if audit.file.is_some() || !audit.syslog.is_empty() {
            Coverage::Configured
        } else {
            Coverage::NotConfigured
        },
        match &audit.file {
            Some(f) => format!(
                "{}: rotated at {} bytes, {} files kept; spool {} bytes per receiver",
                f.path.display(),
                f.max_bytes,
                f.keep,
                audit.spool_max_bytes
            ),
            None => "no audit file in zones.yaml (standard output, or `--audit-log`)".to_owned(),
        },
    );
    row(
        "SR 2.10",
        "Response to audit processing failures",
        "`audit.when_full`: drop and report the gap, or refuse requests on inspected conduits while audit fails",
        match audit.when_full {
            WhenFull::FailClosed => Coverage::Configured,
            WhenFull::DropOldest => Coverage::Partly,
        },
        match audit.when_full {
            WhenFull::FailClosed => "fail_closed".to_owned(),
            WhenFull::DropOldest => {
                "drop_oldest (losses are reported as audit-gap events)".to_owned()
            }
        },
    );
    row(
        "SR 2.11",
        "Timestamps",
        "Every event carries an RFC 3339 UTC timestamp (microseconds) from the gateway's clock",
        Coverage::Partly,
        "time synchronisation is the host's (NTP/PTP)".to_owned(),
    );
    row(
        "SR 2.12",
        "Non-repudiation",
        "Events name the client's own address (transparent proxy), asset, conduit, rule and policy revision",
        if inspected.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Partly
        },
        "attributes requests to devices and hosts, not to human users".to_owned(),
    );
    row(
        "SR 3.1",
        "Communication integrity",
        "OPC UA conduits can require Sign or SignAndEncrypt channels by policy",
        if opcua.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Partly
        },
        format!(
            "OPC UA conduits: {}; Modbus/TCP has no integrity protection",
            list(&opcua)
        ),
    );
    row(
        "SR 3.5",
        "Input validation",
        "Zero-copy Modbus/TCP and OPC UA parsers with named limits; malformed frames never reach the device",
        if inspected.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Configured
        },
        format!("{} inspected conduit(s)", inspected.len()),
    );
    let failure_mode = model.gateway.failure_mode;
    row(
        "SR 3.6",
        "Deterministic output",
        "A predetermined state when zonegate fails: the early-block ruleset at boot; a kernel-side liveness signal the daemon renews every second, expiring 5 s after it dies (at once on a clean stop), when `gateway.failure_mode` takes over",
        match failure_mode {
            FailureMode::Closed => Coverage::Configured,
            FailureMode::Open => Coverage::Partly,
        },
        match failure_mode {
            FailureMode::Closed => {
                "systemd/zonegate-early-block.service; failure_mode closed: nothing crosses zones while zonegate is down".to_owned()
            }
            FailureMode::Open => {
                "systemd/zonegate-early-block.service; failure_mode open: inspected conduits pass uninspected at L4 while zonegate is down".to_owned()
            }
        },
    );
    row(
        "SR 3.7",
        "Error handling",
        "Invalid requests are answered as the protocol specifies (Modbus exception codes, OPC UA ServiceFault/ERR status codes) without internal detail; evaluation errors and faults deny (fail-closed) and are audited",
        if inspected.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Configured
        },
        format!(
            "on_deny per conduit: {}",
            inspected
                .iter()
                .map(|(c, i)| format!("{} {}", c.name, i.on_deny.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    row(
        "SR 3.8",
        "Session integrity",
        "Modbus responses must match a request in flight, others are dropped and audited; OPC UA messages are reassembled per request id and sequence numbers kept consistent when the gateway refuses or drops one; TCP state by conntrack. No cryptographic session protection on Modbus/TCP, and the gateway does not verify OPC UA signatures",
        if inspected.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Partly
        },
        format!(
            "inspected conduits: {}",
            list(
                &inspected
                    .iter()
                    .map(|(c, _)| c.name.as_str())
                    .collect::<Vec<_>>()
            )
        ),
    );
    row(
        "SR 3.9",
        "Protection of audit information",
        "Every event numbered and sealed in a hash chain; `zonegate audit verify` finds edits, deletions, insertions, reordering and re-sealing; signed checkpoints show a cut head or end",
        if audit.key_file.is_some() {
            Coverage::Configured
        } else {
            Coverage::Partly
        },
        {
            let chain = match &audit.key_file {
                Some(k) => format!("HMAC-SHA-256 with {}", k.display()),
                None => {
                    "SHA-256 without a key: set audit.key_file so that edits cannot be re-sealed"
                        .to_owned()
                }
            };
            match &audit.checkpoint {
                Some(c) => format!(
                    "{chain}; Ed25519-signed checkpoints every {} with {}",
                    humantime::format_duration(c.interval),
                    c.signing_key_file.display()
                ),
                None => format!("{chain}; no signed checkpoints (audit.checkpoint)"),
            }
        },
    );
    let encrypted = audit
        .syslog
        .iter()
        .filter(|s| matches!(s.transport, SyslogTransport::Tls | SyslogTransport::RelpTls))
        .count();
    row(
        "SR 4.1",
        "Information confidentiality",
        "TLS for the management API and audit sent to syslog; plant protocols cross as the devices speak them (Modbus/TCP has no encryption; encrypted OPC UA is forwarded or refused, not decrypted)",
        if api_tls.is_some() || !tls_syslog.is_empty() {
            Coverage::Partly
        } else {
            Coverage::NotConfigured
        },
        format!(
            "management API: {}; syslog sinks over TLS: {}, in clear: {plain_syslog}",
            match (api, api_tls) {
                (None, _) => "none",
                (Some(_), Some(_)) => "TLS",
                (Some(_), None) => "clear text",
            },
            tls_syslog.len()
        ),
    );
    row(
        "SR 4.3",
        "Use of cryptography",
        "TLS 1.2/1.3 (rustls) to syslog receivers; SHA-256/HMAC for the audit chain",
        if !audit.syslog.is_empty() && encrypted == audit.syslog.len() {
            Coverage::Configured
        } else {
            Coverage::Partly
        },
        format!(
            "{encrypted} of {} syslog receiver(s) over TLS; audit chain {}",
            audit.syslog.len(),
            if audit.key_file.is_some() {
                "HMAC-SHA-256"
            } else {
                "SHA-256"
            }
        ),
    );
    row(
        "SR 5.1",
        "Network segmentation",
        "Zones with Purdue levels and target security levels, each on its own networks or interfaces",
        Coverage::Configured,
        model
            .zones
            .iter()
            .map(|z| {
                format!(
                    "{} (L{}, SL-T {})",
                    z.name,
                    z.level,
                    z.security_level.value()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    row(
        "SR 5.2",
        "Zone boundary protection",
        "nftables: deny by default, allow by exception (one-way conduits), counted and rate-limit logged drops; re-applied on drift. The gateway itself reaches only the devices of its proxies, its management peers and the egress peers zones.yaml names (`drop_output` counts the rest)",
        Coverage::Configured,
        format!(
            "{} conduit(s); drops logged to group {} at {}/s; gateway egress peers: {}",
            model.conduits.len(),
            model.gateway.drop_log_group,
            model.gateway.drop_log_per_second,
            list(
                &model
                    .gateway
                    .management
                    .iter()
                    .flat_map(|m| m.egress.iter().map(|e| e.name.as_str()))
                    .collect::<Vec<_>>()
            )
        ),
    );
    row(
        "SR 5.3",
        "General purpose person-to-person communication restrictions",
        "Default deny between zones: mail, chat and file sharing cross only where a conduit names their ports",
        if messaging.is_empty() {
            Coverage::Configured
        } else {
            Coverage::Partly
        },
        if messaging.is_empty() {
            "no conduit allows a mail, chat or file-sharing port".to_owned()
        } else {
            format!(
                "conduits allowing messaging ports: {}",
                messaging.join(", ")
            )
        },
    );
    row(
        "SR 5.4",
        "Application partitioning",
        "Deep inspection per application protocol (Modbus/TCP, OPC UA) on the conduits that carry it",
        if inspected.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Configured
        },
        format!("L4-only conduits: {}", list(&l4)),
    );
    row(
        "SR 6.1",
        "Audit log accessibility",
        "Audit events to syslog receivers (RFC 5424 or CEF; UDP, TCP, TLS, RELP), spooled while they are down",
        if audit.syslog.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Configured
        },
        sinks.clone(),
    );
    row(
        "SR 6.2",
        "Continuous monitoring",
        "Every drop between zones and every refused request is an alert event as it happens",
        Coverage::Configured,
        "network-drop and request events; metrics come with the management API".to_owned(),
    );
    row(
        "SR 7.1",
        "Denial of service protection",
        "Bounded proxy connections, requests in flight, frame and message sizes, policy evaluation time; rate-limited drop logging",
        if inspected.is_empty() {
            Coverage::Partly
        } else {
            Coverage::Configured
        },
        format!(
            "{} proxied connections at most, {} per source",
            model.limits.connections, model.limits.connections_per_source
        ),
    );
    row(
        "SR 7.2",
        "Resource management",
        "Every resource the gateway spends on a client is bounded and each hit counted: connections, requests in flight, frame and message sizes, idle, request and response timeouts, policy evaluation time, audit queue; allowed writes rate-limited per conduit",
        if inspected.is_empty() {
            Coverage::Partly
        } else {
            Coverage::Configured
        },
        format!(
            "{} in flight per connection; idle {}, request {}, response {}; write_rate on: {}",
            model.limits.in_flight_per_connection,
            humantime::format_duration(model.limits.idle_timeout),
            humantime::format_duration(model.limits.request_timeout),
            humantime::format_duration(model.limits.response_timeout),
            list(
                &inspected
                    .iter()
                    .filter(|(_, i)| i.write_rate.is_some())
                    .map(|(c, _)| c.name.as_str())
                    .collect::<Vec<_>>()
            )
        ),
    );
    row(
        "SR 7.6",
        "Network and security configuration settings",
        "One validated zones.yaml; `zonegate plan` shows the ruleset for review; configuration changes are audited with their hashes",
        Coverage::Configured,
        format!(
            "{} zones, {} assets, {} conduits",
            model.zones.len(),
            model.assets.len(),
            model.conduits.len()
        ),
    );
    row(
        "SR 7.7",
        "Least functionality",
        "Conduits name their services, sources and destinations; policies whitelist function codes, registers and nodes",
        if unnarrowed.is_empty() {
            Coverage::Configured
        } else {
            Coverage::Partly
        },
        format!(
            "conduits open to a whole zone on one side: {}",
            list(&unnarrowed)
        ),
    );
    row(
        "SR 7.8",
        "Control system component inventory",
        "zones.yaml lists every asset with its zone, address and kind",
        if model.assets.is_empty() {
            Coverage::NotConfigured
        } else {
            Coverage::Configured
        },
        format!("{} asset(s)", model.assets.len()),
    );
    rows
}

fn audit_sinks(model: &Model) -> String {
    let audit = &model.audit;
    let mut sinks: Vec<String> = audit
        .file
        .iter()
        .map(|f| format!("file {}", f.path.display()))
        .collect();
    for s in &audit.syslog {
        sinks.push(format!(
            "syslog {} {} ({})",
            s.transport.as_str(),
            s.address,
            s.format.as_str()
        ));
    }
    if sinks.is_empty() {
        "standard output (zones.yaml names no sink)".to_owned()
    } else {
        sinks.join(", ")
    }
}

/// The Markdown report for `model`, loaded from `file` with content hash `sha256`.
pub fn report(model: &Model, file: &str, sha256: &str) -> String {
    let rows = rows(model);
    let mut out = String::new();
    let _ = writeln!(out, "# IEC 62443-3-3 system requirements: {file}\n");
    let _ = writeln!(
        out,
        "zonegate {}, configuration sha256 `{sha256}`. What each SR gets from zonegate as configured;\n\
         SRs zonegate does not address are listed at the end.\n",
        env!("CARGO_PKG_VERSION")
    );
    let count = |c: Coverage| rows.iter().filter(|r| r.coverage == c).count();
    let _ = writeln!(
        out,
        "All {} SRs of IEC 62443-3-3. {} SRs addressed: {} configured, {} partly, {} not configured. {} not addressed.\n",
        rows.len().saturating_add(NOT_ADDRESSED.len()),
        rows.len(),
        count(Coverage::Configured),
        count(Coverage::Partly),
        count(Coverage::NotConfigured),
        NOT_ADDRESSED.len()
    );
    let _ = writeln!(
        out,
        "| SR | Requirement | zonegate mechanism | Status | Setting |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.sr,
            r.title,
            cell(r.mechanism),
            r.coverage.as_str(),
            cell(&r.setting)
        );
    }
    let _ = writeln!(out, "\n## Not addressed by zonegate\n");
    let _ = writeln!(out, "| SR | Requirement |");
    let _ = writeln!(out, "|---|---|");
    for (sr, title) in NOT_ADDRESSED {
        let _ = writeln!(out, "| {sr} | {title} |");
    }
    out
}

/// A table cell: a `|` in a value would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn shipped() -> Model {
        crate::config::parse(include_str!("../zones.yaml")).unwrap()
    }

    fn row<'a>(rows: &'a [Row], sr: &str) -> &'a Row {
        rows.iter().find(|r| r.sr == sr).unwrap()
    }

    #[test]
    fn the_shipped_plant_maps_its_settings_to_the_srs() {
        let rows = rows(&shipped());
        let seg = row(&rows, "SR 5.1");
        assert_eq!(seg.coverage, Coverage::Configured);
        assert!(
            seg.setting.contains("dmz (L3.5, SL-T 2)"),
            "{}",
            seg.setting
        );
        assert!(row(&rows, "SR 5.2").setting.starts_with("6 conduit(s)"));
        let authz = row(&rows, "SR 2.1");
        assert_eq!(authz.coverage, Coverage::Configured);
        assert!(authz.setting.contains("scada-bess"));
        // Shipped without a key, dropping on a full queue: said, not hidden.
        assert_eq!(row(&rows, "SR 3.9").coverage, Coverage::Partly);
        assert_eq!(row(&rows, "SR 2.10").coverage, Coverage::Partly);
        assert_eq!(row(&rows, "SR 6.1").coverage, Coverage::NotConfigured);
        assert_eq!(row(&rows, "SR 7.8").setting, "11 asset(s)");
    }

    #[test]
    fn settings_change_the_verdicts() {
        let text = include_str!("../zones.yaml")
            .replace("when_full: drop_oldest", "when_full: fail_closed")
            .replace(
                "  # key_file: credential:audit-key",
                "  key_file: credential:audit-key",
            )
            .replace("      mode: enforce ", "      mode: monitor ");
        let rows = rows(&crate::config::parse(&text).unwrap());
        assert_eq!(row(&rows, "SR 2.10").coverage, Coverage::Configured);
        assert_eq!(row(&rows, "SR 3.9").coverage, Coverage::Configured);
        let authz = row(&rows, "SR 2.1");
        assert_eq!(authz.coverage, Coverage::Partly);
        assert!(
            authz
                .setting
                .contains("monitor mode (decide, record, forward all): scada-bess")
        );
    }

    #[test]
    fn the_report_is_a_markdown_table_with_every_sr_once() {
        let text = report(&shipped(), "zones.yaml", "00");
        for r in rows(&shipped()) {
            assert_eq!(
                text.matches(&format!("| {} | ", r.sr)).count(),
                1,
                "{}",
                r.sr
            );
        }
        for (sr, _) in NOT_ADDRESSED {
            assert_eq!(text.matches(&format!("| {sr} | ")).count(), 1, "{sr}");
        }
        // Every table line has the header's number of cells.
        for line in text.lines().filter(|l| l.starts_with("| SR ")) {
            assert_eq!(line.matches(" | ").count() + 2, line.matches('|').count());
        }
    }
}

//! For unit tests of the sessions: a site made from a small zones.yaml and Rego policy in a
//! temporary directory, the route of a connection in it, an audit trail written to a file the
//! test reads back, and reloads. No sockets, no namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Protocol, Route, SiteWatch};
use crate::audit::{Audit, AuditWriter, FileSettings, Settings};
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::site::Site;

/// A SCADA client in zone `ops` and a PLC in zone `field`, joined by conduit `scada-plc`.
pub const SCADA: &str = "10.3.0.10:40000";
pub const PLC: &str = "10.2.0.20:502";
/// The PLC's OPC UA server.
pub const PLC_OPCUA: &str = "10.2.0.20:4840";

/// zones.yaml with the conduit's `inspection:` settings and the site's `limits:` as given.
pub fn zones(inspection: &str, limits: &str) -> String {
    format!(
        "
gateway: {{management: {{address: 10.9.0.1, tcp_ports: [22]}}}}
zones:
  ops: {{level: 3, security_level: 2, networks: [10.3.0.0/24]}}
  field: {{level: 2, security_level: 3, networks: [10.2.0.0/24]}}
assets:
  scada: {{zone: ops, address: 10.3.0.10, kind: scada}}
  plc: {{zone: field, address: 10.2.0.20, kind: plc}}
conduits:
  scada-plc:
    from: ops
    to: field
    services: [modbus, opcua]
    inspection: {{{inspection}}}
limits: {{{limits}}}
"
    )
}

/// A site, its audit trail and quarantine, and the sender of its reloads.
#[derive(Debug)]
pub struct Kit {
    dir: tempfile::TempDir,
    audit: Audit,
    writer: Option<AuditWriter>,
    metrics: Arc<Metrics>,
    quarantine: Arc<Quarantine>,
    sites: watch::Sender<Arc<Site>>,
    sites_rx: watch::Receiver<Arc<Site>>,
}

impl Kit {
    /// A site from `zones_yaml` and the policy file `p.rego` it names.
    pub fn new(zones_yaml: &str, policy: &str) -> Kit {
        let dir = tempfile::tempdir().unwrap();
        let site = Arc::new(write_site(dir.path(), zones_yaml, policy));
        let settings = Settings {
            file: Some(FileSettings {
                path: dir.path().join("audit.jsonl"),
                max_bytes: 0,
                keep: 1,
            }),
            reads: site.model.audit.reads,
            ..Settings::default()
        };
        let (audit, writer) = Audit::start(&settings).unwrap();
        let metrics = Arc::new(Metrics::new());
        let quarantine = Quarantine::start(audit.clone(), metrics.clone(), None).unwrap();
        let (sites, sites_rx) = watch::channel(site);
        Kit {
            dir,
            audit,
            writer: Some(writer),
            metrics,
            quarantine,
            sites,
            sites_rx,
        }
    }

    pub fn audit(&self) -> Audit {
        self.audit.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The route of a `protocol` connection from [`SCADA`] to the PLC in the site in force.
    pub fn route(&self, protocol: Protocol) -> Route {
        let site = self.sites_rx.borrow().clone();
        Route::resolve(
            &site,
            protocol,
            client(),
            device_of(protocol),
            &self.metrics,
            &self.quarantine,
        )
        .expect("a conduit joins SCADA and the PLC")
    }

    /// A watch on the site in force, as a session gets one.
    pub fn watch(&self) -> SiteWatch {
        let mut w = SiteWatch::new(self.sites_rx.clone(), None);
        w.current();
        w
    }

    /// Replaces the site, as a reload does.
    pub fn reload(&self, zones_yaml: &str, policy: &str) {
        let dir = self.dir.path().join("reloaded");
        std::fs::create_dir_all(&dir).unwrap();
        let site = write_site(&dir, zones_yaml, policy);
        self.sites.send(Arc::new(site)).unwrap();
    }

    /// Every audit event written so far (the writer is stopped first; call once, at the end).
    pub fn events(&mut self) -> Vec<serde_json::Value> {
        if let Some(w) = self.writer.take() {
            w.finish();
        }
        let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn write_site(dir: &Path, zones_yaml: &str, policy: &str) -> Site {
    std::fs::write(dir.join("p.rego"), policy).unwrap();
    let path = dir.join("zones.yaml");
    std::fs::write(&path, zones_yaml).unwrap();
    Site::load(&path).unwrap()
}

pub fn client() -> SocketAddr {
    SCADA.parse().unwrap()
}

/// The PLC's Modbus address.
pub fn device() -> SocketAddr {
    device_of(Protocol::Modbus)
}

pub fn device_of(protocol: Protocol) -> SocketAddr {
    match protocol {
        Protocol::Modbus => PLC.parse().unwrap(),
        Protocol::OpcUa => PLC_OPCUA.parse().unwrap(),
    }
}

/// The events whose `event.action` is `action`.
pub fn actions<'a>(
    events: &'a [serde_json::Value],
    action: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> {
    events
        .iter()
        .filter(move |e| e["event"]["action"] == action)
}

//! The running daemon's control loop: apply, then keep the kernel's ruleset what zones.yaml says
//! until told to stop. Signals, reload and sd_notify live here as they arrive.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::audit::droplog::DropLog;
use crate::audit::{self, Audit, AuditError, Event, Severity};
use crate::nft::{self, NftError};
use crate::proxy::{self, Protocol, Proxy, ProxyError};
use crate::site::Site;

/// How often the ruleset in the kernel is compared with the one applied. Someone running
/// `nft flush ruleset` on a gateway would otherwise open every zone to every other until restart.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What the command line adds to zones.yaml.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The audit file, instead of zones.yaml's `audit.file.path`.
    pub audit_log: Option<PathBuf>,
    /// zonegate's state (spool, last configuration), instead of `audit.spool.directory`.
    pub state_dir: Option<PathBuf>,
}

/// The audit settings zones.yaml and the command line make together.
pub fn audit_settings(site: &Site, options: &Options) -> audit::Settings {
    let mut settings = site.model.audit.clone();
    if let Some(path) = &options.audit_log {
        let (max_bytes, keep) = settings.file.as_ref().map_or(
            (audit::DEFAULT_FILE_MAX_BYTES, audit::DEFAULT_FILE_KEEP),
            |f| (f.max_bytes, f.keep),
        );
        settings.file = Some(audit::FileSettings {
            path: path.clone(),
            max_bytes,
            keep,
        });
    }
    if let Some(dir) = &options.state_dir {
        settings.spool_dir = dir.join("spool");
    }
    settings
}

/// Applies the site's ruleset, serves its inspected conduits, and enforces both until SIGTERM or
/// SIGINT. The ruleset stays in the kernel afterwards: stopping zonegate must not open the plant
/// (inspected conduits then carry nothing).
pub async fn run(site: Site, options: Options) -> Result<(), ControlError> {
    let site = Arc::new(site);
    let model = &site.model;
    let settings = audit_settings(&site, &options);
    let (audit, writer) = Audit::start(&settings)?;
    // The proxy listens before the ruleset diverts anything to it, so no diverted connection
    // meets a closed port.
    let mut proxy_task = None;
    if site.has_inspected_conduits() {
        proxy::routing::install().map_err(ProxyError::from)?;
        let limit = proxy::connection_limit();
        let mut proxies = tokio::task::JoinSet::new();
        for (protocol, port) in [
            (Protocol::Modbus, model.gateway.modbus_proxy_port),
            (Protocol::OpcUa, model.gateway.opcua_proxy_port),
        ] {
            if !site.inspects(protocol) {
                continue;
            }
            let proxy = Proxy::bind(protocol, port)?;
            proxies.spawn(proxy.serve(site.clone(), audit.clone(), limit.clone()));
        }
        proxy_task = Some(proxies);
    }
    // The drop log is read from before the ruleset logs anything to it.
    let drop_log = open_drop_log(model.gateway.drop_log_group);
    let ruleset = nft::render(model);
    nft::apply(&ruleset)?;
    if let Some(log) = drop_log {
        spawn_drop_reader(log, site.clone(), audit.clone());
    }
    tracing::info!(
        zones = model.zones.len(),
        conduits = model.conduits.len(),
        "enforcing"
    );
    let fingerprint = site.fingerprint();
    audit.emit(started(&site, &fingerprint));
    if let Some(change) = config_change(&settings.spool_dir, &fingerprint) {
        audit.emit(change);
    }
    let mut term = signal(SignalKind::terminate()).map_err(ControlError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ControlError::Signals)?;
    let mut audit_health = AuditHealth {
        healthy: true,
        ..AuditHealth::default()
    };
    let mut tick = tokio::time::interval(VERIFY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                audit_health.check(&audit.stats());
                if let Err(drift) = nft::verify(&ruleset) {
                    tracing::warn!(%drift, "the kernel's ruleset changed behind zonegate's back; applying it again");
                    if let Err(e) = nft::apply(&ruleset) {
                        tracing::error!(error = %e, "cannot restore the ruleset");
                    } else {
                        tracing::info!("ruleset restored");
                    }
                }
            }
        }
    }
    if let Some(mut proxies) = proxy_task {
        proxies.abort_all();
    }
    tracing::info!("stopping; the ruleset stays in force");
    audit.emit(stopped());
    drop(audit);
    // The writer delivers what is queued, the stop event last.
    let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
    Ok(())
}

/// What the operator's log says about audit: losses and receivers that are not taking events,
/// once when it starts and once when it ends (the metrics endpoint will carry the numbers).
#[derive(Debug, Default)]
struct AuditHealth {
    lost: u64,
    healthy: bool,
    waiting: std::collections::BTreeSet<String>,
}

impl AuditHealth {
    fn check(&mut self, stats: &audit::Stats) {
        if stats.lost > self.lost {
            tracing::error!(
                lost = stats.lost.saturating_sub(self.lost),
                "audit events were lost: the audit queue was full"
            );
            self.lost = stats.lost;
        }
        if stats.healthy != self.healthy {
            if stats.healthy {
                tracing::info!("audit records again: inspected conduits take requests");
            } else {
                tracing::error!(
                    "audit cannot record events: inspected conduits refuse requests (audit.when_full: fail_closed)"
                );
            }
            self.healthy = stats.healthy;
        }
        for (name, r) in &stats.receivers {
            let waiting = !r.connected && (r.spooled_bytes > 0 || r.queued_events > 0);
            if waiting && self.waiting.insert(name.clone()) {
                tracing::warn!(receiver = %name, spooled_bytes = r.spooled_bytes, "syslog receiver unreachable: events wait in its spool");
            } else if !waiting && self.waiting.remove(name) {
                tracing::info!(receiver = %name, delivered = r.delivered, "syslog receiver reachable again");
            }
        }
    }
}

/// The kernel's drop log; without it drops are still counted, not audited one by one.
fn open_drop_log(group: u16) -> Option<DropLog> {
    match DropLog::open(group) {
        Ok(log) => Some(log),
        Err(e) => {
            tracing::error!(group, error = %e, "cannot read the kernel's drop log: dropped packets are counted but not audited");
            None
        }
    }
}

/// Turns every logged drop into a `network-drop` event, on a thread of its own (netlink reads
/// block). Interface names resolve in this thread's namespace: the daemon's.
fn spawn_drop_reader(mut log: DropLog, site: Arc<Site>, audit: Audit) {
    let spawned = std::thread::Builder::new()
        .name("drop-log".into())
        .spawn(move || {
            loop {
                match log.next() {
                    Ok(drop) => audit.emit(Event::network_drop(&site.model, &drop)),
                    Err(e) if !e.is_fatal() => {
                        tracing::warn!(error = %e, "drop log");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the drop log failed: dropped packets are counted but no longer audited");
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the drop log reader");
    }
}

/// `daemon-start`: what is enforced, by content hash.
fn started(site: &Site, fingerprint: &crate::site::Fingerprint) -> Event {
    let mut e = Event::now(
        "daemon-start",
        "event",
        &["process", "configuration"],
        &["start"],
        "success",
        Severity::Notice,
    );
    e.message = format!(
        "zonegate {} started: enforcing {} ({} zones, {} conduits)",
        env!("CARGO_PKG_VERSION"),
        fingerprint.file,
        site.model.zones.len(),
        site.model.conduits.len()
    );
    e.zonegate.daemon = Some(serde_json::json!({ "pid": std::process::id() }));
    e.zonegate.config = serde_json::to_value(fingerprint).ok();
    e
}

/// `daemon-stop`.
fn stopped() -> Event {
    let mut e = Event::now(
        "daemon-stop",
        "event",
        &["process"],
        &["end"],
        "success",
        Severity::Notice,
    );
    e.message = "zonegate stopped; the ruleset stays in force".into();
    e.zonegate.daemon = Some(serde_json::json!({ "pid": std::process::id() }));
    e
}

/// The fingerprint the last run enforced, kept beside the spool.
const LAST_CONFIG: &str = "last-config.json";

/// `config-change` when the configuration differs from the one the last run enforced: which
/// files changed, with old and new hashes. Records the current one for the next run.
fn config_change(state_dir: &std::path::Path, now: &crate::site::Fingerprint) -> Option<Event> {
    let path = state_dir.join(LAST_CONFIG);
    let before: Option<crate::site::Fingerprint> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let write = std::fs::create_dir_all(state_dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec(now).map_err(std::io::Error::other)?,
        )
    });
    if let Err(e) = write {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the configuration for the next run");
    }
    let before = before?;
    if &before == now {
        return None;
    }
    let mut changes = Vec::new();
    if before.sha256 != now.sha256 || before.file != now.file {
        changes.push(serde_json::json!({
            "file": now.file, "old_sha256": before.sha256, "new_sha256": now.sha256,
        }));
    }
    let files: std::collections::BTreeSet<&String> =
        before.files.keys().chain(now.files.keys()).collect();
    for f in files {
        let (old, new) = (before.files.get(f), now.files.get(f));
        if old != new {
            changes.push(serde_json::json!({ "file": f, "old_sha256": old, "new_sha256": new }));
        }
    }
    let mut e = Event::now(
        "config-change",
        "event",
        &["configuration"],
        &["change"],
        "success",
        Severity::Notice,
    );
    e.message = format!(
        "configuration changed since the last run: {} file(s)",
        changes.len()
    );
    e.zonegate.config = Some(serde_json::json!({
        "file": now.file,
        "old_sha256": before.sha256,
        "new_sha256": now.sha256,
        "changes": changes,
    }));
    Some(e)
}

//! The running daemon: apply, serve the inspected conduits, and keep the kernel's ruleset what
//! zones.yaml says until told to stop; reload on SIGHUP or `zonegate reload` (the control
//! socket); tell systemd how it is doing (ready, reloading, watchdog).

pub mod notify;
pub mod reload;
pub mod socket;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api::{self, ApiError};
use crate::audit::{self, Audit, AuditError, Event, Severity};
use crate::metrics::Metrics;
use crate::nft::droplog::DropLog;
use crate::nft::{self, NftError, Ruleset};
use crate::proxy::{self, Protocol, Proxy, ProxyError};
use crate::quarantine::{Quarantine, QuarantineError};
use crate::site::{Fingerprint, Site, SiteError};

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
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("cannot start the data path monitor: {0}")]
    Monitor(#[source] std::io::Error),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error(transparent)]
    ControlSocket(socket::SocketError),
}

/// What the command line adds to zones.yaml.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The audit file, instead of zones.yaml's `audit.file.path`.
    pub audit_log: Option<PathBuf>,
    /// zonegate's state (spool, last configuration), instead of `audit.spool.directory`.
    pub state_dir: Option<PathBuf>,
    /// The control socket `zonegate reload` talks to (default: [`socket::default_path`]).
    pub control_socket: Option<PathBuf>,
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

/// What the daemon enforces now, and where it came from.
struct Daemon {
    site: Arc<Site>,
    /// Hands each new site to the proxies' sessions.
    sites: watch::Sender<Arc<Site>>,
    ruleset: Ruleset,
    fingerprint: Fingerprint,
    audit: Audit,
    state_dir: PathBuf,
    /// What the management API reports.
    state: Arc<api::State>,
    /// Sources held in quarantine; every apply puts them back into the kernel's sets.
    quarantine: Arc<Quarantine>,
    /// Whether the host had IPv6 at start-up, when routing and listeners were set up.
    ipv6: bool,
}

/// Logs which conduits cannot be served in IPv6 on a host without it, if any.
fn warn_ipv6_unavailable(model: &crate::config::Model) {
    if let Some(warning) = proxy::routing::ipv6_unavailable_warning(model) {
        tracing::warn!("{warning}");
    }
}

/// Applies the site's ruleset, serves its inspected conduits, and enforces both until SIGTERM or
/// SIGINT; reloads on SIGHUP and on `zonegate reload`. While the data path serves, zonegate's
/// liveness in the kernel is renewed every second. The ruleset stays in the kernel afterwards
/// and liveness is withdrawn, so that its failure mode takes over at once (closed: nothing
/// crosses zones; open: inspected conduits pass uninspected); a killed daemon gets the same
/// within [`nft::liveness::TIMEOUT`], from the kernel alone.
pub async fn run(site: Site, options: Options) -> Result<(), ControlError> {
    // First of all: a daemon that already answers on the control socket keeps it, and this one
    // stops before it touches the kernel, the audit log or the state directory.
    let control_path = options
        .control_socket
        .clone()
        .unwrap_or_else(socket::default_path);
    let (mut control, _control_file) = match socket::listen(&control_path) {
        Ok((rx, file)) => (Some(rx), Some(file)),
        Err(e @ (socket::SocketError::InUse { .. } | socket::SocketError::NotASocket { .. })) => {
            return Err(ControlError::ControlSocket(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: `zonegate reload` will not reach this daemon (SIGHUP still reloads)");
            (None, None)
        }
    };
    // A policy whose own tests fail is not put in force (nor on reload).
    site.test_policies()?;
    let site = Arc::new(site);
    let model = &site.model;
    let settings = audit_settings(&site, &options);
    let (audit, writer) = Audit::start(&settings)?;
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(api::State::new(metrics.clone()));
    state.set_site(&site);
    let quarantine = Quarantine::start(
        audit.clone(),
        metrics.clone(),
        Some(settings.spool_dir.join(crate::quarantine::FILE)),
    )?;
    state.set_quarantine(quarantine.clone());
    // Keys and certificates are read now: a broken API configuration stops the start, as a
    // proxy port that cannot be bound does.
    let api_server = match model.gateway.management.as_ref() {
        Some(m) => match &m.api {
            Some(a) => Some(api::Server::bind(a, m.address)?),
            None => None,
        },
        None => None,
    };
    let (sites, sites_rx) = watch::channel(site.clone());
    // The proxy listens before the ruleset diverts anything to it, so no diverted connection
    // meets a closed port. Both protocols always listen, so that a reload may add inspected
    // conduits.
    // Without IPv6 (kernel or interfaces) only IPv4 is routed and listened on, and conduits
    // that name IPv6 networks are served in IPv4 only.
    let ipv6 = proxy::routing::ipv6_available();
    if !ipv6 {
        tracing::info!("IPv6 is disabled on this host: routing and listening in IPv4 only");
        warn_ipv6_unavailable(model);
    }
    proxy::routing::install(ipv6).map_err(ProxyError::from)?;
    let limit = proxy::connection_limit(&model.limits);
    let mut proxies = tokio::task::JoinSet::new();
    for (protocol, port) in [
        (Protocol::Modbus, model.gateway.modbus_proxy_port),
        (Protocol::OpcUa, model.gateway.opcua_proxy_port),
    ] {
        let proxy = Proxy::bind(protocol, port, ipv6)?;
        proxies.spawn(proxy.serve(proxy::Shared {
            sites: sites_rx.clone(),
            audit: audit.clone(),
            connections: limit.clone(),
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
        }));
    }
    drop(sites_rx);
    let listening = Arc::new(AtomicBool::new(true));
    // The drop log is read from before the ruleset logs anything to it.
    let drop_log = open_drop_log(model.gateway.drop_log_group);
    let ruleset = nft::render(model);
    // Sources held before a restart: released if this configuration no longer quarantines them.
    quarantine.apply(&ruleset, Some(model))?;
    // apply reads the ruleset back and compares it.
    state.set_ruleset_verified(true);
    let api_task = api_server.map(|server| {
        if let Ok(addr) = server.local_addr() {
            tracing::info!(%addr, "management API listening");
        }
        tokio::spawn(server.serve(state.clone(), audit.clone()))
    });
    if let Some(log) = drop_log {
        spawn_drop_reader(log, sites.subscribe(), audit.clone());
    }
    tracing::info!(
        zones = model.zones.len(),
        conduits = model.conduits.len(),
        "enforcing"
    );
    let fingerprint = site.fingerprint();
    let state_dir = settings.spool_dir.clone();
    audit.emit(started(&site, &fingerprint));
    if let Some(change) = config_change(&state_dir, &fingerprint) {
        audit.emit(change);
    }
    let mut daemon = Daemon {
        site,
        sites,
        ruleset,
        fingerprint,
        audit,
        state_dir,
        state,
        quarantine,
        ipv6,
    };
    let mut term = signal(SignalKind::terminate()).map_err(ControlError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ControlError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ControlError::Signals)?;
    let monitor = notify::Monitor::start(
        notify::DataPath {
            runtime: tokio::runtime::Handle::current(),
            listening: listening.clone(),
        },
        liveness(site_failure_mode(&daemon.site)),
    )
    .map_err(ControlError::Monitor)?;
    notify::ready(&daemon.status_line());
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
            _ = hup.recv() => {
                daemon.reload("signal").await;
            }
            Some(request) = recv(&mut control) => match request {
                socket::Request::Reload(reply) => {
                    let answer = daemon.reload("control-socket").await;
                    let _ = reply.send(answer);
                }
                socket::Request::StallDataPath(d) => stall(d),
            },
            Some(ended) = proxies.join_next() => {
                tracing::error!(?ended, "a proxy stopped: inspected conduits of its protocol carry nothing");
                listening.store(false, Ordering::Release);
            }
            _ = tick.tick() => {
                audit_health.check(&daemon.audit.stats());
                daemon.keep_ruleset();
                // Forgets expired quarantines (and updates their gauge).
                daemon.quarantine.list();
            }
        }
    }
    notify::stopping();
    // No renewal after this: from here the failure mode decides, not a dying proxy.
    drop(monitor);
    if let Err(e) = nft::liveness::withdraw() {
        tracing::error!(error = %e, "cannot withdraw liveness: the failure mode takes over when it expires");
    }
    proxies.abort_all();
    if let Some(task) = api_task {
        task.abort();
    }
    let Daemon { audit, site, .. } = daemon;
    tracing::info!(
        failure_mode = site.model.gateway.failure_mode.as_str(),
        "stopping; the ruleset stays in force in its failure mode"
    );
    audit.emit(stopped());
    drop(audit);
    // The writer delivers what is queued, the stop event last.
    let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
    Ok(())
}

fn site_failure_mode(site: &Site) -> &'static str {
    site.model.gateway.failure_mode.as_str()
}

/// Renews zonegate's liveness in the kernel every [`nft::liveness::RENEW_INTERVAL`] while the
/// data path serves (called by the data path monitor). When it stops, by a stall or a kill -9,
/// the elements expire after [`nft::liveness::TIMEOUT`] and the ruleset's failure mode takes
/// over. Failures are logged when they start and when they end.
fn liveness(failure_mode: &'static str) -> impl FnMut(bool) + Send + 'static {
    let mut last: Option<std::time::Instant> = None;
    let mut renewing = true;
    move |serving| {
        if !serving || last.is_some_and(|t| t.elapsed() < nft::liveness::RENEW_INTERVAL) {
            return;
        }
        match nft::liveness::renew() {
            Ok(()) => {
                last = Some(std::time::Instant::now());
                if !renewing {
                    tracing::info!("liveness renewed again");
                    renewing = true;
                }
            }
            // The verify tick restores a removed table, and with it fresh liveness.
            Err(e) if renewing => {
                tracing::error!(error = %e, failure_mode, "cannot renew liveness: the failure mode takes over when it expires");
                renewing = false;
            }
            Err(_) => {}
        }
    }
}

/// The next control socket request; never, without a socket.
async fn recv(
    control: &mut Option<tokio::sync::mpsc::Receiver<socket::Request>>,
) -> Option<socket::Request> {
    match control {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Test hook (`ZONEGATE_TEST_HOOKS=1`): blocks every worker of the runtime for `d`, as a
/// wedged data path would.
fn stall(d: Duration) {
    tracing::warn!(duration = ?d, "test hook: stalling the data path");
    let handle = tokio::runtime::Handle::current();
    let workers = handle.metrics().num_workers();
    let until = std::time::Instant::now().checked_add(d);
    // Twice as many tasks as workers, so that each worker gets one; all end together.
    for _ in 0..workers.saturating_mul(2) {
        handle.spawn(async move {
            if let Some(until) = until {
                std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
            }
        });
    }
}

impl Daemon {
    /// Re-applies the ruleset when the kernel's differs from it, with the sources still held in
    /// quarantine.
    fn keep_ruleset(&self) {
        if let Err(drift) = nft::verify(&self.ruleset) {
            self.state.set_ruleset_verified(false);
            tracing::warn!(%drift, "the kernel's ruleset changed behind zonegate's back; applying it again");
            if let Err(e) = self.quarantine.apply(&self.ruleset, None) {
                tracing::error!(error = %e, "cannot restore the ruleset");
            } else {
                self.state.set_ruleset_verified(true);
                tracing::info!("ruleset restored");
            }
        }
    }

    /// systemd's STATUS line.
    fn status_line(&self) -> String {
        format!(
            "enforcing {} ({} zones, {} conduits)",
            self.fingerprint.file,
            self.site.model.zones.len(),
            self.site.model.conduits.len()
        )
    }

    /// Reloads zones.yaml and everything it names; on any failure the old state stays in force.
    /// Reports to the log, the audit stream and systemd; returns the control socket's answer.
    async fn reload(&mut self, trigger: &'static str) -> serde_json::Value {
        notify::reloading();
        tracing::info!(trigger, file = %self.fingerprint.file, "reloading");
        let current = self.site.clone();
        let quarantine = self.quarantine.clone();
        let result =
            tokio::task::spawn_blocking(move || reload::load_and_apply(&current, &quarantine))
                .await
                .unwrap_or_else(|e| Err(reload::ReloadError::Aborted(e.to_string())));
        let answer = match result {
            Ok(applied) => {
                let fingerprint = applied.site.fingerprint();
                let changes = changes(&self.fingerprint, &fingerprint);
                // From here on new connections and the next request of every live one are
                // judged by the new site.
                self.sites.send_replace(applied.site.clone());
                self.state.set_site(&applied.site);
                self.state.set_ruleset_verified(true);
                self.state.record_reload(Ok(()));
                self.site = applied.site;
                self.ruleset = applied.ruleset;
                if !self.ipv6 {
                    warn_ipv6_unavailable(&self.site.model);
                }
                let old = std::mem::replace(&mut self.fingerprint, fingerprint);
                record_config(&self.state_dir, &self.fingerprint);
                tracing::info!(
                    changed_files = changes.len(),
                    sha256 = %self.fingerprint.sha256,
                    "reloaded: the new configuration is in force"
                );
                self.audit
                    .emit(reloaded(trigger, &old, &self.fingerprint, changes, None));
                serde_json::json!({
                    "ok": true,
                    "message": "reloaded: the new configuration is in force",
                    "sha256": self.fingerprint.sha256,
                    "files": self.fingerprint.files,
                })
            }
            Err(e) => {
                let error = e.to_string();
                tracing::error!(%error, "reload failed: the previous configuration stays in force");
                self.state.record_reload(Err(error.clone()));
                self.audit.emit(reloaded(
                    trigger,
                    &self.fingerprint,
                    &self.fingerprint,
                    Vec::new(),
                    Some(&error),
                ));
                serde_json::json!({
                    "ok": false,
                    "error": error,
                    "message": "reload failed: the previous configuration stays in force",
                    "sha256": self.fingerprint.sha256,
                })
            }
        };
        notify::ready(&self.status_line());
        answer
    }
}

/// `daemon-reload`: what changed (old and new hashes), or why nothing did.
fn reloaded(
    trigger: &str,
    old: &Fingerprint,
    new: &Fingerprint,
    changes: Vec<serde_json::Value>,
    error: Option<&str>,
) -> Event {
    let (outcome, severity) = match error {
        None => ("success", Severity::Notice),
        Some(_) => ("failure", Severity::Warning),
    };
    let mut e = Event::now(
        "daemon-reload",
        "event",
        &["configuration", "process"],
        &["change"],
        outcome,
        severity,
    );
    e.message = match error {
        None => format!(
            "configuration reloaded from {}: {} file(s) changed",
            new.file,
            changes.len()
        ),
        Some(err) => {
            format!("reload failed, the previous configuration stays in force: {err}")
        }
    };
    if let Some(err) = error {
        e.zonegate.reason = err.to_owned();
    }
    e.zonegate.daemon = Some(serde_json::json!({ "pid": std::process::id(), "trigger": trigger }));
    e.zonegate.config = Some(serde_json::json!({
        "file": new.file,
        "old_sha256": old.sha256,
        "new_sha256": new.sha256,
        "changes": changes,
    }));
    e
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
fn spawn_drop_reader(mut log: DropLog, sites: proxy::Sites, audit: Audit) {
    let spawned = std::thread::Builder::new()
        .name("drop-log".into())
        .spawn(move || {
            loop {
                match log.next() {
                    Ok(drop) => {
                        let site = sites.borrow().clone();
                        audit.emit(Event::network_drop(&site.model, &drop));
                    }
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
fn started(site: &Site, fingerprint: &Fingerprint) -> Event {
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
fn config_change(state_dir: &std::path::Path, now: &Fingerprint) -> Option<Event> {
    let path = state_dir.join(LAST_CONFIG);
    let before: Option<Fingerprint> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    record_config(state_dir, now);
    let before = before?;
    if &before == now {
        return None;
    }
    let changes = changes(&before, now);
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

/// Remembers the configuration in force, for the next run's `config-change`.
fn record_config(state_dir: &std::path::Path, now: &Fingerprint) {
    let path = state_dir.join(LAST_CONFIG);
    let write = std::fs::create_dir_all(state_dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec(now).map_err(std::io::Error::other)?,
        )
    });
    if let Err(e) = write {
        tracing::warn!(path = %path.display(), error = %e, "cannot record the configuration for the next run");
    }
}

/// The files that differ between two fingerprints, with old and new hashes.
fn changes(before: &Fingerprint, now: &Fingerprint) -> Vec<serde_json::Value> {
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
    changes
}

//! Quarantine: a source that commits more than `after` violations (requests the policy denies,
//! malformed frames) on a conduit within `within` is dropped in the kernel for `for`
//! (`inspection.quarantine` in zones.yaml).
//!
//! Sessions report violations only, never allowed requests, so the hot path does not touch
//! this. Counting is a sliding window per (conduit, source) in a bounded map. When a source
//! crosses the line, the session closes its connection and hands the source to one worker
//! thread, which adds it to the kernel's quarantine set with a timeout (`nft`, blocking) and
//! emits the `quarantine` audit event. The daemon keeps every source it holds with its expiry
//! and puts the remaining ones into every ruleset it applies (drift, reload), because replacing
//! the table would otherwise release them.
//!
//! A session hands it a [`Violation`]: plain values (conduit, settings, addresses, mode) and a
//! callback for the connection's event. Quarantine knows no route or session.
//!
//! Critical assets and conduits in monitor mode are never quarantined: crossing the line is a
//! `would_quarantine` event instead.
//!
//! The sources held are written to the state directory ([`FILE`]) whenever they change, so that
//! a restart (or a crash) does not release them: the next start holds them again for what
//! remains of their time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::audit::{Audit, Event};
use crate::config::{Mode, Model, QuarantineSettings};
use crate::metrics::Metrics;
use crate::nft::{self, NftError, Quarantined, Ruleset};

/// (conduit, source) pairs whose recent violations are remembered. When full, windows that
/// have run out go first, then the one whose last violation is oldest.
pub const MAX_TRACKED: usize = 4096;
/// Sources held in quarantine at once; beyond it a source is not quarantined (and the event
/// says so). Also bounds the kernel sets.
pub const MAX_HELD: usize = 4096;
/// Quarantine requests waiting for the worker.
const QUEUE: usize = 256;
/// The sources held, in the state directory: what a restart must not forget.
pub const FILE: &str = "quarantine.json";
/// The file is not read beyond this (4096 entries of about 150 bytes fit well within it).
const MAX_FILE_LEN: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("cannot start the quarantine worker: {0}")]
    Worker(#[source] std::io::Error),
}

/// One violation as a session saw it: what quarantine counts, and what its event needs. The
/// session fills it in from its route; quarantine knows no route.
pub struct Violation<'a> {
    /// The conduit the violation counts against.
    pub conduit: &'a str,
    /// The conduit's `inspection.quarantine`; `None` counts nothing.
    pub settings: Option<QuarantineSettings>,
    pub client: SocketAddr,
    pub device: SocketAddr,
    /// The conduit's mode: in monitor mode crossing the line is only audited.
    pub mode: Mode,
    /// What the violation was (a denial's reason, a malformed frame).
    pub what: &'a str,
    /// The client's asset name when that asset is critical (never quarantined); asked only
    /// when the source crosses the line.
    pub critical_asset: &'a dyn Fn() -> Option<&'a str>,
    /// The connection's audit event for (outcome, decision, reason), which the quarantine
    /// event extends.
    pub event: &'a dyn Fn(&'static str, &'static str, String) -> Event,
}

impl std::fmt::Debug for Violation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Violation")
            .field("conduit", &self.conduit)
            .field("settings", &self.settings)
            .field("client", &self.client)
            .field("device", &self.device)
            .field("mode", &self.mode)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// A source in quarantine, as `/status` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HeldSource {
    pub address: IpAddr,
    pub conduit: String,
    /// RFC 3339.
    pub since: String,
    pub until: String,
    pub remaining_seconds: u64,
    pub violations: u32,
}

#[derive(Debug)]
struct Held {
    conduit: String,
    since: SystemTime,
    until: SystemTime,
    expires: Instant,
    violations: u32,
}

/// A held source as [`FILE`] keeps it: wall-clock times, since `Instant`s do not survive a
/// restart.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    address: IpAddr,
    conduit: String,
    /// Seconds since the Unix epoch.
    since: u64,
    until: u64,
    violations: u32,
}

/// Recent violation times of one source on one conduit, oldest first.
#[derive(Debug)]
struct Window {
    times: VecDeque<Instant>,
    within: Duration,
}

impl Window {
    fn last(&self) -> Option<Instant> {
        self.times.back().copied()
    }
}

/// A source for the worker to put in the kernel.
#[derive(Debug)]
struct Request {
    address: IpAddr,
    conduit: String,
    duration: Duration,
    violations: u32,
    /// The `quarantine` event, completed by the worker with the outcome.
    event: Event,
}

/// The daemon's quarantine: violation windows, the sources held, and the worker's queue.
#[derive(Debug)]
pub struct Quarantine {
    windows: Mutex<HashMap<(String, IpAddr), Window>>,
    held: Mutex<BTreeMap<IpAddr, Held>>,
    /// Serializes changes to the kernel's sets: an `add element` must not land in a table
    /// that a concurrent apply is about to replace without it.
    kernel: Mutex<()>,
    requests: SyncSender<Request>,
    audit: Audit,
    metrics: Arc<Metrics>,
    /// Where the sources held are kept across restarts ([`FILE`] in the state directory).
    file: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Whole seconds, rounded up, at least one (nft timeouts).
fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 || s == 0 {
        s.saturating_add(1)
    } else {
        s
    }
}

impl Quarantine {
    /// The quarantine with its worker thread; the thread ends when the quarantine is dropped.
    /// With `file`, the sources an earlier run held there and whose time is not up are held
    /// again (the first [`Quarantine::apply`] puts them in the kernel).
    pub fn start(
        audit: Audit,
        metrics: Arc<Metrics>,
        file: Option<PathBuf>,
    ) -> Result<Arc<Quarantine>, QuarantineError> {
        let (requests, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let held = file.as_ref().map(|f| restore(f)).unwrap_or_default();
        if !held.is_empty() {
            tracing::warn!(
                sources = held.len(),
                "sources quarantined before the restart stay quarantined for what remains of their time"
            );
        }
        metrics.set_quarantined(held.len());
        let q = Arc::new(Quarantine {
            windows: Mutex::new(HashMap::new()),
            held: Mutex::new(held),
            kernel: Mutex::new(()),
            requests,
            audit,
            metrics,
            file,
        });
        let weak = Arc::downgrade(&q);
        std::thread::Builder::new()
            .name("quarantine".into())
            .spawn(move || worker(&weak, &rx))
            .map_err(QuarantineError::Worker)?;
        Ok(q)
    }

    /// Counts a violation (see [`Violation`]). True when the source is now quarantined (or
    /// already was): the caller closes the connection.
    pub fn violation(&self, v: &Violation<'_>) -> bool {
        let Some(settings) = v.settings else {
            return false;
        };
        let address = v.client.ip();
        let Some(violations) = self.count(v.conduit, address, settings) else {
            return false;
        };
        let critical = (v.critical_asset)();
        if critical.is_some() || v.mode == Mode::Monitor {
            let note = match critical {
                Some(a) => format!(
                    "asset `{a}` is critical: quarantine is off for it, its violations are only audited"
                ),
                None => "monitor mode: quarantine is recorded, not enforced".to_owned(),
            };
            let mut e = event(v, "would_quarantine", settings, violations);
            e.message = format!("{}; {note}", e.message);
            if let Some(q) = e
                .zonegate
                .quarantine
                .as_mut()
                .and_then(|v| v.as_object_mut())
            {
                q.insert("note".into(), note.into());
            }
            self.audit.emit(e);
            return false;
        }
        if self.is_held(address) {
            return true;
        }
        let request = Request {
            address,
            conduit: v.conduit.to_owned(),
            duration: settings.duration,
            violations,
            event: event(v, "quarantine", settings, violations),
        };
        match self.requests.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => {
                tracing::error!(address = %r.address, "quarantine queue full: source not quarantined");
                self.failed(r, "the quarantine queue is full");
            }
        }
        true
    }

    /// Records a violation; the number of violations in the window when it exceeds `after`
    /// (and forgets the window, so the next crossing takes `after` more).
    fn count(&self, conduit: &str, address: IpAddr, s: QuarantineSettings) -> Option<u32> {
        let now = Instant::now();
        let mut windows = lock(&self.windows);
        let key = (conduit.to_owned(), address);
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED {
            evict(&mut windows, now);
        }
        let w = windows.entry(key.clone()).or_insert_with(|| Window {
            times: VecDeque::new(),
            within: s.within,
        });
        w.within = s.within;
        w.times.push_back(now);
        while w
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > s.within)
        {
            w.times.pop_front();
        }
        let limit = usize::try_from(s.after).unwrap_or(usize::MAX);
        while w.times.len() > limit.saturating_add(1) {
            w.times.pop_front();
        }
        if w.times.len() > limit {
            let n = u32::try_from(w.times.len()).unwrap_or(u32::MAX);
            windows.remove(&key);
            Some(n)
        } else {
            None
        }
    }

    /// Whether `address` is held in quarantine now.
    pub fn is_held(&self, address: IpAddr) -> bool {
        let now = Instant::now();
        lock(&self.held)
            .get(&address)
            .is_some_and(|h| h.expires > now)
    }

    /// The sources held now, oldest address first; forgets those whose time is up.
    pub fn list(&self) -> Vec<HeldSource> {
        let now = Instant::now();
        let mut held = lock(&self.held);
        held.retain(|_, h| h.expires > now);
        self.metrics.set_quarantined(held.len());
        held.iter()
            .map(|(address, h)| HeldSource {
                address: *address,
                conduit: h.conduit.clone(),
                since: rfc3339(h.since),
                until: rfc3339(h.until),
                remaining_seconds: ceil_secs(h.expires.saturating_duration_since(now)),
                violations: h.violations,
            })
            .collect()
    }

    /// Applies `ruleset` with the sources held now in its quarantine sets, each with its
    /// remaining time. With `model` (a reload), sources whose conduit no longer quarantines,
    /// or that became critical assets, are released.
    pub fn apply(&self, ruleset: &Ruleset, model: Option<&Model>) -> Result<(), NftError> {
        let _kernel = lock(&self.kernel);
        let now = Instant::now();
        let keep = |address: &IpAddr, h: &Held| {
            h.expires > now
                && model.is_none_or(|m| {
                    let quarantines = m.conduits.iter().any(|c| {
                        c.name == h.conduit
                            && c.inspection
                                .as_ref()
                                .is_some_and(|i| i.quarantine.is_some())
                    });
                    let critical = m.asset_at(*address).is_some_and(|a| a.critical);
                    quarantines && !critical
                })
        };
        let elements: Vec<Quarantined> = lock(&self.held)
            .iter()
            .filter(|(a, h)| keep(a, h))
            .map(|(address, h)| Quarantined {
                address: *address,
                timeout: Duration::from_secs(ceil_secs(h.expires.saturating_duration_since(now))),
            })
            .collect();
        nft::apply(&ruleset.clone().with_quarantined(elements))?;
        let mut held = lock(&self.held);
        held.retain(|address, h| {
            let k = keep(address, h);
            if !k && h.expires > now {
                tracing::warn!(%address, conduit = %h.conduit, "released from quarantine: the new configuration does not quarantine it");
            }
            k
        });
        self.metrics.set_quarantined(held.len());
        self.save(&held);
        Ok(())
    }

    /// Writes the sources held to [`FILE`] (a new file renamed over the old, so that a crash
    /// leaves one or the other whole). A failure is logged: the kernel holds them regardless.
    fn save(&self, held: &BTreeMap<IpAddr, Held>) {
        let Some(path) = &self.file else { return };
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let saved: Vec<Saved> = held
            .iter()
            .map(|(address, h)| Saved {
                address: *address,
                conduit: h.conduit.clone(),
                since: unix(h.since),
                until: unix(h.until),
                violations: h.violations,
            })
            .collect();
        let written = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let partial = path.with_extension("json.new");
                std::fs::write(&partial, bytes)?;
                std::fs::rename(&partial, path)
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the quarantined sources; a restart would release them");
        }
    }

    /// The worker's part: holds the source, adds it to the kernel's set, audits the outcome.
    fn enforce(&self, r: Request) {
        let _kernel = lock(&self.kernel);
        let now = Instant::now();
        {
            let mut held = lock(&self.held);
            held.retain(|_, h| h.expires > now);
            if held.contains_key(&r.address) {
                // Another connection of the same source got here first.
                return;
            }
            if held.len() >= MAX_HELD {
                drop(held);
                self.failed(r, "too many sources are quarantined already");
                return;
            }
            let since = SystemTime::now();
            held.insert(
                r.address,
                Held {
                    conduit: r.conduit.clone(),
                    since,
                    until: since.checked_add(r.duration).unwrap_or(since),
                    expires: now.checked_add(r.duration).unwrap_or(now),
                    violations: r.violations,
                },
            );
        }
        match nft::quarantine::add(r.address, r.duration) {
            Ok(()) => {
                let count = {
                    let held = lock(&self.held);
                    held.len()
                };
                self.metrics.quarantined(&r.conduit);
                self.metrics.set_quarantined(count);
                self.save(&lock(&self.held));
                tracing::warn!(address = %r.address, conduit = %r.conduit, seconds = r.duration.as_secs(), "source quarantined");
                self.audit.emit(r.event);
            }
            Err(e) => {
                lock(&self.held).remove(&r.address);
                tracing::error!(error = %e, "cannot quarantine");
                self.failed(r, &e.to_string());
            }
        }
    }

    /// The `quarantine` event of a source that could not be quarantined.
    fn failed(&self, r: Request, why: &str) {
        let mut e = r.event;
        e.event.outcome = "failure";
        e.message = format!("{}; NOT quarantined: {why}", e.message);
        if let Some(q) = e
            .zonegate
            .quarantine
            .as_mut()
            .and_then(|v| v.as_object_mut())
        {
            q.remove("until");
            q.insert("error".into(), why.into());
        }
        self.audit.emit(e);
    }
}

/// The sources in `path` whose time is not up, held again for what remains of it. A missing
/// file holds none; an unreadable one is logged and holds none.
fn restore(path: &std::path::Path) -> BTreeMap<IpAddr, Held> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_LEN).read_to_end(&mut bytes));
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the quarantined sources of the last run");
            return BTreeMap::new();
        }
    }
    let saved: Vec<Saved> = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the quarantined sources of the last run");
            return BTreeMap::new();
        }
    };
    let now = SystemTime::now();
    let instant = Instant::now();
    let at = |secs: u64| {
        SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    saved
        .into_iter()
        .filter_map(|s| {
            let until = at(s.until);
            let remaining = until.duration_since(now).ok()?;
            Some((
                s.address,
                Held {
                    conduit: s.conduit,
                    since: at(s.since),
                    until,
                    expires: instant.checked_add(remaining)?,
                    violations: s.violations,
                },
            ))
        })
        .take(MAX_HELD)
        .collect()
}

fn worker(q: &Weak<Quarantine>, rx: &Receiver<Request>) {
    while let Ok(r) = rx.recv() {
        match q.upgrade() {
            Some(q) => q.enforce(r),
            None => return,
        }
    }
}

/// Makes room for one more window: those that ran out, else the stalest.
fn evict(windows: &mut HashMap<(String, IpAddr), Window>, now: Instant) {
    windows.retain(|_, w| {
        w.last()
            .is_some_and(|t| now.saturating_duration_since(t) <= w.within)
    });
    if windows.len() >= MAX_TRACKED
        && let Some(key) = windows
            .iter()
            .min_by_key(|(_, w)| w.last())
            .map(|(k, _)| k.clone())
    {
        windows.remove(&key);
    }
}

/// The `quarantine` (or `would_quarantine`) event: the connection's event (conduit, places,
/// policy), the settings, and the violation that crossed the line.
fn event(
    v: &Violation<'_>,
    decision: &'static str,
    s: QuarantineSettings,
    violations: u32,
) -> Event {
    let (client, what) = (v.client, v.what);
    let until = SystemTime::now()
        .checked_add(s.duration)
        .map(rfc3339)
        .unwrap_or_default();
    let within = humantime::format_duration(s.within);
    let reason = if decision == "quarantine" {
        format!(
            "{violations} violations within {within} (more than {}), the last: {what}; {} dropped in the kernel for {} (until {until})",
            s.after,
            client.ip(),
            humantime::format_duration(s.duration)
        )
    } else {
        format!(
            "{violations} violations within {within} (more than {}), the last: {what}",
            s.after
        )
    };
    let outcome = "success";
    let mut e = (v.event)(outcome, decision, reason);
    let mut detail = serde_json::json!({
        "after": s.after,
        "within_seconds": s.within.as_secs(),
        "for_seconds": s.duration.as_secs(),
        "violations": violations,
        "set": Ruleset::quarantine_set(nft::ruleset::Family::of_addr(client.ip())),
    });
    if decision == "quarantine"
        && let Some(map) = detail.as_object_mut()
    {
        map.insert("until".into(), until.into());
    }
    e.zonegate.quarantine = Some(detail);
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn settings(after: u32, within: u64) -> QuarantineSettings {
        QuarantineSettings {
            after,
            within: Duration::from_secs(within),
            duration: Duration::from_secs(4),
            count_rate_limits: false,
        }
    }

    fn quarantine() -> Arc<Quarantine> {
        let (audit, _writer) = Audit::start(&crate::audit::Settings::default()).unwrap();
        Quarantine::start(audit, Arc::new(Metrics::new()), None).unwrap()
    }

    #[test]
    fn held_sources_survive_a_restart_with_what_remains_of_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE);
        let (audit, _writer) = Audit::start(&crate::audit::Settings::default()).unwrap();
        let q =
            Quarantine::start(audit.clone(), Arc::new(Metrics::new()), Some(file.clone())).unwrap();
        let now = SystemTime::now();
        let mut held = BTreeMap::new();
        for (address, seconds) in [("10.30.0.10", 60), ("10.30.0.11", 0)] {
            held.insert(
                address.parse().unwrap(),
                Held {
                    conduit: "scada-bess".into(),
                    since: now,
                    until: now + Duration::from_secs(seconds),
                    expires: Instant::now() + Duration::from_secs(seconds),
                    violations: 4,
                },
            );
        }
        q.save(&held);
        drop(q);

        let q = Quarantine::start(audit, Arc::new(Metrics::new()), Some(file.clone())).unwrap();
        let listed = q.list();
        assert_eq!(
            listed.len(),
            1,
            "the one whose time is up is not held: {listed:?}"
        );
        assert_eq!(listed[0].address.to_string(), "10.30.0.10");
        assert_eq!(listed[0].conduit, "scada-bess");
        assert_eq!(listed[0].violations, 4);
        assert!(
            (58..=61).contains(&listed[0].remaining_seconds),
            "{listed:?}"
        );

        // A damaged file holds nothing and does not stop the start.
        std::fs::write(&file, b"{not json").unwrap();
        assert!(restore(&file).is_empty());
        assert!(restore(&dir.path().join("absent.json")).is_empty());
    }

    #[test]
    fn more_than_after_within_the_window_crosses_the_line_once() {
        let q = quarantine();
        let a: IpAddr = "10.30.0.10".parse().unwrap();
        let s = settings(3, 10);
        assert_eq!(q.count("c", a, s), None);
        assert_eq!(q.count("c", a, s), None);
        assert_eq!(q.count("c", a, s), None);
        assert_eq!(q.count("c", a, s), Some(4));
        // the window starts again
        assert_eq!(q.count("c", a, s), None);
        // per conduit and per source
        let b: IpAddr = "10.30.0.11".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(q.count("c", b, s), None);
            assert_eq!(q.count("d", a, s), None);
        }
    }

    #[test]
    fn violations_outside_the_window_do_not_count() {
        let q = quarantine();
        let a: IpAddr = "10.30.0.10".parse().unwrap();
        let s = QuarantineSettings {
            after: 1,
            within: Duration::from_millis(50),
            duration: Duration::from_secs(1),
            count_rate_limits: false,
        };
        assert_eq!(q.count("c", a, s), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(q.count("c", a, s), None);
        assert_eq!(q.count("c", a, s), Some(2));
    }

    #[test]
    fn the_window_map_stays_bounded() {
        let q = quarantine();
        let s = settings(5, 3600);
        for i in 0..(MAX_TRACKED + 100) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000_u32 + i as u32));
            q.count("c", a, s);
        }
        assert!(lock(&q.windows).len() <= MAX_TRACKED);
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(3001)), 4);
        assert_eq!(ceil_secs(Duration::from_secs(4)), 4);
    }

    /// Quarantine takes plain values: the conduit's settings decide whether anything counts, and
    /// where crossing the line is not enforced (monitor mode, a critical asset) the session's
    /// event is asked for a `would_quarantine` and the source is not held.
    #[test]
    fn a_violation_of_plain_values_counts_without_a_route() {
        // The worker runs `nft` for a source that crosses the line; should that ever happen
        // here, it happens in a network namespace of this thread's own (the worker inherits it).
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let q = quarantine();
        let decisions = std::cell::RefCell::new(Vec::new());
        let event = |outcome: &'static str, decision: &'static str, reason: String| {
            decisions.borrow_mut().push((outcome, decision, reason));
            Event::traffic("quarantine", decision)
        };
        let client: SocketAddr = "10.30.0.10:50000".parse().unwrap();
        let report = |settings, mode, critical: Option<&str>| {
            let critical_asset = || critical;
            q.violation(&Violation {
                conduit: "scada-bess",
                settings,
                client,
                device: "10.40.0.5:502".parse().unwrap(),
                mode,
                what: "write denied",
                critical_asset: &critical_asset,
                event: &event,
            })
        };

        for _ in 0..5 {
            assert!(!report(None, Mode::Enforce, None));
        }
        assert!(
            decisions.borrow().is_empty(),
            "no settings, nothing counted"
        );
        for _ in 0..3 {
            assert!(!report(Some(settings(2, 60)), Mode::Monitor, None));
        }
        for _ in 0..3 {
            assert!(!report(
                Some(settings(2, 60)),
                Mode::Enforce,
                Some("bess-controller")
            ));
        }
        let seen = decisions.borrow();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen.iter()
                .all(|(outcome, decision, reason)| *outcome == "success"
                    && *decision == "would_quarantine"
                    && reason.contains("3 violations")
                    && reason.contains("the last: write denied"))
        );
        assert!(!q.is_held(client.ip()));
    }
}

//! What systemd hears from the daemon (`Type=notify-reload`): READY=1 once enforcing,
//! RELOADING=1 and READY=1 around each reload, STOPPING=1, a STATUS line, and WATCHDOG=1 only
//! while the data path really serves. Without NOTIFY_SOCKET every call is a no-op.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// How often the data path is probed (and the watchdog fed, when systemd asks for it more
/// often than this, at half its interval).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe task may take to run on the runtime that serves the proxies before the data
/// path counts as stalled.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// READY=1: enforcing (after start-up or a reload).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 with the monotonic time systemd needs to tell this reload from an earlier one.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading zones.yaml"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading zones.yaml"),
        ]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Whether the data path serves: the proxies' listeners are up (`listening`) and the runtime
/// that runs their sessions runs a task within [`PROBE_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct DataPath {
    pub runtime: tokio::runtime::Handle,
    pub listening: Arc<AtomicBool>,
}

impl DataPath {
    /// Blocks up to [`PROBE_TIMEOUT`]: a worker of the runtime must pick up a fresh task.
    pub fn serving(&self) -> bool {
        if !self.listening.load(Ordering::Acquire) {
            return false;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(());
        });
        rx.recv_timeout(PROBE_TIMEOUT).is_ok()
    }
}

/// The thread that probes the data path every [`PROBE_INTERVAL`] and, while it serves, feeds
/// systemd's watchdog and calls `alive` (which renews whatever else depends on a serving data
/// path). It runs outside the runtime it probes, so a stalled runtime cannot feed it.
#[derive(Debug)]
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub fn start(
        data_path: DataPath,
        mut alive: impl FnMut(bool) + Send + 'static,
    ) -> std::io::Result<Monitor> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let watchdog = sd_notify::watchdog_enabled();
        let feed_every = watchdog.and_then(|w| w.checked_div(2));
        let period = feed_every.map_or(PROBE_INTERVAL, |f| f.min(PROBE_INTERVAL));
        if let Some(w) = watchdog {
            tracing::info!(interval = ?w, "systemd watchdog enabled: fed while the data path serves");
        }
        let thread = std::thread::Builder::new()
            .name("data-path-monitor".into())
            .spawn(move || {
                let mut last_fed: Option<Instant> = None;
                let mut was_serving = true;
                while !stopped.load(Ordering::Acquire) {
                    let started = Instant::now();
                    let serving = data_path.serving();
                    if serving != was_serving {
                        if serving {
                            tracing::info!("the data path serves again");
                            status("enforcing");
                        } else {
                            tracing::error!(
                                "the data path does not serve (proxy runtime or listeners stalled): the watchdog is no longer fed"
                            );
                            status("data path stalled");
                        }
                        was_serving = serving;
                    }
                    alive(serving);
                    if serving
                        && let Some(every) = feed_every
                        && last_fed.is_none_or(|t| t.elapsed() >= every.saturating_sub(period.checked_div(4).unwrap_or_default()))
                    {
                        send(&[NotifyState::Watchdog]);
                        last_fed = Some(Instant::now());
                    }
                    std::thread::sleep(period.saturating_sub(started.elapsed()));
                }
            })?;
        Ok(Monitor {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

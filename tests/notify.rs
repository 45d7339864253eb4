//! What systemd would hear, on a fake NOTIFY_SOCKET: READY=1 once enforcing, WATCHDOG=1 only
//! while the data path serves, RELOADING=1 and READY=1 around a reload, STOPPING=1.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::bess::Bench;
use support::shipped_zones;

/// The service manager's end: every datagram the daemon sends, with when it arrived.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Manager { socket }
    }

    /// Messages arriving within `d` of now.
    fn listen(&self, d: Duration) -> Vec<(Instant, String)> {
        let end = Instant::now() + d;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        got
    }

    /// Waits up to `d` for a message containing `what`; the messages before it and it.
    fn wait_for(&self, what: &str, d: Duration) -> Vec<String> {
        let end = Instant::now() + d;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = m.lines().any(|l| l == what);
                seen.push(m);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {what} within {d:?}; got {seen:?}");
    }
}

fn watchdogs(messages: &[(Instant, String)]) -> usize {
    messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

#[test]
fn watchdog_is_fed_only_while_the_data_path_serves() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let control = dir.path().join("control.sock");
    let manager = Manager::bind(&notify);
    let bench = Bench::start_env(
        &shipped_zones(),
        None,
        &["--control-socket", control.to_str().unwrap()],
        &[
            &format!("NOTIFY_SOCKET={}", notify.display()),
            // systemd's WatchdogSec=1s: fed every 0.5 s.
            "WATCHDOG_USEC=1000000",
            "ZONEGATE_TEST_HOOKS=1",
        ],
    );

    // READY=1 once the ruleset is applied (Bench waited for it), with a status line.
    let start = manager.wait_for("READY=1", Duration::from_secs(10));
    let ready = start.last().unwrap();
    assert!(ready.contains("STATUS=enforcing"), "{ready}");

    // Serving: fed about twice a second.
    let fed = watchdogs(&manager.listen(Duration::from_secs(3)));
    assert!((4..=8).contains(&fed), "{fed} WATCHDOG=1 in 3 s");
    assert_eq!(bench.op(&["read-holding", "0", "1"])["ok"], true);

    // Every worker of the data path wedged for 4 s: no WATCHDOG=1 in that time (but one that
    // was on its way when the stall began), a status saying why, and feeding again after it.
    let mut c = UnixStream::connect(&control).unwrap();
    c.write_all(b"stall-data-path 4000\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    let stalled_at = Instant::now();
    let during = manager.listen(Duration::from_millis(3500));
    let late: Vec<&(Instant, String)> = during
        .iter()
        .filter(|(t, m)| {
            t.duration_since(stalled_at) > Duration::from_millis(700)
                && m.lines().any(|l| l == "WATCHDOG=1")
        })
        .collect();
    assert!(late.is_empty(), "fed while stalled: {late:?}");
    assert!(
        during
            .iter()
            .any(|(_, m)| m.contains("STATUS=data path stalled")),
        "{during:?}"
    );
    let after = manager.listen(Duration::from_secs(3));
    assert!(watchdogs(&after) >= 2, "not fed after the stall: {after:?}");
    assert_eq!(bench.op(&["read-holding", "0", "1"])["ok"], true);

    // A reload by SIGHUP: RELOADING=1 with the monotonic time systemd needs, then READY=1.
    let e = bench.audit_event("daemon-start", |e| e["event"]["action"] == "daemon-start");
    let pid = nix::unistd::Pid::from_raw(e["zonegate"]["daemon"]["pid"].as_i64().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reload = manager.wait_for("READY=1", Duration::from_secs(20));
    let reloading = reload
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {reload:?}"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");

    // SIGTERM: STOPPING=1.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    manager.wait_for("STOPPING=1", Duration::from_secs(10));
}

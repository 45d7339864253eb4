//! Live reload under traffic: `zonegate reload` (the control socket) and SIGHUP swap zones.yaml,
//! policies and the ruleset as one step while pymodbus keeps talking through the gateway;
//! broken configurations leave the old one in force; connections whose conduit disappeared
//! are closed.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::bess::{Bench, SCADA, zones_variant};
use support::zonegate_bin;

/// A policy for the scada-bess conduit that allows reads, and writes to `register` only.
fn policy_text(register: u16) -> String {
    format!(
        r#"package zonegate.reload

import rego.v1

default decision := {{"allow": false, "reason": "only register {register} is writable", "rule": "reload.default"}}

decision := {{"allow": true, "reason": "", "rule": "reload.read"}} if {{
	input.modbus.access == "read"
}} else := {{"allow": true, "reason": "", "rule": "reload.write_{register}"}} if {{
	input.modbus.access == "write"
	input.modbus.address == {register}
	input.modbus.quantity == 1
}}
"#
    )
}

/// Its tests, which reload runs first: they hold for any `register` but 999.
const POLICY_TESTS: &str = r#"package zonegate.reload_test

import data.zonegate.reload
import rego.v1

test_reads_allowed if {
	reload.decision.allow with input as {"modbus": {"access": "read", "address": 0, "quantity": 1}}
}

test_register_999_refused if {
	not reload.decision.allow with input as {"modbus": {"access": "write", "address": 999, "quantity": 1}}
}
"#;

struct Site {
    dir: tempfile::TempDir,
    zones: PathBuf,
    policy: PathBuf,
    socket: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("reload.rego");
        std::fs::write(&policy, policy_text(40)).unwrap();
        std::fs::write(dir.path().join("reload_test.rego"), POLICY_TESTS).unwrap();
        let p = policy.display().to_string();
        let zones = zones_variant(dir.path(), |t| {
            t.replace(&format!("{}/policies/bess.rego", support::bess::REPO), &p)
        });
        assert!(std::fs::read_to_string(&zones).unwrap().contains(&p));
        let socket = dir.path().join("control.sock");
        Site {
            dir,
            zones,
            policy,
            socket,
        }
    }

    fn start(&self) -> Bench {
        Bench::start_with(
            &self.zones,
            None,
            &["--control-socket", self.socket.to_str().unwrap()],
        )
    }

    fn reload(&self) -> Output {
        std::process::Command::new(zonegate_bin())
            .args(["reload", "--control-socket", self.socket.to_str().unwrap()])
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether a write of `register` passes the gateway now: true when the device answers it,
/// false when the gateway refuses it with exception 01 (the conduit's on_deny).
fn write_passes(bench: &Bench, register: u16) -> bool {
    let r = bench.op(&["write-register", &register.to_string(), "1"]);
    match (r["ok"].as_bool(), r["exception"].as_u64()) {
        (Some(true), _) => true,
        (Some(false), Some(1)) => false,
        _ => panic!("unexpected answer to a write of {register}: {r}"),
    }
}

/// Reads on one connection after another until `stop`: (requests, failures with their answers).
fn traffic(bench: &Bench, stop: &AtomicBool) -> (usize, Vec<Value>) {
    {
        let mut sent = 0;
        let mut failed = Vec::new();
        // 40 reads 50 ms apart per connection: each reload meets live connections.
        let ops: Vec<Value> = (0..40)
            .flat_map(|_| {
                [
                    serde_json::json!(["read-holding", 0, 2]),
                    serde_json::json!(["sleep", 0.05]),
                ]
            })
            .collect();
        let sequence = serde_json::to_string(&ops).unwrap();
        while !stop.load(Ordering::Relaxed) {
            for r in bench.client(SCADA, &["sequence", &sequence]) {
                if r["op"] == "sleep" {
                    continue;
                }
                sent += 1;
                if r["ok"] != true {
                    failed.push(r);
                }
            }
        }
        (sent, failed)
    }
}

/// The broken variants a reload must refuse, each with what the refusal names.
fn breakages() -> Vec<(&'static str, &'static str)> {
    vec![
        ("rego syntax", "reload.rego"),
        ("policy test", "its tests fail"),
        ("zones.yaml", "zones.yaml"),
        ("needs restart", "restart"),
    ]
}

fn break_site(site: &Site, kind: &str, good_policy: &str) -> String {
    match kind {
        "rego syntax" => {
            std::fs::write(&site.policy, format!("{good_policy}\ndecision := {{")).unwrap();
        }
        // Compiles, but refuses reads: its own tests fail.
        "policy test" => {
            std::fs::write(
                &site.policy,
                good_policy.replace(
                    r#"input.modbus.access == "read""#,
                    r#"input.modbus.access == "never""#,
                ),
            )
            .unwrap();
        }
        "zones.yaml" => {
            let t = std::fs::read_to_string(&site.zones).unwrap();
            std::fs::write(
                &site.zones,
                t.replace("  scada-bess:\n", "  scada-bess:\n    colour: red\n"),
            )
            .unwrap();
        }
        "needs restart" => {
            let t = std::fs::read_to_string(&site.zones).unwrap();
            std::fs::write(
                &site.zones,
                t.replace("modbus_port: 15020", "modbus_port: 15021"),
            )
            .unwrap();
        }
        _ => unreachable!(),
    }
    kind.to_owned()
}

#[test]
fn twenty_reloads_under_traffic_fail_no_allowed_request_and_switch_policy_at_once() {
    support::plant::require_root();
    let site = Site::new();
    let bench = site.start();
    let zones_text = std::fs::read_to_string(&site.zones).unwrap();
    assert!(write_passes(&bench, 40) && !write_passes(&bench, 41));

    let stop = AtomicBool::new(false);
    // Scoped, so that a failed assertion still stops the traffic and drops the plant.
    std::thread::scope(|scope| {
        let traffic = scope.spawn(|| traffic(&bench, &stop));
        let _stop = StopOnDrop(&stop);
        // Let the traffic start before the first reload.
        std::thread::sleep(Duration::from_millis(500));

        let mut writable: u16 = 40;
        let mut broken = breakages().into_iter().cycle();
        let (mut good, mut changed, mut refused) = (0, 0, 0);
        for i in 0..20 {
            let before = bench.audit().len();
            if i % 5 == 4 {
                // Broken: refused, and the policy in force stays what it was.
                let (kind, names) = broken.next().unwrap();
                break_site(&site, kind, &policy_text(writable));
                let out = site.reload();
                assert!(
                    !out.status.success(),
                    "reload {i} ({kind}) succeeded: {}",
                    text(&out)
                );
                let said = text(&out);
                assert!(
                    said.contains(names) && said.contains("previous configuration stays in force"),
                    "reload {i} ({kind}): {said}"
                );
                assert!(
                    write_passes(&bench, writable),
                    "reload {i} ({kind}): old policy no longer in force"
                );
                assert!(!write_passes(&bench, writable + 1));
                let e = bench.audit_event("failed daemon-reload", |e| {
                    e["event"]["action"] == "daemon-reload"
                        && e["event"]["sequence"].as_u64().unwrap() as usize > before
                });
                assert_eq!(e["event"]["outcome"], "failure", "{e}");
                assert!(
                    e["zonegate"]["reason"].as_str().unwrap().contains(names),
                    "{e}"
                );
                // Mend it for the next round.
                std::fs::write(&site.zones, &zones_text).unwrap();
                std::fs::write(&site.policy, policy_text(writable)).unwrap();
                refused += 1;
                continue;
            }
            // Good: every other one changes the policy, the rest change zones.yaml only.
            let change_policy = i % 2 == 0;
            if change_policy {
                writable = if writable == 40 { 41 } else { 40 };
                std::fs::write(&site.policy, policy_text(writable)).unwrap();
                changed += 1;
            } else {
                std::fs::write(&site.zones, format!("{zones_text}\n# reload {i}\n")).unwrap();
            }
            let out = site.reload();
            assert!(out.status.success(), "reload {i}: {}", text(&out));
            // The very next request follows the policy now in force.
            assert!(
                write_passes(&bench, writable),
                "reload {i}: write to {writable} refused"
            );
            let other = if writable == 40 { 41 } else { 40 };
            assert!(
                !write_passes(&bench, other),
                "reload {i}: write to {other} still allowed"
            );
            let e = bench.audit_event("daemon-reload", |e| {
                e["event"]["action"] == "daemon-reload"
                    && e["event"]["sequence"].as_u64().unwrap() as usize > before
            });
            assert_eq!(e["event"]["outcome"], "success", "{e}");
            let files = e["zonegate"]["config"]["changes"].as_array().unwrap();
            let policy_named = files
                .iter()
                .any(|f| f["file"] == site.policy.display().to_string());
            assert_eq!(policy_named, change_policy, "reload {i}: {e}");
            good += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let (sent, failed) = traffic.join().unwrap();
        assert!(sent > 100, "only {sent} reads were sent during the reloads");
        assert!(
            failed.is_empty(),
            "{} of {sent} allowed reads failed: {failed:?}",
            failed.len()
        );
        assert_eq!((good, changed, refused), (16, 8, 4));
    });
    // Requests decided under each revision carry it: both policies' revisions appear.
    let revisions: std::collections::BTreeSet<String> = bench
        .audit()
        .iter()
        .filter(|e| e["event"]["action"] == "modbus-request")
        .filter_map(|e| e["zonegate"]["policy_revision"].as_str().map(str::to_owned))
        .collect();
    assert!(revisions.len() >= 2, "{revisions:?}");
    drop(site.dir);
}

/// A live connection is judged by the new policy from its next request, and closed when a reload
/// removes its conduit; SIGHUP reloads as `zonegate reload` does.
#[test]
fn live_connections_follow_the_reload_and_lose_a_removed_conduit() {
    support::plant::require_root();
    let site = Site::new();
    let bench = site.start();
    let zones_text = std::fs::read_to_string(&site.zones).unwrap();
    std::thread::scope(|scope| {
        // One connection: a write allowed now; it waits, open, until the policy has changed; then
        // the same write.
        let go = site.dir.path().join("go-1");
        let sequence = serde_json::json!([
            ["write-register", 40, 5],
            ["wait-file", go],
            ["write-register", 40, 6],
            ["read-holding", 0, 1]
        ])
        .to_string();
        let b = &bench;
        let live = scope.spawn(move || b.client(SCADA, &["sequence", &sequence]));
        bench.audit_event("the first write", |e| {
            e["event"]["action"] == "modbus-request"
                && e["modbus"]["values"] == serde_json::json!([5])
        });
        std::fs::write(&site.policy, policy_text(41)).unwrap();
        let out = site.reload();
        assert!(out.status.success(), "{}", text(&out));
        std::fs::write(&go, "").unwrap();
        let answers = live.join().unwrap();
        assert_eq!(answers[0]["ok"], true, "{answers:?}");
        assert_eq!(
            answers[2]["exception"], 1,
            "the live connection's write after the reload: {answers:?}"
        );
        assert_eq!(answers[3]["ok"], true, "{answers:?}");

        // SIGHUP: the same reload, without an answer; the audit event names the trigger.
        std::fs::write(&site.policy, policy_text(40)).unwrap();
        let pid = daemon_pid(&bench);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        let e = bench.audit_event("a reload by signal", |e| {
            e["event"]["action"] == "daemon-reload"
                && e["zonegate"]["daemon"]["trigger"] == "signal"
        });
        assert_eq!(e["event"]["outcome"], "success", "{e}");
        assert!(write_passes(&bench, 40));

        // Removing the conduit closes a live connection on it, idle or not: one read, then the
        // connection waits, open, across the reload.
        let go = site.dir.path().join("go-2");
        let sequence = serde_json::json!([
            ["read-holding", 0, 1],
            ["wait-file", go],
            ["read-holding", 0, 1]
        ])
        .to_string();
        let before = bench.device_frames().len();
        let b = &bench;
        let live = scope.spawn(move || b.client(SCADA, &["sequence", &sequence]));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bench.device_frames().len() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the first read never reached the device"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let without = remove_conduit(&zones_text, "scada-bess");
        std::fs::write(&site.zones, &without).unwrap();
        let out = site.reload();
        assert!(out.status.success(), "{}", text(&out));
        let e = bench.audit_event("the connection closed by the reload", |e| {
            e["event"]["action"] == "modbus-conduit-removed"
        });
        assert_eq!(e["zonegate"]["conduit"], "scada-bess", "{e}");
        let answers = live.join().unwrap();
        assert_eq!(answers[0]["ok"], true, "{answers:?}");
        assert_ne!(
            answers[2]["ok"], true,
            "a read after its conduit was removed: {answers:?}"
        );

        // Back again.
        std::fs::write(&site.zones, &zones_text).unwrap();
        let out = site.reload();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(bench.op(&["read-holding", "0", "1"])["ok"], true);
    });
}

/// Sets the flag when dropped: also when an assertion fails.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// zones.yaml without one conduit: its line and the more indented lines under it.
fn remove_conduit(zones: &str, name: &str) -> String {
    let head = format!("  {name}:");
    let mut out = Vec::new();
    let mut skipping = false;
    for line in zones.lines() {
        if line == head {
            skipping = true;
            continue;
        }
        if skipping && (line.starts_with("    ") || line.trim().is_empty()) {
            continue;
        }
        skipping = false;
        out.push(line);
    }
    assert!(out.len() < zones.lines().count(), "no conduit {name}");
    out.join("\n") + "\n"
}

/// The pid of `zonegate run` from its daemon-start event.
fn daemon_pid(bench: &Bench) -> i32 {
    let e = bench.audit_event("daemon-start", |e| e["event"]["action"] == "daemon-start");
    e["zonegate"]["daemon"]["pid"].as_i64().unwrap() as i32
}

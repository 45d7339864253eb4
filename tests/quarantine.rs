//! Quarantine with the real kernel, a real daemon and real Modbus peers: a source that breaks
//! scada-bess's policy more than `after` times within `within` is dropped in the kernel for
//! `for`, Modbus and ICMP alike, new and established connections; others are not; after the
//! timeout it passes again. Critical assets are never quarantined, and neither a reload nor a
//! crash and restart releases a quarantined source; `/status` lists it.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use support::bess::{Bench, INVERTER, SCADA, zones_variant};
use support::mgmt::{self, API_KEY};
use support::plant::in_ns;

/// Also a source of scada-bess in these tests: the one that does nothing wrong.
const HMI: &str = "10.30.0.11";
/// A write the BESS policy refuses (grid_disconnect is not writable from SCADA).
const FORBIDDEN: [&str; 3] = ["write-register", "104", "1"];
const READ: [&str; 3] = ["read-holding", "300", "1"];

/// The shipped plant with quarantine on scada-bess (`after: 3, within: 10s, for: FOR`), HMI as
/// a second source, and `edit` applied.
fn zones(dir: &std::path::Path, for_: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    zones_variant(dir, |text| edit(with_quarantine(text, for_)))
}

/// The zones.yaml `text` with quarantine on scada-bess and HMI as its second source.
fn with_quarantine(text: String, for_: &str) -> String {
    let text = text
        .replace("    sources: [scada]\n", "    sources: [scada, hmi]\n")
        .replace(
            "      on_deny: illegal-function   # exception 01; or illegal-data-address (02), or close\n",
            &format!(
                "      on_deny: illegal-function\n      quarantine: {{after: 3, within: 10s, for: {for_}}}\n"
            ),
        );
    assert!(
        text.contains("quarantine: {after: 3"),
        "the edit must apply"
    );
    text
}

fn drop_counter(bench: &Bench) -> u64 {
    support::nft::counter(&bench.plant, "drop_quarantine")
}

/// The quarantine set as `nft` lists it.
fn quarantine_set(bench: &Bench) -> String {
    let out = bench
        .plant
        .gateway_cmd(&["nft", "list", "set", "inet", "zonegate", "quarantine_v4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One ICMP echo request from `src` to `dst` in namespace `ns`: whether the reply came.
fn ping(ns: &str, src: &str, dst: &str) -> bool {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    in_ns(ns, move || {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0))).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let mut packet = [8u8, 0, 0, 0, 0x5a, 0x47, 0, 1, b'z', b'g'];
        let sum = packet
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        sock.send_to(&packet, &SockAddr::from(SocketAddr::new(dst, 0)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(700);
        let mut buf = [0u8; 1500];
        let IpAddr::V4(dst4) = dst else { return false };
        while Instant::now() < deadline {
            let Ok(n) = (&sock).read(&mut buf) else {
                return false;
            };
            let bytes = &buf[..n];
            // IPv4 header (source at 12..16), then ICMP: type 0 (echo reply), our identifier.
            let ihl = usize::from(bytes[0] & 0x0f) * 4;
            if bytes.get(12..16) == Some(&dst4.octets()[..])
                && bytes.get(ihl) == Some(&0)
                && bytes.get(ihl + 4..ihl + 6) == Some(&[0x5a, 0x47][..])
            {
                return true;
            }
        }
        false
    })
}

fn quarantine_event(bench: &Bench, decision: &str) -> Value {
    bench.audit_event(&format!("a quarantine event ({decision})"), |e| {
        e["event"]["action"] == "quarantine" && e["zonegate"]["decision"] == decision
    })
}

/// Sends refused writes on fresh connections, the way a misbehaving client would.
fn break_policy(bench: &Bench, times: usize) -> Vec<Value> {
    (0..times).map(|_| bench.attempt(&FORBIDDEN)).collect()
}

fn refused_with_exception(v: &Value) -> bool {
    v["exception"].as_u64() == Some(1)
}

#[test]
fn a_source_that_breaks_the_policy_too_often_is_dropped_in_the_kernel_until_its_timeout() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path(), "6s", |t| t));
    assert_eq!(bench.op(&READ)["ok"], true);
    let ops = bench.plant.zone_ns("operations");
    assert!(ping(&ops, SCADA, INVERTER), "ICMP crosses before");

    let results = break_policy(&bench, 4);
    assert!(
        results[..3].iter().all(refused_with_exception),
        "three refusals are tolerated: {results:?}"
    );
    assert_ne!(results[3]["ok"], true, "{results:?}");
    let event = quarantine_event(&bench, "quarantine");
    assert_eq!(event["event"]["outcome"], "success", "{event}");
    assert_eq!(event["source"]["ip"], SCADA);
    assert_eq!(event["zonegate"]["conduit"], "scada-bess");
    assert_eq!(event["zonegate"]["quarantine"]["violations"], 4);
    assert_eq!(event["zonegate"]["quarantine"]["for_seconds"], 6);
    assert!(
        quarantine_set(&bench).contains(SCADA),
        "{}",
        quarantine_set(&bench)
    );
    let quarantined_at = Instant::now();

    // Dropped in the kernel: no connection, the device receives nothing, ICMP stops too.
    let frames = bench.device_frames().len();
    let dropped = drop_counter(&bench);
    let attempt = bench.attempt(&READ);
    assert_eq!(attempt["op"], "connect", "{attempt}");
    assert_eq!(attempt["ok"], false, "{attempt}");
    assert!(
        !ping(&ops, SCADA, INVERTER),
        "ICMP from a quarantined source"
    );
    assert!(
        drop_counter(&bench) > dropped,
        "drop_quarantine counts them"
    );
    assert_eq!(
        bench.device_frames().len(),
        frames,
        "nothing reached the device"
    );

    // Another source on the same conduit is not affected.
    let hmi = bench.client(HMI, &READ);
    assert_eq!(hmi[0]["ok"], true, "{hmi:?}");

    // The kernel lets it in again when the timeout ends.
    let until = Duration::from_secs(6);
    thread::sleep(until.saturating_sub(quarantined_at.elapsed()) + Duration::from_secs(1));
    let start = Instant::now();
    loop {
        let r = bench.attempt(&READ);
        if r["ok"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still dropped after the timeout: {r}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(ping(&ops, SCADA, INVERTER), "ICMP crosses again");
    assert!(!quarantine_set(&bench).contains(SCADA));
}

#[test]
fn a_critical_source_is_never_quarantined() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path(), "30s", |t| {
        t.replacen(
            "    kind: scada\n",
            "    kind: scada\n    critical: true\n",
            1,
        )
    }));
    let results = break_policy(&bench, 5);
    assert!(results.iter().all(refused_with_exception), "{results:?}");
    let event = quarantine_event(&bench, "would_quarantine");
    assert!(
        event["zonegate"]["quarantine"]["note"]
            .as_str()
            .unwrap()
            .contains("asset `scada` is critical"),
        "{event}"
    );
    assert!(event["zonegate"]["quarantine"].get("until").is_none());
    assert_eq!(
        bench.op(&READ)["ok"],
        true,
        "a critical source keeps its access"
    );
    assert!(!quarantine_set(&bench).contains(SCADA));
    assert_eq!(drop_counter(&bench), 0);
}

/// `/status` from the management API: the sources it lists in quarantine.
fn status_quarantine(bench: &Bench, dir: &std::path::Path) -> Vec<Value> {
    let reply = mgmt::get(
        &bench.plant,
        dir,
        "/status",
        &["-H", &format!("Authorization: Bearer {API_KEY}")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status: Value = serde_json::from_str(&reply.body).unwrap();
    status["quarantined"]
        .as_array()
        .unwrap_or_else(|| panic!("no quarantine list in {status}"))
        .clone()
}

#[test]
fn a_reload_and_a_restart_keep_a_quarantined_source_quarantined() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    // With the management API, for /status.
    let path = mgmt::zones_with_api(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, with_quarantine(text, "30s")).unwrap();
    let mut bench = Bench::start(&path);
    assert!(status_quarantine(&bench, dir.path()).is_empty());
    break_policy(&bench, 4);
    quarantine_event(&bench, "quarantine");
    kill(
        Pid::from_raw(i32::try_from(bench.daemon).unwrap()),
        Signal::SIGHUP,
    )
    .unwrap();
    let reload = bench.audit_event("the reload", |e| e["event"]["action"] == "daemon-reload");
    assert_eq!(reload["event"]["outcome"], "success", "{reload}");
    // The table was replaced: the set holds the source again, with what remains of its time.
    let set = quarantine_set(&bench);
    assert!(set.contains(SCADA), "{set}");
    assert!(set.contains("expires"), "{set}");
    let attempt = bench.attempt(&READ);
    assert_eq!(
        attempt["ok"], false,
        "still quarantined after the reload: {attempt}"
    );
    let listed = status_quarantine(&bench, dir.path());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], SCADA);
    assert_eq!(listed[0]["conduit"], "scada-bess");
    assert_eq!(listed[0]["violations"], 4);
    let remaining = listed[0]["remaining_seconds"].as_u64().unwrap();
    assert!((1..=30).contains(&remaining), "{listed:?}");

    // A crash and a restart do not release it either: the new daemon holds it again, in the
    // kernel and in /status, for what remains of its time.
    kill(
        Pid::from_raw(i32::try_from(bench.daemon).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    let second_log = dir.path().join("audit-after-restart.jsonl");
    bench.restart_daemon(&second_log);
    let set = quarantine_set(&bench);
    assert!(set.contains(SCADA), "{set}");
    let attempt = bench.attempt(&READ);
    assert_eq!(
        attempt["ok"], false,
        "still quarantined after the restart: {attempt}"
    );
    let listed = status_quarantine(&bench, dir.path());
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["address"], SCADA);
    assert!(listed[0]["remaining_seconds"].as_u64().unwrap() <= remaining);
    // The HMI, never quarantined, is served by the new daemon.
    assert_eq!(bench.client(HMI, &READ)[0]["ok"], true);
}

/// The quarantine's audit events so far.
fn quarantine_events(bench: &Bench) -> Vec<Value> {
    bench
        .audit()
        .into_iter()
        .filter(|e| e["event"]["action"] == "quarantine")
        .collect()
}

/// 200 heartbeat writes (allowed by bess.rego) on one connection, as fast as the device answers.
fn fast_heartbeats(bench: &Bench) -> Vec<Value> {
    let ops: Vec<Value> = (0..200)
        .map(|i| serde_json::json!(["write-register", 40, i]))
        .collect();
    let sequence = serde_json::to_string(&ops).unwrap();
    bench.client(SCADA, &["--sequence", &sequence])
}

#[test]
fn writes_over_the_write_rate_do_not_quarantine_their_source_but_policy_refusals_do() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    let with_rate = |text: String| {
        let text = text.replace(
            "      quarantine: {after: 3, within: 10s, for: 5m}\n",
            "      quarantine: {after: 3, within: 10s, for: 5m}\n      write_rate: {per_second: 1, burst: 1}\n",
        );
        assert!(text.contains("write_rate"), "the edit must apply");
        text
    };
    let bench = Bench::start(&zones(dir.path(), "5m", with_rate));

    let results = fast_heartbeats(&bench);
    assert_eq!(results.len(), 200, "{results:?}");
    let refused = results.iter().filter(|r| refused_with_exception(r)).count();
    assert!(
        refused >= 150,
        "the write rate (1/s, burst 1) refuses nearly all of 200 fast writes with exception 01: {refused} refused"
    );
    assert!(
        results
            .iter()
            .all(|r| r["ok"] == true || refused_with_exception(r)),
        "every write is answered on the one connection, none cut off: {results:?}"
    );
    let limited = bench.audit_event("a write-rate refusal", |e| {
        e["rule"]["name"] == "zonegate.limits.write_rate"
    });
    assert_eq!(limited["source"]["ip"], SCADA, "{limited}");
    assert!(
        quarantine_events(&bench).is_empty(),
        "back-pressure is no attack: {:?}",
        quarantine_events(&bench)
    );
    assert!(!quarantine_set(&bench).contains(SCADA));
    assert_eq!(bench.op(&READ)["ok"], true, "the source still reads");

    // Four refusals by the policy within the window do quarantine it.
    let results = break_policy(&bench, 4);
    assert!(
        results[..3].iter().all(refused_with_exception),
        "{results:?}"
    );
    let event = quarantine_event(&bench, "quarantine");
    assert_eq!(event["source"]["ip"], SCADA, "{event}");
    assert_eq!(event["zonegate"]["quarantine"]["violations"], 4, "{event}");
    assert!(quarantine_set(&bench).contains(SCADA));
}

#[test]
fn a_conduit_that_counts_rate_limits_quarantines_a_source_that_keeps_over_the_rate() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    let counting = |text: String| {
        let text = text.replace(
            "      quarantine: {after: 3, within: 10s, for: 5m}\n",
            "      quarantine: {after: 3, within: 10s, for: 5m, count_rate_limits: true}\n      write_rate: {per_second: 1, burst: 1}\n",
        );
        assert!(text.contains("count_rate_limits"), "the edit must apply");
        text
    };
    let bench = Bench::start(&zones(dir.path(), "5m", counting));

    let results = fast_heartbeats(&bench);
    let refused = results.iter().filter(|r| refused_with_exception(r)).count();
    assert_eq!(
        refused, 3,
        "three refusals tolerated, the fourth quarantines: {results:?}"
    );
    let event = quarantine_event(&bench, "quarantine");
    assert_eq!(event["source"]["ip"], SCADA, "{event}");
    assert!(quarantine_set(&bench).contains(SCADA));
}

//! Modbus/TCP through the gateway with real peers: a pymodbus server as the BESS inverter, a
//! pymodbus client as SCADA, `zonegate run` enforcing the shipped zones.yaml and bess.rego.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::plant::Plant;
use support::{ZONEGATE, shipped_zones};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const INVERTER: &str = "10.21.0.11";
const SCADA: &str = "10.30.0.10";

fn python() -> String {
    let p = format!("{REPO}/.venv/bin/python");
    assert!(
        Path::new(&p).exists(),
        "{p} is missing: run scripts/setup (the README's test command does)"
    );
    p
}

/// A plant with zonegate running on `zones` and one pymodbus BESS device on inverter-1.
struct Bench {
    plant: Plant,
    dir: tempfile::TempDir,
    device: Child,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.device.kill();
        let _ = self.device.wait();
        support::audit::check_log(&self.dir.path().join("audit.jsonl"));
    }
}

impl Bench {
    fn start(zones: &Path) -> Bench {
        let model = zonegate::config::load(zones).unwrap();
        let plant = Plant::build(&model);
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        plant.spawn_in_gateway(&[
            ZONEGATE,
            "run",
            zones.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
        ]);
        let journal = dir.path().join("device.jsonl");
        let mut device = Command::new("ip")
            .args(["netns", "exec", &plant.zone_ns("bess"), &python()])
            .arg(format!("{REPO}/tests/peers/modbus_device.py"))
            .args([
                "--host",
                INVERTER,
                "--port",
                "502",
                "--profile",
                "bess",
                "--journal",
            ])
            .arg(&journal)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(device.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("READY"), "device did not start: {line:?}");
        let bench = Bench { plant, dir, device };
        bench.wait_for_proxy();
        bench
    }

    /// zonegate is ready when its ruleset is in the kernel (the proxy listens before it applies).
    fn wait_for_proxy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .plant
            .gateway_cmd(&["nft", "list", "table", "inet", "zonegate"])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "zonegate did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the pymodbus client as SCADA (or `source`) against inverter-1; one JSON result per op.
    fn client(&self, source: &str, ops: &[&str]) -> Vec<Value> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.plant.zone_ns("operations"),
                &python(),
            ])
            .arg(format!("{REPO}/tests/peers/modbus_client.py"))
            .args([
                "--host",
                INVERTER,
                "--port",
                "502",
                "--source",
                source,
                "--unit",
                "1",
                "--timeout",
                "3",
            ])
            .args(ops)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// One operation on a fresh connection.
    fn op(&self, op: &[&str]) -> Value {
        self.client(SCADA, op).into_iter().next().unwrap()
    }

    /// Raw bytes on one connection from SCADA.
    fn raw(&self, hex: &[&str]) -> Value {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.plant.zone_ns("operations"),
            &python(),
        ])
        .arg(format!("{REPO}/tests/peers/modbus_raw.py"))
        .args([
            "--host",
            INVERTER,
            "--port",
            "502",
            "--source",
            SCADA,
            "--timeout",
            "1",
        ]);
        for h in hex {
            cmd.args(["--hex", h]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "raw failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Request frames the device received, as its journal recorded them.
    fn device_frames(&self) -> Vec<Value> {
        read_lines(&self.dir.path().join("device.jsonl"))
    }

    /// The device's own registers, read from its state file (not through the gateway).
    fn device_register(&self, address: usize) -> u64 {
        let state: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("device.jsonl.state")).unwrap(),
        )
        .unwrap();
        state["holding_registers"][address].as_u64().unwrap()
    }

    fn audit(&self) -> Vec<Value> {
        support::audit::events(&self.dir.path().join("audit.jsonl"))
    }

    /// Waits until the audit log holds an event matching `pred` (the writer is asynchronous).
    fn audit_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self.audit().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no audit event: {what}; log:\n{:#?}",
                self.audit()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The shipped zones.yaml with its policy and profile paths made absolute and `edit` applied.
fn zones_variant(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(shipped_zones()).unwrap();
    let text = text
        .replace("policy: policies/", &format!("policy: {REPO}/policies/"))
        .replace(
            "register_map: profiles/",
            &format!("register_map: {REPO}/profiles/"),
        );
    let path = dir.join("zones.yaml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn exception(v: &Value) -> Option<u64> {
    v["exception"].as_u64()
}

#[test]
fn whitelisted_requests_pass_and_everything_else_is_refused() {
    let bench = Bench::start(&shipped_zones());

    // Reads pass with the device's real values.
    let read = bench.op(&["read-holding", "300", "1"]);
    assert_eq!(read["ok"], true, "{read}");
    assert_eq!(read["registers"], serde_json::json!([4810]));

    // The heartbeat write passes and lands on the device.
    let hb = bench.op(&["write-register", "40", "7"]);
    assert_eq!(hb["ok"], true, "{hb}");
    assert_eq!(bench.device_register(40), 7);

    // A write outside the whitelist gets exception 01 (the conduit's on_deny) and the device's
    // register is unchanged.
    let before = bench.device_frames().len();
    let forbidden = bench.op(&["write-register", "104", "1"]);
    assert_eq!(exception(&forbidden), Some(1), "{forbidden}");
    assert_eq!(bench.device_register(104), 0);

    // FC16 spanning reactive_power_setpoint (102-103, allowed value) and grid_disconnect (104,
    // forbidden): refused whole, neither lands.
    let span = bench.op(&["write-registers", "102", "0", "100", "1"]);
    assert_eq!(exception(&span), Some(1), "{span}");
    assert_eq!(bench.device_register(103), 0);
    assert_eq!(bench.device_register(104), 0);
    // The same for the heartbeat (40) and the unmapped register after it.
    let unmapped = bench.op(&["write-registers", "40", "8", "9"]);
    assert_eq!(exception(&unmapped), Some(1), "{unmapped}");
    assert_eq!(bench.device_register(40), 7);
    assert_eq!(bench.device_register(41), 0);

    // A setpoint within rated limits passes; one outside is refused (i32, scale 0.1 kW: 30000 = 3000 kW).
    let ok = bench.op(&["write-registers", "100", "0", "15000"]);
    assert_eq!(ok["ok"], true, "{ok}");
    let too_high = bench.op(&["write-registers", "100", "0", "30000"]);
    assert_eq!(exception(&too_high), Some(1), "{too_high}");
    assert_eq!(bench.device_register(101), 15000);

    // None of the refused requests reached the device: only the allowed setpoint write did.
    let after: Vec<Value> = bench.device_frames().into_iter().skip(before).collect();
    assert_eq!(after.len(), 1, "{after:#?}");

    // The device sees SCADA's own address (TPROXY), not the gateway's.
    for f in bench.device_frames() {
        assert!(
            f["peer"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{SCADA}:")),
            "{f}"
        );
    }

    // Each decision is an audit event naming conduit, rule and reason.
    let deny = bench.audit_event("deny of grid_disconnect (104)", |e| {
        e["zonegate"]["decision"] == "deny" && e["modbus"]["address"] == 104
    });
    assert_eq!(deny["zonegate"]["conduit"], "scada-bess");
    assert_eq!(deny["zonegate"]["source"]["asset"], "scada");
    assert_eq!(deny["zonegate"]["destination"]["asset"], "inverter-1");
    assert!(!deny["zonegate"]["reason"].as_str().unwrap().is_empty());
    bench.audit_event("allowed heartbeat", |e| {
        e["zonegate"]["decision"] == "allow" && e["modbus"]["address"] == 40
    });
}

#[test]
fn a_refused_request_leaves_the_connection_usable() {
    let bench = Bench::start(&shipped_zones());
    let results = bench.client(
        SCADA,
        &[
            "--sequence",
            r#"[["write-register", 104, 1], ["read-holding", 300, 1], ["write-register", 40, 3]]"#,
        ],
    );
    assert_eq!(exception(&results[0]), Some(1), "{results:?}");
    assert_eq!(results[1]["ok"], true, "{results:?}");
    assert_eq!(results[2]["ok"], true, "{results:?}");
    assert_eq!(bench.device_register(40), 3);
}

#[test]
fn malformed_frames_never_reach_the_device() {
    let bench = Bench::start(&shipped_zones());
    let cases = [
        // transaction 1, protocol id 1 (not Modbus), length 6, unit 1, FC 03 addr 0 qty 1
        ("bad protocol id", "000100010006010300000001"),
        // length 0 (unit id 1 follows, but the length says nothing does)
        ("length 0", "00010000000001"),
        // length 300: more than a 253-byte PDU can need
        ("length 300", "00010000012c01030000000100"),
        // length 10, unit 1, FC 10 write 2 registers at 40, byte count 3 (must be 4), 3 data bytes
        ("byte count mismatch", "00010000000a01100028000203000100"),
        // length 8, unit 1, FC 0F 16 coils at 0, byte count 1 (16 coils need 2), data ff
        (
            "FC15 quantity > 8 * byte count",
            "000100000008010f0000001001ff",
        ),
        // 5 bytes of an MBAP header, then the client goes quiet
        ("truncated MBAP", "0001000000"),
    ];
    let before = bench.device_frames().len();
    for (what, hex) in cases {
        let r = bench.raw(&[hex]);
        assert_eq!(r["sent"], 1, "{what}: {r}");
    }
    assert_eq!(
        bench.device_frames().len(),
        before,
        "a malformed frame reached the device"
    );
    let malformed = bench
        .audit()
        .into_iter()
        .filter(|e| e["event"]["action"] == "modbus-malformed")
        .count();
    // The truncated header is never complete, so it is not an event of its own (the client left).
    assert!(
        malformed >= 5,
        "one audit event per malformed frame: {:#?}",
        bench.audit()
    );
    // The proxy is still up and serving.
    assert_eq!(bench.op(&["read-holding", "300", "1"])["ok"], true);
}

#[test]
fn monitor_mode_forwards_the_forbidden_write_and_records_would_deny() {
    let dir = tempfile::tempdir().unwrap();
    let zones = zones_variant(dir.path(), |t| {
        t.replace("mode: enforce ", "mode: monitor ")
    });
    let bench = Bench::start(&zones);
    let r = bench.op(&["write-register", "104", "1"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(bench.device_register(104), 1, "monitor mode forwards");
    let e = bench.audit_event("would_deny", |e| e["zonegate"]["decision"] == "would_deny");
    assert_eq!(e["modbus"]["address"], 104);
    assert_eq!(e["zonegate"]["mode"], "monitor");
}

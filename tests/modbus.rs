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

use serde_json::Value;
use support::bess::{Bench, SCADA, zones_variant};
use support::shipped_zones;

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
    // What it would have written, for the SOC.
    assert_eq!(deny["modbus"]["values"], serde_json::json!([1]));
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

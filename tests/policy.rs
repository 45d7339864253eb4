//! Rego policies: `zonegate policy test` on the shipped policies and on broken ones, decisions of
//! the shipped BESS and CNC policies on inputs built the way the proxy builds them (VM and
//! interpreter alike), fail-closed evaluation, and register maps.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Instant;

use regorus::Value;
use zonegate::policy::{
    ConnectionInput, Decision, Peer, Policy, PolicyError, REASON_BUDGET, RegisterMap,
};
use zonegate::proto::modbus::{Coils, Registers, Request};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn zonegate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zonegate"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of policies/ in a fresh directory.
fn policies_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "rego") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

// ---------------------------------------------------------------- zonegate policy test

#[test]
fn policy_test_passes_on_the_shipped_policies() {
    for args in [&["policy", "test"][..], &["policy", "test", "policies"][..]] {
        let out = zonegate(args);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(
            t.contains("PASS zonegate.bess_test.test_fc16_spanning_allowed_and_forbidden_register_refused_whole"),
            "{t}"
        );
        assert!(
            t.contains("PASS zonegate.cnc_test.test_feed_override_out_of_range_refused"),
            "{t}"
        );
        assert!(!t.contains("FAIL"), "{t}");
        let summary = t.lines().last().unwrap();
        assert!(summary.ends_with("passed, 0 failed"), "{summary}");
    }
}

#[test]
fn a_broken_test_fails_by_name_and_exits_1() {
    let dir = policies_copy();
    std::fs::write(
        dir.path().join("broken_test.rego"),
        r#"package zonegate.broken_test

import data.zonegate.bess
import rego.v1

# Wrong on purpose: grid_disconnect must be refused.
test_grid_disconnect_is_allowed if {
	d := bess.decision with input as {"modbus": {
		"unit_id": 1, "function": {"code": 6, "name": "write_single_register"},
		"access": "write", "table": "holding_registers", "address": 104, "quantity": 1,
		"values": [1], "unmapped": [], "partial": [],
		"registers": [{"name": "grid_disconnect", "address": 104, "type": "u16", "raw": [1], "value": 1}],
	}}
	d.allow == true
}

test_undefined if {
	data.zonegate.bess.no_such_rule
}

test_passes if true

test_explicitly_false := false
"#,
    )
    .unwrap();
    let out = zonegate(&["policy", "test", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        // A failed body leaves a rule undefined in Rego; `false` needs an explicit false value.
        t.contains("FAIL zonegate.broken_test.test_grid_disconnect_is_allowed (reason: undefined)"),
        "{t}"
    );
    assert!(
        t.contains("FAIL zonegate.broken_test.test_undefined (reason: undefined)"),
        "{t}"
    );
    assert!(t.contains("PASS zonegate.broken_test.test_passes"), "{t}");
    assert!(
        t.contains("PASS zonegate.bess_test.test_heartbeat_write_allowed"),
        "{t}"
    );
    assert!(
        t.contains("FAIL zonegate.broken_test.test_explicitly_false (reason: false)"),
        "{t}"
    );
    assert!(
        t.lines().last().unwrap().ends_with("passed, 3 failed"),
        "{t}"
    );
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let dir = policies_copy();
    let bad = dir.path().join("bess.rego");
    let source = std::fs::read_to_string(&bad).unwrap();
    // A syntax error right after the imports.
    let broken = source.replacen(
        "import rego.v1\n",
        "import rego.v1\n\nbroken := 1 +* 2\n",
        1,
    );
    let expected_line = broken
        .lines()
        .position(|l| l.starts_with("broken"))
        .unwrap()
        + 1;
    std::fs::write(&bad, broken).unwrap();
    let out = zonegate(&["policy", "test", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let file = bad.display().to_string();
    assert!(t.contains(&format!("{file}:")), "{t}");

    let e = Policy::load(&bad).unwrap_err();
    let PolicyError::Rego { file: f, line, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(f, &file);
    assert_eq!(*line as usize, expected_line, "{e}");
    assert!(e.to_string().starts_with(&format!("{file}:{line}:")), "{e}");
}

#[test]
fn a_policy_the_vm_cannot_compile_fails_the_test_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.rego"),
        "package w\nimport rego.v1\nd := input.a\ndecision := {\"allow\": x} if {\n\tx := d with input as {\"a\": true}\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("w_test.rego"),
        "package w_test\nimport rego.v1\ntest_ok if true\n",
    )
    .unwrap();
    let out = zonegate(&["policy", "test", dir.path().to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("w.rego:5:"), "{t}");
    assert!(t.contains("with"), "{t}");
}

// ---------------------------------------------------------------- decisions

fn bess() -> Policy {
    Policy::load(&root().join("policies/bess.rego")).unwrap()
}

fn bess_map() -> Arc<RegisterMap> {
    Arc::new(RegisterMap::load(&root().join("profiles/bess-inverter.yaml")).unwrap())
}

fn scada_to_inverter(map: Option<Arc<RegisterMap>>) -> ConnectionInput {
    ConnectionInput::new(
        "scada-bess",
        "enforce",
        Peer {
            address: "10.30.0.10".parse::<IpAddr>().unwrap(),
            port: None,
            zone: "operations",
            asset: Some("scada"),
            kind: Some("scada"),
        },
        Peer {
            address: "10.21.0.11".parse::<IpAddr>().unwrap(),
            port: Some(502),
            zone: "bess",
            asset: Some("inverter-1"),
            kind: Some("bess-inverter"),
        },
        map,
    )
}

fn words(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The same decision from the VM and from the interpreter.
fn decide(policy: &Policy, input: &Value) -> Decision {
    let vm = policy.vm().decide(input.clone());
    let interpreted = policy.interpreter().decide(input.clone());
    assert_eq!(vm, interpreted, "VM and interpreter disagree on {input}");
    vm
}

fn assert_deny(d: &Decision, rule: &str, reason_part: &str) {
    match d {
        Decision::Deny { reason, rule: r } => {
            assert_eq!(r, rule, "{d:?}");
            assert!(reason.contains(reason_part), "{d:?}");
        }
        Decision::Allow { .. } => panic!("allowed: {d:?}"),
    }
}

#[test]
fn input_has_the_documented_shape() {
    let conn = scada_to_inverter(Some(bess_map()));
    let bytes = words(&[0, 15000]);
    let input = conn.modbus_input(
        1,
        &Request::WriteMultipleRegisters {
            address: 100,
            quantity: 2,
            values: Registers::new(&bytes),
        },
    );
    let expected = Value::from_json_str(
        r#"{
        "conduit": "scada-bess",
        "mode": "enforce",
        "source": {"address": "10.30.0.10", "zone": "operations", "asset": "scada", "kind": "scada"},
        "destination": {"address": "10.21.0.11", "port": 502, "zone": "bess", "asset": "inverter-1", "kind": "bess-inverter", "unit_ids": [1]},
        "modbus": {
            "unit_id": 1,
            "function": {"code": 16, "name": "write_multiple_registers"},
            "access": "write",
            "table": "holding_registers",
            "address": 100,
            "quantity": 2,
            "values": [0, 15000],
            "registers": [{"name": "active_power_setpoint", "address": 100, "type": "i32", "raw": [0, 15000], "value": 1500.0, "unit": "kW"}],
            "unmapped": [],
            "partial": []
        }
    }"#,
    )
    .unwrap();
    assert_eq!(input, expected, "{input}");

    // A read names no values or registers; a peer that is no asset has no asset or kind.
    let conn = ConnectionInput::new(
        "c",
        "monitor",
        Peer {
            address: "10.30.0.99".parse().unwrap(),
            port: None,
            zone: "operations",
            asset: None,
            kind: None,
        },
        Peer {
            address: "10.21.0.11".parse().unwrap(),
            port: Some(502),
            zone: "bess",
            asset: None,
            kind: None,
        },
        Some(bess_map()),
    );
    let input = conn.modbus_input(
        1,
        &Request::ReadHoldingRegisters {
            address: 0,
            quantity: 10,
        },
    );
    let expected = Value::from_json_str(
        r#"{
        "conduit": "c",
        "mode": "monitor",
        "source": {"address": "10.30.0.99", "zone": "operations"},
        "destination": {"address": "10.21.0.11", "port": 502, "zone": "bess", "unit_ids": [1]},
        "modbus": {
            "unit_id": 1,
            "function": {"code": 3, "name": "read_holding_registers"},
            "access": "read",
            "table": "holding_registers",
            "address": 0,
            "quantity": 10
        }
    }"#,
    )
    .unwrap();
    assert_eq!(input, expected, "{input}");
}

/// A heartbeat write (FC 06, register 40) to `unit`, with the input the gateway builds.
fn heartbeat_to(conn: &ConnectionInput, unit: u8) -> Value {
    conn.modbus_input(
        unit,
        &Request::WriteSingleRegister {
            address: 40,
            value: 7,
        },
    )
}

#[test]
fn writes_to_a_unit_the_register_map_does_not_declare_are_refused() {
    let conn = scada_to_inverter(Some(bess_map()));
    // The map describes unit 1 only: another unit's write is not decoded against it ...
    let input = heartbeat_to(&conn, 2);
    assert!(input["modbus"]["registers"] == Value::Undefined, "{input}");
    // ... and both shipped policies refuse it, where unit 1's is allowed.
    let policy = bess();
    assert!(decide(&policy, &heartbeat_to(&conn, 1)).is_allow());
    assert_deny(
        &decide(&policy, &input),
        "bess.unit.undeclared",
        "unit 2 is not one of the units [1] that the register map of inverter-1 declares",
    );
    let cnc = Policy::load(&root().join("policies/cnc.rego")).unwrap();
    let map = Arc::new(RegisterMap::load(&root().join("profiles/cnc.yaml")).unwrap());
    let conn = ConnectionInput::new(
        "hmi-cnc",
        "enforce",
        Peer {
            address: "10.30.0.11".parse().unwrap(),
            port: None,
            zone: "operations",
            asset: Some("hmi"),
            kind: Some("hmi"),
        },
        Peer {
            address: "10.22.0.11".parse().unwrap(),
            port: Some(502),
            zone: "cnc-cell",
            asset: Some("cnc-1"),
            kind: Some("cnc"),
        },
        Some(map),
    );
    // Feed override (holding register 1) at 80 %.
    let feed = |unit| {
        conn.modbus_input(
            unit,
            &Request::WriteSingleRegister {
                address: 1,
                value: 80,
            },
        )
    };
    assert!(
        decide(&cnc, &feed(1)).is_allow(),
        "{:?}",
        decide(&cnc, &feed(1))
    );
    assert_deny(&decide(&cnc, &feed(9)), "cnc.unit.undeclared", "unit 9");
}

#[test]
fn bess_decisions_on_gateway_built_inputs() {
    let policy = bess();
    assert_eq!(policy.package(), "zonegate.bess");
    assert_eq!(policy.revision().len(), 64);
    let conn = scada_to_inverter(Some(bess_map()));

    // Allowed: heartbeat, setpoints within limits, reads.
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteSingleRegister {
                address: 40,
                value: 17,
            },
        ),
    );
    assert_eq!(
        d,
        Decision::Allow {
            rule: "bess.write.heartbeat".into()
        }
    );
    let setpoints = words(&[0, 15000, 0xFFFF, 0xF830]); // 1500.0 kW, -200.0 kvar
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteMultipleRegisters {
                address: 100,
                quantity: 4,
                values: Registers::new(&setpoints),
            },
        ),
    );
    assert_eq!(
        d,
        Decision::Allow {
            rule: "bess.write.setpoint".into()
        }
    );
    let read = Request::ReadInputRegisters {
        address: 10,
        quantity: 6,
    };
    assert!(decide(&policy, &conn.modbus_input(1, &read)).is_allow());

    // Forbidden register.
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteSingleRegister {
                address: 104,
                value: 1,
            },
        ),
    );
    assert_deny(
        &d,
        "bess.write.forbidden_register",
        "grid_disconnect is not writable from SCADA",
    );

    // Out of range: 3000.0 kW.
    let too_much = words(&[0, 30000]);
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteMultipleRegisters {
                address: 100,
                quantity: 2,
                values: Registers::new(&too_much),
            },
        ),
    );
    assert_deny(
        &d,
        "bess.write.out_of_range",
        "active_power_setpoint 3000 kW is outside -2500..2500",
    );

    // FC16 spanning the reactive power setpoint (50.0 kvar, allowed) and grid_disconnect.
    let spanning = words(&[0, 500, 1]);
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteMultipleRegisters {
                address: 102,
                quantity: 3,
                values: Registers::new(&spanning),
            },
        ),
    );
    assert_deny(&d, "bess.write.forbidden_register", "grid_disconnect");

    // Half of a 32-bit setpoint, and an address the map does not name.
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteSingleRegister {
                address: 101,
                value: 1,
            },
        ),
    );
    assert_deny(&d, "bess.write.partial", "active_power_setpoint");
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteSingleRegister {
                address: 41,
                value: 1,
            },
        ),
    );
    assert_deny(&d, "bess.write.unmapped", "[41]");

    // Mask write of the heartbeat: its resulting value is unknown.
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::MaskWriteRegister {
                address: 40,
                and_mask: 0,
                or_mask: 1,
            },
        ),
    );
    assert_deny(&d, "bess.write.partial", "watchdog_heartbeat");

    // Coils: remote_start is not writable.
    let coil = [0b1u8];
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteMultipleCoils {
                address: 1,
                quantity: 1,
                values: Coils::new(&coil, 1),
            },
        ),
    );
    assert_deny(&d, "bess.write.forbidden_register", "remote_start");

    // Broadcast, diagnostics, device identification.
    assert_deny(
        &decide(&policy, &conn.modbus_input(0, &read)),
        "bess.unit.broadcast",
        "unit 0",
    );
    let diag = [0u8, 0];
    assert_deny(
        &decide(
            &policy,
            &conn.modbus_input(
                1,
                &Request::Diagnostics {
                    sub_function: 0,
                    data: &diag,
                },
            ),
        ),
        "bess.function.diagnostics",
        "FC 08",
    );
    let mei = [1u8, 0];
    assert_deny(
        &decide(
            &policy,
            &conn.modbus_input(
                1,
                &Request::EncapsulatedInterface {
                    mei_type: 0x0E,
                    data: &mei,
                },
            ),
        ),
        "bess.function.encapsulated_interface",
        "read_device_identification",
    );

    // A device without a register map: reads pass, writes cannot be judged (the map would name
    // the device's units and registers).
    let unmapped = scada_to_inverter(None);
    assert!(decide(&policy, &unmapped.modbus_input(1, &read)).is_allow());
    let d = decide(
        &policy,
        &unmapped.modbus_input(
            1,
            &Request::WriteSingleRegister {
                address: 40,
                value: 1,
            },
        ),
    );
    assert_deny(
        &d,
        "bess.unit.undeclared",
        "inverter-1 has no register map that declares its units",
    );
}

#[test]
fn bess_decisions_on_json_inputs() {
    let policy = bess();
    let input = |modbus: &str| {
        Value::from_json_str(&format!(
            r#"{{"conduit": "scada-bess", "mode": "enforce",
                "source": {{"address": "10.30.0.10", "zone": "operations", "asset": "scada", "kind": "scada"}},
                "destination": {{"address": "10.21.0.11", "port": 502, "zone": "bess", "asset": "inverter-1", "kind": "bess-inverter", "unit_ids": [1]}},
                "modbus": {modbus}}}"#
        ))
        .unwrap()
    };
    let d = decide(
        &policy,
        &input(
            r#"{"unit_id": 1, "function": {"code": 6, "name": "write_single_register"}, "access": "write",
                "table": "holding_registers", "address": 40, "quantity": 1, "values": [9],
                "registers": [{"name": "watchdog_heartbeat", "address": 40, "type": "u16", "raw": [9], "value": 9}],
                "unmapped": [], "partial": []}"#,
        ),
    );
    assert_eq!(
        d,
        Decision::Allow {
            rule: "bess.write.heartbeat".into()
        }
    );
    let d = decide(
        &policy,
        &input(
            r#"{"unit_id": 1, "function": {"code": 16, "name": "write_multiple_registers"}, "access": "write",
                "table": "holding_registers", "address": 102, "quantity": 2, "values": [0, 12000],
                "registers": [{"name": "reactive_power_setpoint", "address": 102, "type": "i32", "raw": [0, 12000], "value": 1200.0, "unit": "kvar"}],
                "unmapped": [], "partial": []}"#,
        ),
    );
    assert_deny(
        &d,
        "bess.write.out_of_range",
        "reactive_power_setpoint 1200 kvar is outside -1000..1000",
    );
    let d = decide(
        &policy,
        &input(
            r#"{"unit_id": 0, "function": {"code": 3, "name": "read_holding_registers"}, "access": "read", "table": "holding_registers", "address": 0, "quantity": 1}"#,
        ),
    );
    assert_deny(&d, "bess.unit.broadcast", "broadcast");
    let d = decide(
        &policy,
        &input(
            r#"{"unit_id": 1, "function": {"code": 8, "name": "diagnostics"}, "access": "diagnostic", "sub_function": 4}"#,
        ),
    );
    assert_deny(&d, "bess.function.diagnostics", "diagnostics");
    // Not even a modbus object.
    assert!(!decide(&policy, &Value::new_object()).is_allow());
}

#[test]
fn cnc_decisions() {
    let policy = Policy::load(&root().join("policies/cnc.rego")).unwrap();
    let map = Arc::new(RegisterMap::load(&root().join("profiles/cnc.yaml")).unwrap());
    let conn = ConnectionInput::new(
        "hmi-cnc",
        "enforce",
        Peer {
            address: "10.30.0.11".parse().unwrap(),
            port: None,
            zone: "operations",
            asset: Some("hmi"),
            kind: Some("hmi"),
        },
        Peer {
            address: "10.22.0.11".parse().unwrap(),
            port: Some(502),
            zone: "cnc-cell",
            asset: Some("cnc-1"),
            kind: Some("cnc"),
        },
        Some(map),
    );
    let write = |address: u16, values: &[u16]| {
        let bytes = words(values);
        let input = conn.modbus_input(
            1,
            &Request::WriteMultipleRegisters {
                address,
                quantity: u16::try_from(values.len()).unwrap(),
                values: Registers::new(&bytes),
            },
        );
        decide(&policy, &input)
    };
    // program 1001, feed 100 %, spindle 110 %
    assert_eq!(
        write(0, &[1001, 100, 110]),
        Decision::Allow {
            rule: "cnc.write.override".into()
        }
    );
    assert_eq!(
        write(0, &[2010]),
        Decision::Allow {
            rule: "cnc.write.program".into()
        }
    );
    assert_deny(
        &write(0, &[4242]),
        "cnc.write.program_not_released",
        "program 4242",
    );
    assert_deny(
        &write(1, &[121]),
        "cnc.write.out_of_range",
        "feed_override 121 % is outside 0..120",
    );
    assert_deny(
        &write(2, &[49]),
        "cnc.write.out_of_range",
        "spindle_override 49 %",
    );
    assert_deny(
        &write(1, &[100, 100, 100]),
        "cnc.write.forbidden_register",
        "rapid_override",
    );
    let on = [1u8];
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteSingleCoil {
                address: 0,
                value: true,
            },
        ),
    );
    assert_deny(&d, "cnc.write.forbidden_register", "cycle_start");
    let d = decide(
        &policy,
        &conn.modbus_input(
            1,
            &Request::WriteMultipleCoils {
                address: 2,
                quantity: 1,
                values: Coils::new(&on, 1),
            },
        ),
    );
    assert_deny(&d, "cnc.write.forbidden_register", "door_unlock");
    let read = Request::ReadDiscreteInputs {
        address: 0,
        quantity: 2,
    };
    assert_eq!(
        decide(&policy, &conn.modbus_input(1, &read)),
        Decision::Allow {
            rule: "cnc.read".into()
        }
    );
}

// ---------------------------------------------------------------- fail closed

fn deny_reason(d: &Decision) -> String {
    match d {
        Decision::Deny { reason, .. } => reason.clone(),
        Decision::Allow { .. } => panic!("allowed: {d:?}"),
    }
}

#[test]
fn evaluation_fails_closed() {
    let input = Value::from_json_str(r#"{"modbus": {"unit_id": 1}}"#).unwrap();

    let undefined = Policy::from_source(
        "undefined.rego",
        "package t\nimport rego.v1\ndecision := {\"allow\": true} if input.modbus.unit_id == 7\n",
    )
    .unwrap();
    for mut e in [undefined.vm(), undefined.interpreter()] {
        let d = e.decide(input.clone());
        assert_eq!(deny_reason(&d), "policy decision is undefined");
        assert_eq!(d.rule(), zonegate::policy::RULE_UNDEFINED);
    }
    assert_eq!(
        undefined.decide(input.clone()).rule(),
        zonegate::policy::RULE_UNDEFINED
    );

    for (name, decision) in [
        ("string", "{\"allow\": \"true\"}"),
        ("missing", "{\"reason\": \"x\"}"),
        ("number", "{\"allow\": 1}"),
        ("not-object", "true"),
    ] {
        let p = Policy::from_source(
            &format!("{name}.rego"),
            &format!("package t\nimport rego.v1\ndecision := {decision}\n"),
        )
        .unwrap();
        for mut e in [p.vm(), p.interpreter()] {
            let d = e.decide(input.clone());
            assert!(!d.is_allow(), "{name}: {d:?}");
            assert_eq!(d.rule(), zonegate::policy::RULE_MALFORMED, "{name}");
        }
    }

    let runaway = Policy::from_source(
        "runaway.rego",
        "package t\nimport rego.v1\ndecision := {\"allow\": true} if {\n\tcount([x | some x in numbers.range(1, 1000); some y in numbers.range(1, 1000); x == y]) > 0\n}\n",
    )
    .unwrap();
    // The gateway's own path (the per-worker interpreter) and the VM alike.
    let decisions: [&dyn Fn() -> Decision; 2] = [&|| runaway.decide(input.clone()), &|| {
        runaway.vm().decide(input.clone())
    }];
    for decide in decisions {
        let started = Instant::now();
        let d = decide();
        assert_eq!(deny_reason(&d), REASON_BUDGET);
        assert_eq!(d.rule(), zonegate::policy::RULE_BUDGET);
        assert!(
            started.elapsed().as_millis() < 1000,
            "{:?}",
            started.elapsed()
        );
    }

    // An evaluation error: a builtin given the wrong type fails, not allows.
    let error = Policy::from_source(
        "error.rego",
        "package t\nimport rego.v1\ndecision := {\"allow\": true, \"rule\": 5}\n",
    )
    .unwrap();
    let d = error.vm().decide(input);
    assert_eq!(d.rule(), zonegate::policy::RULE_MALFORMED);
}

#[test]
fn policies_without_one_decision_rule_are_refused() {
    let e = Policy::from_source("x.rego", "package x\nimport rego.v1\nallow := true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.rego") && e.contains("no `decision` rule"),
        "{e}"
    );
    let e = Policy::from_source(
        "y.rego",
        "package y\nimport rego.v1\ndecision := {\"allow\": false} if input.a\ndecision := {\"allow\": true} if input.b\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("defined by 2 rules"), "{e}");
}

// ---------------------------------------------------------------- register maps

#[test]
fn shipped_profiles_load() {
    let bess = bess_map();
    assert_eq!(bess.device(), "bess-inverter");
    let sp = bess.get("active_power_setpoint").unwrap();
    assert_eq!((sp.address, sp.kind.as_str()), (100, "i32"));
    let cnc = RegisterMap::load(&root().join("profiles/cnc.yaml")).unwrap();
    assert_eq!(cnc.device(), "cnc");
    assert!(cnc.get("feed_override").is_some());
}

const MAP: &str = "\
device: test
unit_ids: [1]
registers:
  big: {table: holding_registers, address: 10, type: i32, scale: 0.1, unit: kW}
  little: {table: holding_registers, address: 12, type: i32, word_order: little, scale: 0.1}
  temperature: {table: holding_registers, address: 14, type: f32, unit: degC}
  temperature_le: {table: holding_registers, address: 16, type: f32, word_order: little}
  signed: {table: holding_registers, address: 18, type: i16, scale: 2}
  counter: {table: holding_registers, address: 19, type: u32}
  flag: {table: coils, address: 5, type: bool}
";

fn f32_words(v: f32) -> [u16; 2] {
    let b = v.to_be_bytes();
    [
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ]
}

#[test]
fn register_map_decodes_word_order_scale_and_f32() {
    let m = RegisterMap::parse(MAP).unwrap();
    // -1500.5 kW = raw -15005 = 0xFFFFC563
    let d = m.decode("holding_registers", 10, &[0xFFFF, 0xC563, 0xC563, 0xFFFF]);
    assert!(d.unmapped.is_empty() && d.partial.is_empty(), "{d:?}");
    assert_eq!(d.registers.len(), 2);
    assert_eq!(
        (&*d.registers[0].name, d.registers[0].value),
        ("big", -1500.5)
    );
    assert_eq!(d.registers[0].unit.as_deref(), Some("kW"));
    assert_eq!(d.registers[0].kind, "i32");
    assert_eq!(d.registers[0].raw, vec![0xFFFF, 0xC563]);
    assert_eq!(
        (&*d.registers[1].name, d.registers[1].value),
        ("little", -1500.5)
    );
    assert_eq!(d.registers[1].unit, None);

    let [hi, lo] = f32_words(-12.25);
    let d = m.decode("holding_registers", 14, &[hi, lo, lo, hi, 0xFFFE, 0, 7]);
    let values: Vec<(&str, f64)> = d.registers.iter().map(|r| (&*r.name, r.value)).collect();
    assert_eq!(
        values,
        vec![
            ("temperature", -12.25),
            ("temperature_le", -12.25),
            ("signed", -4.0),
            ("counter", 7.0)
        ]
    );

    // A NaN f32 reaches the policy as null.
    let [hi, lo] = f32_words(f32::NAN);
    let d = m.decode("holding_registers", 14, &[hi, lo]);
    assert!(d.registers[0].value.is_nan());
    let v = d.registers_value();
    assert_eq!(v[0]["value"], Value::Null);
}

#[test]
fn register_map_reports_partial_and_unmapped_writes() {
    let m = RegisterMap::parse(MAP).unwrap();
    // 9 unmapped, 10-11 big, 12 first half of little.
    let d = m.decode("holding_registers", 9, &[1, 0, 5, 6]);
    assert_eq!(d.unmapped, vec![9]);
    assert_eq!(d.registers.len(), 1);
    assert_eq!(
        d.partial.iter().map(|p| &**p).collect::<Vec<_>>(),
        vec!["little"]
    );
    // The second half of big only; then 20 (second half of counter) and 21-22 unmapped.
    let d = m.decode("holding_registers", 11, &[1]);
    assert!(d.registers.is_empty());
    assert_eq!(&*d.partial[0], "big");
    let d = m.decode("holding_registers", 20, &[1, 2, 3]);
    assert_eq!(&*d.partial[0], "counter");
    assert_eq!(d.unmapped, vec![21, 22]);
    // Coils.
    let d = m.decode("coils", 4, &[1, 1]);
    assert_eq!(d.unmapped, vec![4]);
    assert_eq!((&*d.registers[0].name, d.registers[0].value), ("flag", 1.0));
    // The same address in another table is not mapped.
    let d = m.decode("input_registers", 10, &[0, 1]);
    assert_eq!(d.unmapped, vec![10, 11]);
}

#[test]
fn register_map_errors_name_line_and_column() {
    let path = root().join("profiles/bess-inverter.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replace(
        "grid_disconnect: {table: holding_registers, address: 104,",
        "grid_disconnect: {table: holding_registers, address: 103,",
    );
    let e = RegisterMap::parse(&broken).unwrap_err().to_string();
    let line = broken
        .lines()
        .position(|l| l.contains("address: 103"))
        .unwrap()
        + 1;
    assert!(e.contains(&format!(":{line}:")), "{e}");
    assert!(e.contains("overlaps `reactive_power_setpoint`"), "{e}");
}

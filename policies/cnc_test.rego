# Unit tests of cnc.rego: `zonegate policy test policies/`.
# Inputs are built as the gateway builds them (policies/README.md), with the register map
# profiles/cnc.yaml decoded by hand.
package zonegate.cnc_test

import data.zonegate.cnc
import rego.v1

connection := {
	"conduit": "hmi-cnc",
	"mode": "enforce",
	"source": {"address": "10.30.0.11", "zone": "operations", "asset": "hmi", "kind": "hmi"},
	"destination": {
		"address": "10.22.0.11", "port": 502, "zone": "cnc-cell",
		"asset": "cnc-1", "kind": "cnc",
		"unit_ids": [1],
	},
}

with_modbus(modbus) := object.union(connection, {"modbus": modbus})

write_single(address, value, registers, unmapped) := with_modbus({
	"unit_id": 1,
	"function": {"code": 6, "name": "write_single_register"},
	"access": "write",
	"table": "holding_registers",
	"address": address,
	"quantity": 1,
	"values": [value],
	"registers": registers,
	"unmapped": unmapped,
	"partial": [],
})

write_multiple(address, values, registers) := with_modbus({
	"unit_id": 1,
	"function": {"code": 16, "name": "write_multiple_registers"},
	"access": "write",
	"table": "holding_registers",
	"address": address,
	"quantity": count(values),
	"values": values,
	"registers": registers,
	"unmapped": [],
	"partial": [],
})

reg(name, address, value) := {"name": name, "address": address, "type": "u16", "raw": [value], "value": value}

percent(name, address, value) := object.union(reg(name, address, value), {"unit": "%"})

# --- allowed

test_read_allowed if {
	d := cnc.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 4, "name": "read_input_registers"},
		"access": "read",
		"table": "input_registers",
		"address": 0,
		"quantity": 22,
	})
	d.allow == true
	d.rule == "cnc.read"
}

test_feed_override_allowed if {
	d := cnc.decision with input as write_single(1, 80, [percent("feed_override", 1, 80)], [])
	d.allow == true
	d.rule == "cnc.write.override"
}

test_feed_override_zero_allowed if {
	d := cnc.decision with input as write_single(1, 0, [percent("feed_override", 1, 0)], [])
	d.allow == true
}

test_both_overrides_in_one_write_allowed if {
	d := cnc.decision with input as write_multiple(1, [100, 120], [percent("feed_override", 1, 100), percent("spindle_override", 2, 120)])
	d.allow == true
}

test_released_program_allowed if {
	d := cnc.decision with input as write_single(0, 2010, [reg("program_number", 0, 2010)], [])
	d.allow == true
	d.rule == "cnc.write.program"
}

# --- refused

# Writes go only to the units the register map declares (a gateway may front several devices).
test_write_to_undeclared_unit_refused if {
	d := cnc.decision with input as object.union(
		write_single(1, 80, [percent("feed_override", 1, 80)], []),
		{"modbus": {"unit_id": 3}},
	)
	d.allow == false
	d.rule == "cnc.unit.undeclared"
}

test_write_without_declared_units_refused if {
	w := write_single(1, 80, [percent("feed_override", 1, 80)], [])
	d := cnc.decision with input as {
		"conduit": w.conduit, "mode": w.mode, "source": w.source, "modbus": w.modbus,
		"destination": object.remove(w.destination, ["unit_ids"]),
	}
	d.allow == false
	d.rule == "cnc.unit.undeclared"
}

test_feed_override_out_of_range_refused if {
	d := cnc.decision with input as write_single(1, 150, [percent("feed_override", 1, 150)], [])
	d.allow == false
	d.rule == "cnc.write.out_of_range"
	d.reason == "feed_override 150 % is outside 0..120"
}

test_spindle_override_below_minimum_refused if {
	d := cnc.decision with input as write_single(2, 40, [percent("spindle_override", 2, 40)], [])
	d.allow == false
	d.rule == "cnc.write.out_of_range"
	d.reason == "spindle_override 40 % is outside 50..120"
}

test_unreleased_program_refused if {
	d := cnc.decision with input as write_single(0, 9999, [reg("program_number", 0, 9999)], [])
	d.allow == false
	d.rule == "cnc.write.program_not_released"
	d.reason == "program 9999 is not released for production"
}

test_rapid_override_refused if {
	d := cnc.decision with input as write_single(3, 100, [percent("rapid_override", 3, 100)], [])
	d.allow == false
	d.rule == "cnc.write.forbidden_register"
}

test_fc16_spanning_allowed_and_forbidden_register_refused_whole if {
	# 1 feed_override (in range), 2 spindle_override (in range), 3 rapid_override (forbidden).
	d := cnc.decision with input as write_multiple(
		1, [100, 100, 100],
		[percent("feed_override", 1, 100), percent("spindle_override", 2, 100), percent("rapid_override", 3, 100)],
	)
	d.allow == false
	d.rule == "cnc.write.forbidden_register"
	d.reason == "rapid_override is not writable from operations"
}

test_one_out_of_range_value_refuses_whole_write if {
	d := cnc.decision with input as write_multiple(1, [100, 200], [percent("feed_override", 1, 100), percent("spindle_override", 2, 200)])
	d.allow == false
	d.rule == "cnc.write.out_of_range"
}

test_cycle_start_refused if {
	d := cnc.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 5, "name": "write_single_coil"},
		"access": "write",
		"table": "coils",
		"address": 0,
		"quantity": 1,
		"values": [true],
		"registers": [{"name": "cycle_start", "address": 0, "type": "bool", "raw": [1], "value": 1}],
		"unmapped": [],
		"partial": [],
	})
	d.allow == false
	d.rule == "cnc.write.forbidden_register"
}

test_unmapped_write_refused if {
	d := cnc.decision with input as write_single(5, 1, [], [5])
	d.allow == false
	d.rule == "cnc.write.unmapped"
}

test_partial_write_refused if {
	d := cnc.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 6, "name": "write_single_register"},
		"access": "write",
		"table": "holding_registers",
		"address": 11,
		"quantity": 1,
		"values": [0],
		"registers": [],
		"unmapped": [],
		"partial": ["tool_offset_length"],
	})
	d.allow == false
	d.rule == "cnc.write.partial"
}

test_mask_write_refused if {
	d := cnc.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 22, "name": "mask_write_register"},
		"access": "write",
		"table": "holding_registers",
		"address": 1,
		"quantity": 1,
		"and_mask": 0,
		"or_mask": 100,
		"registers": [],
		"unmapped": [],
		"partial": ["feed_override"],
	})
	d.allow == false
	d.rule == "cnc.write.partial"
}

test_broadcast_refused if {
	d := cnc.decision with input as write_single(1, 80, [percent("feed_override", 1, 80)], [])
		with input.modbus.unit_id as 0
	d.allow == false
	d.rule == "cnc.unit.broadcast"
}

test_diagnostics_refused if {
	d := cnc.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 8, "name": "diagnostics"},
		"access": "diagnostic",
		"sub_function": 0,
	})
	d.allow == false
	d.rule == "cnc.function.diagnostics"
}

test_write_file_record_refused if {
	d := cnc.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 21, "name": "write_file_record"},
		"access": "write",
	})
	d.allow == false
	d.rule == "cnc.write.undecodable"
}

# Unit tests of bess.rego: `zonegate policy test policies/`.
# Inputs are built as the gateway builds them (policies/README.md), with the register map
# profiles/bess-inverter.yaml decoded by hand.
package zonegate.bess_test

import data.zonegate.bess
import rego.v1

connection := {
	"conduit": "scada-bess",
	"mode": "enforce",
	"source": {"address": "10.30.0.10", "zone": "operations", "asset": "scada", "kind": "scada"},
	"destination": {
		"address": "10.21.0.11", "port": 502, "zone": "bess",
		"asset": "inverter-1", "kind": "bess-inverter",
		"unit_ids": [1],
	},
}

with_modbus(modbus) := object.union(connection, {"modbus": modbus})

# The same connection to a device without a register map: no `destination.unit_ids`.
without_map(modbus) := {
	"conduit": connection.conduit,
	"mode": connection.mode,
	"source": connection.source,
	"destination": object.remove(connection.destination, ["unit_ids"]),
	"modbus": modbus,
}

heartbeat_write(unit_id) := {
	"unit_id": unit_id,
	"function": {"code": 6, "name": "write_single_register"},
	"access": "write",
	"table": "holding_registers",
	"address": 40,
	"quantity": 1,
	"values": [4711],
	"registers": [heartbeat(4711)],
	"unmapped": [],
	"partial": [],
}

read_holding(address, quantity) := with_modbus({
	"unit_id": 1,
	"function": {"code": 3, "name": "read_holding_registers"},
	"access": "read",
	"table": "holding_registers",
	"address": address,
	"quantity": quantity,
})

# FC 16 with the decoded registers, unmapped addresses and partial names the gateway computes.
write_multiple(address, values, registers, unmapped, partial) := with_modbus({
	"unit_id": 1,
	"function": {"code": 16, "name": "write_multiple_registers"},
	"access": "write",
	"table": "holding_registers",
	"address": address,
	"quantity": count(values),
	"values": values,
	"registers": registers,
	"unmapped": unmapped,
	"partial": partial,
})

heartbeat(value) := {"name": "watchdog_heartbeat", "address": 40, "type": "u16", "raw": [value], "value": value}

active_power(raw, kw) := {
	"name": "active_power_setpoint", "address": 100, "type": "i32",
	"raw": raw, "value": kw, "unit": "kW",
}

reactive_power(raw, kvar) := {
	"name": "reactive_power_setpoint", "address": 102, "type": "i32",
	"raw": raw, "value": kvar, "unit": "kvar",
}

grid_disconnect(value) := {"name": "grid_disconnect", "address": 104, "type": "u16", "raw": [value], "value": value}

# --- allowed

test_read_holding_registers_allowed if {
	d := bess.decision with input as read_holding(100, 4)
	d.allow == true
	d.rule == "bess.read"
}

test_read_input_registers_allowed if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 4, "name": "read_input_registers"},
		"access": "read",
		"table": "input_registers",
		"address": 10,
		"quantity": 4,
	})
	d.allow == true
}

test_heartbeat_write_allowed if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 6, "name": "write_single_register"},
		"access": "write",
		"table": "holding_registers",
		"address": 40,
		"quantity": 1,
		"values": [4711],
		"registers": [heartbeat(4711)],
		"unmapped": [],
		"partial": [],
	})
	d.allow == true
	d.rule == "bess.write.heartbeat"
}

test_active_power_setpoint_in_range_allowed if {
	d := bess.decision with input as write_multiple(100, [0, 15000], [active_power([0, 15000], 1500.0)], [], [])
	d.allow == true
	d.rule == "bess.write.setpoint"
}

test_setpoint_limits_are_inclusive if {
	d1 := bess.decision with input as write_multiple(100, [0, 25000], [active_power([0, 25000], 2500.0)], [], [])
	d1.allow == true
	d2 := bess.decision with input as write_multiple(100, [65535, 40536], [active_power([65535, 40536], -2500.0)], [], [])
	d2.allow == true
}

test_both_setpoints_in_one_write_allowed if {
	d := bess.decision with input as write_multiple(
		100, [0, 10000, 65535, 63536],
		[active_power([0, 10000], 1000.0), reactive_power([65535, 63536], -200.0)],
		[], [],
	)
	d.allow == true
	d.rule == "bess.write.setpoint"
}

# --- refused

test_active_power_out_of_range_refused if {
	d := bess.decision with input as write_multiple(100, [0, 30000], [active_power([0, 30000], 3000.0)], [], [])
	d.allow == false
	d.rule == "bess.write.out_of_range"
	d.reason == "active_power_setpoint 3000 kW is outside -2500..2500"
}

test_reactive_power_out_of_range_refused if {
	d := bess.decision with input as write_multiple(102, [65535, 55535], [reactive_power([65535, 55535], -1000.1)], [], [])
	d.allow == false
	d.rule == "bess.write.out_of_range"
	contains(d.reason, "reactive_power_setpoint -1000.1 kvar")
}

test_non_numeric_setpoint_refused if {
	# A value that is not a number (a NaN or infinite f32 reaches the policy as null) is refused.
	d := bess.decision with input as write_multiple(100, [32704, 0], [active_power([32704, 0], null)], [], [])
	d.allow == false
	d.rule == "bess.write.out_of_range"
}

test_grid_disconnect_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 6, "name": "write_single_register"},
		"access": "write",
		"table": "holding_registers",
		"address": 104,
		"quantity": 1,
		"values": [1],
		"registers": [grid_disconnect(1)],
		"unmapped": [],
		"partial": [],
	})
	d.allow == false
	d.rule == "bess.write.forbidden_register"
	d.reason == "grid_disconnect is not writable from SCADA"
}

test_fc16_spanning_allowed_and_forbidden_register_refused_whole if {
	# 102-103 reactive power setpoint (in range), 104 grid_disconnect.
	d := bess.decision with input as write_multiple(
		102, [0, 500, 1],
		[reactive_power([0, 500], 50.0), grid_disconnect(1)],
		[], [],
	)
	d.allow == false
	d.rule == "bess.write.forbidden_register"
}

test_unmapped_address_refuses_whole_write if {
	d := bess.decision with input as write_multiple(38, [0, 0, 1], [heartbeat(1)], [38, 39], [])
	d.allow == false
	d.rule == "bess.write.unmapped"
	d.reason == "write to address(es) [38, 39] that the register map does not name"
}

test_partial_write_refused if {
	# Only the low word of the active power setpoint.
	d := bess.decision with input as write_multiple(101, [15000], [], [], ["active_power_setpoint"])
	d.allow == false
	d.rule == "bess.write.partial"
	d.reason == "write covers only part of active_power_setpoint"
}

test_write_without_register_map_refused if {
	d := bess.decision with input as without_map({
		"unit_id": 1,
		"function": {"code": 6, "name": "write_single_register"},
		"access": "write",
		"table": "holding_registers",
		"address": 40,
		"quantity": 1,
		"values": [1],
	})
	d.allow == false
	d.rule == "bess.unit.undeclared"
}

test_write_without_registers_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 6, "name": "write_single_register"},
		"access": "write",
		"table": "holding_registers",
		"address": 40,
		"quantity": 1,
		"values": [1],
	})
	d.allow == false
	d.rule == "bess.write.undecodable"
}

# A Modbus gateway at the inverter's address may front other devices as other units: the
# register map says which units it describes, and writes to any other unit are refused, even
# with registers decoded as for an allowed write.
test_write_to_undeclared_unit_refused if {
	d := bess.decision with input as with_modbus(heartbeat_write(2))
	d.allow == false
	d.rule == "bess.unit.undeclared"
	contains(d.reason, "unit 2")
}

test_write_to_declared_unit_allowed if {
	d := bess.decision with input as with_modbus(heartbeat_write(1))
	d.allow == true
}

test_write_to_second_declared_unit_allowed if {
	d := bess.decision with input as object.union(with_modbus(heartbeat_write(7)), {"destination": {"unit_ids": [1, 7]}})
	d.allow == true
}

test_write_when_the_map_declares_no_units_refused if {
	d := bess.decision with input as without_map(heartbeat_write(1))
	d.allow == false
	d.rule == "bess.unit.undeclared"
}

test_read_of_undeclared_unit_allowed if {
	d := bess.decision with input as object.union(read_holding(100, 2), {"modbus": {"unit_id": 2}})
	d.allow == true
}

test_broadcast_refused if {
	d := bess.decision with input as object.union(read_holding(100, 2), {"modbus": {"unit_id": 0}})
	d.allow == false
	d.rule == "bess.unit.broadcast"
}

test_diagnostics_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 8, "name": "diagnostics"},
		"access": "diagnostic",
		"sub_function": 1,
	})
	d.allow == false
	d.rule == "bess.function.diagnostics"
}

test_device_identification_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 43, "name": "read_device_identification"},
		"access": "diagnostic",
		"mei_type": 14,
	})
	d.allow == false
	d.rule == "bess.function.encapsulated_interface"
	d.reason == "FC 43 read_device_identification is refused"
}

test_canopen_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 43, "name": "canopen_general_reference"},
		"access": "other",
		"mei_type": 13,
	})
	d.allow == false
}

test_coil_write_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 5, "name": "write_single_coil"},
		"access": "write",
		"table": "coils",
		"address": 0,
		"quantity": 1,
		"values": [true],
		"registers": [{"name": "fault_reset", "address": 0, "type": "bool", "raw": [1], "value": 1}],
		"unmapped": [],
		"partial": [],
	})
	d.allow == false
	d.rule == "bess.write.forbidden_register"
}

test_other_functions_refused if {
	d := bess.decision with input as with_modbus({
		"unit_id": 1,
		"function": {"code": 17, "name": "report_server_id"},
		"access": "diagnostic",
	})
	d.allow == false
	d.rule == "bess.function.not_allowed"
}

test_empty_input_refused if {
	d := bess.decision with input as {}
	d.allow == false
}

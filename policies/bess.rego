# SCADA -> BESS (conduit scada-bess): what the site SCADA may do to the battery inverters.
#
# - Reads of the four Modbus tables are allowed.
# - Writes are allowed only to the watchdog heartbeat (any value) and to the power setpoints
#   within the inverter's rated limits. Every register a write touches must be named by the
#   register map (profiles/bess-inverter.yaml) and written whole; one refused register refuses
#   the whole request.
# - Broadcasts (unit 0), FC 08 diagnostics and FC 43 (device identification, CANopen) are refused,
#   and so is a write to a unit the register map does not declare (`unit_ids`).
# - Anything else is refused by default.
#
# The first matching clause of `decision` decides. The gateway evaluates this for every request
# it has not seen on the connection before, so the common cases come first and each clause does
# little: table lookups, no function calls until a request is refused. Input schema:
# policies/README.md.
package zonegate.bess

import rego.v1

# Registers SCADA may write with any value.
free_registers := {"watchdog_heartbeat"}

# Registers SCADA may write within the inverter's rated limits, in the register map's units.
setpoint_limits := {
	"active_power_setpoint": {"min": -2500, "max": 2500},
	"reactive_power_setpoint": {"min": -1000, "max": 1000},
}

tables := {"coils", "discrete_inputs", "holding_registers", "input_registers"}

default decision := {
	"allow": false,
	"reason": "no rule allows this request",
	"rule": "bess.default",
}

decision := refuse("bess.unit.broadcast", "broadcast requests (unit 0) are refused") if {
	input.modbus.unit_id == 0
} else := {"allow": true, "reason": "", "rule": "bess.read"} if {
	# Reads first: they are most of the traffic.
	input.modbus.access == "read"
	input.modbus.table in tables
} else := refuse(
	"bess.unit.undeclared",
	sprintf("%v has no register map that declares its units: writes cannot be judged", [destination_name]),
) if {
	input.modbus.access == "write"
	not input.destination.unit_ids
} else := refuse(
	"bess.unit.undeclared",
	sprintf("unit %v is not one of the units %v that the register map of %v declares", [
		object.get(input.modbus, "unit_id", null), input.destination.unit_ids, destination_name,
	]),
) if {
	# One address may front several devices (a Modbus gateway): writes go only to the
	# units the register map describes.
	input.modbus.access == "write"
	not declared_unit
} else := {"allow": true, "reason": "", "rule": "bess.write.heartbeat"} if {
	# The heartbeat comes every second: one lookup.
	input.modbus.access == "write"
	[reg] := input.modbus.registers
	reg.name in free_registers
	input.modbus.unmapped == []
	input.modbus.partial == []
} else := refuse("bess.function.diagnostics", "FC 08 diagnostics are refused") if {
	input.modbus.function.code == 8
} else := refuse(
	"bess.function.encapsulated_interface",
	sprintf("FC 43 %s is refused", [input.modbus.function.name]),
) if {
	input.modbus.function.code == 43
} else := refuse(
	"bess.function.not_allowed",
	sprintf("%s (FC %d) is not allowed on this conduit", [input.modbus.function.name, input.modbus.function.code]),
) if {
	input.modbus.access != "write"
} else := refuse(
	"bess.write.undecodable",
	"the write names no registers (no register map, or a function without one)",
) if {
	not input.modbus.registers
} else := refuse(
	"bess.write.unmapped",
	sprintf("write to address(es) %v that the register map does not name", [input.modbus.unmapped]),
) if {
	count(input.modbus.unmapped) > 0
} else := refuse(
	"bess.write.partial",
	sprintf("write covers only part of %s", [concat(", ", input.modbus.partial)]),
) if {
	count(input.modbus.partial) > 0
} else := refusal(refused_registers[0]) if {
	count(refused_registers) > 0
} else := {"allow": true, "reason": "", "rule": "bess.write.setpoint"} if {
	input.modbus.unmapped == []
	input.modbus.partial == []
	count(input.modbus.registers) > 0
	count(refused_registers) == 0
}

# The registers this write touches that SCADA may not write (with that value), in address order.
refused_registers := [reg |
	some reg in input.modbus.registers
	not writable(reg)
]

writable(reg) if reg.name in free_registers

writable(reg) if {
	limit := setpoint_limits[reg.name]
	is_number(reg.value)
	reg.value >= limit.min
	reg.value <= limit.max
}

# Why `reg` is refused.
refusal(reg) := refuse(
	"bess.write.out_of_range",
	sprintf("%s %v %s is outside %v..%v", [
		reg.name, reg.value, object.get(reg, "unit", ""),
		setpoint_limits[reg.name].min, setpoint_limits[reg.name].max,
	]),
) if {
	setpoint_limits[reg.name]
} else := refuse(
	"bess.write.forbidden_register",
	sprintf("%s is not writable from SCADA", [reg.name]),
)

refuse(rule, reason) := {"allow": false, "reason": reason, "rule": rule}

# The request's unit is one the destination's register map declares (`unit_ids`).
declared_unit if input.modbus.unit_id in input.destination.unit_ids

# The destination as refusals name it. Total (every lookup has a default): an undefined value of
# a clause would end the decision's chain in the VM and move on in the interpreter.
destination_name := object.get(input, ["destination", "asset"], object.get(input, ["destination", "address"], "the destination"))

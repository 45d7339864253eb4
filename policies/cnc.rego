# HMI / DNC -> CNC (conduit hmi-cnc): what the operations zone may do to the machining centres.
#
# - Reads of the four Modbus tables are allowed.
# - Writes are allowed only to the feed override (0..120 %), the spindle override (50..120 %) and
#   the program number (one of the released programs). Every register a write touches must be
#   named by the register map (profiles/cnc.yaml) and written whole; one refused register
#   refuses the whole request. Commands (cycle start, door unlock ...) and offsets are refused.
# - Broadcasts (unit 0), FC 08 diagnostics and FC 43 are refused, and so is a write to a unit the
#   register map does not declare (`unit_ids`); anything else by default.
#
# The first matching clause of `decision` decides. The gateway evaluates this for every request
# it has not seen on the connection before, so the common cases come first and each clause does
# little: table lookups, no function calls until a write is judged. Input schema:
# policies/README.md.
package zonegate.cnc

import rego.v1

# Writable registers with their allowed ranges, in the register map's units.
override_limits := {
	"feed_override": {"min": 0, "max": 120},
	"spindle_override": {"min": 50, "max": 120},
}

# NC programs released for production (O-numbers); the DNC server loads their text.
released_programs := {1000, 1001, 1002, 2000, 2010}

tables := {"coils", "discrete_inputs", "holding_registers", "input_registers"}

default decision := {
	"allow": false,
	"reason": "no rule allows this request",
	"rule": "cnc.default",
}

decision := refuse("cnc.unit.broadcast", "broadcast requests (unit 0) are refused") if {
	input.modbus.unit_id == 0
} else := {"allow": true, "reason": "", "rule": "cnc.read"} if {
	# Reads first: they are most of the traffic.
	input.modbus.access == "read"
	input.modbus.table in tables
} else := refuse(
	"cnc.unit.undeclared",
	sprintf("%v has no register map that declares its units: writes cannot be judged", [destination_name]),
) if {
	input.modbus.access == "write"
	not input.destination.unit_ids
} else := refuse(
	"cnc.unit.undeclared",
	sprintf("unit %v is not one of the units %v that the register map of %v declares", [
		object.get(input.modbus, "unit_id", null), input.destination.unit_ids, destination_name,
	]),
) if {
	# One address may front several devices (a Modbus gateway): writes go only to the
	# units the register map describes.
	input.modbus.access == "write"
	not declared_unit
} else := refuse("cnc.function.diagnostics", "FC 08 diagnostics are refused") if {
	input.modbus.function.code == 8
} else := refuse(
	"cnc.function.encapsulated_interface",
	sprintf("FC 43 %s is refused", [input.modbus.function.name]),
) if {
	input.modbus.function.code == 43
} else := refuse(
	"cnc.function.not_allowed",
	sprintf("%s (FC %d) is not allowed on this conduit", [input.modbus.function.name, input.modbus.function.code]),
) if {
	input.modbus.access != "write"
} else := refuse(
	"cnc.write.undecodable",
	"the write names no registers (no register map, or a function without one)",
) if {
	not input.modbus.registers
} else := refuse(
	"cnc.write.unmapped",
	sprintf("write to address(es) %v that the register map does not name", [input.modbus.unmapped]),
) if {
	count(input.modbus.unmapped) > 0
} else := refuse(
	"cnc.write.partial",
	sprintf("write covers only part of %s", [concat(", ", input.modbus.partial)]),
) if {
	count(input.modbus.partial) > 0
} else := refusal(refused_registers[0]) if {
	count(refused_registers) > 0
} else := {"allow": true, "reason": "", "rule": "cnc.write.program"} if {
	[reg] := input.modbus.registers
	reg.name == "program_number"
} else := {"allow": true, "reason": "", "rule": "cnc.write.override"} if {
	input.modbus.unmapped == []
	input.modbus.partial == []
	count(input.modbus.registers) > 0
	count(refused_registers) == 0
}

# The registers this write touches that operations may not write (with that value), in
# address order.
refused_registers := [reg |
	some reg in input.modbus.registers
	not writable(reg)
]

writable(reg) if {
	reg.name == "program_number"
	reg.value in released_programs
}

writable(reg) if {
	limit := override_limits[reg.name]
	is_number(reg.value)
	reg.value >= limit.min
	reg.value <= limit.max
}

# Why `reg` is refused.
refusal(reg) := refuse(
	"cnc.write.program_not_released",
	sprintf("program %v is not released for production", [reg.value]),
) if {
	reg.name == "program_number"
} else := refuse(
	"cnc.write.out_of_range",
	sprintf("%s %v %s is outside %v..%v", [
		reg.name, reg.value, object.get(reg, "unit", ""),
		override_limits[reg.name].min, override_limits[reg.name].max,
	]),
) if {
	override_limits[reg.name]
} else := refuse(
	"cnc.write.forbidden_register",
	sprintf("%s is not writable from operations", [reg.name]),
)

refuse(rule, reason) := {"allow": false, "reason": reason, "rule": rule}

# The request's unit is one the destination's register map declares (`unit_ids`).
declared_unit if input.modbus.unit_id in input.destination.unit_ids

# The destination as refusals name it. Total (every lookup has a default): an undefined value of
# a clause would end the decision's chain in the VM and move on in the interpreter.
destination_name := object.get(input, ["destination", "asset"], object.get(input, ["destination", "address"], "the destination"))

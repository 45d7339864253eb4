# SCADA -> BESS (conduit scada-bess): what the site SCADA may do to the battery inverters.
#
# - Reads of the four Modbus tables are allowed.
# - Writes are allowed only to the watchdog heartbeat (any value) and to the power setpoints
#   within the inverter's rated limits. Every register a write touches must be named by the
#   register map (profiles/bess-inverter.yaml) and written whole; one refused register refuses
#   the whole request.
# - Broadcasts (unit 0), FC 08 diagnostics and FC 43 (device identification, CANopen) are refused.
# - Anything else is refused by default.
#
# The first matching clause of `decision` decides. Input schema, and the Rego the gateway's VM
# evaluates like OPA: policies/README.md.
package zonegate.bess

import rego.v1

# Rated limits of the inverter, in the register map's units (kW, kvar).
setpoint_limits := {
	"active_power_setpoint": {"min": -2500, "max": 2500},
	"reactive_power_setpoint": {"min": -1000, "max": 1000},
}

# Registers SCADA may write with any value.
free_registers := {"watchdog_heartbeat"}

tables := {"coils", "discrete_inputs", "holding_registers", "input_registers"}

default decision := {
	"allow": false,
	"reason": "no rule allows this request",
	"rule": "bess.default",
}

decision := refuse("bess.unit.broadcast", "broadcast requests (unit 0) are refused") if {
	input.modbus.unit_id == 0
} else := {"allow": true, "reason": "", "rule": "bess.read"} if {
	# Reads first: they are most of the traffic (the literal saves the VM a function call).
	input.modbus.access == "read"
	input.modbus.table in tables
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
} else := register_refusals[0] if {
	count(register_refusals) > 0
} else := permit(write_rule) if {
	input.modbus.unmapped == []
	input.modbus.partial == []
	count(input.modbus.registers) > 0
	count(register_refusals) == 0
}

# Why each written register is refused, in address order; empty when all are allowed.
register_refusals := [verdict |
	some reg in input.modbus.registers
	verdict := register_verdict(reg)
	verdict.allow == false
]

# The verdict on one written register; defined for every register.
register_verdict(reg) := permit("") if {
	reg.name in free_registers
} else := refuse(
	"bess.write.forbidden_register",
	sprintf("%s is not writable from SCADA", [reg.name]),
) if {
	not reg.name in object.keys(setpoint_limits)
} else := permit("") if {
	within(reg.value, setpoint_limits[reg.name])
} else := refuse(
	"bess.write.out_of_range",
	sprintf("%s %v %s is outside %v..%v", [
		reg.name, reg.value, object.get(reg, "unit", ""),
		setpoint_limits[reg.name].min, setpoint_limits[reg.name].max,
	]),
)

within(value, limit) if {
	is_number(value)
	value >= limit.min
	value <= limit.max
}

write_rule := "bess.write.heartbeat" if {
	every reg in input.modbus.registers {
		reg.name in free_registers
	}
} else := "bess.write.setpoint"

permit(rule) := {"allow": true, "reason": "", "rule": rule}

refuse(rule, reason) := {"allow": false, "reason": reason, "rule": rule}

# HMI -> CNC over OPC UA (conduit hmi-cnc, `inspection.opcua_policy`): what the operations zone
# may do to the machining centres' OPC UA servers.
#
# - Channels (stage `open`): a security policy of `secure_policies` (the deprecated
#   Basic128Rsa15 and Basic256 are refused) with a client certificate, one of
#   `allowed_client_certificates` when that list is not empty; SecurityPolicy None only from the
#   assets of `plaintext_assets`. Encrypted (SignAndEncrypt) channels, whose requests cannot be
#   read, pass only if `allow_uninspected` (stage `uninspected`).
# - Services (stage `service`): session, discovery, read, history read, browse and subscription
#   services are allowed. A write may set only the value of a node of `writable_nodes` to a
#   number in its range, or of the program number node to a released program. A call may only
#   select a released program or reset the alarms (`callable_methods`). Node management, history
#   updates, queries, server registration and unknown services are refused; so is a write or
#   call that does not carry its item. The gateway asks once per item of a Write or Call.
# - Anything else is refused by default.
#
# Rules (a decision's `rule`):
#   opcua.channel.plaintext           SecurityPolicy None: allowed from plaintext_assets, else refused
#   opcua.channel.security_policy     secured channel: refused outside secure_policies, else allowed
#   opcua.channel.certificate         refused: no client certificate, or one not allowed
#   opcua.channel.uninspected         encrypted channel: allowed iff allow_uninspected
#   opcua.read  opcua.browse  opcua.subscribe  opcua.session  opcua.discovery   allowed services
#   opcua.write.node                  allowed write
#   opcua.write.missing  .attribute  .index_range  .value_type  .status  .forbidden_node
#   opcua.write.out_of_range
#   opcua.write.program_not_released  refused writes
#   opcua.call.method                 allowed call
#   opcua.call.missing  .forbidden_method  .arguments  .program_not_released   refused calls
#   opcua.node_management  opcua.history_update  opcua.service.not_allowed     refused services
#   opcua.default                     anything else
#
# The first matching clause of `decision` decides. The gateway evaluates this for every request
# it has not seen on the connection before, so read, publish and browse come first, two
# comparisons each; then writes and calls (`write_decision`, `call_decision`), the other allowed
# services (one table lookup), the refused ones, and the channel stages (once per channel) last.
# The settings that only a site changes (the certificate list, allow_uninspected) reach the
# channel stages as arguments of `channel_decision` and `uninspected_decision`, so that the
# tests can try other values: regorus's VM, which the tests cross-check, cannot see a `with
# data.zonegate.opcua...` override. Input schema: policies/README.md, "The OPC UA input".
package zonegate.opcua

import rego.v1

# --- Site settings: one line each (tests replace the whole line).

# Security policies a secured channel may use.
secure_policies := {"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

# Assets (zones.yaml names) that may open channels with SecurityPolicy None: the legacy HMI panel
# has no certificate. Anyone else must open a secured channel.
plaintext_assets := {"hmi"}

# SHA-1 thumbprints (lowercase hex, no separators) of the client certificates allowed on secured
# channels. Empty: any certificate the CNC server accepts. The server validates trust (chain,
# validity, application URI against its trust list) while the gateway only sees the certificate,
# so this list can only narrow what the server accepts, never widen it.
allowed_client_certificates := set()

# Whether encrypted (SignAndEncrypt) channels, whose requests the gateway cannot read, may pass
# uninspected.
allow_uninspected := false

# --- What operations may change.

# Nodes whose value may be written, with the allowed range (%) and the one built-in type the
# value must have (a Variant in a Variant, a DataValue in a Variant or an array is not it).
writable_nodes := {
	"ns=2;s=Machine.FeedOverride": {"min": 0, "max": 120, "type": "Double"},
	"ns=2;s=Machine.SpindleOverride": {"min": 50, "max": 120, "type": "Double"},
}

# The active program: writable only to a released program, as a UInt32.
program_node := "ns=2;s=Machine.ProgramNumber"

program_type := "UInt32"

# NC programs released for production (O-numbers), as in cnc.rego.
released_programs := {1000, 1001, 1002, 2000, 2010}

# Methods operations may call, each with the object it must be called on. Their arguments are
# checked by `call_decision`: SelectProgram takes one, a released program; ResetAlarm none. A
# method added here without such a check stays refused.
callable_methods := {
	"ns=2;s=Machine.SelectProgram": "ns=2;s=Machine",
	"ns=2;s=Machine.ResetAlarm": "ns=2;s=Machine",
}

# Services allowed whatever nodes they name, with the rule that allows them; read, publish and
# browse too, decided before this table is looked at.
allowed_services := {
	"history_read": "opcua.read",
	"republish": "opcua.subscribe",
	"create_subscription": "opcua.subscribe",
	"modify_subscription": "opcua.subscribe",
	"set_publishing_mode": "opcua.subscribe",
	"delete_subscriptions": "opcua.subscribe",
	"transfer_subscriptions": "opcua.subscribe",
	"create_monitored_items": "opcua.subscribe",
	"modify_monitored_items": "opcua.subscribe",
	"set_monitoring_mode": "opcua.subscribe",
	"set_triggering": "opcua.subscribe",
	"delete_monitored_items": "opcua.subscribe",
	"browse_next": "opcua.browse",
	"translate_browse_paths_to_node_ids": "opcua.browse",
	"register_nodes": "opcua.browse",
	"unregister_nodes": "opcua.browse",
	"create_session": "opcua.session",
	"activate_session": "opcua.session",
	"close_session": "opcua.session",
	"cancel": "opcua.session",
	"get_endpoints": "opcua.discovery",
	"find_servers": "opcua.discovery",
	"find_servers_on_network": "opcua.discovery",
}

node_management_services := {"add_nodes", "add_references", "delete_nodes", "delete_references"}

default decision := {
	"allow": false,
	"reason": "no rule allows this request",
	"rule": "opcua.default",
}

decision := {"allow": true, "reason": "", "rule": "opcua.read"} if {
	# Read, publish and browse first: most of the traffic, decided by two comparisons each.
	input.opcua.stage == "service"
	input.opcua.service == "read"
} else := {"allow": true, "reason": "", "rule": "opcua.subscribe"} if {
	input.opcua.stage == "service"
	input.opcua.service == "publish"
} else := {"allow": true, "reason": "", "rule": "opcua.browse"} if {
	input.opcua.stage == "service"
	input.opcua.service == "browse"
} else := write_decision if {
	input.opcua.stage == "service"
	input.opcua.service == "write"
} else := call_decision if {
	input.opcua.stage == "service"
	input.opcua.service == "call"
} else := {"allow": true, "reason": "", "rule": allowed_services[input.opcua.service]} if {
	# The other allowed services: a lookup in a table, which costs more than the comparisons
	# above. (Not `rule := allowed_services[...]` with `rule` in the head: when that lookup is
	# undefined, regorus's VM ends the else chain there.)
	input.opcua.stage == "service"
	allowed_services[input.opcua.service]
} else := refuse(
	"opcua.node_management",
	sprintf("%s is refused: operations may not change the server's address space", [input.opcua.service]),
) if {
	input.opcua.stage == "service"
	input.opcua.service in node_management_services
} else := refuse(
	"opcua.history_update",
	"history_update is refused: operations may not change the recorded history",
) if {
	input.opcua.stage == "service"
	input.opcua.service == "history_update"
} else := refuse(
	"opcua.service.not_allowed",
	sprintf("service %s (type id %v) is not allowed on this conduit", [input.opcua.service, object.get(input.opcua, "type_id", null)]),
) if {
	input.opcua.stage == "service"
	is_string(input.opcua.service)
} else := channel_decision(input, allowed_client_certificates) if {
	input.opcua.stage == "open"
} else := uninspected_decision(allow_uninspected) if {
	input.opcua.stage == "uninspected"
}

# The decision on one node of a Write: only the whole value of a writable node, within its range.
write_decision := refuse("opcua.write.missing", "the write request carries no node to judge") if {
	not is_object(input.opcua.write)
} else := refuse(
	"opcua.write.attribute",
	sprintf("only the value attribute may be written, not %s of %s", [
		object.get(input.opcua.write, "attribute", "(no attribute)"), written_node,
	]),
) if {
	not input.opcua.write.attribute == "value"
} else := refuse(
	"opcua.write.index_range",
	sprintf("writes of part of a value are refused (index range %s of %s)", [input.opcua.write.index_range, written_node]),
) if {
	input.opcua.write.index_range != ""
} else := refuse(
	"opcua.write.value_type",
	sprintf("%s takes a %s, not %s", [written_node, writable_nodes[input.opcua.write.node_id].type, written_value]),
) if {
	writable_nodes[input.opcua.write.node_id].type != input.opcua.write.value_type
} else := refuse(
	"opcua.write.value_type",
	sprintf("%s takes a %s, not %s", [written_node, program_type, written_value]),
) if {
	input.opcua.write.node_id == program_node
	input.opcua.write.value_type != program_type
} else := refuse(
	"opcua.write.status",
	sprintf("a write may not set the status code of %s (status %v)", [written_node, input.opcua.write.status]),
) if {
	# A written status code is written too (Part 4 5.11.4): only Good, or none, passes.
	input.opcua.write.status != 0
} else := {"allow": true, "reason": "", "rule": "opcua.write.node"} if {
	input.opcua.write.attribute == "value"
	limit := writable_nodes[input.opcua.write.node_id]
	is_number(input.opcua.write.value)
	input.opcua.write.value >= limit.min
	input.opcua.write.value <= limit.max
} else := {"allow": true, "reason": "", "rule": "opcua.write.node"} if {
	input.opcua.write.attribute == "value"
	input.opcua.write.node_id == program_node
	input.opcua.write.value in released_programs
} else := refuse(
	"opcua.write.out_of_range",
	sprintf("%s may be set only to a number in %v..%v, not %s", [
		written_node,
		writable_nodes[input.opcua.write.node_id].min, writable_nodes[input.opcua.write.node_id].max,
		written_value,
	]),
) if {
	writable_nodes[input.opcua.write.node_id]
} else := refuse(
	"opcua.write.program_not_released",
	sprintf("program %s is not released for production", [written_value]),
) if {
	input.opcua.write.node_id == program_node
} else := refuse(
	"opcua.write.forbidden_node",
	sprintf("%s is not writable from operations", [written_node]),
)

# The decision on one method call of a Call: only callable_methods, on their object, with the
# arguments checked here.
call_decision := refuse("opcua.call.missing", "the call request carries no method to judge") if {
	not is_object(input.opcua.call)
} else := refuse(
	"opcua.call.forbidden_method",
	sprintf("method %s may not be called from operations", [called_method]),
) if {
	not callable_methods[input.opcua.call.method_id]
} else := refuse(
	"opcua.call.forbidden_method",
	sprintf("method %s may be called only on %s, not on %s", [
		called_method, callable_methods[input.opcua.call.method_id],
		object.get(input.opcua.call, "object_id", "no object"),
	]),
) if {
	not input.opcua.call.object_id == callable_methods[input.opcua.call.method_id]
} else := {"allow": true, "reason": "", "rule": "opcua.call.method"} if {
	input.opcua.call.method_id == "ns=2;s=Machine.SelectProgram"
	input.opcua.call.object_id == callable_methods["ns=2;s=Machine.SelectProgram"]
	input.opcua.call.argument_types == [program_type]
	[program] := input.opcua.call.arguments
	program in released_programs
} else := {"allow": true, "reason": "", "rule": "opcua.call.method"} if {
	input.opcua.call.method_id == "ns=2;s=Machine.ResetAlarm"
	input.opcua.call.object_id == callable_methods["ns=2;s=Machine.ResetAlarm"]
	input.opcua.call.arguments == []
} else := refuse(
	"opcua.call.program_not_released",
	sprintf("program %s is not released for production", [json.marshal(input.opcua.call.arguments[0])]),
) if {
	input.opcua.call.method_id == "ns=2;s=Machine.SelectProgram"
	count(input.opcua.call.arguments) == 1
} else := refuse(
	"opcua.call.arguments",
	sprintf("method %s does not take the arguments %s", [called_method, json.marshal(object.get(input.opcua.call, "arguments", null))]),
)

# The decision on a channel `request` opens, with `certificates` as allowed_client_certificates
# (a parameter, so that the tests can judge with other lists than the site's).
channel_decision(request, certificates) := {"allow": true, "reason": "", "rule": "opcua.channel.plaintext"} if {
	request.opcua.channel.security_policy == "None"
	request.source.asset in plaintext_assets
} else := refuse(
	"opcua.channel.plaintext",
	sprintf("%s may not open a channel without security (SecurityPolicy None)", [source_name(request.source)]),
) if {
	request.opcua.channel.security_policy == "None"
} else := refuse(
	"opcua.channel.security_policy",
	sprintf("SecurityPolicy %v is not accepted (accepted: %s)", [
		object.get(request.opcua.channel, "security_policy", "(none)"),
		concat(", ", sort(secure_policies)),
	]),
) if {
	not request.opcua.channel.security_policy in secure_policies
} else := refuse(
	"opcua.channel.certificate",
	sprintf("a %s channel needs a client certificate", [request.opcua.channel.security_policy]),
) if {
	not is_string(request.opcua.channel.client_certificate.thumbprint)
} else := refuse(
	"opcua.channel.certificate",
	sprintf("client certificate %s (%v) is not allowed on this conduit", [
		request.opcua.channel.client_certificate.thumbprint,
		object.get(request.opcua.channel.client_certificate, "subject", ""),
	]),
) if {
	count(certificates) > 0
	not request.opcua.channel.client_certificate.thumbprint in certificates
} else := {"allow": true, "reason": "", "rule": "opcua.channel.security_policy"} if {
	request.opcua.channel.security_policy in secure_policies
	certificate_allowed(request.opcua.channel.client_certificate.thumbprint, certificates)
} else := {"allow": false, "reason": "no rule allows this channel", "rule": "opcua.default"}

certificate_allowed(thumbprint, certificates) if {
	is_string(thumbprint)
	count(certificates) == 0
}

certificate_allowed(thumbprint, certificates) if {
	thumbprint in certificates
}

# The decision on an encrypted channel, with `allowed` as allow_uninspected.
uninspected_decision(allowed) := {
	"allow": true,
	"reason": "the channel is encrypted (SignAndEncrypt): its services pass uninspected",
	"rule": "opcua.channel.uninspected",
} if {
	allowed == true
} else := refuse(
	"opcua.channel.uninspected",
	"the channel is encrypted (SignAndEncrypt), so its services cannot be inspected: refused",
)

# For reasons.

written_node := object.get(input.opcua.write, "node_id", "(no node)")

# `110.5 (Double)`, `"110" (String)`.
written_value := sprintf("%s (%v)", [
	json.marshal(object.get(input.opcua.write, "value", null)),
	object.get(input.opcua.write, "value_type", "no type"),
])

called_method := object.get(input.opcua.call, "method_id", "(no method)")

source_name(source) := sprintf("%s (%s)", [source.address, source.asset]) if {
	source.asset
} else := object.get(source, "address", "this source")

refuse(rule, reason) := {"allow": false, "reason": reason, "rule": rule}

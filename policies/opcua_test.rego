# Unit tests of opcua.rego: `zonegate policy test policies/`.
# Inputs are built as the gateway builds them (policies/README.md, "The OPC UA input"): the HMI
# (10.30.0.11) talking to cnc-1's OPC UA server. Every test of `opcua.decision` is cross-checked
# against regorus's VM; the tests that judge with other settings than the file's call the
# functions `decision` uses (`channel_decision`, `uninspected_decision`) with those settings as
# arguments, since the VM cannot see a `with data.zonegate.opcua...` override.
package zonegate.opcua_test

import data.zonegate.opcua
import rego.v1

hmi := {"address": "10.30.0.11", "zone": "operations", "asset": "hmi", "kind": "hmi"}

dnc_server := {"address": "10.30.0.30", "zone": "operations", "asset": "dnc-server", "kind": "server"}

# An address of the operations zone that zones.yaml does not name: no asset, no kind.
unnamed := {"address": "10.30.0.99", "zone": "operations"}

request(source, opcua) := {
	"conduit": "hmi-cnc",
	"mode": "enforce",
	"source": source,
	"destination": {
		"address": "10.22.0.11", "port": 4840, "zone": "cnc-cell",
		"asset": "cnc-1", "kind": "cnc",
	},
	"opcua": opcua,
}

hmi_certificate := {
	"thumbprint": "5c3e0f1d2b7a9e8c4f6a0b1c2d3e4f5a6b7c8d9e",
	"subject": "CN=hmi,O=zonegate test",
	"application_uri": "urn:zonegate:test:hmi",
}

other_certificate := {
	"thumbprint": "0123456789abcdef0123456789abcdef01234567",
	"subject": "CN=laptop,O=somebody",
	"application_uri": "urn:somebody:laptop",
}

# A secured channel as stage `open` shows it: no security_mode (it is inside the encrypted
# request) and no client certificate yet.
secured(policy) := {
	"endpoint_url": "opc.tcp://10.22.0.11:4840/cnc",
	"security_policy": policy,
	"security_policy_uri": concat("#", ["http://opcfoundation.org/UA/SecurityPolicy", policy]),
}

certified(channel, certificate) := object.union(channel, {"client_certificate": certificate})

plaintext := {
	"endpoint_url": "opc.tcp://10.22.0.11:4840/cnc",
	"security_policy": "None",
	"security_policy_uri": "http://opcfoundation.org/UA/SecurityPolicy#None",
	"security_mode": "None",
}

# The HMI's Basic256Sha256 Sign channel, as every service request on it shows it.
signed := object.union(certified(secured("Basic256Sha256"), hmi_certificate), {"security_mode": "Sign"})

open_channel(source, channel) := request(source, {"stage": "open", "channel": channel})

operator := {"identity": "user_name", "user_name": "operator"}

# A service request from the HMI on `channel` after ActivateSession; `item` adds the service's
# own fields (`nodes`, `write`, `call` ...).
service_on(channel, name, type_id, access, item) := request(hmi, object.union(
	{
		"stage": "service",
		"channel": channel,
		"session": operator,
		"service": name,
		"type_id": type_id,
		"access": access,
	},
	item,
))

# The same on the HMI's Sign channel.
service(name, type_id, access, item) := service_on(signed, name, type_id, access, item)

write_item(node_id, attribute, value, value_type) := {
	"node_id": node_id,
	"attribute": attribute,
	"index_range": "",
	"value": value,
	"value_type": value_type,
}

write(node_id, value, value_type) := service("write", 673, "write", {"write": write_item(node_id, "value", value, value_type)})

call(object_id, method_id, arguments, argument_types) := service("call", 712, "call", {"call": {
	"object_id": object_id,
	"method_id": method_id,
	"arguments": arguments,
	"argument_types": argument_types,
}})

select_program(program) := call("ns=2;s=Machine", "ns=2;s=Machine.SelectProgram", [program], ["UInt32"])

allowed(d, rule) if {
	d.allow == true
	d.rule == rule
}

refused(d, rule) if {
	d.allow == false
	d.rule == rule
}

# --- stage open

test_open_basic256sha256_with_certificate_allowed if {
	d := opcua.decision with input as open_channel(hmi, certified(secured("Basic256Sha256"), hmi_certificate))
	allowed(d, "opcua.channel.security_policy")
}

test_open_aes_policies_allowed if {
	every policy in ["Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] {
		d := opcua.decision with input as open_channel(hmi, certified(secured(policy), hmi_certificate))
		allowed(d, "opcua.channel.security_policy")
	}
}

test_open_plaintext_from_hmi_allowed if {
	d := opcua.decision with input as open_channel(hmi, plaintext)
	allowed(d, "opcua.channel.plaintext")
}

test_open_plaintext_from_other_asset_refused if {
	d := opcua.decision with input as open_channel(dnc_server, plaintext)
	refused(d, "opcua.channel.plaintext")
	d.reason == "10.30.0.30 (dnc-server) may not open a channel without security (SecurityPolicy None)"
}

test_open_plaintext_from_unnamed_address_refused if {
	d := opcua.decision with input as open_channel(unnamed, plaintext)
	refused(d, "opcua.channel.plaintext")
	d.reason == "10.30.0.99 may not open a channel without security (SecurityPolicy None)"
}

test_open_deprecated_basic128rsa15_refused if {
	d := opcua.decision with input as open_channel(hmi, certified(secured("Basic128Rsa15"), hmi_certificate))
	refused(d, "opcua.channel.security_policy")
	d.reason == "SecurityPolicy Basic128Rsa15 is not accepted (accepted: Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss, Basic256Sha256)"
}

test_open_deprecated_basic256_refused if {
	d := opcua.decision with input as open_channel(hmi, certified(secured("Basic256"), hmi_certificate))
	refused(d, "opcua.channel.security_policy")
}

test_open_secured_without_certificate_refused if {
	d := opcua.decision with input as open_channel(hmi, secured("Basic256Sha256"))
	refused(d, "opcua.channel.certificate")
	d.reason == "a Basic256Sha256 channel needs a client certificate"
}

test_open_empty_certificate_list_accepts_any_certificate if {
	opcua.allowed_client_certificates == set()
	d := opcua.decision with input as open_channel(hmi, certified(secured("Basic256Sha256"), other_certificate))
	allowed(d, "opcua.channel.security_policy")
}

test_open_listed_certificate_allowed if {
	d := opcua.channel_decision(
		open_channel(hmi, certified(secured("Basic256Sha256"), hmi_certificate)),
		{hmi_certificate.thumbprint},
	)
	allowed(d, "opcua.channel.security_policy")
}

test_open_unlisted_certificate_refused if {
	d := opcua.channel_decision(
		open_channel(hmi, certified(secured("Basic256Sha256"), other_certificate)),
		{hmi_certificate.thumbprint},
	)
	refused(d, "opcua.channel.certificate")
	d.reason == "client certificate 0123456789abcdef0123456789abcdef01234567 (CN=laptop,O=somebody) is not allowed on this conduit"
}

test_open_certificate_list_does_not_apply_to_plaintext if {
	d := opcua.channel_decision(open_channel(hmi, plaintext), {hmi_certificate.thumbprint})
	allowed(d, "opcua.channel.plaintext")
}

test_channel_decision_is_decision_with_the_files_list if {
	every channel in [
		certified(secured("Basic256Sha256"), hmi_certificate), secured("Basic256Sha256"),
		certified(secured("Basic256"), hmi_certificate), plaintext,
	] {
		r := open_channel(hmi, channel)
		d := opcua.decision with input as r
		d == opcua.channel_decision(r, opcua.allowed_client_certificates)
	}
}

# --- stage uninspected

encrypted := request(hmi, {
	"stage": "uninspected",
	"channel": object.union(certified(secured("Basic256Sha256"), hmi_certificate), {"security_mode": "SignAndEncrypt"}),
})

test_uninspected_refused_by_default if {
	opcua.allow_uninspected == false
	d := opcua.decision with input as encrypted
	refused(d, "opcua.channel.uninspected")
	d.reason == "the channel is encrypted (SignAndEncrypt), so its services cannot be inspected: refused"
}

test_uninspected_allowed_when_the_site_allows_it if {
	d := opcua.uninspected_decision(true)
	allowed(d, "opcua.channel.uninspected")
	d.reason == "the channel is encrypted (SignAndEncrypt): its services pass uninspected"
}

test_uninspected_refused_when_the_site_does_not_allow_it if {
	d := opcua.uninspected_decision(false)
	refused(d, "opcua.channel.uninspected")
	opcua.uninspected_decision(opcua.allow_uninspected) == opcua.decision with input as encrypted
}

# --- stage service: allowed services

test_read_allowed if {
	d := opcua.decision with input as service("read", 631, "read", {"nodes": ["ns=2;s=Machine.FeedOverride", "i=2258"]})
	allowed(d, "opcua.read")
}

test_read_on_plaintext_channel_allowed if {
	d := opcua.decision with input as service_on(plaintext, "read", 631, "read", {"nodes": ["ns=2;s=Machine.State"]})
	allowed(d, "opcua.read")
}

test_history_read_allowed if {
	d := opcua.decision with input as service("history_read", 664, "read", {"nodes": ["ns=2;s=Machine.SpindleLoad"]})
	allowed(d, "opcua.read")
}

test_browse_services_allowed if {
	every s in [
		["browse", 527, {"nodes": ["i=85"]}],
		["browse_next", 533, {}],
		["translate_browse_paths_to_node_ids", 554, {"nodes": ["i=85"]}],
		["register_nodes", 560, {"nodes": ["ns=2;s=Machine.FeedOverride"]}],
		["unregister_nodes", 566, {}],
	] {
		d := opcua.decision with input as service(s[0], s[1], "browse", s[2])
		allowed(d, "opcua.browse")
	}
}

test_subscription_services_allowed if {
	every s in [
		["publish", 826], ["republish", 832], ["create_subscription", 787],
		["modify_subscription", 793], ["set_publishing_mode", 799], ["delete_subscriptions", 847],
		["transfer_subscriptions", 841], ["create_monitored_items", 751],
		["modify_monitored_items", 763], ["set_monitoring_mode", 769], ["set_triggering", 775],
		["delete_monitored_items", 781],
	] {
		d := opcua.decision with input as service(s[0], s[1], "subscribe", {})
		allowed(d, "opcua.subscribe")
	}
}

test_session_services_allowed if {
	# Before ActivateSession there is no `session`.
	create := json.remove(service("create_session", 461, "session", {}), ["opcua/session"])
	d1 := opcua.decision with input as create
	allowed(d1, "opcua.session")
	activate := json.remove(service("activate_session", 467, "session", {"activate_session": operator}), ["opcua/session"])
	d2 := opcua.decision with input as activate
	allowed(d2, "opcua.session")
	d3 := opcua.decision with input as service("close_session", 473, "session", {})
	allowed(d3, "opcua.session")
	d4 := opcua.decision with input as service("cancel", 479, "session", {})
	allowed(d4, "opcua.session")
}

test_discovery_allowed if {
	every s in [["get_endpoints", 428], ["find_servers", 422], ["find_servers_on_network", 12208]] {
		d := opcua.decision with input as json.remove(service(s[0], s[1], "discovery", {}), ["opcua/session"])
		allowed(d, "opcua.discovery")
	}
}

# --- writes

test_feed_override_write_allowed if {
	# The README's example request.
	d := opcua.decision with input as write("ns=2;s=Machine.FeedOverride", 110.0, "Double")
	allowed(d, "opcua.write.node")
}

test_feed_override_range_boundaries if {
	every v in [0, 0.0, 120, 120.0] {
		allowed(opcua.decision, "opcua.write.node") with input as write("ns=2;s=Machine.FeedOverride", v, "Double")
	}
	every v in [-1, -0.5, 120.5, 121] {
		refused(opcua.decision, "opcua.write.out_of_range") with input as write("ns=2;s=Machine.FeedOverride", v, "Double")
	}
}

test_feed_override_out_of_range_reason if {
	d := opcua.decision with input as write("ns=2;s=Machine.FeedOverride", 150, "Double")
	refused(d, "opcua.write.out_of_range")
	d.reason == "ns=2;s=Machine.FeedOverride may be set only to a number in 0..120, not 150 (Double)"
}

test_spindle_override_range_boundaries if {
	every v in [50, 85.5, 120] {
		allowed(opcua.decision, "opcua.write.node") with input as write("ns=2;s=Machine.SpindleOverride", v, "Double")
	}
	every v in [49.9, 49, 0, 120.1, 200] {
		refused(opcua.decision, "opcua.write.out_of_range") with input as write("ns=2;s=Machine.SpindleOverride", v, "Double")
	}
}

test_override_given_as_string_refused if {
	d := opcua.decision with input as write("ns=2;s=Machine.FeedOverride", "110", "String")
	refused(d, "opcua.write.value_type")
	d.reason == `ns=2;s=Machine.FeedOverride takes a Double, not "110" (String)`
}

test_override_nan_or_boolean_refused if {
	# NaN and infinities arrive as null.
	refused(opcua.decision, "opcua.write.out_of_range") with input as write("ns=2;s=Machine.FeedOverride", null, "Double")
	refused(opcua.decision, "opcua.write.value_type") with input as write("ns=2;s=Machine.FeedOverride", true, "Boolean")
	refused(opcua.decision, "opcua.write.out_of_range") with input as write("ns=2;s=Machine.FeedOverride", [100], "Double")
}

test_override_of_another_numeric_type_refused if {
	every t in ["Float", "Int32", "UInt16", "Double[]"] {
		refused(opcua.decision, "opcua.write.value_type") with input as write("ns=2;s=Machine.FeedOverride", 100, t)
	}
}

# Values nested as the wire has them: a server may take them for something else than the
# number inside, so only the expected scalar passes.
test_nested_values_refused if {
	nested := [
		{"value": {"value": 100, "value_type": "Double"}, "value_type": "Variant"},
		{"value": {"value": 100, "value_type": "Double", "status": 0}, "value_type": "DataValue"},
		{"value": {"type_id": "i=298"}, "value_type": "ExtensionObject"},
	]
	every n in nested {
		r := write("ns=2;s=Machine.FeedOverride", n.value, n.value_type)
		refused(opcua.decision, "opcua.write.value_type") with input as r
	}
	r := write("ns=2;s=Machine.ProgramNumber", {"value": 1000, "value_type": "UInt32"}, "Variant")
	refused(opcua.decision, "opcua.write.value_type") with input as r
}

test_write_of_a_status_code_refused if {
	r := write("ns=2;s=Machine.FeedOverride", 100, "Double")
	bad := object.union(r, {"opcua": {"write": {"status": 2154102784}}})
	d := opcua.decision with input as bad
	refused(d, "opcua.write.status")
	d.reason == "a write may not set the status code of ns=2;s=Machine.FeedOverride (status 2154102784)"
	good := object.union(r, {"opcua": {"write": {"status": 0, "source_timestamp": "2026-12-07T00:00:00.000Z"}}})
	allowed(opcua.decision, "opcua.write.node") with input as good
}

test_released_program_write_allowed if {
	every p in [1000, 2010] {
		allowed(opcua.decision, "opcua.write.node") with input as write("ns=2;s=Machine.ProgramNumber", p, "UInt32")
	}
}

test_unreleased_program_write_refused if {
	d := opcua.decision with input as write("ns=2;s=Machine.ProgramNumber", 9999, "UInt32")
	refused(d, "opcua.write.program_not_released")
	d.reason == "program 9999 (UInt32) is not released for production"
}

test_program_given_as_string_refused if {
	d := opcua.decision with input as write("ns=2;s=Machine.ProgramNumber", "1000", "String")
	refused(d, "opcua.write.value_type")
	refused(opcua.decision, "opcua.write.value_type") with input as write("ns=2;s=Machine.ProgramNumber", 1000, "Int32")
}

test_forbidden_nodes_refused if {
	every node in ["ns=2;s=Machine.ToolOffset", "ns=2;s=Machine.DoorUnlock", "ns=2;s=Machine.RapidOverride", "i=2259"] {
		refused(opcua.decision, "opcua.write.forbidden_node") with input as write(node, 1, "Int32")
	}
	d := opcua.decision with input as write("ns=2;s=Machine.DoorUnlock", true, "Boolean")
	d.reason == "ns=2;s=Machine.DoorUnlock is not writable from operations"
}

test_write_of_other_attribute_refused if {
	every attribute in ["display_name", "user_access_level", "access_level", "description"] {
		r := service("write", 673, "write", {"write": write_item("ns=2;s=Machine.FeedOverride", attribute, 100, "Double")})
		refused(opcua.decision, "opcua.write.attribute") with input as r
	}
	r := service("write", 673, "write", {"write": write_item("ns=2;s=Machine.FeedOverride", "display_name", "Feed", "LocalizedText")})
	d := opcua.decision with input as r
	d.reason == "only the value attribute may be written, not display_name of ns=2;s=Machine.FeedOverride"
}

test_write_with_index_range_refused if {
	r := write("ns=2;s=Machine.FeedOverride", [100], "Double")
	d := opcua.decision with input as object.union(r, {"opcua": {"write": {"index_range": "0"}}})
	refused(d, "opcua.write.index_range")
}

test_write_without_item_refused if {
	d := opcua.decision with input as service("write", 673, "write", {})
	refused(d, "opcua.write.missing")
}

test_write_item_without_fields_refused if {
	every field in ["node_id", "attribute", "value"] {
		r := json.remove(write("ns=2;s=Machine.FeedOverride", 100, "Double"), [concat("/", ["opcua/write", field])])
		d := opcua.decision with input as r
		d.allow == false
	}
}

# --- calls

test_select_released_program_allowed if {
	d := opcua.decision with input as select_program(2000)
	allowed(d, "opcua.call.method")
}

test_select_program_with_a_nested_argument_refused if {
	r := call("ns=2;s=Machine", "ns=2;s=Machine.SelectProgram", [{"value": 1000, "value_type": "UInt32"}], ["Variant"])
	refused(opcua.decision, "opcua.call.program_not_released") with input as r
	r2 := call("ns=2;s=Machine", "ns=2;s=Machine.SelectProgram", [1000], ["Int64"])
	d := opcua.decision with input as r2
	d.allow == false
}

test_select_unreleased_program_refused if {
	d := opcua.decision with input as select_program(4711)
	refused(d, "opcua.call.program_not_released")
	d.reason == "program 4711 is not released for production"
	refused(opcua.decision, "opcua.call.program_not_released") with input as select_program("1000")
}

test_select_program_with_wrong_arguments_refused if {
	every arguments in [[], [1000, 1001]] {
		r := call("ns=2;s=Machine", "ns=2;s=Machine.SelectProgram", arguments, ["UInt32" | some _ in arguments])
		refused(opcua.decision, "opcua.call.arguments") with input as r
	}
}

test_select_program_on_other_object_refused if {
	d := opcua.decision with input as call("ns=2;s=Spindle", "ns=2;s=Machine.SelectProgram", [1000], ["UInt32"])
	refused(d, "opcua.call.forbidden_method")
	d.reason == "method ns=2;s=Machine.SelectProgram may be called only on ns=2;s=Machine, not on ns=2;s=Spindle"
}

test_reset_alarm_allowed if {
	d := opcua.decision with input as call("ns=2;s=Machine", "ns=2;s=Machine.ResetAlarm", [], [])
	allowed(d, "opcua.call.method")
}

test_reset_alarm_with_arguments_refused if {
	d := opcua.decision with input as call("ns=2;s=Machine", "ns=2;s=Machine.ResetAlarm", [1], ["Int32"])
	refused(d, "opcua.call.arguments")
	d.reason == "method ns=2;s=Machine.ResetAlarm does not take the arguments [1]"
}

test_other_methods_refused if {
	every method in ["ns=2;s=Machine.Unlock", "ns=2;s=Machine.CycleStart", "i=11492"] {
		refused(opcua.decision, "opcua.call.forbidden_method") with input as call("ns=2;s=Machine", method, [], [])
	}
	d := opcua.decision with input as call("ns=2;s=Machine", "ns=2;s=Machine.Unlock", [], [])
	d.reason == "method ns=2;s=Machine.Unlock may not be called from operations"
}

test_call_without_item_refused if {
	d := opcua.decision with input as service("call", 712, "call", {})
	refused(d, "opcua.call.missing")
}

test_call_item_without_fields_refused if {
	every field in ["object_id", "method_id", "arguments"] {
		r := json.remove(select_program(1000), [concat("/", ["opcua/call", field])])
		d := opcua.decision with input as r
		d.allow == false
	}
}

# --- refused services

test_node_management_refused if {
	every s in [
		["add_nodes", 488, {"add_node": {
			"parent_node_id": "ns=2;s=Machine", "requested_node_id": "ns=2;s=Machine.Backdoor",
			"browse_name": "2:Backdoor", "node_class": "variable",
		}}],
		["add_references", 494, {"add_reference": {
			"source_node_id": "ns=2;s=Machine", "reference_type_id": "i=47",
			"target_node_id": "ns=2;s=Machine.DoorUnlock", "is_forward": true,
		}}],
		["delete_nodes", 500, {"delete_node": {"node_id": "ns=2;s=Machine.FeedOverride", "delete_target_references": true}}],
		["delete_references", 506, {"delete_reference": {
			"source_node_id": "ns=2;s=Machine", "reference_type_id": "i=47",
			"target_node_id": "ns=2;s=Machine.FeedOverride", "is_forward": true,
		}}],
	] {
		d := opcua.decision with input as service(s[0], s[1], "node_management", s[2])
		refused(d, "opcua.node_management")
	}
	d := opcua.decision with input as service("delete_nodes", 500, "node_management", {"delete_node": {"node_id": "i=85", "delete_target_references": true}})
	d.reason == "delete_nodes is refused: operations may not change the server's address space"
}

test_history_update_refused if {
	d := opcua.decision with input as service("history_update", 700, "write", {"history_update": {"node_id": "ns=2;s=Machine.SpindleLoad", "details": "update_data"}})
	refused(d, "opcua.history_update")
}

test_query_and_server_registration_refused if {
	every s in [
		["query_first", 615, "browse"], ["query_next", 621, "browse"],
		["register_server", 437, "discovery"], ["register_server2", 12211, "discovery"],
	] {
		refused(opcua.decision, "opcua.service.not_allowed") with input as service(s[0], s[1], s[2], {})
	}
}

test_unknown_service_refused if {
	d := opcua.decision with input as service("unknown", 12345, "other", {})
	refused(d, "opcua.service.not_allowed")
	d.reason == "service unknown (type id 12345) is not allowed on this conduit"
}

# --- anything else

test_unknown_stage_refused if {
	d := opcua.decision with input as request(hmi, {"stage": "close", "channel": signed})
	refused(d, "opcua.default")
}

test_modbus_input_refused if {
	d := opcua.decision with input as object.union(json.remove(request(hmi, {}), ["opcua"]), {"modbus": {
		"unit_id": 1,
		"function": {"code": 3, "name": "read_holding_registers"},
		"access": "read",
		"table": "holding_registers",
		"address": 0,
		"quantity": 1,
	}})
	refused(d, "opcua.default")
}

test_no_input_refused if {
	refused(opcua.decision, "opcua.default")
}

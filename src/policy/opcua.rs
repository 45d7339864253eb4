//! Building the policy input for OPC UA (schema: `policies/README.md`, "The OPC UA input").
//!
//! A secure channel is judged at three stages ([`Stage`]): when it opens, when it turns out to
//! be unreadable, and for every readable service request. Write, Call, the node management
//! services and HistoryUpdate are judged item by item: [`service_inputs`] gives one document
//! per item, and the proxy refuses the request whole when any of them is denied.

use std::collections::BTreeMap;

use opcua_types::{DataValue, ExpandedNodeId, NodeId, ReadValueId, Variant, VariantScalarTypeId};
use regorus::Value;

use crate::proto::Access;
use crate::proto::opcua::{
    DecodedRequest, IdentityToken, SECURITY_POLICY_NONE, Service, ServiceRequest,
    security_policy_name,
};

/// Most node ids listed in `opcua.nodes` for one request; a Read of more names only these (the
/// policy still sees `service` and can refuse large requests by `count`).
pub const MAX_NODES_IN_INPUT: usize = 1000;
/// Most elements of an array value put into the input; longer arrays are cut (the policy sees
/// `value_length`).
pub const MAX_ARRAY_IN_INPUT: usize = 1000;

/// When a channel is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The client opens (or renews) a secure channel: security policy and certificate.
    Open,
    /// The channel's messages are encrypted: allow means letting it through uninspected.
    Uninspected,
    /// One readable service request (or one item of it).
    Service,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Uninspected => "uninspected",
            Stage::Service => "service",
        }
    }
}

/// MessageSecurityMode of a channel (Part 4 7.20), as far as the gateway has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityMode {
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::None => "None",
            SecurityMode::Sign => "Sign",
            SecurityMode::SignAndEncrypt => "SignAndEncrypt",
        }
    }
}

/// The client's application instance certificate, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// SHA-1 of the DER certificate, lowercase hex: how OPC UA names certificates.
    pub thumbprint: String,
    pub subject: String,
    /// The URI subjectAltName: the client's ApplicationUri.
    pub application_uri: Option<String>,
}

impl CertificateFacts {
    /// The leaf of a SenderCertificate (a DER certificate, possibly followed by its chain).
    /// `None` when it is not a certificate.
    pub fn from_der(chain: &[u8]) -> Option<CertificateFacts> {
        use sha1::Digest as _;
        use x509_parser::extensions::GeneralName;

        let (rest, cert) = x509_parser::parse_x509_certificate(chain).ok()?;
        let leaf = chain.get(..chain.len().checked_sub(rest.len())?)?;
        let thumbprint = sha1::Sha1::digest(leaf)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let application_uri = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
            });
        Some(CertificateFacts {
            thumbprint,
            subject: cert.subject().to_string(),
            application_uri,
        })
    }
}

/// What the gateway knows about one secure channel (`input.opcua.channel`), and the session
/// identity once an ActivateSession was read on it (`input.opcua.session`).
#[derive(Debug, Clone, Default)]
pub struct ChannelFacts {
    /// From the client's Hello.
    pub endpoint_url: String,
    /// From the OpenSecureChannel request; `None` before it.
    pub security_policy_uri: Option<String>,
    pub security_mode: Option<SecurityMode>,
    pub client_certificate: Option<CertificateFacts>,
    /// The identity kind (`anonymous`, `user_name`, ...) and user name of the last
    /// ActivateSession.
    pub identity: Option<(&'static str, Option<String>)>,
}

/// [`ChannelFacts`] as policy input values, made once per change of the facts rather than for
/// every request.
#[derive(Debug, Clone)]
pub struct ChannelValues {
    channel: Value,
    session: Option<Value>,
}

impl ChannelFacts {
    /// True when the channel's security policy is None (its messages are plain and unsigned).
    pub fn is_plaintext(&self) -> bool {
        self.security_policy_uri.as_deref() == Some(SECURITY_POLICY_NONE)
    }

    /// `input.opcua.channel` and `input.opcua.session`.
    pub fn values(&self) -> ChannelValues {
        ChannelValues {
            channel: self.to_value(),
            session: self.session_value(),
        }
    }

    fn to_value(&self) -> Value {
        let mut o = BTreeMap::new();
        put(&mut o, "endpoint_url", self.endpoint_url.as_str());
        if let Some(uri) = &self.security_policy_uri {
            put(&mut o, "security_policy", security_policy_name(uri));
            put(&mut o, "security_policy_uri", uri.as_str());
        }
        if let Some(mode) = self.security_mode {
            put(&mut o, "security_mode", mode.as_str());
        }
        if let Some(c) = &self.client_certificate {
            let mut cert = BTreeMap::new();
            put(&mut cert, "thumbprint", c.thumbprint.as_str());
            put(&mut cert, "subject", c.subject.as_str());
            if let Some(uri) = &c.application_uri {
                put(&mut cert, "application_uri", uri.as_str());
            }
            o.insert(key("client_certificate"), Value::from(cert));
        }
        Value::from(o)
    }

    fn session_value(&self) -> Option<Value> {
        let (identity, user_name) = self.identity.as_ref()?;
        Some(identity_value(identity, user_name.as_deref()))
    }
}

/// The `opcua` object for the [`Stage::Open`] or [`Stage::Uninspected`] stage.
pub fn channel_input(stage: Stage, channel: &ChannelValues) -> Value {
    Value::from(base(stage, channel))
}

/// What one decision at the [`Stage::Service`] stage is about: the `opcua` object's `service`,
/// `type_id`, `access` and the item or `nodes`, without the channel's fields. It holds nothing
/// else of the request (no handle, no timestamp), so equal items get equal decisions on one
/// channel.
pub type Item = BTreeMap<Value, Value>;

/// The items of one readable request: one per item for Write, Call, AddNodes, DeleteNodes,
/// AddReferences, DeleteReferences and HistoryUpdate (one without an item field when the request
/// has none, which policies refuse), one for every other service.
pub fn service_items(request: &ServiceRequest) -> Vec<Item> {
    let service = request.service;
    let with_service = || {
        let mut o = BTreeMap::new();
        put(&mut o, "service", service.name());
        o.insert(key("type_id"), Value::from(request.type_id));
        put(&mut o, "access", access(service).as_str());
        o
    };
    let per_item = |field: &str, items: Vec<Value>| -> Vec<Item> {
        if items.is_empty() {
            return vec![with_service()];
        }
        items
            .into_iter()
            .map(|item| {
                let mut o = with_service();
                o.insert(key(field), item);
                o
            })
            .collect()
    };
    let nodes = |ids: Vec<String>| -> Vec<Item> {
        let mut o = with_service();
        let list: Vec<Value> = ids
            .into_iter()
            .take(MAX_NODES_IN_INPUT)
            .map(Value::from)
            .collect();
        o.insert(key("nodes"), Value::from(list));
        vec![o]
    };
    match &request.request {
        DecodedRequest::Write(r) => per_item(
            "write",
            items(&r.nodes_to_write)
                .map(|w| {
                    let mut o = BTreeMap::new();
                    put(&mut o, "node_id", w.node_id.to_string());
                    put(&mut o, "attribute", attribute_name(w.attribute_id));
                    o.insert(key("attribute_id"), Value::from(w.attribute_id));
                    put(&mut o, "index_range", w.index_range.to_string());
                    data_value(&mut o, &w.value);
                    Value::from(o)
                })
                .collect(),
        ),
        DecodedRequest::Call(r) => per_item(
            "call",
            items(&r.methods_to_call)
                .map(|c| {
                    let mut o = BTreeMap::new();
                    put(&mut o, "object_id", c.object_id.to_string());
                    put(&mut o, "method_id", c.method_id.to_string());
                    let (values, types): (Vec<Value>, Vec<Value>) = items(&c.input_arguments)
                        .take(MAX_ARRAY_IN_INPUT)
                        .map(|a| {
                            let (v, t) = variant(a);
                            (v, Value::from(t))
                        })
                        .unzip();
                    o.insert(key("arguments"), Value::from(values));
                    o.insert(key("argument_types"), Value::from(types));
                    Value::from(o)
                })
                .collect(),
        ),
        DecodedRequest::AddNodes(r) => per_item(
            "add_node",
            items(&r.nodes_to_add)
                .map(|n| {
                    let mut o = BTreeMap::new();
                    put(&mut o, "parent_node_id", expanded(&n.parent_node_id));
                    put(&mut o, "reference_type_id", n.reference_type_id.to_string());
                    put(
                        &mut o,
                        "requested_node_id",
                        expanded(&n.requested_new_node_id),
                    );
                    put(&mut o, "browse_name", n.browse_name.name.to_string());
                    put(
                        &mut o,
                        "node_class",
                        format!("{:?}", n.node_class).to_lowercase(),
                    );
                    put(&mut o, "type_definition", expanded(&n.type_definition));
                    Value::from(o)
                })
                .collect(),
        ),
        DecodedRequest::DeleteNodes(r) => per_item(
            "delete_node",
            items(&r.nodes_to_delete)
                .map(|n| {
                    let mut o = BTreeMap::new();
                    put(&mut o, "node_id", n.node_id.to_string());
                    o.insert(
                        key("delete_target_references"),
                        Value::from(n.delete_target_references),
                    );
                    Value::from(o)
                })
                .collect(),
        ),
        DecodedRequest::AddReferences(r) => per_item(
            "add_reference",
            items(&r.references_to_add)
                .map(|n| {
                    reference(
                        &n.source_node_id,
                        &n.reference_type_id,
                        &n.target_node_id,
                        n.is_forward,
                    )
                })
                .collect(),
        ),
        DecodedRequest::DeleteReferences(r) => per_item(
            "delete_reference",
            items(&r.references_to_delete)
                .map(|n| {
                    reference(
                        &n.source_node_id,
                        &n.reference_type_id,
                        &n.target_node_id,
                        n.is_forward,
                    )
                })
                .collect(),
        ),
        DecodedRequest::HistoryUpdate(r) => per_item(
            "history_update",
            items(&r.history_update_details)
                .map(|d| {
                    let mut o = BTreeMap::new();
                    // The details' node id is inside a typed body this gateway does not decode:
                    // the policy learns that it is an update and of which kind.
                    let kind = d.object_id().map_or_else(
                        |_| "unknown".to_owned(),
                        |id| {
                            format!("{id:?}")
                                .trim_end_matches("_Encoding_DefaultBinary")
                                .to_owned()
                        },
                    );
                    put(&mut o, "details", kind);
                    Value::from(o)
                })
                .collect(),
        ),
        DecodedRequest::ActivateSession(r) => {
            let token = crate::proto::opcua::identity_token(r);
            let mut o = with_service();
            let user = match token {
                IdentityToken::UserName { user_name } => Some(user_name),
                _ => None,
            };
            o.insert(key("activate_session"), identity_value(token.kind(), user));
            vec![o]
        }
        DecodedRequest::Read(r) => nodes(items(&r.nodes_to_read).map(read_node).collect()),
        DecodedRequest::Browse(r) => nodes(
            items(&r.nodes_to_browse)
                .map(|b| b.node_id.to_string())
                .collect(),
        ),
        DecodedRequest::CreateMonitoredItems(r) => nodes(
            items(&r.items_to_create)
                .map(|m| read_node(&m.item_to_monitor))
                .collect(),
        ),
        DecodedRequest::HistoryRead(r) => nodes(
            items(&r.nodes_to_read)
                .map(|h| h.node_id.to_string())
                .collect(),
        ),
        DecodedRequest::TranslateBrowsePaths(r) => nodes(
            items(&r.browse_paths)
                .map(|p| p.starting_node.to_string())
                .collect(),
        ),
        DecodedRequest::RegisterNodes(r) => {
            nodes(items(&r.nodes_to_register).map(NodeId::to_string).collect())
        }
        DecodedRequest::UnregisterNodes(r) => nodes(
            items(&r.nodes_to_unregister)
                .map(NodeId::to_string)
                .collect(),
        ),
        DecodedRequest::CreateSession(_) | DecodedRequest::Other => vec![with_service()],
    }
}

/// The `opcua` object for one item at the [`Stage::Service`] stage.
pub fn service_input(channel: &ChannelValues, item: &Item) -> Value {
    let mut o = base(Stage::Service, channel);
    o.extend(item.iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::from(o)
}

/// The identity a session uses (the session identity kind of [`IdentityToken::kind`]).
pub fn session_identity(request: &ServiceRequest) -> Option<(&'static str, Option<String>)> {
    let DecodedRequest::ActivateSession(r) = &request.request else {
        return None;
    };
    let token = crate::proto::opcua::identity_token(r);
    let user = match token {
        IdentityToken::UserName { user_name } => Some(user_name.to_owned()),
        _ => None,
    };
    Some((token.kind(), user))
}

/// Which kind of access a service is (`input.opcua.access`).
pub fn access(service: Service) -> Access {
    use Service as S;
    match service {
        S::Read | S::HistoryRead => Access::Read,
        S::Write | S::HistoryUpdate => Access::Write,
        S::Call => Access::Call,
        S::Browse
        | S::BrowseNext
        | S::TranslateBrowsePathsToNodeIds
        | S::RegisterNodes
        | S::UnregisterNodes
        | S::QueryFirst
        | S::QueryNext => Access::Browse,
        S::CreateSubscription
        | S::ModifySubscription
        | S::SetPublishingMode
        | S::DeleteSubscriptions
        | S::TransferSubscriptions
        | S::Republish
        | S::Publish
        | S::CreateMonitoredItems
        | S::ModifyMonitoredItems
        | S::SetMonitoringMode
        | S::SetTriggering
        | S::DeleteMonitoredItems => Access::Subscribe,
        S::CreateSession | S::ActivateSession | S::CloseSession | S::Cancel => Access::Session,
        S::GetEndpoints
        | S::FindServers
        | S::FindServersOnNetwork
        | S::RegisterServer
        | S::RegisterServer2 => Access::Discovery,
        S::AddNodes | S::AddReferences | S::DeleteNodes | S::DeleteReferences => {
            Access::NodeManagement
        }
        S::OpenSecureChannel | S::CloseSecureChannel | S::Unknown => Access::Other,
    }
}

/// The snake_case name of an attribute id (Part 6 A.1).
pub fn attribute_name(id: u32) -> &'static str {
    match id {
        1 => "node_id",
        2 => "node_class",
        3 => "browse_name",
        4 => "display_name",
        5 => "description",
        6 => "write_mask",
        7 => "user_write_mask",
        8 => "is_abstract",
        9 => "symmetric",
        10 => "inverse_name",
        11 => "contains_no_loops",
        12 => "event_notifier",
        13 => "value",
        14 => "data_type",
        15 => "value_rank",
        16 => "array_dimensions",
        17 => "access_level",
        18 => "user_access_level",
        19 => "minimum_sampling_interval",
        20 => "historizing",
        21 => "executable",
        22 => "user_executable",
        23 => "data_type_definition",
        24 => "role_permissions",
        25 => "user_role_permissions",
        26 => "access_restrictions",
        27 => "access_level_ex",
        _ => "unknown",
    }
}

/// An OPC UA value as JSON-like policy input, and the name of its built-in type.
pub fn variant(v: &Variant) -> (Value, &'static str) {
    match v {
        Variant::Empty => (Value::Null, "Null"),
        Variant::Boolean(b) => (Value::from(*b), "Boolean"),
        Variant::SByte(n) => (Value::from(i64::from(*n)), "SByte"),
        Variant::Byte(n) => (Value::from(u64::from(*n)), "Byte"),
        Variant::Int16(n) => (Value::from(i64::from(*n)), "Int16"),
        Variant::UInt16(n) => (Value::from(u64::from(*n)), "UInt16"),
        Variant::Int32(n) => (Value::from(i64::from(*n)), "Int32"),
        Variant::UInt32(n) => (Value::from(u64::from(*n)), "UInt32"),
        Variant::Int64(n) => (Value::from(*n), "Int64"),
        Variant::UInt64(n) => (Value::from(*n), "UInt64"),
        Variant::Float(f) => (number(f64::from(*f)), "Float"),
        Variant::Double(f) => (number(*f), "Double"),
        Variant::String(s) => (Value::from(s.to_string()), "String"),
        Variant::DateTime(d) => (Value::from(d.to_rfc3339()), "DateTime"),
        Variant::Guid(g) => (Value::from(g.to_string()), "Guid"),
        Variant::StatusCode(s) => (Value::from(u64::from(s.bits())), "StatusCode"),
        Variant::ByteString(b) => (Value::from(b.as_base64()), "ByteString"),
        Variant::XmlElement(_) => (Value::Null, "XmlElement"),
        Variant::QualifiedName(q) => (Value::from(q.name.to_string()), "QualifiedName"),
        Variant::LocalizedText(t) => (Value::from(t.text.to_string()), "LocalizedText"),
        Variant::NodeId(n) => (Value::from(n.to_string()), "NodeId"),
        Variant::ExpandedNodeId(n) => (Value::from(expanded(n)), "ExpandedNodeId"),
        // The body's type, not its fields: a policy that expects a scalar refuses it by type.
        Variant::ExtensionObject(o) => {
            let mut body = BTreeMap::new();
            put(&mut body, "type_id", o.binary_type_id().to_string());
            (Value::from(body), "ExtensionObject")
        }
        // Nested values are shown as nested as they are on the wire, never flattened: a server
        // may take a Variant in a Variant, or a DataValue in one, for something else than its
        // innermost value, and a policy that expects a Double must see that it got none.
        Variant::Variant(inner) => {
            let (value, value_type) = variant(inner);
            let mut o = BTreeMap::new();
            o.insert(key("value"), value);
            put(&mut o, "value_type", value_type);
            (Value::from(o), "Variant")
        }
        Variant::DataValue(d) => {
            let mut o = BTreeMap::new();
            data_value(&mut o, d);
            (Value::from(o), "DataValue")
        }
        Variant::DiagnosticInfo(_) => (Value::Null, "DiagnosticInfo"),
        Variant::Array(a) => {
            let values: Vec<Value> = a
                .values
                .iter()
                .take(MAX_ARRAY_IN_INPUT)
                .map(|v| variant(v).0)
                .collect();
            (Value::from(values), array_type(a.value_type))
        }
    }
}

// ----------------------------------------------------------------------------------- helpers

fn key(k: &str) -> Value {
    Value::from(k)
}

fn put(o: &mut BTreeMap<Value, Value>, k: &str, v: impl Into<Value>) {
    o.insert(key(k), v.into());
}

/// `stage` and `channel` (and `session` once known): what every stage's document holds.
fn base(stage: Stage, channel: &ChannelValues) -> BTreeMap<Value, Value> {
    let mut o = BTreeMap::new();
    put(&mut o, "stage", stage.as_str());
    o.insert(key("channel"), channel.channel.clone());
    if let Some(session) = &channel.session {
        o.insert(key("session"), session.clone());
    }
    o
}

fn identity_value(identity: &str, user_name: Option<&str>) -> Value {
    let mut o = BTreeMap::new();
    put(&mut o, "identity", identity);
    if let Some(u) = user_name {
        put(&mut o, "user_name", u);
    }
    Value::from(o)
}

/// The elements of an OPC UA array (null reads as empty).
fn items<T>(list: &Option<Vec<T>>) -> std::slice::Iter<'_, T> {
    list.as_deref().unwrap_or_default().iter()
}

/// A DataValue's fields as they are on the wire: the value and its type, and whichever of the
/// status code, timestamps and picoseconds it carries (a written status or timestamp is written
/// too: Part 4 5.11.4).
fn data_value(o: &mut BTreeMap<Value, Value>, d: &DataValue) {
    let (value, value_type) = match &d.value {
        Some(v) => variant(v),
        None => (Value::Null, "Null"),
    };
    if let Variant::Array(a) = d.value.as_ref().unwrap_or(&Variant::Empty) {
        o.insert(key("value_length"), Value::from(a.values.len()));
        if let Some(dimensions) = &a.dimensions {
            let dimensions: Vec<Value> = dimensions
                .iter()
                .take(MAX_ARRAY_IN_INPUT)
                .map(|d| Value::from(*d))
                .collect();
            o.insert(key("array_dimensions"), Value::from(dimensions));
        }
    }
    o.insert(key("value"), value);
    put(o, "value_type", value_type);
    if let Some(status) = d.status {
        o.insert(key("status"), Value::from(u64::from(status.bits())));
    }
    if let Some(t) = &d.source_timestamp {
        put(o, "source_timestamp", t.to_rfc3339());
    }
    if let Some(p) = d.source_picoseconds {
        o.insert(key("source_picoseconds"), Value::from(u64::from(p)));
    }
    if let Some(t) = &d.server_timestamp {
        put(o, "server_timestamp", t.to_rfc3339());
    }
    if let Some(p) = d.server_picoseconds {
        o.insert(key("server_picoseconds"), Value::from(u64::from(p)));
    }
}

fn read_node(r: &ReadValueId) -> String {
    r.node_id.to_string()
}

fn expanded(n: &ExpandedNodeId) -> String {
    if n.namespace_uri.is_empty() && n.server_index == 0 {
        n.node_id.to_string()
    } else {
        n.to_string()
    }
}

fn reference(
    source: &NodeId,
    reference_type: &NodeId,
    target: &ExpandedNodeId,
    is_forward: bool,
) -> Value {
    let mut o = BTreeMap::new();
    put(&mut o, "source_node_id", source.to_string());
    put(&mut o, "reference_type_id", reference_type.to_string());
    put(&mut o, "target_node_id", expanded(target));
    o.insert(key("is_forward"), Value::from(is_forward));
    Value::from(o)
}

/// A finite number, or null (JSON has no NaN or infinity, and a range check must not pass one).
fn number(f: f64) -> Value {
    if f.is_finite() {
        Value::from(f)
    } else {
        Value::Null
    }
}

fn array_type(t: VariantScalarTypeId) -> &'static str {
    use VariantScalarTypeId as T;
    match t {
        T::Boolean => "Boolean[]",
        T::SByte => "SByte[]",
        T::Byte => "Byte[]",
        T::Int16 => "Int16[]",
        T::UInt16 => "UInt16[]",
        T::Int32 => "Int32[]",
        T::UInt32 => "UInt32[]",
        T::Int64 => "Int64[]",
        T::UInt64 => "UInt64[]",
        T::Float => "Float[]",
        T::Double => "Double[]",
        T::String => "String[]",
        T::DateTime => "DateTime[]",
        T::ByteString => "ByteString[]",
        _ => "Array",
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )]

    use opcua_types::{
        Array, CallMethodRequest, CallRequest, DataValue, NodeId, RequestHeader, Variant,
        WriteRequest, WriteValue,
    };

    use super::*;

    fn channel() -> ChannelFacts {
        ChannelFacts {
            endpoint_url: "opc.tcp://10.22.0.11:4840/cnc".into(),
            security_policy_uri: Some(SECURITY_POLICY_NONE.into()),
            security_mode: Some(SecurityMode::None),
            client_certificate: None,
            identity: Some(("user_name", Some("operator".into()))),
        }
    }

    fn request(service: Service, type_id: u32, request: DecodedRequest) -> ServiceRequest {
        ServiceRequest {
            type_id,
            service,
            request_handle: 7,
            request,
        }
    }

    /// The full `opcua` objects of a request's items.
    fn service_inputs(channel: &ChannelFacts, request: &ServiceRequest) -> Vec<Value> {
        let values = channel.values();
        service_items(request)
            .iter()
            .map(|item| service_input(&values, item))
            .collect()
    }

    fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
        path.iter().fold(v, |v, k| &v[&Value::from(*k)])
    }

    fn write_value(node: &str, value: Variant) -> WriteValue {
        WriteValue {
            node_id: NodeId::new(2, node),
            attribute_id: 13,
            value: DataValue::new_now(value),
            ..WriteValue::default()
        }
    }

    #[test]
    fn a_write_gives_one_input_per_node() {
        let write = WriteRequest {
            request_header: RequestHeader::default(),
            nodes_to_write: Some(vec![
                write_value("Machine.FeedOverride", Variant::Double(110.0)),
                write_value("Machine.DoorUnlock", Variant::Boolean(true)),
            ]),
        };
        let inputs = service_inputs(
            &channel(),
            &request(Service::Write, 673, DecodedRequest::Write(write)),
        );
        assert_eq!(inputs.len(), 2);
        let first = &inputs[0];
        assert_eq!(get(first, &["stage"]), &Value::from("service"));
        assert_eq!(get(first, &["service"]), &Value::from("write"));
        assert_eq!(get(first, &["access"]), &Value::from("write"));
        assert_eq!(get(first, &["type_id"]), &Value::from(673u32));
        assert_eq!(
            get(first, &["write", "node_id"]),
            &Value::from("ns=2;s=Machine.FeedOverride")
        );
        assert_eq!(get(first, &["write", "attribute"]), &Value::from("value"));
        assert_eq!(get(first, &["write", "value"]), &Value::from(110.0));
        assert_eq!(get(first, &["write", "value_type"]), &Value::from("Double"));
        assert_eq!(
            get(first, &["channel", "security_policy"]),
            &Value::from("None")
        );
        assert_eq!(
            get(first, &["session", "user_name"]),
            &Value::from("operator")
        );
        assert_eq!(get(&inputs[1], &["write", "value"]), &Value::from(true));

        // A Write without nodes still asks once, without an item: policies refuse that.
        let empty = service_inputs(
            &channel(),
            &request(
                Service::Write,
                673,
                DecodedRequest::Write(WriteRequest::default()),
            ),
        );
        assert_eq!(empty.len(), 1);
        assert_eq!(get(&empty[0], &["write"]), &Value::Undefined);
    }

    #[test]
    fn a_call_lists_its_arguments_and_their_types() {
        let call = CallRequest {
            request_header: RequestHeader::default(),
            methods_to_call: Some(vec![CallMethodRequest {
                object_id: NodeId::new(2, "Machine"),
                method_id: NodeId::new(2, "Machine.SelectProgram"),
                input_arguments: Some(vec![Variant::UInt32(1001)]),
            }]),
        };
        let inputs = service_inputs(
            &channel(),
            &request(Service::Call, 712, DecodedRequest::Call(call)),
        );
        assert_eq!(inputs.len(), 1);
        assert_eq!(
            get(&inputs[0], &["call", "method_id"]),
            &Value::from("ns=2;s=Machine.SelectProgram")
        );
        assert_eq!(
            get(&inputs[0], &["call", "arguments"]),
            &Value::from(vec![Value::from(1001u64)])
        );
        assert_eq!(
            get(&inputs[0], &["call", "argument_types"]),
            &Value::from(vec![Value::from("UInt32")])
        );
    }

    #[test]
    fn values_become_json_and_never_a_number_that_is_not_one() {
        assert_eq!(variant(&Variant::Double(f64::NAN)).0, Value::Null);
        assert_eq!(variant(&Variant::Float(f32::INFINITY)).0, Value::Null);
        assert_eq!(variant(&Variant::Int16(-5)), (Value::from(-5i64), "Int16"));
        assert_eq!(
            variant(&Variant::from("auto")),
            (Value::from("auto"), "String")
        );
        let array = Array::new(
            opcua_types::VariantScalarTypeId::Int32,
            vec![Variant::Int32(1), Variant::Int32(2)],
        )
        .unwrap();
        assert_eq!(
            variant(&Variant::Array(Box::new(array))),
            (
                Value::from(vec![Value::from(1i64), Value::from(2i64)]),
                "Int32[]"
            )
        );
    }

    #[test]
    fn nested_values_keep_their_structure() {
        // A Variant in a Variant: the outer type, and the inner one under it.
        let (value, value_type) = variant(&Variant::Variant(Box::new(Variant::Double(110.0))));
        assert_eq!(value_type, "Variant");
        assert_eq!(get(&value, &["value"]), &Value::from(110.0));
        assert_eq!(get(&value, &["value_type"]), &Value::from("Double"));
        // A DataValue in a Variant, with a status code and a source timestamp.
        let inner = DataValue {
            value: Some(Variant::Double(110.0)),
            status: Some(opcua_types::StatusCode::BadOutOfService),
            source_timestamp: Some(opcua_types::DateTime::ymd(2026, 12, 7)),
            ..DataValue::default()
        };
        let (value, value_type) = variant(&Variant::DataValue(Box::new(inner)));
        assert_eq!(value_type, "DataValue");
        assert_eq!(get(&value, &["value"]), &Value::from(110.0));
        assert_eq!(get(&value, &["value_type"]), &Value::from("Double"));
        assert_eq!(
            get(&value, &["status"]),
            &Value::from(u64::from(opcua_types::StatusCode::BadOutOfService.bits()))
        );
        assert_eq!(
            get(&value, &["source_timestamp"]),
            &Value::from("2026-12-07T00:00:00.000Z")
        );
        assert_eq!(get(&value, &["server_timestamp"]), &Value::Undefined);
        // An array with its dimensions, in a written DataValue.
        let array = Array::new_multi(
            opcua_types::VariantScalarTypeId::Double,
            vec![Variant::Double(1.0), Variant::Double(2.0)],
            vec![1, 2],
        )
        .unwrap();
        let write = WriteRequest {
            request_header: RequestHeader::default(),
            nodes_to_write: Some(vec![WriteValue {
                node_id: NodeId::new(2, "Machine.FeedOverride"),
                attribute_id: 13,
                value: DataValue::value_only(Variant::Array(Box::new(array))),
                ..WriteValue::default()
            }]),
        };
        let inputs = service_inputs(
            &channel(),
            &request(Service::Write, 673, DecodedRequest::Write(write)),
        );
        let written = get(&inputs[0], &["write"]);
        assert_eq!(get(written, &["value_type"]), &Value::from("Double[]"));
        assert_eq!(get(written, &["value_length"]), &Value::from(2u64));
        assert_eq!(
            get(written, &["array_dimensions"]),
            &Value::from(vec![Value::from(1u64), Value::from(2u64)])
        );
        assert_eq!(get(written, &["status"]), &Value::Undefined);
        // A call's nested argument likewise.
        let (value, value_type) = variant(&Variant::Variant(Box::new(Variant::UInt32(1001))));
        assert_eq!(
            (get(&value, &["value_type"]), value_type),
            (&Value::from("UInt32"), "Variant")
        );
    }

    #[test]
    fn channel_stages_say_what_is_known() {
        let mut secured = ChannelFacts {
            endpoint_url: "opc.tcp://x/".into(),
            security_policy_uri: Some(
                "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256".into(),
            ),
            ..ChannelFacts::default()
        };
        let open = channel_input(Stage::Open, &secured.values());
        assert_eq!(get(&open, &["stage"]), &Value::from("open"));
        assert_eq!(
            get(&open, &["channel", "security_policy"]),
            &Value::from("Basic256Sha256")
        );
        // The mode is unknown when a secured channel opens, and there is no certificate here.
        assert_eq!(get(&open, &["channel", "security_mode"]), &Value::Undefined);
        assert_eq!(
            get(&open, &["channel", "client_certificate"]),
            &Value::Undefined
        );
        secured.security_mode = Some(SecurityMode::SignAndEncrypt);
        let uninspected = channel_input(Stage::Uninspected, &secured.values());
        assert_eq!(
            get(&uninspected, &["channel", "security_mode"]),
            &Value::from("SignAndEncrypt")
        );
        assert!(!secured.is_plaintext());
        assert!(channel().is_plaintext());
        assert_eq!(
            CertificateFacts::from_der(b"not a certificate"),
            None,
            "garbage is no certificate"
        );
    }
}

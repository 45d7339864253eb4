//! The service catalogue (OPC 10000-4): which request a type id names, the decoded request
//! structures policy judges node by node, and identity tokens with their secrets dropped.

use std::fmt;

use opcua_types::{
    ActivateSessionRequest, AddNodesRequest, AddReferencesRequest, AnonymousIdentityToken,
    BrowseRequest, ByteString, CallRequest, CreateMonitoredItemsRequest, CreateSessionRequest,
    DeleteNodesRequest, DeleteReferencesRequest, ExtensionObject, HistoryReadRequest,
    HistoryUpdateRequest, IssuedIdentityToken, NodeId, ObjectId, ReadRequest, RegisterNodesRequest,
    TranslateBrowsePathsToNodeIdsRequest, UnregisterNodesRequest, UserNameIdentityToken,
    WriteRequest, X509IdentityToken,
};

/// A decoded service request: the reassembled body of a plaintext MSG (or OPN, CLO), which is
/// the NodeId of the request's binary encoding, then the request (Part 6 5.2.9, 6.7.2.2).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRequest {
    /// Numeric id of the encoding node, namespace 0 (e.g. 673 WriteRequest_Encoding_DefaultBinary).
    pub type_id: u32,
    pub service: Service,
    /// From the RequestHeader; the response (or a ServiceFault) must carry it back.
    pub request_handle: u32,
    pub request: DecodedRequest,
}

/// The services of Part 4, by request type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Read,
    Write,
    Call,
    Browse,
    BrowseNext,
    TranslateBrowsePathsToNodeIds,
    RegisterNodes,
    UnregisterNodes,
    CreateSession,
    ActivateSession,
    CloseSession,
    Cancel,
    CreateSubscription,
    ModifySubscription,
    SetPublishingMode,
    DeleteSubscriptions,
    TransferSubscriptions,
    Republish,
    Publish,
    CreateMonitoredItems,
    ModifyMonitoredItems,
    SetMonitoringMode,
    SetTriggering,
    DeleteMonitoredItems,
    HistoryRead,
    HistoryUpdate,
    AddNodes,
    AddReferences,
    DeleteNodes,
    DeleteReferences,
    QueryFirst,
    QueryNext,
    GetEndpoints,
    FindServers,
    FindServersOnNetwork,
    RegisterServer,
    RegisterServer2,
    OpenSecureChannel,
    CloseSecureChannel,
    /// A type id that is not one of the requests above.
    Unknown,
}

impl Service {
    /// Every known service (not [`Service::Unknown`]).
    pub const ALL: [Service; 39] = [
        Service::Read,
        Service::Write,
        Service::Call,
        Service::Browse,
        Service::BrowseNext,
        Service::TranslateBrowsePathsToNodeIds,
        Service::RegisterNodes,
        Service::UnregisterNodes,
        Service::CreateSession,
        Service::ActivateSession,
        Service::CloseSession,
        Service::Cancel,
        Service::CreateSubscription,
        Service::ModifySubscription,
        Service::SetPublishingMode,
        Service::DeleteSubscriptions,
        Service::TransferSubscriptions,
        Service::Republish,
        Service::Publish,
        Service::CreateMonitoredItems,
        Service::ModifyMonitoredItems,
        Service::SetMonitoringMode,
        Service::SetTriggering,
        Service::DeleteMonitoredItems,
        Service::HistoryRead,
        Service::HistoryUpdate,
        Service::AddNodes,
        Service::AddReferences,
        Service::DeleteNodes,
        Service::DeleteReferences,
        Service::QueryFirst,
        Service::QueryNext,
        Service::GetEndpoints,
        Service::FindServers,
        Service::FindServersOnNetwork,
        Service::RegisterServer,
        Service::RegisterServer2,
        Service::OpenSecureChannel,
        Service::CloseSecureChannel,
    ];

    /// A stable snake_case name for policy input, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Service::Read => "read",
            Service::Write => "write",
            Service::Call => "call",
            Service::Browse => "browse",
            Service::BrowseNext => "browse_next",
            Service::TranslateBrowsePathsToNodeIds => "translate_browse_paths_to_node_ids",
            Service::RegisterNodes => "register_nodes",
            Service::UnregisterNodes => "unregister_nodes",
            Service::CreateSession => "create_session",
            Service::ActivateSession => "activate_session",
            Service::CloseSession => "close_session",
            Service::Cancel => "cancel",
            Service::CreateSubscription => "create_subscription",
            Service::ModifySubscription => "modify_subscription",
            Service::SetPublishingMode => "set_publishing_mode",
            Service::DeleteSubscriptions => "delete_subscriptions",
            Service::TransferSubscriptions => "transfer_subscriptions",
            Service::Republish => "republish",
            Service::Publish => "publish",
            Service::CreateMonitoredItems => "create_monitored_items",
            Service::ModifyMonitoredItems => "modify_monitored_items",
            Service::SetMonitoringMode => "set_monitoring_mode",
            Service::SetTriggering => "set_triggering",
            Service::DeleteMonitoredItems => "delete_monitored_items",
            Service::HistoryRead => "history_read",
            Service::HistoryUpdate => "history_update",
            Service::AddNodes => "add_nodes",
            Service::AddReferences => "add_references",
            Service::DeleteNodes => "delete_nodes",
            Service::DeleteReferences => "delete_references",
            Service::QueryFirst => "query_first",
            Service::QueryNext => "query_next",
            Service::GetEndpoints => "get_endpoints",
            Service::FindServers => "find_servers",
            Service::FindServersOnNetwork => "find_servers_on_network",
            Service::RegisterServer => "register_server",
            Service::RegisterServer2 => "register_server2",
            Service::OpenSecureChannel => "open_secure_channel",
            Service::CloseSecureChannel => "close_secure_channel",
            Service::Unknown => "unknown",
        }
    }

    /// The service of a request's `*Request_Encoding_DefaultBinary` id (namespace 0).
    pub fn from_type_id(id: u32) -> Service {
        let Ok(object) = ObjectId::try_from(id) else {
            return Service::Unknown;
        };
        Service::ALL
            .into_iter()
            .find(|service| service.encoding_id() == Some(object))
            .unwrap_or(Service::Unknown)
    }

    /// The numeric id of the request's binary encoding; `None` for [`Service::Unknown`].
    pub fn type_id(self) -> Option<u32> {
        self.encoding_id().map(|id| id as u32)
    }

    fn encoding_id(self) -> Option<ObjectId> {
        use ObjectId as O;
        Some(match self {
            Service::Read => O::ReadRequest_Encoding_DefaultBinary,
            Service::Write => O::WriteRequest_Encoding_DefaultBinary,
            Service::Call => O::CallRequest_Encoding_DefaultBinary,
            Service::Browse => O::BrowseRequest_Encoding_DefaultBinary,
            Service::BrowseNext => O::BrowseNextRequest_Encoding_DefaultBinary,
            Service::TranslateBrowsePathsToNodeIds => {
                O::TranslateBrowsePathsToNodeIdsRequest_Encoding_DefaultBinary
            }
            Service::RegisterNodes => O::RegisterNodesRequest_Encoding_DefaultBinary,
            Service::UnregisterNodes => O::UnregisterNodesRequest_Encoding_DefaultBinary,
            Service::CreateSession => O::CreateSessionRequest_Encoding_DefaultBinary,
            Service::ActivateSession => O::ActivateSessionRequest_Encoding_DefaultBinary,
            Service::CloseSession => O::CloseSessionRequest_Encoding_DefaultBinary,
            Service::Cancel => O::CancelRequest_Encoding_DefaultBinary,
            Service::CreateSubscription => O::CreateSubscriptionRequest_Encoding_DefaultBinary,
            Service::ModifySubscription => O::ModifySubscriptionRequest_Encoding_DefaultBinary,
            Service::SetPublishingMode => O::SetPublishingModeRequest_Encoding_DefaultBinary,
            Service::DeleteSubscriptions => O::DeleteSubscriptionsRequest_Encoding_DefaultBinary,
            Service::TransferSubscriptions => {
                O::TransferSubscriptionsRequest_Encoding_DefaultBinary
            }
            Service::Republish => O::RepublishRequest_Encoding_DefaultBinary,
            Service::Publish => O::PublishRequest_Encoding_DefaultBinary,
            Service::CreateMonitoredItems => O::CreateMonitoredItemsRequest_Encoding_DefaultBinary,
            Service::ModifyMonitoredItems => O::ModifyMonitoredItemsRequest_Encoding_DefaultBinary,
            Service::SetMonitoringMode => O::SetMonitoringModeRequest_Encoding_DefaultBinary,
            Service::SetTriggering => O::SetTriggeringRequest_Encoding_DefaultBinary,
            Service::DeleteMonitoredItems => O::DeleteMonitoredItemsRequest_Encoding_DefaultBinary,
            Service::HistoryRead => O::HistoryReadRequest_Encoding_DefaultBinary,
            Service::HistoryUpdate => O::HistoryUpdateRequest_Encoding_DefaultBinary,
            Service::AddNodes => O::AddNodesRequest_Encoding_DefaultBinary,
            Service::AddReferences => O::AddReferencesRequest_Encoding_DefaultBinary,
            Service::DeleteNodes => O::DeleteNodesRequest_Encoding_DefaultBinary,
            Service::DeleteReferences => O::DeleteReferencesRequest_Encoding_DefaultBinary,
            Service::QueryFirst => O::QueryFirstRequest_Encoding_DefaultBinary,
            Service::QueryNext => O::QueryNextRequest_Encoding_DefaultBinary,
            Service::GetEndpoints => O::GetEndpointsRequest_Encoding_DefaultBinary,
            Service::FindServers => O::FindServersRequest_Encoding_DefaultBinary,
            Service::FindServersOnNetwork => O::FindServersOnNetworkRequest_Encoding_DefaultBinary,
            Service::RegisterServer => O::RegisterServerRequest_Encoding_DefaultBinary,
            Service::RegisterServer2 => O::RegisterServer2Request_Encoding_DefaultBinary,
            Service::OpenSecureChannel => O::OpenSecureChannelRequest_Encoding_DefaultBinary,
            Service::CloseSecureChannel => O::CloseSecureChannelRequest_Encoding_DefaultBinary,
            Service::Unknown => return None,
        })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The request structure, for the services policy judges node by node.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedRequest {
    Read(ReadRequest),
    Write(WriteRequest),
    Call(CallRequest),
    Browse(BrowseRequest),
    CreateMonitoredItems(CreateMonitoredItemsRequest),
    /// Without the identity token's secrets: a UserNameIdentityToken's password and an
    /// IssuedIdentityToken's token data are null here.
    ActivateSession(ActivateSessionRequest),
    CreateSession(CreateSessionRequest),
    HistoryRead(HistoryReadRequest),
    HistoryUpdate(HistoryUpdateRequest),
    AddNodes(AddNodesRequest),
    DeleteNodes(DeleteNodesRequest),
    AddReferences(AddReferencesRequest),
    DeleteReferences(DeleteReferencesRequest),
    TranslateBrowsePaths(TranslateBrowsePathsToNodeIdsRequest),
    RegisterNodes(RegisterNodesRequest),
    /// Kept whole: the aliases it ends must be forgotten (see [`decode_register_nodes_response`]).
    UnregisterNodes(UnregisterNodesRequest),
    /// Every other service: not judged node by node. A known service's body was decoded whole
    /// (so it is well-formed) and then dropped; of an unknown one only the RequestHeader was
    /// decoded (enough for the request handle).
    Other,
}

impl DecodedRequest {
    /// Every NodeId of the request that names a node the service acts on, for the aliases a
    /// server gave at RegisterNodes to be resolved before the request is judged. Not those of
    /// RegisterNodes and UnregisterNodes themselves (the one names nodes, the other aliases).
    pub fn for_each_node_id(&mut self, mut f: impl FnMut(&mut NodeId)) {
        fn each<T>(list: &mut Option<Vec<T>>) -> std::slice::IterMut<'_, T> {
            list.as_deref_mut().unwrap_or_default().iter_mut()
        }
        match self {
            DecodedRequest::Read(r) => each(&mut r.nodes_to_read).for_each(|n| f(&mut n.node_id)),
            DecodedRequest::Write(r) => {
                each(&mut r.nodes_to_write).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::Call(r) => each(&mut r.methods_to_call).for_each(|c| {
                f(&mut c.object_id);
                f(&mut c.method_id);
            }),
            DecodedRequest::Browse(r) => {
                each(&mut r.nodes_to_browse).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::CreateMonitoredItems(r) => {
                each(&mut r.items_to_create).for_each(|m| f(&mut m.item_to_monitor.node_id))
            }
            DecodedRequest::HistoryRead(r) => {
                each(&mut r.nodes_to_read).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::TranslateBrowsePaths(r) => {
                each(&mut r.browse_paths).for_each(|p| f(&mut p.starting_node));
            }
            DecodedRequest::DeleteNodes(r) => {
                each(&mut r.nodes_to_delete).for_each(|n| f(&mut n.node_id));
            }
            DecodedRequest::AddReferences(r) => {
                each(&mut r.references_to_add).for_each(|n| f(&mut n.source_node_id));
            }
            DecodedRequest::DeleteReferences(r) => {
                each(&mut r.references_to_delete).for_each(|n| f(&mut n.source_node_id));
            }
            DecodedRequest::ActivateSession(_)
            | DecodedRequest::CreateSession(_)
            | DecodedRequest::HistoryUpdate(_)
            | DecodedRequest::AddNodes(_)
            | DecodedRequest::RegisterNodes(_)
            | DecodedRequest::UnregisterNodes(_)
            | DecodedRequest::Other => {}
        }
    }
}

/// Drops the secrets of an identity token from the decoded copy, so that no log or policy input
/// can show them: a UserNameIdentityToken's password (encrypted, or in the clear where the
/// token policy is None) and an IssuedIdentityToken's token data (a bearer token). The bytes the
/// proxy forwards keep them.
pub(super) fn forget_secrets(request: &mut ActivateSessionRequest) {
    let token = &request.user_identity_token;
    if let Some(user) = token.inner_as::<UserNameIdentityToken>() {
        request.user_identity_token = ExtensionObject::from_message(UserNameIdentityToken {
            password: ByteString::null(),
            ..user.clone()
        });
    } else if let Some(issued) = token.inner_as::<IssuedIdentityToken>() {
        request.user_identity_token = ExtensionObject::from_message(IssuedIdentityToken {
            token_data: ByteString::null(),
            ..issued.clone()
        });
    }
}

/// The identity token of an ActivateSessionRequest, as policy sees it (Part 4 7.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityToken<'a> {
    /// AnonymousIdentityToken, or a null token ("Null or empty user token shall always be
    /// interpreted as anonymous", Part 4 5.7.3.2).
    Anonymous,
    /// UserNameIdentityToken; its password is encrypted or secret and never exposed. A null user
    /// name reads as "".
    UserName { user_name: &'a str },
    /// X509IdentityToken.
    X509,
    /// IssuedIdentityToken (e.g. a JWT).
    Issued,
    /// Any other type id.
    Unknown,
}

impl IdentityToken<'_> {
    /// "anonymous", "user_name", "x509", "issued", "unknown".
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityToken::Anonymous => "anonymous",
            IdentityToken::UserName { .. } => "user_name",
            IdentityToken::X509 => "x509",
            IdentityToken::Issued => "issued",
            IdentityToken::Unknown => "unknown",
        }
    }
}

/// The identity token of `request`, by the type of its ExtensionObject's body
/// (AnonymousIdentityToken 321, UserNameIdentityToken 324, X509IdentityToken 327,
/// IssuedIdentityToken 940: the binary encoding ids, which [`decode_request`] decoded typed).
pub fn identity_token(request: &ActivateSessionRequest) -> IdentityToken<'_> {
    let token = &request.user_identity_token;
    if token.is_null() || token.inner_is::<AnonymousIdentityToken>() {
        IdentityToken::Anonymous
    } else if let Some(user) = token.inner_as::<UserNameIdentityToken>() {
        IdentityToken::UserName {
            user_name: user.user_name.as_ref(),
        }
    } else if token.inner_is::<X509IdentityToken>() {
        IdentityToken::X509
    } else if token.inner_is::<IssuedIdentityToken>() {
        IdentityToken::Issued
    } else {
        IdentityToken::Unknown
    }
}

//! Guarded decoding of request bodies with async-opcua-types: bounded lengths, nesting and stack,
//! ExtensionObjects that fill exactly their length, and the round-trip check that a request is in
//! the one form every reader takes the same way.

use std::io::Read;
use std::sync::LazyLock;

use super::*;
use opcua_types::{
    ActivateSessionRequest, AddNodesRequest, AddReferencesRequest, BinaryDecodable,
    BinaryEncodable, BrowseNextRequest, BrowseRequest, ByteString, ByteStringBody, CallRequest,
    CancelRequest, CloseSecureChannelRequest, CloseSessionRequest, Context,
    CreateMonitoredItemsRequest, CreateSessionRequest, CreateSubscriptionRequest, DataTypeId,
    DecodingOptions, DeleteMonitoredItemsRequest, DeleteNodesRequest, DeleteReferencesRequest,
    DeleteSubscriptionsRequest, DepthGauge, DynEncodable, EncodingResult, ExpandedNodeId,
    FindServersOnNetworkRequest, FindServersRequest, GeneratedTypeLoader, GetEndpointsRequest,
    HistoryReadRequest, HistoryUpdateRequest, ModifyMonitoredItemsRequest,
    ModifySubscriptionRequest, NamespaceMap, NodeId, ObjectId, OpenSecureChannelRequest,
    PublishRequest, QueryFirstRequest, QueryNextRequest, ReadRequest, RegisterNodesRequest,
    RegisterNodesResponse, RegisterServer2Request, RegisterServerRequest, RepublishRequest,
    RequestHeader, SetMonitoringModeRequest, SetPublishingModeRequest, SetTriggeringRequest,
    TransferSubscriptionsRequest, TranslateBrowsePathsToNodeIdsRequest, TypeLoader,
    TypeLoaderCollection, TypeLoaderPriority, UnregisterNodesRequest, WriteRequest,
};

/// Decodes a reassembled plaintext request message body: the type id (an ExpandedNodeId, which
/// must be numeric, in namespace 0 and local), then the request.
///
/// A known request must decode whole, end where the message ends, and round-trip: encoding the
/// decoded type id and request again must give exactly the message's bytes. What the policy
/// judges is then all the message says, in the one form no reader can take differently: any
/// byte the decoder skipped, normalised or read another way than its encoding says (a
/// non-canonical NodeId, a Boolean other than 0 or 1, an ExtensionObject whose length does not
/// fit its body, an XML body, a DateTime out of range) is an [`OpcUaError::RoundTrip`]. An
/// unknown type id is `Ok` with [`Service::Unknown`] and [`DecodedRequest::Other`] once its
/// RequestHeader decodes, so that it can be answered; it is never forwarded (its body was not
/// judged).
///
/// Strings, ByteStrings and arrays are bounded by the message's own length (and
/// [`MAX_ARRAY_LENGTH`]), nesting by [`MAX_NESTING_DEPTH`] and [`MAX_DECODE_STACK`]. Errors,
/// never panics, on anything malformed.
pub fn decode_request(message: &[u8]) -> Result<ServiceRequest, OpcUaError> {
    let ctx = decoding_context(message.len());
    let mut reader = GuardedReader::new(message);
    let type_id: ExpandedNodeId = reader.decode(&ctx, Service::Unknown)?;
    let numeric = numeric_type_id(&type_id)?;
    let service = Service::from_type_id(numeric);

    // Decodes the request, checks that it ends with the message and round-trips, and keeps it
    // for policy (or only its request handle).
    macro_rules! decode {
        ($ty:ty) => {{
            let request: $ty = reader.decode(&ctx, service)?;
            reader.judged_whole(service, &type_id, &request, message)?;
            (request.request_header.request_handle, DecodedRequest::Other)
        }};
        ($ty:ty, $variant:path) => {{
            let request: $ty = reader.decode(&ctx, service)?;
            reader.judged_whole(service, &type_id, &request, message)?;
            (request.request_header.request_handle, $variant(request))
        }};
    }

    let (request_handle, request) = match service {
        Service::Read => decode!(ReadRequest, DecodedRequest::Read),
        Service::Write => decode!(WriteRequest, DecodedRequest::Write),
        Service::Call => decode!(CallRequest, DecodedRequest::Call),
        Service::Browse => decode!(BrowseRequest, DecodedRequest::Browse),
        Service::BrowseNext => decode!(BrowseNextRequest),
        Service::TranslateBrowsePathsToNodeIds => decode!(
            TranslateBrowsePathsToNodeIdsRequest,
            DecodedRequest::TranslateBrowsePaths
        ),
        Service::RegisterNodes => decode!(RegisterNodesRequest, DecodedRequest::RegisterNodes),
        Service::UnregisterNodes => {
            decode!(UnregisterNodesRequest, DecodedRequest::UnregisterNodes)
        }
        Service::CreateSession => decode!(CreateSessionRequest, DecodedRequest::CreateSession),
        Service::ActivateSession => {
            let mut request: ActivateSessionRequest = reader.decode(&ctx, service)?;
            reader.judged_whole(service, &type_id, &request, message)?;
            forget_secrets(&mut request);
            (
                request.request_header.request_handle,
                DecodedRequest::ActivateSession(request),
            )
        }
        Service::CloseSession => decode!(CloseSessionRequest),
        Service::Cancel => decode!(CancelRequest),
        Service::CreateSubscription => decode!(CreateSubscriptionRequest),
        Service::ModifySubscription => decode!(ModifySubscriptionRequest),
        Service::SetPublishingMode => decode!(SetPublishingModeRequest),
        Service::DeleteSubscriptions => decode!(DeleteSubscriptionsRequest),
        Service::TransferSubscriptions => decode!(TransferSubscriptionsRequest),
        Service::Republish => decode!(RepublishRequest),
        Service::Publish => decode!(PublishRequest),
        Service::CreateMonitoredItems => decode!(
            CreateMonitoredItemsRequest,
            DecodedRequest::CreateMonitoredItems
        ),
        Service::ModifyMonitoredItems => decode!(ModifyMonitoredItemsRequest),
        Service::SetMonitoringMode => decode!(SetMonitoringModeRequest),
        Service::SetTriggering => decode!(SetTriggeringRequest),
        Service::DeleteMonitoredItems => decode!(DeleteMonitoredItemsRequest),
        Service::HistoryRead => decode!(HistoryReadRequest, DecodedRequest::HistoryRead),
        Service::HistoryUpdate => decode!(HistoryUpdateRequest, DecodedRequest::HistoryUpdate),
        Service::AddNodes => decode!(AddNodesRequest, DecodedRequest::AddNodes),
        Service::AddReferences => decode!(AddReferencesRequest, DecodedRequest::AddReferences),
        Service::DeleteNodes => decode!(DeleteNodesRequest, DecodedRequest::DeleteNodes),
        Service::DeleteReferences => {
            decode!(DeleteReferencesRequest, DecodedRequest::DeleteReferences)
        }
        Service::QueryFirst => decode!(QueryFirstRequest),
        Service::QueryNext => decode!(QueryNextRequest),
        Service::GetEndpoints => decode!(GetEndpointsRequest),
        Service::FindServers => decode!(FindServersRequest),
        Service::FindServersOnNetwork => decode!(FindServersOnNetworkRequest),
        Service::RegisterServer => decode!(RegisterServerRequest),
        Service::RegisterServer2 => decode!(RegisterServer2Request),
        Service::OpenSecureChannel => decode!(OpenSecureChannelRequest),
        Service::CloseSecureChannel => decode!(CloseSecureChannelRequest),
        Service::Unknown => {
            // Enough to answer it; what follows the header is not ours to read.
            let header: RequestHeader = reader.decode(&ctx, service)?;
            (header.request_handle, DecodedRequest::Other)
        }
    };
    Ok(ServiceRequest {
        type_id: numeric,
        service,
        request_handle,
        request,
    })
}

/// The NodeIds a RegisterNodesResponse gives, in the order of the request's nodes (Part 4
/// 5.8.5): a server may answer a registered node with an alias that stands for it from then on
/// in every service of the session. `Ok(None)` for any other response (a ServiceFault).
pub fn decode_register_nodes_response(message: &[u8]) -> Result<Option<Vec<NodeId>>, OpcUaError> {
    let ctx = decoding_context(message.len());
    let mut reader = GuardedReader::new(message);
    let type_id: ExpandedNodeId = reader.decode(&ctx, Service::RegisterNodes)?;
    let response_id = ObjectId::RegisterNodesResponse_Encoding_DefaultBinary as u32;
    if numeric_type_id(&type_id).ok() != Some(response_id) {
        return Ok(None);
    }
    let response: RegisterNodesResponse = reader.decode(&ctx, Service::RegisterNodes)?;
    Ok(Some(response.registered_node_ids.unwrap_or_default()))
}

/// The encoding id of a message body as a number: numeric, namespace 0, no namespace URI, this
/// server.
fn numeric_type_id(id: &ExpandedNodeId) -> Result<u32, OpcUaError> {
    let local = id.namespace_uri.is_null() && id.server_index == 0 && id.node_id.namespace == 0;
    local
        .then(|| id.node_id.as_u32())
        .flatten()
        .ok_or_else(|| OpcUaError::TypeId {
            type_id: clip(&if id.namespace_uri.is_null() && id.server_index == 0 {
                id.node_id.to_string()
            } else {
                id.to_string()
            }),
        })
}

/// Decoding options for a message of `len` bytes: no string, byte string or array can claim more
/// than the message holds.
pub(super) fn decoding_context(len: usize) -> Context<'static> {
    static NAMESPACES: LazyLock<NamespaceMap> = LazyLock::new(NamespaceMap::new);
    static LOADERS: LazyLock<TypeLoaderCollection> = LazyLock::new(|| {
        let mut loaders = TypeLoaderCollection::new_empty();
        loaders.add_type_loader(ExactLengthLoader);
        loaders
    });
    let len = len.min(MAX_MESSAGE_SIZE);
    let options = DecodingOptions {
        max_message_size: MAX_MESSAGE_SIZE,
        max_chunk_count: MAX_CHUNK_COUNT,
        max_string_length: len,
        max_byte_string_length: len,
        max_array_length: MAX_ARRAY_LENGTH.min(len),
        decoding_depth_gauge: DepthGauge::new(MAX_NESTING_DEPTH),
        ..DecodingOptions::default()
    };
    Context::new(&NAMESPACES, &LOADERS, options)
}

/// The message bytes as the decoder reads them: counts where it is, and stops it once its
/// recursion has used [`MAX_DECODE_STACK`] bytes of stack (every level reads at least its
/// encoding mask, so every level passes here).
struct GuardedReader<'a> {
    rest: &'a [u8],
    len: usize,
    stack_base: usize,
    too_deep: bool,
}

impl<'a> GuardedReader<'a> {
    fn new(message: &'a [u8]) -> Self {
        GuardedReader {
            rest: message,
            len: message.len(),
            stack_base: stack_position(),
            too_deep: false,
        }
    }

    fn offset(&self) -> usize {
        self.len.saturating_sub(self.rest.len())
    }

    fn decode<T: BinaryDecodable>(
        &mut self,
        ctx: &Context<'_>,
        service: Service,
    ) -> Result<T, OpcUaError> {
        T::decode(self, ctx).map_err(|error| {
            if self.too_deep {
                OpcUaError::Nesting {
                    service,
                    offset: self.offset(),
                }
            } else {
                OpcUaError::Decode {
                    service,
                    offset: self.offset(),
                    reason: clip(&error.to_string()),
                }
            }
        })
    }
}

impl GuardedReader<'_> {
    /// The request ends where the message ends, and encodes back to exactly its bytes.
    fn judged_whole<T: BinaryEncodable>(
        &self,
        service: Service,
        type_id: &ExpandedNodeId,
        request: &T,
        message: &[u8],
    ) -> Result<(), OpcUaError> {
        let extra = self.rest.len();
        if extra != 0 {
            return Err(OpcUaError::ServiceTrailingBytes { service, extra });
        }
        round_trips(type_id, request, message)
            .map_err(|offset| OpcUaError::RoundTrip { service, offset })
    }
}

impl Read for GuardedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if stack_position().abs_diff(self.stack_base) > MAX_DECODE_STACK {
            self.too_deep = true;
            return Err(std::io::Error::other("nested too deeply"));
        }
        self.rest.read(buf)
    }
}

/// Where this call's frame is on the stack: the address of a local.
#[inline(never)]
fn stack_position() -> usize {
    let marker = 0_u8;
    std::hint::black_box(&raw const marker).addr()
}

/// Decodes ExtensionObject bodies (Part 6 5.2.2.15) of the types async-opcua-types knows from
/// exactly the bytes their length declares, and keeps the others as raw bytes. The crate's own
/// loaders read a known type without looking at the length, and allocate an unknown one's
/// declared length before reading it.
struct ExactLengthLoader;

impl TypeLoader for ExactLengthLoader {
    fn load_from_binary(
        &self,
        node_id: &NodeId,
        stream: &mut dyn Read,
        ctx: &Context<'_>,
        length: Option<usize>,
    ) -> Option<EncodingResult<Box<dyn DynEncodable>>> {
        let Some(length) = length else {
            return Some(Err(decoding_error("ExtensionObject body without a length")));
        };
        if length > ctx.options().max_byte_string_length {
            return Some(Err(decoding_error(format!(
                "ExtensionObject body of {length} bytes is longer than the message"
            ))));
        }
        let mut body = stream.take(u64::try_from(length).unwrap_or(u64::MAX));
        let numeric = node_id.as_u32().filter(|_| node_id.namespace == 0);
        // The type id of a body is its encoding's node. The crate also decodes a DataType's id in
        // its place, which a server need not do: kept as bytes, the proxy sees no more than the
        // server would.
        if numeric.is_some_and(|id| DataTypeId::try_from(id).is_ok()) {
            return Some(read_body(&mut body, length).map(|raw| raw_body(raw, node_id)));
        }
        let loaded = match numeric.and_then(|id| ObjectId::try_from(id).ok()) {
            // Argument's decoder pads ArrayDimensions with zeros up to ValueRank, whatever
            // ValueRank says: 2^31 - 1 would be 8 GiB. Its fields hold no recursion, so it can be
            // checked and decoded from a copy.
            Some(ObjectId::Argument_Encoding_DefaultBinary) => read_body(&mut body, length)
                .and_then(|raw| {
                    check_argument(&raw, ctx)?;
                    let mut rest = raw.as_slice();
                    let value = GeneratedTypeLoader
                        .load_from_binary(node_id, &mut rest, ctx, Some(length))
                        .unwrap_or_else(|| Err(decoding_error("Argument has no decoder")))?;
                    exactly_used(node_id, length, rest.len()).map(|()| value)
                }),
            // Server diagnostics that hold Arguments, which a client has no reason to send: kept
            // as bytes rather than decoded.
            Some(
                ObjectId::ProgramDiagnosticDataType_Encoding_DefaultBinary
                | ObjectId::ProgramDiagnostic2DataType_Encoding_DefaultBinary,
            ) => read_body(&mut body, length).map(|raw| raw_body(raw, node_id)),
            _ => {
                match GeneratedTypeLoader.load_from_binary(node_id, &mut body, ctx, Some(length)) {
                    Some(Ok(value)) => exactly_used(
                        node_id,
                        length,
                        usize::try_from(body.limit()).unwrap_or(length),
                    )
                    .map(|()| value),
                    Some(Err(error)) => Err(error),
                    None => read_body(&mut body, length).map(|raw| raw_body(raw, node_id)),
                }
            }
        };
        Some(loaded)
    }

    fn load_from_xml(
        &self,
        node_id: &NodeId,
        _stream: &mut opcua_types::xml::XmlStreamReader<&mut dyn Read>,
        _ctx: &Context<'_>,
        _name: &str,
    ) -> Option<EncodingResult<Box<dyn DynEncodable>>> {
        Some(Err(decoding_error(format!(
            "ExtensionObject {node_id} has an XML body, which a binary message does not get"
        ))))
    }

    fn priority(&self) -> TypeLoaderPriority {
        TypeLoaderPriority::Core
    }
}

/// The `length` bytes of an ExtensionObject body, read as they come (the length was checked
/// against the message, and nothing is allocated before the bytes are there).
fn read_body(body: &mut impl Read, length: usize) -> EncodingResult<Vec<u8>> {
    let mut raw = Vec::new();
    let read = body.read_to_end(&mut raw)?;
    if read == length {
        Ok(raw)
    } else {
        Err(decoding_error(format!(
            "ExtensionObject body: {read} of its {length} bytes are there"
        )))
    }
}

fn raw_body(raw: Vec<u8>, node_id: &NodeId) -> Box<dyn DynEncodable> {
    Box::new(ByteStringBody::new(ByteString::from(raw), node_id.clone()))
}

/// A decoded body must have used all of its declared length: a server that skips by the length
/// would read the bytes left over as the next field.
fn exactly_used(node_id: &NodeId, length: usize, left: usize) -> EncodingResult<()> {
    if left == 0 {
        Ok(())
    } else {
        Err(decoding_error(format!(
            "ExtensionObject {node_id}: {left} of its {length} bytes are left after the body"
        )))
    }
}

/// Argument (Part 3 8.6): Name, DataType, ValueRank, ... with ValueRank at most
/// [`MAX_VALUE_RANK`].
fn check_argument(mut raw: &[u8], ctx: &Context<'_>) -> EncodingResult<()> {
    opcua_types::UAString::decode(&mut raw, ctx)?;
    NodeId::decode(&mut raw, ctx)?;
    let value_rank = i32::decode(&mut raw, ctx)?;
    if value_rank > MAX_VALUE_RANK {
        return Err(decoding_error(format!(
            "Argument ValueRank {value_rank} is above {MAX_VALUE_RANK}"
        )));
    }
    Ok(())
}

fn decoding_error(
    context: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> opcua_types::Error {
    opcua_types::Error::decoding(context)
}

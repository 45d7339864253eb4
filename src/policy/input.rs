//! Building the policy input for one Modbus request (schema: see the [`super`] module docs).
//!
//! The input is built per request, so it is built cheaply: every object key is a shared string
//! made once per process, and the parts fixed for a connection (conduit, mode, source,
//! destination) are built once per connection ([`ConnectionInput`]) and shared by reference count.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use regorus::Value;

use super::keys::keys;
use super::registers::{DecodedWrite, RegisterMap};
use crate::proto::modbus::{Request, Table};

/// One end of a connection as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub address: IpAddr,
    /// The destination's port; `None` for the source.
    pub port: Option<u16>,
    pub zone: &'a str,
    /// The asset with this address in zones.yaml, if any.
    pub asset: Option<&'a str>,
    /// That asset's kind.
    pub kind: Option<&'a str>,
}

impl Peer<'_> {
    fn to_value(self) -> Value {
        let k = keys();
        let mut o = BTreeMap::new();
        o.insert(k.address.clone(), Value::from(self.address.to_string()));
        if let Some(port) = self.port {
            o.insert(k.port.clone(), Value::from(u64::from(port)));
        }
        o.insert(k.zone.clone(), Value::from(self.zone));
        if let Some(asset) = self.asset {
            o.insert(k.asset.clone(), Value::from(asset));
        }
        if let Some(kind) = self.kind {
            o.insert(k.kind.clone(), Value::from(kind));
        }
        Value::from(o)
    }
}

/// The input fields fixed for one connection; build it once when the connection is accepted.
#[derive(Debug, Clone)]
pub struct ConnectionInput {
    conduit: Value,
    mode: Value,
    source: Value,
    destination: Value,
    /// The register map of the destination device, if it has one.
    map: Option<Arc<RegisterMap>>,
}

impl ConnectionInput {
    /// `mode` is the conduit's mode as policies see it (e.g. "enforce").
    pub fn new(
        conduit: &str,
        mode: &str,
        source: Peer<'_>,
        destination: Peer<'_>,
        map: Option<Arc<RegisterMap>>,
    ) -> Self {
        let mut destination = destination.to_value();
        // The units the destination's register map describes: the shipped policies refuse a
        // write to any other unit behind the same address.
        if let (Some(m), Ok(fields)) = (&map, destination.as_object_mut()) {
            let units = m
                .unit_ids()
                .iter()
                .map(|&u| Value::from(u64::from(u)))
                .collect::<Vec<_>>();
            fields.insert(keys().unit_ids.clone(), Value::from(units));
        }
        ConnectionInput {
            conduit: Value::from(conduit),
            mode: Value::from(mode),
            source: source.to_value(),
            destination,
            map,
        }
    }

    pub fn register_map(&self) -> Option<&RegisterMap> {
        self.map.as_deref()
    }

    /// The whole input document for OPC UA: the connection's fields and `opcua` (built by
    /// [`super::opcua`]).
    pub fn opcua_input(&self, opcua: Value) -> Value {
        let k = keys();
        let mut top = BTreeMap::new();
        top.insert(k.conduit.clone(), self.conduit.clone());
        top.insert(k.mode.clone(), self.mode.clone());
        top.insert(k.source.clone(), self.source.clone());
        top.insert(k.destination.clone(), self.destination.clone());
        top.insert(k.opcua.clone(), opcua);
        Value::from(top)
    }

    /// The whole input document for one request to unit `unit_id`.
    pub fn modbus_input(&self, unit_id: u8, request: &Request<'_>) -> Value {
        // The map describes only its own units: another unit's registers may mean anything.
        let decoded = self
            .map
            .as_deref()
            .filter(|m| m.describes_unit(unit_id))
            .and_then(|m| decode(m, request));
        self.input_with(unit_id, request, decoded.as_ref())
    }

    /// [`ConnectionInput::modbus_input`] with the write already decoded (or not decodable).
    pub fn input_with(
        &self,
        unit_id: u8,
        request: &Request<'_>,
        decoded: Option<&DecodedWrite>,
    ) -> Value {
        let k = keys();
        let mut top = BTreeMap::new();
        top.insert(k.conduit.clone(), self.conduit.clone());
        top.insert(k.mode.clone(), self.mode.clone());
        top.insert(k.source.clone(), self.source.clone());
        top.insert(k.destination.clone(), self.destination.clone());
        top.insert(k.modbus.clone(), modbus_value(unit_id, request, decoded));
        Value::from(top)
    }
}

/// Decodes a request's write against `map`: `None` for requests that write no table.
pub fn decode(map: &RegisterMap, request: &Request<'_>) -> Option<DecodedWrite> {
    match *request {
        Request::WriteSingleCoil { address, value } => {
            Some(map.decode_with(Table::Coils, address, 1, |_| u16::from(value)))
        }
        Request::WriteSingleRegister { address, value } => {
            Some(map.decode_with(Table::HoldingRegisters, address, 1, |_| value))
        }
        Request::WriteMultipleCoils {
            address, values, ..
        } => Some(map.decode_with(Table::Coils, address, values.len(), |i| {
            u16::from(values.get(i).unwrap_or(false))
        })),
        Request::WriteMultipleRegisters {
            address, values, ..
        }
        | Request::ReadWriteMultipleRegisters {
            write_address: address,
            values,
            ..
        } => Some(
            map.decode_with(Table::HoldingRegisters, address, values.len(), |i| {
                values.get(i).unwrap_or(0)
            }),
        ),
        Request::MaskWriteRegister { address, .. } => {
            Some(map.decode_mask_write(Table::HoldingRegisters, address))
        }
        _ => None,
    }
}

fn num(n: impl Into<u64>) -> Value {
    Value::from(n.into())
}

/// The `modbus` object of the input.
fn modbus_value(unit_id: u8, request: &Request<'_>, decoded: Option<&DecodedWrite>) -> Value {
    let k = keys();
    let mut m = BTreeMap::new();
    m.insert(k.unit_id.clone(), num(unit_id));
    let mut function = BTreeMap::new();
    function.insert(k.code.clone(), num(request.function_code()));
    function.insert(k.name.clone(), Value::from(request.name()));
    m.insert(k.function.clone(), Value::from(function));
    if let Some(a) = k.access_values.get(request.access() as usize) {
        m.insert(k.access.clone(), a.clone());
    }
    if let Some(table) = request.table() {
        let i = match table {
            Table::Coils => 0,
            Table::DiscreteInputs => 1,
            Table::HoldingRegisters => 2,
            Table::InputRegisters => 3,
        };
        if let Some(t) = k.table_values.get(i) {
            m.insert(k.table.clone(), t.clone());
        }
    }
    if let Some(address) = request.address() {
        m.insert(k.address.clone(), num(address));
    }
    if let Some(quantity) = request.quantity() {
        m.insert(k.quantity.clone(), num(quantity));
    }
    let values = match *request {
        Request::WriteSingleCoil { value, .. } => Some(Value::from(vec![Value::Bool(value)])),
        Request::WriteSingleRegister { value, .. } => Some(Value::from(vec![num(value)])),
        Request::WriteMultipleCoils { values, .. } => Some(Value::from(
            values.iter().map(Value::Bool).collect::<Vec<_>>(),
        )),
        Request::WriteMultipleRegisters { values, .. }
        | Request::ReadWriteMultipleRegisters { values, .. } => {
            Some(Value::from(values.iter().map(num).collect::<Vec<_>>()))
        }
        _ => None,
    };
    if let Some(values) = values {
        m.insert(k.values.clone(), values);
    }
    match *request {
        Request::Diagnostics { sub_function, .. } => {
            m.insert(k.sub_function.clone(), num(sub_function));
        }
        Request::EncapsulatedInterface { mei_type, .. } => {
            m.insert(k.mei_type.clone(), num(mei_type));
        }
        Request::MaskWriteRegister {
            and_mask, or_mask, ..
        } => {
            m.insert(k.and_mask.clone(), num(and_mask));
            m.insert(k.or_mask.clone(), num(or_mask));
        }
        Request::ReadWriteMultipleRegisters {
            read_address,
            read_quantity,
            ..
        } => {
            m.insert(k.read_address.clone(), num(read_address));
            m.insert(k.read_quantity.clone(), num(read_quantity));
        }
        _ => {}
    }
    if let Some(d) = decoded {
        m.insert(k.registers.clone(), d.registers_value());
        m.insert(k.unmapped.clone(), d.unmapped_value());
        m.insert(k.partial.clone(), d.partial_value());
    }
    Value::from(m)
}

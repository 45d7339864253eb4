//! The object keys of the policy input and of decisions: shared strings made once per process,
//! so that building an input per request allocates no key. Used by the input builder
//! ([`super::input`]) and by the register-map decoder ([`super::registers`]) alike.

use std::sync::LazyLock;

use regorus::Value;

use crate::proto::Access;

/// The object keys of the input and of decisions, made once.
#[derive(Debug)]
pub(crate) struct Keys {
    pub conduit: Value,
    pub mode: Value,
    pub source: Value,
    pub destination: Value,
    pub modbus: Value,
    pub opcua: Value,
    pub address: Value,
    pub port: Value,
    pub zone: Value,
    pub asset: Value,
    pub kind: Value,
    pub unit_id: Value,
    pub unit_ids: Value,
    pub function: Value,
    pub code: Value,
    pub name: Value,
    pub access: Value,
    pub table: Value,
    pub quantity: Value,
    pub values: Value,
    pub registers: Value,
    pub unmapped: Value,
    pub partial: Value,
    pub type_: Value,
    pub raw: Value,
    pub value: Value,
    pub unit: Value,
    pub sub_function: Value,
    pub mei_type: Value,
    pub and_mask: Value,
    pub or_mask: Value,
    pub read_address: Value,
    pub read_quantity: Value,
    pub allow: Value,
    pub reason: Value,
    pub rule: Value,
    /// Indexed by `Access as usize`.
    pub(super) access_values: [Value; Access::ALL.len()],
    pub(super) table_values: [Value; 4],
}

pub(crate) fn keys() -> &'static Keys {
    static KEYS: LazyLock<Keys> = LazyLock::new(|| {
        let s = |k: &str| Value::from(k);
        Keys {
            conduit: s("conduit"),
            mode: s("mode"),
            source: s("source"),
            destination: s("destination"),
            modbus: s("modbus"),
            opcua: s("opcua"),
            address: s("address"),
            port: s("port"),
            zone: s("zone"),
            asset: s("asset"),
            kind: s("kind"),
            unit_id: s("unit_id"),
            unit_ids: s("unit_ids"),
            function: s("function"),
            code: s("code"),
            name: s("name"),
            access: s("access"),
            table: s("table"),
            quantity: s("quantity"),
            values: s("values"),
            registers: s("registers"),
            unmapped: s("unmapped"),
            partial: s("partial"),
            type_: s("type"),
            raw: s("raw"),
            value: s("value"),
            unit: s("unit"),
            sub_function: s("sub_function"),
            mei_type: s("mei_type"),
            and_mask: s("and_mask"),
            or_mask: s("or_mask"),
            read_address: s("read_address"),
            read_quantity: s("read_quantity"),
            allow: s("allow"),
            reason: s("reason"),
            rule: s("rule"),
            access_values: Access::ALL.map(|a| s(a.as_str())),
            table_values: [
                s("coils"),
                s("discrete_inputs"),
                s("holding_registers"),
                s("input_registers"),
            ],
        }
    });
    &KEYS
}

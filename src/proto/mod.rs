//! Industrial protocol parsers: zero-copy over `&[u8]`, no I/O, no async, named size limits,
//! checked arithmetic. A parser returns `Ok(None)` while a frame is incomplete.

pub mod modbus;
pub mod opcua;

/// What a request does to the device, in the terms policies and audit events use for every
/// protocol (`access` in the policy input and in `modbus`/`opcua` event details). Modbus uses
/// read, write, diagnostic and other; OPC UA every class but diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reads process values (Modbus reads; OPC UA Read, HistoryRead).
    Read,
    /// Changes process values (Modbus writes; OPC UA Write, HistoryUpdate).
    Write,
    /// Asks the device about itself (Modbus 0x07, 0x08, 0x0B, 0x0C, 0x11, 0x2B/0x0E).
    Diagnostic,
    /// Runs a method (OPC UA Call).
    Call,
    /// Looks at the address space (OPC UA Browse, TranslateBrowsePaths, RegisterNodes, Query).
    Browse,
    /// Subscriptions and monitored items, Publish (OPC UA).
    Subscribe,
    /// Session lifecycle (OPC UA CreateSession, ActivateSession, CloseSession, Cancel).
    Session,
    /// Endpoints and servers (OPC UA GetEndpoints, FindServers, RegisterServer).
    Discovery,
    /// Changes the address space (OPC UA AddNodes, DeleteNodes, Add/DeleteReferences).
    NodeManagement,
    /// Anything else.
    Other,
}

impl Access {
    /// Every class, in declaration order (`access as usize` indexes it).
    pub const ALL: [Access; 10] = [
        Access::Read,
        Access::Write,
        Access::Diagnostic,
        Access::Call,
        Access::Browse,
        Access::Subscribe,
        Access::Session,
        Access::Discovery,
        Access::NodeManagement,
        Access::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Diagnostic => "diagnostic",
            Access::Call => "call",
            Access::Browse => "browse",
            Access::Subscribe => "subscribe",
            Access::Session => "session",
            Access::Discovery => "discovery",
            Access::NodeManagement => "node_management",
            Access::Other => "other",
        }
    }
}

//! Industrial protocol parsers: zero-copy over `&[u8]`, no I/O, no async, named size limits,
//! checked arithmetic. A parser returns `Ok(None)` while a frame is incomplete.

pub mod modbus;
pub mod opcua;

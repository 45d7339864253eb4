//! Modbus/TCP frames as the tests and the soak send them: MBAP header and PDU, well-formed or
//! deliberately not, and what a response says.

/// An ADU with every MBAP field given: transaction id, protocol id, length (which a hostile
/// frame may state wrongly) and unit id, then `pdu`.
pub fn mbap(tid: u16, protocol: u16, length: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(7 + pdu.len());
    f.extend_from_slice(&tid.to_be_bytes());
    f.extend_from_slice(&protocol.to_be_bytes());
    f.extend_from_slice(&length.to_be_bytes());
    f.push(unit);
    f.extend_from_slice(pdu);
    f
}

/// A well-formed ADU to unit 1: protocol id 0, the length of unit id and `pdu`.
pub fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
    mbap(tid, 0, (pdu.len() + 1) as u16, 1, pdu)
}

/// [`adu`] in hex, as the Python peers take raw frames.
pub fn adu_hex(tid: u16, pdu: &[u8]) -> String {
    adu(tid, pdu).iter().map(|b| format!("{b:02x}")).collect()
}

/// FC03 (read holding registers): `count` registers from `address`.
pub fn read_holding_registers(tid: u16, address: u16, count: u16) -> Vec<u8> {
    let [a0, a1] = address.to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    adu(tid, &[0x03, a0, a1, c0, c1])
}

/// The exception code of a Modbus exception response, if it is one.
pub fn exception(frame: &[u8]) -> Option<u8> {
    (frame.len() >= 9 && frame[7] & 0x80 != 0).then(|| frame[8])
}

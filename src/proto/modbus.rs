//! Modbus/TCP (Modbus Application Protocol V1.1b3 and Modbus Messaging on TCP/IP V1.0b): the MBAP
//! header and every public function code's request PDU, plus responses, parsed in place.
//!
//! A frame is judged as its bytes arrive: the MBAP header is checked as soon as its 7 bytes are
//! there, and the PDU field by field, so a hostile length or quantity is refused before the rest
//! of the frame is waited for. Until a frame is complete and correct the parsers return
//! `Ok(None)`.

use std::fmt;

/// MBAP header: transaction id (2), protocol id (2), length (2), unit id (1).
pub const MBAP_LEN: usize = 7;
/// Largest PDU the spec allows (function code + 252 data bytes).
pub const MAX_PDU_LEN: usize = 253;
/// Largest ADU: MBAP header + PDU.
pub const MAX_ADU_LEN: usize = MBAP_LEN + MAX_PDU_LEN;

/// Smallest MBAP length field: unit id + a PDU of just the function code (Messaging on TCP/IP
/// 3.1.3).
pub const MIN_MBAP_LENGTH: u16 = 2;
/// Largest MBAP length field: unit id + [`MAX_PDU_LEN`].
pub const MAX_MBAP_LENGTH: u16 = 254;

/// Size of the Modbus data model's address space per table: addresses 0x0000..=0xFFFF.
pub const ADDRESS_SPACE: u32 = 0x1_0000;
/// 0x01 Read Coils, 0x02 Read Discrete Inputs: quantity of inputs 1..=2000 (0x7D0).
pub const MAX_READ_BITS: u16 = 0x07D0;
/// 0x03 Read Holding Registers, 0x04 Read Input Registers, and the read half of 0x17
/// Read/Write Multiple registers: quantity of registers 1..=125 (0x7D).
pub const MAX_READ_REGISTERS: u16 = 0x007D;
/// 0x0F Write Multiple Coils: quantity of outputs 1..=1968 (0x7B0).
pub const MAX_WRITE_COILS: u16 = 0x07B0;
/// 0x10 Write Multiple Registers: quantity of registers 1..=123 (0x7B).
pub const MAX_WRITE_REGISTERS: u16 = 0x007B;
/// 0x17 Read/Write Multiple registers: quantity to write 1..=121 (0x79).
pub const MAX_READ_WRITE_REGISTERS: u16 = 0x0079;

/// 0x05 Write Single Coil: output value for ON.
pub const COIL_ON: u16 = 0xFF00;
/// 0x05 Write Single Coil: output value for OFF.
pub const COIL_OFF: u16 = 0x0000;

/// 0x14 Read File Record: smallest byte count (one sub-request).
pub const MIN_READ_FILE_BYTE_COUNT: u8 = 0x07;
/// 0x14 Read File Record: largest byte count.
pub const MAX_READ_FILE_BYTE_COUNT: u8 = 0xF5;
/// 0x14 Read File Record: size of one sub-request (reference type, file, record, length).
pub const FILE_SUB_REQUEST_LEN: usize = 7;
/// 0x14 Read File Record: largest response data length, so the sub-requests must not ask for
/// more than this (each sub-response is 2 bytes + 2 per register).
pub const MAX_READ_FILE_RESPONSE_LEN: usize = 0xF5;
/// 0x15 Write File Record: smallest request data length (one sub-request with one register).
pub const MIN_WRITE_FILE_BYTE_COUNT: u8 = 0x09;
/// 0x15 Write File Record: largest request data length.
pub const MAX_WRITE_FILE_BYTE_COUNT: u8 = 0xFB;
/// 0x14 Read File Record, 0x15 Write File Record: the reference type "must be specified as 6".
pub const FILE_REFERENCE_TYPE: u8 = 6;
/// 0x14 Read File Record, 0x15 Write File Record: each file holds records 0..=9999 (0x270F).
pub const FILE_RECORDS: u32 = 10_000;

/// 0x2B Encapsulated Interface Transport, MEI type 0x0D CANopen General Reference.
pub const MEI_CANOPEN_GENERAL_REFERENCE: u8 = 0x0D;
/// 0x2B Encapsulated Interface Transport, MEI type 0x0E Read Device Identification.
pub const MEI_READ_DEVICE_IDENTIFICATION: u8 = 0x0E;
/// 0x2B/0x0E Read Device Identification: read device id codes 1 basic, 2 regular, 3 extended,
/// 4 one specific object.
pub const READ_DEVICE_ID_CODES: std::ops::RangeInclusive<u8> = 1..=4;

/// Set in a response's function code to mark an exception response.
pub const EXCEPTION_BIT: u8 = 0x80;

/// An exception code (Application Protocol V1.1b3 section 7), the byte after the function code
/// in an exception response. The ones a conforming device or gateway answers; a device's own
/// exception responses pass through with whatever byte it sent ([`Response::Exception`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExceptionCode {
    /// 0x01 Illegal Function: the function is not supported.
    IllegalFunction = 0x01,
    /// 0x02 Illegal Data Address: the address (range) is not held by the device.
    IllegalDataAddress = 0x02,
    /// 0x03 Illegal Data Value: a quantity, byte count or value is out of range.
    IllegalDataValue = 0x03,
    /// 0x04 Server Device Failure: an unrecoverable error while performing the action.
    ServerDeviceFailure = 0x04,
    /// 0x05 Acknowledge: accepted, a long action is under way.
    Acknowledge = 0x05,
    /// 0x06 Server Device Busy: processing a long command, retry later.
    ServerDeviceBusy = 0x06,
    /// 0x08 Memory Parity Error: a file record failed its consistency check.
    MemoryParityError = 0x08,
    /// 0x0A Gateway Path Unavailable: the gateway has no path to the target.
    GatewayPathUnavailable = 0x0A,
    /// 0x0B Gateway Target Device Failed to Respond.
    GatewayTargetDevice = 0x0B,
}

impl ExceptionCode {
    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExceptionCode> for u8 {
    fn from(code: ExceptionCode) -> u8 {
        code.code()
    }
}

/// Public function codes (Application Protocol 5.1).
pub mod function {
    pub const READ_COILS: u8 = 0x01;
    pub const READ_DISCRETE_INPUTS: u8 = 0x02;
    pub const READ_HOLDING_REGISTERS: u8 = 0x03;
    pub const READ_INPUT_REGISTERS: u8 = 0x04;
    pub const WRITE_SINGLE_COIL: u8 = 0x05;
    pub const WRITE_SINGLE_REGISTER: u8 = 0x06;
    pub const READ_EXCEPTION_STATUS: u8 = 0x07;
    pub const DIAGNOSTICS: u8 = 0x08;
    pub const GET_COMM_EVENT_COUNTER: u8 = 0x0B;
    pub const GET_COMM_EVENT_LOG: u8 = 0x0C;
    pub const WRITE_MULTIPLE_COILS: u8 = 0x0F;
    pub const WRITE_MULTIPLE_REGISTERS: u8 = 0x10;
    pub const REPORT_SERVER_ID: u8 = 0x11;
    pub const READ_FILE_RECORD: u8 = 0x14;
    pub const WRITE_FILE_RECORD: u8 = 0x15;
    pub const MASK_WRITE_REGISTER: u8 = 0x16;
    pub const READ_WRITE_MULTIPLE_REGISTERS: u8 = 0x17;
    pub const READ_FIFO_QUEUE: u8 = 0x18;
    pub const ENCAPSULATED_INTERFACE: u8 = 0x2B;
}

/// The MBAP header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mbap {
    pub transaction_id: u16,
    /// Always 0 for Modbus; anything else is refused.
    pub protocol_id: u16,
    /// Bytes that follow the length field: unit id + PDU.
    pub length: u16,
    pub unit_id: u8,
}

/// A complete frame borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a, T> {
    pub header: Mbap,
    /// function code + data, exactly as on the wire
    pub pdu: &'a [u8],
    pub body: T,
}

pub type RequestFrame<'a> = Frame<'a, Request<'a>>;
pub type ResponseFrame<'a> = Frame<'a, Response<'a>>;

/// Parses one request ADU from the front of `buf`; returns the frame and the bytes it used.
///
/// `Ok(None)` means the frame is not complete yet and nothing in it is wrong so far.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestFrame<'_>, usize)>, ModbusError> {
    parse_adu(buf, request_pdu)
}

/// Parses one response ADU (normal or exception) from the front of `buf`.
///
/// Normal responses keep their data unparsed: the proxy pairs them with their request by
/// transaction id.
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseFrame<'_>, usize)>, ModbusError> {
    parse_adu(buf, response_pdu)
}

/// The 9-byte exception response for `header`'s transaction: MBAP(length 3) + (function|0x80) +
/// code.
pub fn exception_response(header: &Mbap, function: u8, code: ExceptionCode) -> [u8; 9] {
    let [t0, t1] = header.transaction_id.to_be_bytes();
    // Protocol id 0 whatever the request said (it was checked to be 0); length 3 counts the unit
    // id, the function and the code.
    [
        t0,
        t1,
        0,
        0,
        0,
        3,
        header.unit_id,
        function | EXCEPTION_BIT,
        code.code(),
    ]
}

/// A well-framed request refused for what it asks (its function, quantity, byte count, address
/// range or a value), not for its framing: a conforming device answers it with an exception and
/// keeps the connection, and so does the gateway. See [`refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub header: Mbap,
    /// The function code as received (for 0x00 or 0x80..=0xFF, that byte).
    pub function: u8,
    /// The exception code a conforming device answers ([`ModbusError::exception`]).
    pub code: ExceptionCode,
    /// The whole ADU's length (MBAP header + PDU), to be consumed.
    pub len: usize,
}

impl Refusal {
    /// The exception response to send back.
    pub fn response(&self) -> [u8; 9] {
        exception_response(&self.header, self.function, self.code)
    }
}

/// What to do with the request at the front of `buf` that [`parse_request`] refused with
/// `error`: a framing error comes back as `Err` (the connection must close: no later frame
/// boundary can be trusted); a request error is a [`Refusal`] once the whole ADU the MBAP header
/// declares has arrived, `Ok(None)` until then (a request error is often found from its first
/// fields, but its bytes must be consumed whole before the next request).
pub fn refusal(buf: &[u8], error: ModbusError) -> Result<Option<Refusal>, ModbusError> {
    let code = error.exception().ok_or(error)?;
    let (Some(raw), Some(&function)) = (buf.first_chunk::<MBAP_LEN>(), buf.get(MBAP_LEN)) else {
        // A request error names a field of the PDU, so its header and function code are there.
        return Err(error);
    };
    let header = mbap(*raw);
    let len = MBAP_LEN.saturating_add(usize::from(header.length).saturating_sub(1));
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Refusal {
        header,
        function,
        code,
        len,
    }))
}

/// A request PDU, decoded and checked against the spec's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// 0x01
    ReadCoils { address: u16, quantity: u16 },
    /// 0x02
    ReadDiscreteInputs { address: u16, quantity: u16 },
    /// 0x03
    ReadHoldingRegisters { address: u16, quantity: u16 },
    /// 0x04
    ReadInputRegisters { address: u16, quantity: u16 },
    /// 0x05; the wire value is 0xFF00 (on) or 0x0000 (off).
    WriteSingleCoil { address: u16, value: bool },
    /// 0x06
    WriteSingleRegister { address: u16, value: u16 },
    /// 0x07
    ReadExceptionStatus,
    /// 0x08; `data` is whole 16-bit words.
    Diagnostics { sub_function: u16, data: &'a [u8] },
    /// 0x0B
    GetCommEventCounter,
    /// 0x0C
    GetCommEventLog,
    /// 0x0F
    WriteMultipleCoils {
        address: u16,
        quantity: u16,
        values: Coils<'a>,
    },
    /// 0x10
    WriteMultipleRegisters {
        address: u16,
        quantity: u16,
        values: Registers<'a>,
    },
    /// 0x11
    ReportServerId,
    /// 0x14; whole 7-byte sub-requests (see [`FileRecords`]).
    ReadFileRecord { sub_requests: &'a [u8] },
    /// 0x15; whole sub-requests with their record data (see [`FileRecords`]).
    WriteFileRecord { data: &'a [u8] },
    /// 0x16
    MaskWriteRegister {
        address: u16,
        and_mask: u16,
        or_mask: u16,
    },
    /// 0x17
    ReadWriteMultipleRegisters {
        read_address: u16,
        read_quantity: u16,
        write_address: u16,
        write_quantity: u16,
        values: Registers<'a>,
    },
    /// 0x18
    ReadFifoQueue { address: u16 },
    /// 0x2B; `data` follows the MEI type. Only 0x0D and 0x0E parse.
    EncapsulatedInterface { mei_type: u8, data: &'a [u8] },
    /// Any other function code 1..=127.
    Unknown { function: u8, data: &'a [u8] },
}

impl<'a> Request<'a> {
    pub fn function_code(&self) -> u8 {
        use function::*;
        match self {
            Request::ReadCoils { .. } => READ_COILS,
            Request::ReadDiscreteInputs { .. } => READ_DISCRETE_INPUTS,
            Request::ReadHoldingRegisters { .. } => READ_HOLDING_REGISTERS,
            Request::ReadInputRegisters { .. } => READ_INPUT_REGISTERS,
            Request::WriteSingleCoil { .. } => WRITE_SINGLE_COIL,
            Request::WriteSingleRegister { .. } => WRITE_SINGLE_REGISTER,
            Request::ReadExceptionStatus => READ_EXCEPTION_STATUS,
            Request::Diagnostics { .. } => DIAGNOSTICS,
            Request::GetCommEventCounter => GET_COMM_EVENT_COUNTER,
            Request::GetCommEventLog => GET_COMM_EVENT_LOG,
            Request::WriteMultipleCoils { .. } => WRITE_MULTIPLE_COILS,
            Request::WriteMultipleRegisters { .. } => WRITE_MULTIPLE_REGISTERS,
            Request::ReportServerId => REPORT_SERVER_ID,
            Request::ReadFileRecord { .. } => READ_FILE_RECORD,
            Request::WriteFileRecord { .. } => WRITE_FILE_RECORD,
            Request::MaskWriteRegister { .. } => MASK_WRITE_REGISTER,
            Request::ReadWriteMultipleRegisters { .. } => READ_WRITE_MULTIPLE_REGISTERS,
            Request::ReadFifoQueue { .. } => READ_FIFO_QUEUE,
            Request::EncapsulatedInterface { .. } => ENCAPSULATED_INTERFACE,
            Request::Unknown { function, .. } => *function,
        }
    }

    /// A stable snake_case name for policy input, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::EncapsulatedInterface { mei_type, .. } => mei_name(*mei_type),
            Request::Unknown { .. } => "unknown",
            known => function_name(known.function_code()),
        }
    }

    pub fn access(&self) -> Access {
        match self {
            Request::ReadCoils { .. }
            | Request::ReadDiscreteInputs { .. }
            | Request::ReadHoldingRegisters { .. }
            | Request::ReadInputRegisters { .. }
            | Request::ReadFileRecord { .. }
            | Request::ReadFifoQueue { .. } => Access::Read,
            Request::WriteSingleCoil { .. }
            | Request::WriteSingleRegister { .. }
            | Request::WriteMultipleCoils { .. }
            | Request::WriteMultipleRegisters { .. }
            | Request::WriteFileRecord { .. }
            | Request::MaskWriteRegister { .. }
            | Request::ReadWriteMultipleRegisters { .. } => Access::Write,
            Request::ReadExceptionStatus
            | Request::Diagnostics { .. }
            | Request::GetCommEventCounter
            | Request::GetCommEventLog
            | Request::ReportServerId => Access::Diagnostic,
            Request::EncapsulatedInterface { mei_type, .. }
                if *mei_type == MEI_READ_DEVICE_IDENTIFICATION =>
            {
                Access::Diagnostic
            }
            Request::EncapsulatedInterface { .. } | Request::Unknown { .. } => Access::Other,
        }
    }

    /// The data table the request reads or writes, where it addresses one.
    pub fn table(&self) -> Option<Table> {
        match self {
            Request::ReadCoils { .. }
            | Request::WriteSingleCoil { .. }
            | Request::WriteMultipleCoils { .. } => Some(Table::Coils),
            Request::ReadDiscreteInputs { .. } => Some(Table::DiscreteInputs),
            Request::ReadHoldingRegisters { .. }
            | Request::WriteSingleRegister { .. }
            | Request::WriteMultipleRegisters { .. }
            | Request::MaskWriteRegister { .. }
            | Request::ReadWriteMultipleRegisters { .. }
            | Request::ReadFifoQueue { .. } => Some(Table::HoldingRegisters),
            Request::ReadInputRegisters { .. } => Some(Table::InputRegisters),
            _ => None,
        }
    }

    /// First address the request touches (for 0x17, the write address: the write is what policy
    /// judges).
    pub fn address(&self) -> Option<u16> {
        match self {
            Request::ReadCoils { address, .. }
            | Request::ReadDiscreteInputs { address, .. }
            | Request::ReadHoldingRegisters { address, .. }
            | Request::ReadInputRegisters { address, .. }
            | Request::WriteSingleCoil { address, .. }
            | Request::WriteSingleRegister { address, .. }
            | Request::WriteMultipleCoils { address, .. }
            | Request::WriteMultipleRegisters { address, .. }
            | Request::MaskWriteRegister { address, .. }
            | Request::ReadFifoQueue { address } => Some(*address),
            Request::ReadWriteMultipleRegisters { write_address, .. } => Some(*write_address),
            _ => None,
        }
    }

    /// Number of coils or registers from [`Request::address`] on (0x17: the write quantity).
    /// `None` for 0x18, whose queue length only the device knows.
    pub fn quantity(&self) -> Option<u16> {
        match self {
            Request::ReadCoils { quantity, .. }
            | Request::ReadDiscreteInputs { quantity, .. }
            | Request::ReadHoldingRegisters { quantity, .. }
            | Request::ReadInputRegisters { quantity, .. }
            | Request::WriteMultipleCoils { quantity, .. }
            | Request::WriteMultipleRegisters { quantity, .. } => Some(*quantity),
            Request::WriteSingleCoil { .. }
            | Request::WriteSingleRegister { .. }
            | Request::MaskWriteRegister { .. } => Some(1),
            Request::ReadWriteMultipleRegisters { write_quantity, .. } => Some(*write_quantity),
            _ => None,
        }
    }

    /// The sub-requests of 0x14 Read File Record and 0x15 Write File Record.
    pub fn file_records(&self) -> Option<FileRecords<'a>> {
        match *self {
            Request::ReadFileRecord { sub_requests } => Some(FileRecords {
                rest: sub_requests,
                with_data: false,
            }),
            Request::WriteFileRecord { data } => Some(FileRecords {
                rest: data,
                with_data: true,
            }),
            _ => None,
        }
    }
}

/// What a request does to the device, for policy (read, write, diagnostic or other).
pub use super::Access;

/// The four tables of the Modbus data model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Coils,
    DiscreteInputs,
    HoldingRegisters,
    InputRegisters,
}

impl Table {
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coils => "coils",
            Table::DiscreteInputs => "discrete_inputs",
            Table::HoldingRegisters => "holding_registers",
            Table::InputRegisters => "input_registers",
        }
    }
}

/// Big-endian register values, borrowed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Registers<'a>(&'a [u8]);

impl<'a> Registers<'a> {
    /// Whole registers only: a trailing odd byte is not a register.
    pub fn new(bytes: &'a [u8]) -> Self {
        let (words, _) = bytes.as_chunks::<2>();
        Registers(words.as_flattened())
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.words().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<u16> {
        self.words().get(index).map(|w| u16::from_be_bytes(*w))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = u16> + DoubleEndedIterator + use<'a> {
        self.words().iter().map(|w| u16::from_be_bytes(*w))
    }

    /// The values as on the wire.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    fn words(&self) -> &'a [[u8; 2]] {
        self.0.as_chunks::<2>().0
    }
}

impl fmt::Debug for Registers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Packed coil values (LSB of the first byte is the first coil), with their count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Coils<'a> {
    bytes: &'a [u8],
    count: u16,
}

impl<'a> Coils<'a> {
    /// `count` coils from `bytes`; a count beyond the bytes is cut to what they hold.
    pub fn new(bytes: &'a [u8], count: u16) -> Self {
        let held = bytes.len().saturating_mul(8);
        let count = u16::try_from(held).map_or(count, |held| count.min(held));
        Coils { bytes, count }
    }

    /// Number of coils.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn get(&self, index: usize) -> Option<bool> {
        if index >= self.len() {
            return None;
        }
        Some(bit(self.bytes, index))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = bool> + DoubleEndedIterator + use<'a> {
        let bytes = self.bytes;
        (0..self.len()).map(move |index| bit(bytes, index))
    }

    /// The packed bytes as on the wire, padding bits included.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for Coils<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn bit(bytes: &[u8], index: usize) -> bool {
    bytes
        .get(index / 8)
        .is_some_and(|byte| (byte >> (index % 8)) & 1 == 1)
}

/// One sub-request of 0x14 Read File Record or 0x15 Write File Record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRecord<'a> {
    pub file_number: u16,
    pub record_number: u16,
    /// In registers.
    pub record_length: u16,
    /// The registers to write (0x15); empty for 0x14.
    pub data: Registers<'a>,
}

/// Iterator over the sub-requests of a parsed 0x14 or 0x15 request.
#[derive(Debug, Clone)]
pub struct FileRecords<'a> {
    rest: &'a [u8],
    with_data: bool,
}

impl<'a> Iterator for FileRecords<'a> {
    type Item = FileRecord<'a>;

    fn next(&mut self) -> Option<FileRecord<'a>> {
        let (head, rest) = self.rest.split_first_chunk::<FILE_SUB_REQUEST_LEN>()?;
        let [_reference_type, f0, f1, r0, r1, l0, l1] = *head;
        let record_length = u16::from_be_bytes([l0, l1]);
        let (data, rest) = if self.with_data {
            rest.split_at_checked(usize::from(record_length).checked_mul(2)?)?
        } else {
            (&[][..], rest)
        };
        self.rest = rest;
        Some(FileRecord {
            file_number: u16::from_be_bytes([f0, f1]),
            record_number: u16::from_be_bytes([r0, r1]),
            record_length,
            data: Registers::new(data),
        })
    }
}

/// A response PDU. Normal responses stay unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    Normal {
        function: u8,
        data: &'a [u8],
    },
    /// function without the 0x80 bit
    Exception {
        function: u8,
        code: u8,
    },
}

impl Response<'_> {
    /// The function code the response answers, without the exception bit.
    pub fn function_code(&self) -> u8 {
        match self {
            Response::Normal { function, .. } | Response::Exception { function, .. } => *function,
        }
    }
}

/// Why bytes are not a valid Modbus/TCP frame. Every variant names the function in hex where it
/// is known, so an audit event reads on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ModbusError {
    #[error("MBAP protocol id {found} is not 0 (Modbus)")]
    ProtocolId { found: u16 },
    #[error(
        "MBAP length {length} is outside {MIN_MBAP_LENGTH}..={MAX_MBAP_LENGTH} (unit id + a PDU of 1..={MAX_PDU_LEN} bytes)"
    )]
    Length { length: u16 },
    #[error(
        "function code 0x{code:02X} is not valid here (requests use 0x01..=0x7F, responses also their exceptions 0x81..=0xFF)"
    )]
    FunctionCode { code: u8 },
    #[error("{}: PDU of {found} bytes is too short, at least {expected} needed", Function(*function))]
    Truncated {
        function: u8,
        expected: usize,
        found: usize,
    },
    #[error("{}: {extra} bytes after the end of the PDU", Function(*function))]
    TrailingBytes { function: u8, extra: usize },
    #[error(
        "{}: byte count {byte_count} does not match quantity {quantity} (expected {expected})",
        Function(*function)
    )]
    ByteCount {
        function: u8,
        byte_count: u8,
        quantity: u16,
        expected: usize,
    },
    #[error("{}: byte count {byte_count} is outside {min}..={max}", Function(*function))]
    ByteCountRange {
        function: u8,
        byte_count: u8,
        min: u8,
        max: u8,
    },
    #[error("{}: quantity {quantity} is outside 1..={max}", Function(*function))]
    Quantity {
        function: u8,
        quantity: u16,
        max: u16,
    },
    #[error(
        "{}: {quantity} items from address {address} run past address 65535",
        Function(*function)
    )]
    AddressRange {
        function: u8,
        address: u16,
        quantity: u16,
    },
    #[error(
        "{}: coil value 0x{value:04X} is neither 0xFF00 (on) nor 0x0000 (off)",
        Function(function::WRITE_SINGLE_COIL)
    )]
    CoilValue { value: u16 },
    #[error(
        "{}: {length} data bytes are not whole 16-bit words",
        Function(function::DIAGNOSTICS)
    )]
    DiagnosticsData { length: usize },
    #[error(
        "{}: MEI type 0x{mei_type:02X} is neither 0x0D (CANopen general reference) nor 0x0E (read device identification)",
        Function(function::ENCAPSULATED_INTERFACE)
    )]
    MeiType { mei_type: u8 },
    #[error("0x2B/0x0E read_device_identification: read device id code {code} is outside 1..=4")]
    DeviceIdCode { code: u8 },
    #[error(
        "{}: sub-request {index} needs {needed} bytes but the byte count leaves {remaining}",
        Function(*function)
    )]
    SubRequest {
        function: u8,
        index: usize,
        needed: usize,
        remaining: usize,
    },
    #[error(
        "{}: sub-request {index}: reference type {reference_type} is not 6",
        Function(*function)
    )]
    ReferenceType {
        function: u8,
        index: usize,
        reference_type: u8,
    },
    #[error(
        "{}: sub-request {index}: file {file_number} records {record_number}+{record_length} are not in files 1..=65535, records 0..=9999, length >= 1",
        Function(*function)
    )]
    FileRecord {
        function: u8,
        index: usize,
        file_number: u16,
        record_number: u16,
        record_length: u16,
    },
    #[error(
        "{}: the sub-requests ask for a {length}-byte response (at most {MAX_READ_FILE_RESPONSE_LEN})",
        Function(*function)
    )]
    FileResponseLength { function: u8, length: usize },
}

impl ModbusError {
    /// For an error in a well-framed request's content, the exception code a conforming device
    /// answers (Application Protocol V1.1b3, the state diagram of each function: 01 for a
    /// function it does not support, 03 for a quantity, byte count or value out of range, 02 for
    /// an address range or file reference it does not hold). `None` for a framing error (protocol
    /// id, MBAP length, a PDU whose length disagrees with its function's layout): those close the
    /// connection. docs/modbus.md tabulates the answers per function code.
    pub fn exception(&self) -> Option<ExceptionCode> {
        match self {
            ModbusError::ProtocolId { .. }
            | ModbusError::Length { .. }
            | ModbusError::Truncated { .. }
            | ModbusError::TrailingBytes { .. } => None,
            ModbusError::FunctionCode { .. } | ModbusError::MeiType { .. } => {
                Some(ExceptionCode::IllegalFunction)
            }
            ModbusError::ByteCount { .. }
            | ModbusError::ByteCountRange { .. }
            | ModbusError::Quantity { .. }
            | ModbusError::CoilValue { .. }
            | ModbusError::DiagnosticsData { .. }
            | ModbusError::DeviceIdCode { .. }
            | ModbusError::SubRequest { .. }
            | ModbusError::FileResponseLength { .. } => Some(ExceptionCode::IllegalDataValue),
            ModbusError::AddressRange { .. }
            | ModbusError::ReferenceType { .. }
            | ModbusError::FileRecord { .. } => Some(ExceptionCode::IllegalDataAddress),
        }
    }

    /// A short stable tag per variant, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ModbusError::ProtocolId { .. } => "protocol_id",
            ModbusError::Length { .. } => "length",
            ModbusError::FunctionCode { .. } => "function_code",
            ModbusError::Truncated { .. } => "truncated",
            ModbusError::TrailingBytes { .. } => "trailing_bytes",
            ModbusError::ByteCount { .. } => "byte_count",
            ModbusError::ByteCountRange { .. } => "byte_count_range",
            ModbusError::Quantity { .. } => "quantity",
            ModbusError::AddressRange { .. } => "address_range",
            ModbusError::CoilValue { .. } => "coil_value",
            ModbusError::DiagnosticsData { .. } => "diagnostics_data",
            ModbusError::MeiType { .. } => "mei_type",
            ModbusError::DeviceIdCode { .. } => "device_id_code",
            ModbusError::SubRequest { .. } => "sub_request",
            ModbusError::ReferenceType { .. } => "reference_type",
            ModbusError::FileRecord { .. } => "file_record",
            ModbusError::FileResponseLength { .. } => "file_response_length",
        }
    }
}

/// A function code for messages: "0x10 write_multiple_registers", "0x83 read_holding_registers
/// exception".
struct Function(u8);

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0;
        let name = function_name(code & !EXCEPTION_BIT);
        if code & EXCEPTION_BIT == 0 {
            write!(f, "0x{code:02X} {name}")
        } else {
            write!(f, "0x{code:02X} {name} exception")
        }
    }
}

pub fn function_name(code: u8) -> &'static str {
    use function::*;
    match code {
        READ_COILS => "read_coils",
        READ_DISCRETE_INPUTS => "read_discrete_inputs",
        READ_HOLDING_REGISTERS => "read_holding_registers",
        READ_INPUT_REGISTERS => "read_input_registers",
        WRITE_SINGLE_COIL => "write_single_coil",
        WRITE_SINGLE_REGISTER => "write_single_register",
        READ_EXCEPTION_STATUS => "read_exception_status",
        DIAGNOSTICS => "diagnostics",
        GET_COMM_EVENT_COUNTER => "get_comm_event_counter",
        GET_COMM_EVENT_LOG => "get_comm_event_log",
        WRITE_MULTIPLE_COILS => "write_multiple_coils",
        WRITE_MULTIPLE_REGISTERS => "write_multiple_registers",
        REPORT_SERVER_ID => "report_server_id",
        READ_FILE_RECORD => "read_file_record",
        WRITE_FILE_RECORD => "write_file_record",
        MASK_WRITE_REGISTER => "mask_write_register",
        READ_WRITE_MULTIPLE_REGISTERS => "read_write_multiple_registers",
        READ_FIFO_QUEUE => "read_fifo_queue",
        ENCAPSULATED_INTERFACE => "encapsulated_interface",
        _ => "unknown",
    }
}

fn mei_name(mei_type: u8) -> &'static str {
    match mei_type {
        MEI_CANOPEN_GENERAL_REFERENCE => "canopen_general_reference",
        MEI_READ_DEVICE_IDENTIFICATION => "read_device_identification",
        _ => "encapsulated_interface",
    }
}

/// Why a PDU parse stopped: more bytes are needed, or the frame is malformed.
enum Stop {
    Incomplete,
    Malformed(ModbusError),
}

impl From<ModbusError> for Stop {
    fn from(e: ModbusError) -> Self {
        Stop::Malformed(e)
    }
}

fn mbap(raw: [u8; MBAP_LEN]) -> Mbap {
    let [t0, t1, p0, p1, l0, l1, unit_id] = raw;
    Mbap {
        transaction_id: u16::from_be_bytes([t0, t1]),
        protocol_id: u16::from_be_bytes([p0, p1]),
        length: u16::from_be_bytes([l0, l1]),
        unit_id,
    }
}

/// Checks the MBAP header as soon as it is there, then hands what has arrived of the PDU to
/// `parse_pdu` so that malformed fields are refused before the rest of the frame is waited for.
fn parse_adu<'a, T>(
    buf: &'a [u8],
    parse_pdu: fn(&mut Cursor<'a>) -> Result<T, Stop>,
) -> Result<Option<(Frame<'a, T>, usize)>, ModbusError> {
    let Some((raw, after)) = buf.split_first_chunk::<MBAP_LEN>() else {
        return Ok(None);
    };
    let header = mbap(*raw);
    if header.protocol_id != 0 {
        return Err(ModbusError::ProtocolId {
            found: header.protocol_id,
        });
    }
    let length_error = ModbusError::Length {
        length: header.length,
    };
    if !(MIN_MBAP_LENGTH..=MAX_MBAP_LENGTH).contains(&header.length) {
        return Err(length_error);
    }
    // The length counts the unit id, which is part of the 7 header bytes.
    let pdu_len = usize::from(header.length.checked_sub(1).ok_or(length_error)?);
    let arrived = after.get(..pdu_len).unwrap_or(after);
    let mut cursor = Cursor::new(arrived, pdu_len);
    match parse_pdu(&mut cursor).and_then(|body| cursor.finish().map(|()| body)) {
        Ok(body) => {
            let used = MBAP_LEN.checked_add(pdu_len).ok_or(length_error)?;
            Ok(Some((
                Frame {
                    header,
                    pdu: arrived,
                    body,
                },
                used,
            )))
        }
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Malformed(e)) => Err(e),
    }
}

/// Reads a PDU field by field from the bytes that have arrived, against the length the MBAP
/// header declared. A field beyond the declared length is malformed; a field within it that has
/// not arrived yet is incomplete.
struct Cursor<'a> {
    /// Arrived bytes not read yet; never beyond the declared length.
    rest: &'a [u8],
    /// Declared PDU length, function code included.
    len: usize,
    /// Bytes read so far, function code included.
    pos: usize,
    /// For error messages; 0 until the function code is read.
    function: u8,
}

impl<'a> Cursor<'a> {
    fn new(arrived: &'a [u8], len: usize) -> Self {
        Cursor {
            rest: arrived,
            len,
            pos: 0,
            function: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.len.saturating_sub(self.pos)
    }

    fn function_code(&mut self) -> Result<u8, Stop> {
        let [code] = self.array::<1>()?;
        self.function = code;
        Ok(code)
    }

    fn truncated(&self, needed: usize) -> Stop {
        Stop::Malformed(ModbusError::Truncated {
            function: self.function,
            expected: self.pos.saturating_add(needed),
            found: self.len,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        let (head, rest) = self.rest.split_at_checked(n).ok_or(Stop::Incomplete)?;
        self.rest = rest;
        self.pos = self.pos.saturating_add(n);
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        if N > self.remaining() {
            return Err(self.truncated(N));
        }
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(Stop::Incomplete)?;
        self.rest = rest;
        self.pos = self.pos.saturating_add(N);
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        self.array::<2>().map(u16::from_be_bytes)
    }

    /// Everything up to the declared end.
    fn rest(&mut self) -> Result<&'a [u8], Stop> {
        self.take(self.remaining())
    }

    /// The declared length must leave exactly `n` more bytes: checked before they arrive.
    fn exactly(&self, n: usize) -> Result<(), Stop> {
        match self.remaining().checked_sub(n) {
            None => Err(self.truncated(n)),
            Some(0) => Ok(()),
            Some(extra) => Err(Stop::Malformed(ModbusError::TrailingBytes {
                function: self.function,
                extra,
            })),
        }
    }

    fn finish(&self) -> Result<(), Stop> {
        self.exactly(0)
    }
}

fn request_pdu<'a>(c: &mut Cursor<'a>) -> Result<Request<'a>, Stop> {
    use function::*;
    let function = c.function_code()?;
    let request = match function {
        READ_COILS | READ_DISCRETE_INPUTS => {
            c.exactly(4)?;
            let (address, quantity) = range(c, function, MAX_READ_BITS)?;
            if function == READ_COILS {
                Request::ReadCoils { address, quantity }
            } else {
                Request::ReadDiscreteInputs { address, quantity }
            }
        }
        READ_HOLDING_REGISTERS | READ_INPUT_REGISTERS => {
            c.exactly(4)?;
            let (address, quantity) = range(c, function, MAX_READ_REGISTERS)?;
            if function == READ_HOLDING_REGISTERS {
                Request::ReadHoldingRegisters { address, quantity }
            } else {
                Request::ReadInputRegisters { address, quantity }
            }
        }
        WRITE_SINGLE_COIL => {
            c.exactly(4)?;
            let address = c.u16()?;
            let value = match c.u16()? {
                COIL_ON => true,
                COIL_OFF => false,
                value => return Err(ModbusError::CoilValue { value }.into()),
            };
            Request::WriteSingleCoil { address, value }
        }
        WRITE_SINGLE_REGISTER => {
            c.exactly(4)?;
            Request::WriteSingleRegister {
                address: c.u16()?,
                value: c.u16()?,
            }
        }
        READ_EXCEPTION_STATUS => Request::ReadExceptionStatus,
        DIAGNOSTICS => {
            let sub_function = c.u16()?;
            // Checked on the declared length, so an odd one is refused before the data arrives.
            let length = c.remaining();
            if !length.is_multiple_of(2) {
                return Err(ModbusError::DiagnosticsData { length }.into());
            }
            Request::Diagnostics {
                sub_function,
                data: c.rest()?,
            }
        }
        GET_COMM_EVENT_COUNTER => Request::GetCommEventCounter,
        GET_COMM_EVENT_LOG => Request::GetCommEventLog,
        WRITE_MULTIPLE_COILS => {
            // The spec's state diagram checks quantity and byte count (03) before the address
            // range (02).
            let (address, quantity) = quantity(c, function, MAX_WRITE_COILS)?;
            let count = byte_count(c, function, quantity, quantity.div_ceil(8))?;
            address_range(function, address, quantity)?;
            let bytes = c.take(count)?;
            Request::WriteMultipleCoils {
                address,
                quantity,
                values: Coils::new(bytes, quantity),
            }
        }
        WRITE_MULTIPLE_REGISTERS => {
            let (address, quantity) = quantity(c, function, MAX_WRITE_REGISTERS)?;
            let count = byte_count(c, function, quantity, quantity.saturating_mul(2))?;
            address_range(function, address, quantity)?;
            let bytes = c.take(count)?;
            Request::WriteMultipleRegisters {
                address,
                quantity,
                values: Registers::new(bytes),
            }
        }
        REPORT_SERVER_ID => Request::ReportServerId,
        READ_FILE_RECORD => {
            let bytes = file_byte_count(
                c,
                MIN_READ_FILE_BYTE_COUNT..=MAX_READ_FILE_BYTE_COUNT,
                FILE_SUB_REQUEST_LEN,
            )?;
            check_read_file(bytes)?;
            Request::ReadFileRecord {
                sub_requests: bytes,
            }
        }
        WRITE_FILE_RECORD => {
            let bytes =
                file_byte_count(c, MIN_WRITE_FILE_BYTE_COUNT..=MAX_WRITE_FILE_BYTE_COUNT, 1)?;
            check_write_file(bytes)?;
            Request::WriteFileRecord { data: bytes }
        }
        MASK_WRITE_REGISTER => {
            c.exactly(6)?;
            Request::MaskWriteRegister {
                address: c.u16()?,
                and_mask: c.u16()?,
                or_mask: c.u16()?,
            }
        }
        READ_WRITE_MULTIPLE_REGISTERS => {
            // Both quantities and the byte count (03) before either address range (02).
            let (read_address, read_quantity) = quantity(c, function, MAX_READ_REGISTERS)?;
            let (write_address, write_quantity) = quantity(c, function, MAX_READ_WRITE_REGISTERS)?;
            let count = byte_count(
                c,
                function,
                write_quantity,
                write_quantity.saturating_mul(2),
            )?;
            address_range(function, read_address, read_quantity)?;
            address_range(function, write_address, write_quantity)?;
            let bytes = c.take(count)?;
            Request::ReadWriteMultipleRegisters {
                read_address,
                read_quantity,
                write_address,
                write_quantity,
                values: Registers::new(bytes),
            }
        }
        READ_FIFO_QUEUE => {
            c.exactly(2)?;
            Request::ReadFifoQueue { address: c.u16()? }
        }
        ENCAPSULATED_INTERFACE => {
            let mei_type = c.u8()?;
            let data = match mei_type {
                // The CANopen request's layout belongs to CiA 309, not to Modbus: kept opaque.
                MEI_CANOPEN_GENERAL_REFERENCE => c.rest()?,
                MEI_READ_DEVICE_IDENTIFICATION => {
                    // Read device id code + object id. Any object id is legal: the device
                    // restarts at object 0 for one it does not know.
                    c.exactly(2)?;
                    let data = c.take(2)?;
                    let code = data.first().copied().unwrap_or_default();
                    if !READ_DEVICE_ID_CODES.contains(&code) {
                        return Err(ModbusError::DeviceIdCode { code }.into());
                    }
                    data
                }
                _ => return Err(ModbusError::MeiType { mei_type }.into()),
            };
            Request::EncapsulatedInterface { mei_type, data }
        }
        0 | EXCEPTION_BIT..=u8::MAX => {
            return Err(ModbusError::FunctionCode { code: function }.into());
        }
        _ => Request::Unknown {
            function,
            data: c.rest()?,
        },
    };
    // Functions without data fall through here with their length unchecked.
    c.finish()?;
    Ok(request)
}

/// Starting address + quantity, both checked as soon as they are read (see [`quantity`]).
fn range(c: &mut Cursor<'_>, function: u8, max: u16) -> Result<(u16, u16), Stop> {
    let (address, quantity) = quantity(c, function, max)?;
    address_range(function, address, quantity)?;
    Ok((address, quantity))
}

/// Starting address + quantity, the quantity checked as soon as it is read; the address range
/// is the caller's to check ([`address_range`]), after whatever the spec checks first.
fn quantity(c: &mut Cursor<'_>, function: u8, max: u16) -> Result<(u16, u16), Stop> {
    let address = c.u16()?;
    let quantity = c.u16()?;
    if !(1..=max).contains(&quantity) {
        return Err(ModbusError::Quantity {
            function,
            quantity,
            max,
        }
        .into());
    }
    Ok((address, quantity))
}

/// `quantity` items from `address` must stay within the 65536 addresses of a table.
fn address_range(function: u8, address: u16, quantity: u16) -> Result<(), ModbusError> {
    let end = u32::from(address).checked_add(u32::from(quantity));
    if end.is_none_or(|end| end > ADDRESS_SPACE) {
        return Err(ModbusError::AddressRange {
            function,
            address,
            quantity,
        });
    }
    Ok(())
}

/// The byte count must be what the quantity implies and what the declared length leaves; the
/// count, for the caller to take once the rest of the checks are done.
fn byte_count(
    c: &mut Cursor<'_>,
    function: u8,
    quantity: u16,
    expected: u16,
) -> Result<usize, Stop> {
    let byte_count = c.u8()?;
    if u16::from(byte_count) != expected {
        return Err(ModbusError::ByteCount {
            function,
            byte_count,
            quantity,
            expected: usize::from(expected),
        }
        .into());
    }
    c.exactly(usize::from(byte_count))?;
    Ok(usize::from(byte_count))
}

/// 0x14/0x15 byte count: within its range, a whole number of `unit`-byte sub-requests, and what
/// the declared length leaves.
fn file_byte_count<'a>(
    c: &mut Cursor<'a>,
    allowed: std::ops::RangeInclusive<u8>,
    unit: usize,
) -> Result<&'a [u8], Stop> {
    let function = c.function;
    let byte_count = c.u8()?;
    if !allowed.contains(&byte_count) {
        return Err(ModbusError::ByteCountRange {
            function,
            byte_count,
            min: *allowed.start(),
            max: *allowed.end(),
        }
        .into());
    }
    let len = usize::from(byte_count);
    let partial = len.checked_rem(unit).unwrap_or_default();
    if partial != 0 {
        return Err(ModbusError::SubRequest {
            function,
            // 1-based: the whole sub-requests come first.
            index: len.checked_div(unit).unwrap_or_default().saturating_add(1),
            needed: unit,
            remaining: partial,
        }
        .into());
    }
    c.exactly(len)?;
    c.take(len)
}

/// Reference type, file number and record range of one sub-request header.
fn check_file_record(
    function: u8,
    index: usize,
    header: [u8; FILE_SUB_REQUEST_LEN],
) -> Result<u16, ModbusError> {
    let [reference_type, f0, f1, r0, r1, l0, l1] = header;
    if reference_type != FILE_REFERENCE_TYPE {
        return Err(ModbusError::ReferenceType {
            function,
            index,
            reference_type,
        });
    }
    let file_number = u16::from_be_bytes([f0, f1]);
    let record_number = u16::from_be_bytes([r0, r1]);
    let record_length = u16::from_be_bytes([l0, l1]);
    let end = u32::from(record_number).checked_add(u32::from(record_length));
    if file_number == 0 || record_length == 0 || end.is_none_or(|end| end > FILE_RECORDS) {
        return Err(ModbusError::FileRecord {
            function,
            index,
            file_number,
            record_number,
            record_length,
        });
    }
    Ok(record_length)
}

/// 0x14 sub-requests, and the response they ask for must fit in a PDU.
fn check_read_file(bytes: &[u8]) -> Result<(), ModbusError> {
    let function = function::READ_FILE_RECORD;
    let mut response_len: usize = 0;
    let (sub_requests, _) = bytes.as_chunks::<FILE_SUB_REQUEST_LEN>();
    for (index, sub_request) in (1..).zip(sub_requests) {
        let record_length = check_file_record(function, index, *sub_request)?;
        // Each sub-response: its length byte, the reference type, then the registers.
        response_len = usize::from(record_length)
            .checked_mul(2)
            .and_then(|data| data.checked_add(2))
            .and_then(|sub| response_len.checked_add(sub))
            .unwrap_or(usize::MAX);
    }
    if response_len > MAX_READ_FILE_RESPONSE_LEN {
        return Err(ModbusError::FileResponseLength {
            function,
            length: response_len,
        });
    }
    Ok(())
}

/// 0x15 sub-requests: each header and its record data must fill the byte count exactly.
fn check_write_file(bytes: &[u8]) -> Result<(), ModbusError> {
    let function = function::WRITE_FILE_RECORD;
    let mut rest = bytes;
    let mut index: usize = 0;
    while !rest.is_empty() {
        index = index.saturating_add(1);
        let Some((header, after)) = rest.split_first_chunk::<FILE_SUB_REQUEST_LEN>() else {
            return Err(ModbusError::SubRequest {
                function,
                index,
                needed: FILE_SUB_REQUEST_LEN,
                remaining: rest.len(),
            });
        };
        let record_length = check_file_record(function, index, *header)?;
        let data_len = usize::from(record_length).saturating_mul(2);
        let Some((_, after)) = after.split_at_checked(data_len) else {
            return Err(ModbusError::SubRequest {
                function,
                index,
                needed: FILE_SUB_REQUEST_LEN.saturating_add(data_len),
                remaining: rest.len(),
            });
        };
        rest = after;
    }
    Ok(())
}

fn response_pdu<'a>(c: &mut Cursor<'a>) -> Result<Response<'a>, Stop> {
    let function = c.function_code()?;
    let base = function & !EXCEPTION_BIT;
    if base == 0 {
        return Err(ModbusError::FunctionCode { code: function }.into());
    }
    if function & EXCEPTION_BIT != 0 {
        c.exactly(1)?;
        let code = c.u8()?;
        return Ok(Response::Exception {
            function: base,
            code,
        });
    }
    Ok(Response::Normal {
        function,
        data: c.rest()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// An ADU around `pdu`: transaction id 1, unit id 1, the length field as the spec wants it.
    fn adu(pdu: &[u8]) -> Vec<u8> {
        // The length counts the unit id and the PDU.
        let length = u16::try_from(pdu.len()).unwrap().checked_add(1).unwrap();
        let [hi, lo] = length.to_be_bytes();
        let mut frame = vec![0x00, 0x01, 0x00, 0x00, hi, lo, 0x01];
        frame.extend_from_slice(pdu);
        frame
    }

    /// Parses a whole valid frame, after checking that every prefix of it waits for more.
    fn request(frame: &[u8]) -> RequestFrame<'_> {
        assert_partial_prefixes(frame);
        let (parsed, used) = parse_request(frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        parsed
    }

    fn request_error(frame: &[u8]) -> ModbusError {
        match parse_request(frame) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Every strict prefix of a valid frame is incomplete, never an error.
    fn assert_partial_prefixes(frame: &[u8]) {
        for cut in 0..frame.len() {
            assert_eq!(
                parse_request(&frame[..cut]),
                Ok(None),
                "cut at {cut} of {frame:02X?}"
            );
        }
    }

    const READ_HOLDING_REGISTERS: [u8; 12] = [
        0x00, 0x01, // transaction id 1
        0x00, 0x00, // protocol id 0 (Modbus)
        0x00, 0x06, // length: unit id + 5 PDU bytes
        0x11, // unit id 17
        0x03, // 0x03 read holding registers
        0x00, 0x6B, // starting address 107
        0x00, 0x03, // quantity 3
    ];

    const WRITE_MULTIPLE_REGISTERS: [u8; 17] = [
        0x12, 0x34, // transaction id 0x1234
        0x00, 0x00, // protocol id 0
        0x00, 0x0B, // length: unit id + 10 PDU bytes
        0xFF, // unit id 255 (Modbus/TCP device behind no gateway)
        0x10, // 0x10 write multiple registers
        0x00, 0x01, // starting address 1
        0x00, 0x02, // quantity 2
        0x04, // byte count 4
        0x00, 0x0A, // register 1: 10
        0x01, 0x02, // register 2: 258
    ];

    const WRITE_MULTIPLE_COILS: [u8; 15] = [
        0x00, 0x02, // transaction id 2
        0x00, 0x00, // protocol id 0
        0x00, 0x09, // length: unit id + 8 PDU bytes
        0x01, // unit id 1
        0x0F, // 0x0F write multiple coils
        0x00, 0x13, // starting address 19
        0x00, 0x0A, // quantity 10
        0x02, // byte count 2
        0xCD, // coils 19..=26: 1011 0011 read LSB first
        0x01, // coils 27, 28: 1 0 (padding zero)
    ];

    #[test]
    fn reads_holding_registers() {
        let frame = request(&READ_HOLDING_REGISTERS);
        assert_eq!(
            frame.header,
            Mbap {
                transaction_id: 1,
                protocol_id: 0,
                length: 6,
                unit_id: 17
            }
        );
        assert_eq!(frame.pdu, &READ_HOLDING_REGISTERS[7..]);
        let body = frame.body;
        assert_eq!(
            body,
            Request::ReadHoldingRegisters {
                address: 107,
                quantity: 3
            }
        );
        assert_eq!(body.function_code(), 0x03);
        assert_eq!(body.name(), "read_holding_registers");
        assert_eq!(body.access(), Access::Read);
        assert_eq!(body.table(), Some(Table::HoldingRegisters));
        assert_eq!(body.address(), Some(107));
        assert_eq!(body.quantity(), Some(3));
    }

    #[test]
    fn reads_coils_discrete_inputs_and_input_registers() {
        let coils = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x01, // 0x01 read coils
            0x00, 0x13, // starting address 19
            0x07, 0xD0, // quantity 2000, the most
        ];
        let body = request(&coils).body;
        assert_eq!(
            body,
            Request::ReadCoils {
                address: 19,
                quantity: 2000
            }
        );
        assert_eq!(
            (body.name(), body.access(), body.table()),
            ("read_coils", Access::Read, Some(Table::Coils))
        );

        let inputs = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x02, // 0x02 read discrete inputs
            0x00, 0xC4, // starting address 196
            0x00, 0x16, // quantity 22
        ];
        let body = request(&inputs).body;
        assert_eq!(
            body,
            Request::ReadDiscreteInputs {
                address: 196,
                quantity: 22
            }
        );
        assert_eq!(
            (body.name(), body.access(), body.table()),
            (
                "read_discrete_inputs",
                Access::Read,
                Some(Table::DiscreteInputs)
            )
        );

        let input_registers = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x04, // 0x04 read input registers
            0xFF, 0x83, // starting address 65411
            0x00, 0x7D, // quantity 125, the most, ending at 65535
        ];
        let body = request(&input_registers).body;
        assert_eq!(
            body,
            Request::ReadInputRegisters {
                address: 0xFF83,
                quantity: 125
            }
        );
        assert_eq!(
            (body.name(), body.access(), body.table(), body.quantity()),
            (
                "read_input_registers",
                Access::Read,
                Some(Table::InputRegisters),
                Some(125)
            )
        );
    }

    #[test]
    fn writes_single_coil_and_register() {
        let on = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x05, // 0x05 write single coil
            0x00, 0xAC, // output address 172
            0xFF, 0x00, // ON
        ];
        let body = request(&on).body;
        assert_eq!(
            body,
            Request::WriteSingleCoil {
                address: 172,
                value: true
            }
        );
        assert_eq!(
            (
                body.name(),
                body.access(),
                body.table(),
                body.address(),
                body.quantity()
            ),
            (
                "write_single_coil",
                Access::Write,
                Some(Table::Coils),
                Some(172),
                Some(1)
            )
        );
        let mut off = on;
        off[10] = 0x00; // OFF: 0x0000
        assert_eq!(
            request(&off).body,
            Request::WriteSingleCoil {
                address: 172,
                value: false
            }
        );

        let register = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x06, // 0x06 write single register
            0x00, 0x01, // register address 1
            0x00, 0x03, // value 3
        ];
        let body = request(&register).body;
        assert_eq!(
            body,
            Request::WriteSingleRegister {
                address: 1,
                value: 3
            }
        );
        assert_eq!(
            (body.name(), body.access(), body.table(), body.quantity()),
            (
                "write_single_register",
                Access::Write,
                Some(Table::HoldingRegisters),
                Some(1)
            )
        );
    }

    #[test]
    fn functions_without_data() {
        for (code, body, name) in [
            (0x07, Request::ReadExceptionStatus, "read_exception_status"),
            (0x0B, Request::GetCommEventCounter, "get_comm_event_counter"),
            (0x0C, Request::GetCommEventLog, "get_comm_event_log"),
            (0x11, Request::ReportServerId, "report_server_id"),
        ] {
            let frame = [
                0x00, 0x01, // transaction id 1
                0x00, 0x00, // protocol id 0
                0x00, 0x02, // length: unit id + function code
                0x01, // unit id 1
                code, // the function, no data
            ];
            let parsed = request(&frame).body;
            assert_eq!(parsed, body);
            assert_eq!(parsed.function_code(), code);
            assert_eq!(parsed.name(), name);
            assert_eq!(parsed.access(), Access::Diagnostic);
            assert_eq!(
                (parsed.table(), parsed.address(), parsed.quantity()),
                (None, None, None)
            );
            // One data byte is one too many.
            let mut longer = adu(&[code, 0x00]);
            assert_eq!(
                request_error(&longer),
                ModbusError::TrailingBytes {
                    function: code,
                    extra: 1
                }
            );
            longer.truncate(MBAP_LEN + 1);
            assert!(
                parse_request(&longer).is_err(),
                "known as soon as the function code is"
            );
        }
    }

    #[test]
    fn diagnostics() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x08, // 0x08 diagnostics
            0x00, 0x00, // sub-function 0: return query data
            0xA5, 0x37, // data, echoed
        ];
        let body = request(&frame).body;
        assert_eq!(
            body,
            Request::Diagnostics {
                sub_function: 0,
                data: &[0xA5, 0x37]
            }
        );
        assert_eq!(
            (body.name(), body.access()),
            ("diagnostics", Access::Diagnostic)
        );

        // The data is N x 2 bytes; an odd length is refused from the header alone.
        let odd = adu(&[0x08, 0x00, 0x00, 0xA5]);
        assert_eq!(
            request_error(&odd[..MBAP_LEN + 3]),
            ModbusError::DiagnosticsData { length: 1 }
        );
        // The sub-function is required.
        assert_eq!(
            request_error(&adu(&[0x08, 0x00])),
            ModbusError::Truncated {
                function: 0x08,
                expected: 3,
                found: 2
            }
        );
    }

    #[test]
    fn writes_multiple_coils() {
        let body = request(&WRITE_MULTIPLE_COILS).body;
        let Request::WriteMultipleCoils {
            address,
            quantity,
            values,
        } = body
        else {
            panic!("{body:?}");
        };
        assert_eq!((address, quantity, values.len()), (19, 10, 10));
        let expected = [
            true, false, true, true, false, false, true, true, true, false,
        ];
        assert!(values.iter().eq(expected));
        assert_eq!(
            (body.name(), body.access(), body.table(), body.quantity()),
            (
                "write_multiple_coils",
                Access::Write,
                Some(Table::Coils),
                Some(10)
            )
        );
    }

    #[test]
    fn writes_multiple_registers() {
        let frame = request(&WRITE_MULTIPLE_REGISTERS);
        assert_eq!(frame.header.transaction_id, 0x1234);
        assert_eq!(frame.header.unit_id, 0xFF);
        let body = frame.body;
        let Request::WriteMultipleRegisters {
            address,
            quantity,
            values,
        } = body
        else {
            panic!("{body:?}");
        };
        assert_eq!((address, quantity), (1, 2));
        assert_eq!(values.iter().collect::<Vec<_>>(), [10, 258]);
        assert_eq!(
            (body.name(), body.access(), body.table(), body.quantity()),
            (
                "write_multiple_registers",
                Access::Write,
                Some(Table::HoldingRegisters),
                Some(2)
            )
        );
    }

    #[test]
    fn reads_file_record() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x11, // length: unit id + 16 PDU bytes
            0x01, // unit id 1
            0x14, // 0x14 read file record
            0x0E, // byte count 14: two sub-requests
            0x06, // sub-request 1: reference type 6
            0x00, 0x04, // file 4
            0x00, 0x01, // record 1
            0x00, 0x02, // 2 registers
            0x06, // sub-request 2: reference type 6
            0x00, 0x03, // file 3
            0x00, 0x09, // record 9
            0x00, 0x02, // 2 registers
        ];
        let body = request(&frame).body;
        assert_eq!(
            body,
            Request::ReadFileRecord {
                sub_requests: &frame[9..]
            }
        );
        assert_eq!(
            (body.name(), body.access(), body.table()),
            ("read_file_record", Access::Read, None)
        );
        let records: Vec<_> = body.file_records().unwrap().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (
                records[1].file_number,
                records[1].record_number,
                records[1].record_length
            ),
            (3, 9, 2)
        );
        assert!(records[1].data.is_empty());
    }

    #[test]
    fn writes_file_record() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x10, // length: unit id + 15 PDU bytes
            0x01, // unit id 1
            0x15, // 0x15 write file record
            0x0D, // request data length 13
            0x06, // reference type 6
            0x00, 0x04, // file 4
            0x00, 0x07, // record 7
            0x00, 0x03, // 3 registers
            0x06, 0xAF, // register data
            0x04, 0xBE, //
            0x10, 0x0D, //
        ];
        let body = request(&frame).body;
        assert_eq!(body, Request::WriteFileRecord { data: &frame[9..] });
        assert_eq!(
            (body.name(), body.access()),
            ("write_file_record", Access::Write)
        );
        let records: Vec<_> = body.file_records().unwrap().collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].file_number, 4);
        assert_eq!(
            records[0].data.iter().collect::<Vec<_>>(),
            [0x06AF, 0x04BE, 0x100D]
        );
    }

    #[test]
    fn mask_write_register() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x08, // length 8
            0x01, // unit id 1
            0x16, // 0x16 mask write register
            0x00, 0x04, // reference address 4
            0x00, 0xF2, // AND mask
            0x00, 0x25, // OR mask
        ];
        let body = request(&frame).body;
        assert_eq!(
            body,
            Request::MaskWriteRegister {
                address: 4,
                and_mask: 0xF2,
                or_mask: 0x25
            }
        );
        assert_eq!(
            (
                body.name(),
                body.access(),
                body.table(),
                body.address(),
                body.quantity()
            ),
            (
                "mask_write_register",
                Access::Write,
                Some(Table::HoldingRegisters),
                Some(4),
                Some(1)
            )
        );
    }

    #[test]
    fn read_write_multiple_registers() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x11, // length: unit id + 16 PDU bytes
            0x01, // unit id 1
            0x17, // 0x17 read/write multiple registers
            0x00, 0x03, // read starting address 3
            0x00, 0x06, // quantity to read 6
            0x00, 0x0E, // write starting address 14
            0x00, 0x03, // quantity to write 3
            0x06, // write byte count 6
            0x00, 0xFF, // values
            0x00, 0xFF, //
            0x00, 0xFF, //
        ];
        let body = request(&frame).body;
        let Request::ReadWriteMultipleRegisters {
            read_address,
            read_quantity,
            write_address,
            write_quantity,
            values,
        } = body
        else {
            panic!("{body:?}");
        };
        assert_eq!(
            (read_address, read_quantity, write_address, write_quantity),
            (3, 6, 14, 3)
        );
        assert_eq!(values.iter().collect::<Vec<_>>(), [0xFF, 0xFF, 0xFF]);
        // Policy judges the write.
        assert_eq!(
            (
                body.name(),
                body.access(),
                body.table(),
                body.address(),
                body.quantity()
            ),
            (
                "read_write_multiple_registers",
                Access::Write,
                Some(Table::HoldingRegisters),
                Some(14),
                Some(3)
            )
        );
    }

    #[test]
    fn read_fifo_queue() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x04, // length 4
            0x01, // unit id 1
            0x18, // 0x18 read FIFO queue
            0x04, 0xDE, // FIFO pointer address 1246
        ];
        let body = request(&frame).body;
        assert_eq!(body, Request::ReadFifoQueue { address: 1246 });
        assert_eq!(
            (
                body.name(),
                body.access(),
                body.table(),
                body.address(),
                body.quantity()
            ),
            (
                "read_fifo_queue",
                Access::Read,
                Some(Table::HoldingRegisters),
                Some(1246),
                None
            )
        );
    }

    #[test]
    fn encapsulated_interface() {
        let device_id = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x05, // length 5
            0x01, // unit id 1
            0x2B, // 0x2B encapsulated interface transport
            0x0E, // MEI type 0x0E read device identification
            0x01, // read device id code 1: basic
            0x00, // object id 0: vendor name
        ];
        let body = request(&device_id).body;
        assert_eq!(
            body,
            Request::EncapsulatedInterface {
                mei_type: 0x0E,
                data: &[0x01, 0x00]
            }
        );
        assert_eq!(body.function_code(), 0x2B);
        assert_eq!(
            (body.name(), body.access(), body.table()),
            ("read_device_identification", Access::Diagnostic, None)
        );

        let canopen = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x06, // length 6
            0x01, // unit id 1
            0x2B, // 0x2B encapsulated interface transport
            0x0D, // MEI type 0x0D CANopen general reference
            0x01, 0x02, 0x03, // CANopen data, opaque
        ];
        let body = request(&canopen).body;
        assert_eq!(
            body,
            Request::EncapsulatedInterface {
                mei_type: 0x0D,
                data: &[0x01, 0x02, 0x03]
            }
        );
        assert_eq!(
            (body.name(), body.access()),
            ("canopen_general_reference", Access::Other)
        );
    }

    #[test]
    fn unknown_function() {
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x05, // length 5
            0x01, // unit id 1
            0x5A, // 0x5A, a vendor function (Schneider UMAS)
            0x00, 0x02, 0x03, // its data
        ];
        let body = request(&frame).body;
        assert_eq!(
            body,
            Request::Unknown {
                function: 0x5A,
                data: &[0x00, 0x02, 0x03]
            }
        );
        assert_eq!(body.function_code(), 0x5A);
        assert_eq!(
            (body.name(), body.access(), body.table(), body.address()),
            ("unknown", Access::Other, None, None)
        );
    }

    #[test]
    fn partial_frames_wait_for_more() {
        assert_partial_prefixes(&READ_HOLDING_REGISTERS);
        assert_partial_prefixes(&WRITE_MULTIPLE_REGISTERS);
        assert_partial_prefixes(&WRITE_MULTIPLE_COILS);
    }

    #[test]
    fn frames_back_to_back() {
        let mut stream = READ_HOLDING_REGISTERS.to_vec();
        stream.extend_from_slice(&WRITE_MULTIPLE_REGISTERS);
        stream.extend_from_slice(&READ_HOLDING_REGISTERS[..9]); // the start of a third

        let (first, used) = parse_request(&stream).unwrap().unwrap();
        assert_eq!(used, READ_HOLDING_REGISTERS.len());
        assert_eq!(first.header.transaction_id, 1);
        let rest = &stream[used..];
        let (second, used) = parse_request(rest).unwrap().unwrap();
        assert_eq!(used, WRITE_MULTIPLE_REGISTERS.len());
        assert_eq!(second.header.transaction_id, 0x1234);
        assert_eq!(second.pdu, &WRITE_MULTIPLE_REGISTERS[7..]);
        assert_eq!(parse_request(&rest[used..]), Ok(None));
    }

    #[test]
    fn bad_protocol_id_is_refused_from_the_header() {
        let mut frame = READ_HOLDING_REGISTERS;
        frame[2..4].copy_from_slice(&[0x00, 0x01]); // protocol id 1
        assert_eq!(
            request_error(&frame[..MBAP_LEN]),
            ModbusError::ProtocolId { found: 1 }
        );
        assert_eq!(request_error(&frame), ModbusError::ProtocolId { found: 1 });
        assert!(parse_response(&frame[..MBAP_LEN]).is_err());
        // Six bytes are not a header yet.
        assert_eq!(parse_request(&frame[..MBAP_LEN - 1]), Ok(None));
    }

    #[test]
    fn bad_length_is_refused_from_the_header() {
        for length in [0u16, 1, 255, 300] {
            let [hi, lo] = length.to_be_bytes();
            let header = [
                0x00, 0x01, // transaction id 1
                0x00, 0x00, // protocol id 0
                hi, lo,   // the length under test
                0x01, // unit id 1
            ];
            assert_eq!(request_error(&header), ModbusError::Length { length });
            assert_eq!(parse_response(&header), Err(ModbusError::Length { length }));
        }
        // The largest legal frame: 253 PDU bytes.
        let mut pdu = vec![0x41]; // 0x41, a user-defined function
        pdu.resize(MAX_PDU_LEN, 0xAA);
        let frame = adu(&pdu);
        assert_eq!(frame.len(), MAX_ADU_LEN);
        assert_eq!(request(&frame).header.length, 254);
    }

    #[test]
    fn byte_count_must_match_quantity() {
        // 0x10 with quantity 2 and byte count 3.
        let e = request_error(&adu(&[
            0x10, 0x00, 0x01, 0x00, 0x02, 0x03, 0x00, 0x0A, 0x01,
        ]));
        assert_eq!(
            e,
            ModbusError::ByteCount {
                function: 0x10,
                byte_count: 3,
                quantity: 2,
                expected: 4
            }
        );
        assert_eq!(
            e.to_string(),
            "0x10 write_multiple_registers: byte count 3 does not match quantity 2 (expected 4)"
        );
        assert_eq!(e.kind(), "byte_count");

        // 0x0F with quantity 10 and byte count 1.
        let e = request_error(&adu(&[0x0F, 0x00, 0x13, 0x00, 0x0A, 0x01, 0xCD]));
        assert_eq!(
            e,
            ModbusError::ByteCount {
                function: 0x0F,
                byte_count: 1,
                quantity: 10,
                expected: 2
            }
        );

        // 0x17 writing 3 registers with byte count 4.
        let pdu = [
            0x17, 0x00, 0x03, 0x00, 0x06, // read 6 from 3
            0x00, 0x0E, 0x00, 0x03, // write 3 at 14
            0x04, 0x00, 0xFF, 0x00, 0xFF, // byte count 4
        ];
        assert_eq!(
            request_error(&adu(&pdu)),
            ModbusError::ByteCount {
                function: 0x17,
                byte_count: 4,
                quantity: 3,
                expected: 6
            }
        );

        // A byte count that matches the quantity but not the MBAP length.
        let mut frame = WRITE_MULTIPLE_REGISTERS.to_vec();
        frame[5] = 0x0C; // length claims one more byte
        frame.push(0x00);
        assert_eq!(
            request_error(&frame[..13]),
            ModbusError::TrailingBytes {
                function: 0x10,
                extra: 1
            }
        );
    }

    #[test]
    fn write_coils_quantity_beyond_the_bytes() {
        // The input that panics tokio-modbus: quantity 2000 from a single byte.
        let frame = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x08, // length 8
            0x01, // unit id 1
            0x0F, // 0x0F write multiple coils
            0x00, 0x00, // starting address 0
            0x07, 0xB0, // quantity 1968
            0x01, // byte count 1: 8 coils at most
            0xFF, // coils
        ];
        assert_eq!(
            request_error(&frame),
            ModbusError::ByteCount {
                function: 0x0F,
                byte_count: 1,
                quantity: 1968,
                expected: 246
            }
        );
        // Known as soon as the byte count is there.
        assert!(parse_request(&frame[..13]).is_err());
    }

    #[test]
    fn quantity_zero_and_over_the_maximum() {
        let cases: [(&[u8], u16); 8] = [
            (&[0x01, 0x00, 0x00], MAX_READ_BITS),
            (&[0x02, 0x00, 0x00], MAX_READ_BITS),
            (&[0x03, 0x00, 0x00], MAX_READ_REGISTERS),
            (&[0x04, 0x00, 0x00], MAX_READ_REGISTERS),
            (&[0x0F, 0x00, 0x00], MAX_WRITE_COILS),
            (&[0x10, 0x00, 0x00], MAX_WRITE_REGISTERS),
            (&[0x17, 0x00, 0x00], MAX_READ_REGISTERS),
            (
                &[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
                MAX_READ_WRITE_REGISTERS,
            ),
        ];
        for (prefix, max) in cases {
            let function = prefix[0];
            // 0x01..=0x04 are 5 bytes; the others are long enough for their byte count.
            let declared = if function <= 0x04 { 5 } else { 16 };
            for quantity in [0, max + 1, u16::MAX] {
                let mut pdu = prefix.to_vec();
                pdu.extend_from_slice(&quantity.to_be_bytes());
                // The declared length fits the format; the quantity is refused before the rest
                // arrives.
                pdu.resize(declared, 0x00);
                let frame = adu(&pdu);
                let arrived = &frame[..MBAP_LEN + prefix.len() + 2];
                let e = match parse_request(arrived) {
                    Err(e) => e,
                    other => panic!("0x{function:02X} quantity {quantity}: {other:?}"),
                };
                assert_eq!(
                    e,
                    ModbusError::Quantity {
                        function,
                        quantity,
                        max
                    }
                );
            }
            // The maximum itself is fine so far.
            let mut pdu = prefix.to_vec();
            pdu.extend_from_slice(&max.to_be_bytes());
            pdu.resize(declared, 0x00);
            let frame = adu(&pdu);
            assert!(parse_request(&frame[..MBAP_LEN + prefix.len() + 2]).is_ok());
        }
        assert_eq!(
            ModbusError::Quantity {
                function: 0x03,
                quantity: 126,
                max: 125
            }
            .to_string(),
            "0x03 read_holding_registers: quantity 126 is outside 1..=125"
        );
    }

    #[test]
    fn coil_value_must_be_on_or_off() {
        let frame = adu(&[0x05, 0x00, 0x01, 0x12, 0x34]);
        let e = request_error(&frame);
        assert_eq!(e, ModbusError::CoilValue { value: 0x1234 });
        assert_eq!(
            e.to_string(),
            "0x05 write_single_coil: coil value 0x1234 is neither 0xFF00 (on) nor 0x0000 (off)"
        );
    }

    #[test]
    fn address_range_must_stay_below_65536() {
        // 0x03: 2 registers from 65535.
        let e = request_error(&adu(&[0x03, 0xFF, 0xFF, 0x00, 0x02]));
        assert_eq!(
            e,
            ModbusError::AddressRange {
                function: 0x03,
                address: 0xFFFF,
                quantity: 2
            }
        );
        assert_eq!(e.kind(), "address_range");
        // 1 register at 65535 is the last legal one.
        assert_eq!(
            request(&adu(&[0x03, 0xFF, 0xFF, 0x00, 0x01]))
                .body
                .address(),
            Some(0xFFFF)
        );
        // 0x01: 2000 coils from 64000.
        assert!(matches!(
            request_error(&adu(&[0x01, 0xFA, 0x00, 0x07, 0xD0])),
            ModbusError::AddressRange { function: 0x01, .. }
        ));
        // 0x10: 2 registers from 65535.
        assert!(matches!(
            request_error(&adu(&[0x10, 0xFF, 0xFF, 0x00, 0x02, 0x04, 0, 0, 0, 0])),
            ModbusError::AddressRange { function: 0x10, .. }
        ));
        // 0x0F: 9 coils from 65528.
        assert!(matches!(
            request_error(&adu(&[0x0F, 0xFF, 0xF8, 0x00, 0x09, 0x02, 0xFF, 0x01])),
            ModbusError::AddressRange { function: 0x0F, .. }
        ));
        // 0x17: the read range and the write range are both checked.
        let read_past = [
            0x17, 0xFF, 0xFF, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0, 0,
        ];
        assert!(matches!(
            request_error(&adu(&read_past)),
            ModbusError::AddressRange {
                function: 0x17,
                address: 0xFFFF,
                ..
            }
        ));
        let write_past = [
            0x17, 0x00, 0x00, 0x00, 0x01, 0xFF, 0xFF, 0x00, 0x02, 0x04, 0, 0, 0, 0,
        ];
        assert!(matches!(
            request_error(&adu(&write_past)),
            ModbusError::AddressRange {
                function: 0x17,
                address: 0xFFFF,
                quantity: 2
            }
        ));
    }

    #[test]
    fn trailing_bytes_are_refused_before_they_arrive() {
        let frame = adu(&[0x03, 0x00, 0x6B, 0x00, 0x03, 0x00]);
        let expected = ModbusError::TrailingBytes {
            function: 0x03,
            extra: 1,
        };
        assert_eq!(request_error(&frame), expected);
        // The header declares 6 PDU bytes where 0x03 has 5: the function code is enough.
        assert_eq!(request_error(&frame[..MBAP_LEN + 1]), expected);
        assert_eq!(
            expected.to_string(),
            "0x03 read_holding_registers: 1 bytes after the end of the PDU"
        );
        // And a PDU too short for its function.
        let e = request_error(&adu(&[0x06, 0x00, 0x01, 0x00]));
        assert_eq!(
            e,
            ModbusError::Truncated {
                function: 0x06,
                expected: 5,
                found: 4
            }
        );
        assert_eq!(e.kind(), "truncated");
    }

    #[test]
    fn function_code_zero_and_exceptions_are_not_requests() {
        for code in [0x00, 0x80, 0x83, 0xFF] {
            let frame = adu(&[code, 0x00, 0x00, 0x00, 0x01]);
            let e = request_error(&frame[..MBAP_LEN + 1]);
            assert_eq!(e, ModbusError::FunctionCode { code });
            assert_eq!(e.kind(), "function_code");
        }
    }

    #[test]
    fn file_record_errors() {
        // Reference type 7.
        let pdu = [0x14, 0x07, 0x07, 0x00, 0x04, 0x00, 0x01, 0x00, 0x02];
        assert_eq!(
            request_error(&adu(&pdu)),
            ModbusError::ReferenceType {
                function: 0x14,
                index: 1,
                reference_type: 7
            }
        );
        // File 0.
        let pdu = [0x14, 0x07, 0x06, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02];
        assert!(matches!(
            request_error(&adu(&pdu)),
            ModbusError::FileRecord { file_number: 0, .. }
        ));
        // Records 9999 and 10000: past the end of the file.
        let pdu = [0x14, 0x07, 0x06, 0x00, 0x01, 0x27, 0x0F, 0x00, 0x02];
        assert!(matches!(
            request_error(&adu(&pdu)),
            ModbusError::FileRecord {
                record_number: 9999,
                record_length: 2,
                ..
            }
        ));
        // Byte count 8 is one sub-request and 1 byte of a second.
        let pdu = [0x14, 0x08, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06];
        assert_eq!(
            request_error(&adu(&pdu)),
            ModbusError::SubRequest {
                function: 0x14,
                index: 2,
                needed: 7,
                remaining: 1
            }
        );
        // Byte count 6 is below the minimum.
        let pdu = [0x14, 0x06, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00];
        assert!(matches!(
            request_error(&adu(&pdu)),
            ModbusError::ByteCountRange {
                function: 0x14,
                byte_count: 6,
                min: 7,
                max: 0xF5
            }
        ));
        // 200 registers would not fit in the response.
        let pdu = [0x14, 0x07, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0xC8];
        assert_eq!(
            request_error(&adu(&pdu)),
            ModbusError::FileResponseLength {
                function: 0x14,
                length: 402
            }
        );
        // 0x15 whose record length wants more data than the byte count holds.
        let pdu = [
            0x15, 0x09, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x12, 0x34,
        ];
        assert_eq!(
            request_error(&adu(&pdu)),
            ModbusError::SubRequest {
                function: 0x15,
                index: 1,
                needed: 11,
                remaining: 9
            }
        );
    }

    #[test]
    fn encapsulated_interface_errors() {
        let e = request_error(&adu(&[0x2B, 0x0C, 0x01, 0x00]));
        assert_eq!(e, ModbusError::MeiType { mei_type: 0x0C });
        assert_eq!(e.kind(), "mei_type");
        // Known from the MEI type alone.
        assert!(parse_request(&adu(&[0x2B, 0x0C, 0x01, 0x00])[..MBAP_LEN + 2]).is_err());
        assert_eq!(
            request_error(&adu(&[0x2B, 0x0E, 0x05, 0x00])),
            ModbusError::DeviceIdCode { code: 5 }
        );
        assert_eq!(
            request_error(&adu(&[0x2B, 0x0E, 0x00, 0x00])),
            ModbusError::DeviceIdCode { code: 0 }
        );
        assert_eq!(
            request_error(&adu(&[0x2B, 0x0E, 0x01, 0x00, 0x00])),
            ModbusError::TrailingBytes {
                function: 0x2B,
                extra: 1
            }
        );
        assert!(matches!(
            request_error(&adu(&[0x2B])),
            ModbusError::Truncated { function: 0x2B, .. }
        ));
    }

    #[test]
    fn responses() {
        let normal = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x09, // length 9
            0x11, // unit id 17
            0x03, // 0x03 read holding registers
            0x06, // byte count 6
            0x02, 0x2B, // register 107
            0x00, 0x00, // register 108
            0x00, 0x64, // register 109
        ];
        let (frame, used) = parse_response(&normal).unwrap().unwrap();
        assert_eq!(used, normal.len());
        assert_eq!(
            frame.body,
            Response::Normal {
                function: 0x03,
                data: &normal[8..]
            }
        );
        assert_eq!(frame.body.function_code(), 0x03);
        for cut in 0..normal.len() {
            assert_eq!(parse_response(&normal[..cut]), Ok(None));
        }

        let exception = [
            0x00, 0x01, // transaction id 1
            0x00, 0x00, // protocol id 0
            0x00, 0x03, // length 3
            0x11, // unit id 17
            0x83, // exception to 0x03
            0x02, // illegal data address
        ];
        let (frame, used) = parse_response(&exception).unwrap().unwrap();
        assert_eq!(used, 9);
        assert_eq!(
            frame.body,
            Response::Exception {
                function: 0x03,
                code: ExceptionCode::IllegalDataAddress.code()
            }
        );
        // Exactly 2 PDU bytes, known from the header and the function code.
        assert!(parse_response(&adu(&[0x83, 0x02, 0x00])[..MBAP_LEN + 1]).is_err());
        assert_eq!(
            parse_response(&adu(&[0x83, 0x02, 0x00])),
            Err(ModbusError::TrailingBytes {
                function: 0x83,
                extra: 1
            })
        );
        let e = parse_response(&adu(&[0x83])).unwrap_err();
        assert_eq!(
            e,
            ModbusError::Truncated {
                function: 0x83,
                expected: 2,
                found: 1
            }
        );
        assert_eq!(
            e.to_string(),
            "0x83 read_holding_registers exception: PDU of 1 bytes is too short, at least 2 needed"
        );
        for code in [0x00, 0x80] {
            assert_eq!(
                parse_response(&adu(&[code, 0x01])),
                Err(ModbusError::FunctionCode { code })
            );
        }
    }

    /// The exception a conforming device answers for each kind of request error, from the
    /// spec's state diagrams; framing errors have none (the connection closes).
    #[test]
    fn request_errors_name_the_exception_a_device_answers() {
        let cases: [(&[u8], Option<u8>); 22] = [
            // 0x03 quantity 0: 03 Illegal Data Value
            (&[0x03, 0x00, 0x00, 0x00, 0x00], Some(0x03)),
            // 0x01 quantity 2001 (0x7D1): 03
            (&[0x01, 0x00, 0x00, 0x07, 0xD1], Some(0x03)),
            // 0x04 2 registers from 65535: 02 Illegal Data Address
            (&[0x04, 0xFF, 0xFF, 0x00, 0x02], Some(0x02)),
            // 0x05 coil value 0x1234: 03
            (&[0x05, 0x00, 0x01, 0x12, 0x34], Some(0x03)),
            // 0x0F 10 coils, byte count 1 (needs 2), 1 data byte: 03
            (&[0x0F, 0x00, 0x00, 0x00, 0x0A, 0x01, 0xFF], Some(0x03)),
            // 0x10 quantity 0, byte count 0: 03
            (&[0x10, 0x00, 0x00, 0x00, 0x00, 0x00], Some(0x03)),
            // 0x10 2 registers from 65535, byte count 4: 02
            (
                &[0x10, 0xFF, 0xFF, 0x00, 0x02, 0x04, 0, 0, 0, 0],
                Some(0x02),
            ),
            // 0x17 write quantity 0 (read 1 from 0, write 0 at 0, byte count 0): 03
            (
                &[0x17, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00],
                Some(0x03),
            ),
            // 0x08 sub-function 0 with 1 data byte (not a whole word): 03
            (&[0x08, 0x00, 0x00, 0x12], Some(0x03)),
            // 0x14 byte count 6 (below 7): 03
            (
                &[0x14, 0x06, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00],
                Some(0x03),
            ),
            // 0x14 reference type 7: 02
            (
                &[0x14, 0x07, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01],
                Some(0x02),
            ),
            // 0x14 file 0: 02
            (
                &[0x14, 0x07, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01],
                Some(0x02),
            ),
            // 0x14 200 registers, more than a response holds: 03
            (
                &[0x14, 0x07, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0xC8],
                Some(0x03),
            ),
            // 0x2B MEI type 0x0C: 01 Illegal Function
            (&[0x2B, 0x0C, 0x01, 0x00], Some(0x01)),
            // 0x2B/0x0E read device id code 5: 03
            (&[0x2B, 0x0E, 0x05, 0x00], Some(0x03)),
            // function code 0: 01
            (&[0x00, 0x00, 0x00], Some(0x01)),
            // function code 0x83 (an exception's) from a client: 01
            (&[0x83, 0x00, 0x00], Some(0x01)),
            // 0x03 with a sixth PDU byte: the length disagrees with the layout, framing
            (&[0x03, 0x00, 0x00, 0x00, 0x01, 0x00], None),
            // 0x06 with 3 data bytes: framing
            (&[0x06, 0x00, 0x01, 0x00], None),
            // 0x10 byte count 4 where the length leaves 2: framing
            (&[0x10, 0x00, 0x00, 0x00, 0x02, 0x04, 0x00, 0x01], None),
            // 0x07 with a data byte: framing
            (&[0x07, 0x00], None),
            // 0x2B/0x0E with a third data byte: framing
            (&[0x2B, 0x0E, 0x01, 0x00, 0x00], None),
        ];
        for (pdu, code) in cases {
            let frame = adu(pdu);
            let e = request_error(&frame);
            assert_eq!(
                e.exception().map(ExceptionCode::code),
                code,
                "{pdu:02X?}: {e}"
            );
            match code {
                Some(code) => {
                    let r = refusal(&frame, e).unwrap().unwrap();
                    assert_eq!(
                        (r.code.code(), r.len, r.function),
                        (code, frame.len(), pdu[0])
                    );
                }
                None => assert_eq!(refusal(&frame, e), Err(e)),
            }
        }
        // The header's own errors are framing errors too.
        let bad_protocol = [0x00, 0x01, 0x00, 0x01, 0x00, 0x06, 0x01, 0x03];
        let e = request_error(&bad_protocol);
        assert_eq!(e.exception(), None);
        assert_eq!(refusal(&bad_protocol, e), Err(e));
        let e = request_error(&[0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(e, ModbusError::Length { length: 0 });
        assert_eq!(e.exception(), None);
    }

    #[test]
    fn a_request_error_is_answered_once_its_whole_adu_is_in() {
        let frame = [
            0xAB, 0xCD, // transaction id 0xABCD
            0x00, 0x00, // protocol id 0
            0x00, 0x0D, // length: unit id + 12 PDU bytes
            0x07, // unit id 7
            0x10, // 0x10 write multiple registers
            0x00, 0x00, // starting address 0
            0x00, 0x00, // quantity 0: no device writes that
            0x06, // byte count 6
            0x00, 0x01, 0x00, 0x02, 0x00, 0x03, // three registers of data
        ];
        // Known from the quantity, before the data arrives...
        let early = request_error(&frame[..MBAP_LEN + 5]);
        assert_eq!(
            early,
            ModbusError::Quantity {
                function: 0x10,
                quantity: 0,
                max: 123
            }
        );
        // ... but answered only when the whole ADU is there, so that its data is not read as
        // the next request.
        for cut in MBAP_LEN + 5..frame.len() {
            assert_eq!(refusal(&frame[..cut], early), Ok(None), "cut at {cut}");
        }
        let mut stream = frame.to_vec();
        stream.extend_from_slice(&READ_HOLDING_REGISTERS);
        let r = refusal(&stream, request_error(&stream)).unwrap().unwrap();
        assert_eq!(r.len, frame.len());
        assert_eq!(
            r.response(),
            [
                0xAB, 0xCD, // transaction id echoed
                0x00, 0x00, // protocol id 0
                0x00, 0x03, // length: unit id + 2 PDU bytes
                0x07, // unit id echoed
                0x90, // 0x10 | 0x80
                0x03, // illegal data value
            ]
        );
        // The next request follows, intact.
        assert_eq!(
            request(&stream[r.len..]).body,
            Request::ReadHoldingRegisters {
                address: 107,
                quantity: 3
            }
        );
    }

    #[test]
    fn value_errors_come_before_address_errors_as_in_the_spec() {
        // 0x10: 2 registers from 65535 (address range) and byte count 2 (needs 4): the state
        // diagram checks quantity and byte count first, so 03.
        let e = request_error(&adu(&[0x10, 0xFF, 0xFF, 0x00, 0x02, 0x02, 0x00, 0x00]));
        assert!(
            matches!(e, ModbusError::ByteCount { function: 0x10, .. }),
            "{e}"
        );
        assert_eq!(e.exception(), Some(ExceptionCode::IllegalDataValue));
        // 0x17: read 2 from 65535 (address range) and write quantity 0: 03.
        let e = request_error(&adu(&[
            0x17, 0xFF, 0xFF, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        ]));
        assert!(
            matches!(e, ModbusError::Quantity { quantity: 0, .. }),
            "{e}"
        );
        // 0x0F: 9 coils from 65528 (address range) and byte count 1 (needs 2): 03.
        let e = request_error(&adu(&[0x0F, 0xFF, 0xF8, 0x00, 0x09, 0x01, 0xFF]));
        assert_eq!(e.exception(), Some(ExceptionCode::IllegalDataValue), "{e}");
    }

    /// The fuzz target's invariants (a frame judged the same however much of it has arrived;
    /// a request error answered once whole, and the next request read after it) hold on the
    /// committed corpus and on a stream of request errors between valid requests.
    #[test]
    fn the_fuzz_harness_holds_on_its_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/modbus");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            crate::fuzz::modbus(&std::fs::read(entry.unwrap().path()).unwrap());
            seen += 1;
        }
        assert!(seen > 0, "no corpus in {dir}");
        let mut stream = adu(&[0x03, 0x00, 0x00, 0x00, 0x00]); // quantity 0
        stream.extend_from_slice(&READ_HOLDING_REGISTERS);
        stream.extend_from_slice(&adu(&[0x05, 0x00, 0x01, 0x12, 0x34])); // coil value
        stream.extend_from_slice(&WRITE_MULTIPLE_REGISTERS);
        crate::fuzz::modbus(&stream);
    }

    #[test]
    fn exception_codes_are_the_specs() {
        // Application Protocol V1.1b3 section 7, as tokio-modbus numbers them.
        let codes = [
            (ExceptionCode::IllegalFunction, 0x01),
            (ExceptionCode::IllegalDataAddress, 0x02),
            (ExceptionCode::IllegalDataValue, 0x03),
            (ExceptionCode::ServerDeviceFailure, 0x04),
            (ExceptionCode::Acknowledge, 0x05),
            (ExceptionCode::ServerDeviceBusy, 0x06),
            (ExceptionCode::MemoryParityError, 0x08),
            (ExceptionCode::GatewayPathUnavailable, 0x0A),
            (ExceptionCode::GatewayTargetDevice, 0x0B),
        ];
        for (code, byte) in codes {
            assert_eq!(u8::from(code), byte, "{code:?}");
            let header = Mbap {
                transaction_id: 7,
                protocol_id: 0,
                length: 6,
                unit_id: 1,
            };
            assert_eq!(exception_response(&header, 0x03, code)[8], byte);
        }
    }

    #[test]
    fn builds_exception_responses() {
        let header = Mbap {
            transaction_id: 0xBEEF,
            protocol_id: 0,
            length: 6,
            unit_id: 17,
        };
        let bytes = exception_response(&header, 0x10, ExceptionCode::IllegalDataValue);
        assert_eq!(
            bytes,
            [
                0xBE, 0xEF, // transaction id echoed
                0x00, 0x00, // protocol id 0
                0x00, 0x03, // length: unit id + 2 PDU bytes
                0x11, // unit id echoed
                0x90, // 0x10 | 0x80
                0x03, // illegal data value
            ]
        );
        let (frame, _) = parse_response(&bytes).unwrap().unwrap();
        assert_eq!(
            frame.body,
            Response::Exception {
                function: 0x10,
                code: 0x03
            }
        );
    }

    #[test]
    fn register_accessors() {
        let Request::WriteMultipleRegisters { values, .. } =
            request(&WRITE_MULTIPLE_REGISTERS).body
        else {
            panic!();
        };
        assert_eq!(values.len(), 2);
        assert!(!values.is_empty());
        assert_eq!(values.get(0), Some(10));
        assert_eq!(values.get(1), Some(258));
        assert_eq!(values.get(2), None);
        assert_eq!(values.get(usize::MAX), None);
        assert_eq!(values.iter().len(), 2);
        assert_eq!(values.iter().rev().collect::<Vec<_>>(), [258, 10]);
        assert_eq!(values.as_bytes(), &[0x00, 0x0A, 0x01, 0x02]);
        assert_eq!(format!("{values:?}"), "[10, 258]");
        // An odd byte is not a register.
        let odd = Registers::new(&[0x00, 0x01, 0x02]);
        assert_eq!((odd.len(), odd.as_bytes()), (1, &[0x00, 0x01][..]));
        assert!(Registers::new(&[]).is_empty());
    }

    #[test]
    fn coil_accessors() {
        let Request::WriteMultipleCoils { values, .. } = request(&WRITE_MULTIPLE_COILS).body else {
            panic!();
        };
        assert_eq!(values.len(), 10);
        assert!(!values.is_empty());
        assert_eq!(values.get(0), Some(true));
        assert_eq!(values.get(1), Some(false));
        assert_eq!(values.get(8), Some(true)); // LSB of the second byte
        assert_eq!(values.get(9), Some(false));
        assert_eq!(values.get(10), None, "padding bits are not coils");
        assert_eq!(values.get(usize::MAX), None);
        assert_eq!(values.iter().len(), 10);
        assert_eq!(values.iter().filter(|on| *on).count(), 6);
        assert_eq!(values.as_bytes(), &[0xCD, 0x01]);
        // A count beyond the bytes is cut to what they hold.
        assert_eq!(Coils::new(&[0xFF], 100).len(), 8);
        assert!(Coils::new(&[], 0).is_empty());
    }

    #[test]
    fn error_kinds_are_distinct() {
        let errors = [
            ModbusError::ProtocolId { found: 1 },
            ModbusError::Length { length: 0 },
            ModbusError::FunctionCode { code: 0 },
            ModbusError::Truncated {
                function: 1,
                expected: 5,
                found: 1,
            },
            ModbusError::TrailingBytes {
                function: 1,
                extra: 1,
            },
            ModbusError::ByteCount {
                function: 0x10,
                byte_count: 1,
                quantity: 1,
                expected: 2,
            },
            ModbusError::ByteCountRange {
                function: 0x14,
                byte_count: 1,
                min: 7,
                max: 0xF5,
            },
            ModbusError::Quantity {
                function: 3,
                quantity: 0,
                max: 125,
            },
            ModbusError::AddressRange {
                function: 3,
                address: 0xFFFF,
                quantity: 2,
            },
            ModbusError::CoilValue { value: 1 },
            ModbusError::DiagnosticsData { length: 1 },
            ModbusError::MeiType { mei_type: 0 },
            ModbusError::DeviceIdCode { code: 0 },
            ModbusError::SubRequest {
                function: 0x14,
                index: 1,
                needed: 7,
                remaining: 1,
            },
            ModbusError::ReferenceType {
                function: 0x14,
                index: 1,
                reference_type: 0,
            },
            ModbusError::FileRecord {
                function: 0x14,
                index: 1,
                file_number: 0,
                record_number: 0,
                record_length: 1,
            },
            ModbusError::FileResponseLength {
                function: 0x14,
                length: 300,
            },
        ];
        let mut kinds: Vec<_> = errors.iter().map(ModbusError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), errors.len());
        for e in errors {
            assert!(!e.to_string().is_empty());
        }
    }
}

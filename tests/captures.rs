//! Replays the shared Modbus/TCP captures through the parsers: every TCP connection is
//! reassembled per direction, client->server bytes go through `parse_request` and server->client
//! bytes through `parse_response`, frame after frame. Real traffic must parse, the fuzzed
//! captures must be refused, and nothing may panic.
//!
//! `MODBUS_CORPUS_OUT=DIR cargo test --test captures` also writes a small, varied set of the
//! client->server segments to DIR: that is how `fuzz/corpus/modbus/` was seeded (plus 8 hand-made
//! frames for 0x14, 0x15, 0x16, 0x17, 0x18 and 0x2B/0x0D, which the captures lack or hold few of).
//!
//! The OPC UA captures go the same way, client->server only: chunk after chunk through
//! `parse_chunk`, the sequence header, reassembly and `decode_request`.
//! `OPCUA_CORPUS_OUT=DIR` writes their seeds: that is how `fuzz/corpus/opcua/` was seeded (plus 3
//! hand-made streams from one of those WriteRequest chunks: split into 'C', 'C', 'F' chunks; a
//! 'C' chunk aborted by an 'A' and then sent whole; HEL, OPN and the MSG in a row), since the
//! captures hold no multi-chunk message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use zonegate::proto::modbus::{ModbusError, parse_request, parse_response};
use zonegate::proto::opcua::{
    self, ChunkBody, ChunkType, DecodedRequest, MAX_CHUNK_SIZE, Reassembler, Service,
    decode_request, parse_chunk, parse_sequence_header,
};

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/captures/modbus");
const MODBUS_PORT: u16 = 502;
/// The first block of a pcapng file, a Section Header Block, starts with this type.
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];
const OPCUA_CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/captures/opcua");
/// Server ports in the OPC UA captures: the IANA port, open62541's examples on 48010 and 53530,
/// the Wireshark-freeze capture's 12001.
const OPCUA_PORTS: [u16; 4] = [4840, 48010, 53530, 12001];
/// Requests that parsed when this test was written: 16,278. The bound is 80% of that: room for
/// a stricter parser, not for a broken one.
const MIN_REQUESTS_OK: usize = 13_000;
/// Captures of well-behaved clients and servers: every frame in them must parse.
const CLEAN: [&str; 7] = [
    "ModbusTCP.pcap",
    "modbus-eit.pcap",
    "modbusBig.pcap",
    "modbusSmall.pcap",
    "modbus_test.pcap",
    "modbus_test_2.pcap",
    "pymodbus-fc.pcapng",
];

#[test]
fn captures_replay_through_the_parsers() {
    let dir = Path::new(CAPTURES);
    assert!(
        dir.is_dir(),
        "{CAPTURES} is missing: the shared captures must sit beside the repository (as in CI)"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "pcap" || ext == "pcapng")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .pcap or .pcapng files in {CAPTURES}");

    let corpus_out = std::env::var_os("MODBUS_CORPUS_OUT").map(PathBuf::from);
    let mut corpus = Corpus::default();
    let mut total = Tally::default();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let capture = Capture::read(path);
        let mut requests = Tally::default();
        let mut responses = Tally::default();
        for (key, stream) in &capture.streams {
            match capture.direction(key, &[MODBUS_PORT]) {
                Some(Direction::ToServer) => {
                    requests.replay(stream, |buf| {
                        parse_request(buf).map(|frame| {
                            frame.map(|(frame, used)| (frame.body.function_code(), used))
                        })
                    });
                    corpus.collect(stream);
                }
                Some(Direction::ToClient) => responses.replay(stream, |buf| {
                    parse_response(buf)
                        .map(|frame| frame.map(|(frame, used)| (frame.body.function_code(), used)))
                }),
                None => {}
            }
        }
        eprintln!(
            "{name}: requests {} ok / {} errors / {} bytes; responses {} ok / {} errors / {} bytes; \
             {} packets unread; request functions {}; errors {:?}",
            requests.ok,
            requests.errors,
            requests.bytes,
            responses.ok,
            responses.errors,
            responses.bytes,
            capture.unread,
            requests.function_counts(),
            requests.kinds,
        );
        if name.starts_with("fuzz-") {
            assert!(
                requests.errors + responses.errors > 0,
                "{name} holds fuzzed Modbus, yet nothing in it was refused"
            );
        }
        if CLEAN.contains(&name.as_str()) {
            assert_eq!(
                (requests.errors, responses.errors),
                (0, 0),
                "{name}: {requests:?}"
            );
            assert!(
                requests.ok > 0 && responses.ok > 0,
                "{name}: nothing parsed"
            );
        }
        total.add(&requests);
    }
    eprintln!(
        "all captures: requests {} ok / {} errors; errors by kind {:?}",
        total.ok, total.errors, total.kinds
    );
    assert!(
        total.ok >= MIN_REQUESTS_OK,
        "only {} requests parsed across the captures, expected at least {MIN_REQUESTS_OK}",
        total.ok
    );
    if let Some(out) = corpus_out {
        corpus.write(&out);
    }
}

/// Service requests that decoded when this test was written: 974 (26 of them on Sign-mode
/// channels). The bound is 80% of that: room for a stricter decoder, not for a broken one.
const MIN_OPCUA_REQUESTS: usize = 780;
/// Requests that are malformed and must be refused; every other plaintext request in the
/// captures must decode. The Wireshark-freeze capture's two Call requests claim a 256 KiB
/// string and a NodeId encoding 7; the CreateMonitoredItems one has an EventFilter operand with
/// the index range "7-10", which is not NumericRange syntax ("7:10").
const OPCUA_MALFORMED: [(&str, usize); 2] = [
    ("opc-ua-ap-method-wireshark-freeze.pcap", 2),
    ("open62541_create_monitored_items.pcap", 1),
];
/// Seeds per class for `fuzz/corpus/opcua/`, and the largest segment taken.
const OPCUA_SEEDS_PER_CLASS: usize = 2;
const OPCUA_MAX_SEED: usize = 4096;

#[test]
fn opcua_captures_replay_through_the_decoder() {
    let files = capture_files(OPCUA_CAPTURES);
    let corpus_out = std::env::var_os("OPCUA_CORPUS_OUT").map(PathBuf::from);
    let mut corpus = Corpus::default();
    let mut total = OpcUaTally::default();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let capture = Capture::read(path);
        let mut tally = OpcUaTally::default();
        for (key, stream) in &capture.streams {
            if capture.opcua_direction(key) == Some(Direction::ToServer) {
                tally.replay(stream);
                corpus.collect_classified(
                    stream,
                    OPCUA_MAX_SEED,
                    OPCUA_SEEDS_PER_CLASS,
                    opcua_class,
                );
            }
        }
        eprintln!(
            "{name}: {} streams, {} bytes; chunks {} ok / {} errors; requests {} decoded \
             ({} signed) / {} errors; {} secured messages; {} packets unread; services {:?}; \
             errors {:?}",
            tally.streams,
            tally.bytes,
            tally.chunks,
            tally.chunk_errors,
            tally.requests,
            tally.signed_requests,
            tally.decode_errors,
            tally.secured,
            capture.unread,
            tally.services,
            tally.kinds,
        );
        // Real traffic, whole or with gaps: every chunk parses.
        assert_eq!(tally.chunk_errors, 0, "{name}: {:?}", tally.kinds);
        let malformed = OPCUA_MALFORMED
            .iter()
            .find(|(file, _)| *file == name)
            .map_or(0, |(_, n)| *n);
        assert_eq!(tally.decode_errors, malformed, "{name}: {:?}", tally.kinds);
        if name == "asyncua-modes.pcapng" {
            for service in ["create_session", "read", "write"] {
                assert!(
                    tally.services.contains_key(service),
                    "{name}: no {service} request decoded: {:?}",
                    tally.services
                );
            }
        }
        total.add(&tally);
    }
    eprintln!(
        "all OPC UA captures: chunks {} ok / {} errors; requests {} decoded ({} signed) / {} \
         errors; {} secured; services {:?}; errors by kind {:?}",
        total.chunks,
        total.chunk_errors,
        total.requests,
        total.signed_requests,
        total.decode_errors,
        total.secured,
        total.services,
        total.kinds
    );
    assert!(
        total.requests >= MIN_OPCUA_REQUESTS,
        "only {} OPC UA requests decoded across the captures, expected at least \
         {MIN_OPCUA_REQUESTS}",
        total.requests
    );
    if let Some(out) = corpus_out {
        corpus.write(&out);
    }
}

/// The .pcap and .pcapng files of a capture folder, sorted.
fn capture_files(dir: &str) -> Vec<PathBuf> {
    let path = Path::new(dir);
    assert!(
        path.is_dir(),
        "{dir} is missing: the shared captures must sit beside the repository (as in CI)"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "pcap" || ext == "pcapng")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .pcap or .pcapng files in {dir}");
    files
}

/// Chunks, messages and requests seen in some client->server OPC UA streams.
#[derive(Debug, Default)]
struct OpcUaTally {
    streams: usize,
    bytes: usize,
    chunks: usize,
    chunk_errors: usize,
    /// Plaintext requests decoded, and of them those of Sign-mode channels.
    requests: usize,
    signed_requests: usize,
    decode_errors: usize,
    /// Messages of channels with a security policy other than None that did not decode:
    /// encrypted (SignAndEncrypt).
    secured: usize,
    services: BTreeMap<&'static str, usize>,
    kinds: BTreeMap<&'static str, usize>,
}

impl OpcUaTally {
    /// Consumes the stream chunk after chunk; after an error, goes on at the next segment start.
    /// Streams that begin mid-connection (no HEL, no OPN) are taken for SecurityPolicy None
    /// until an OPN says otherwise.
    fn replay(&mut self, stream: &Stream) {
        self.streams += 1;
        self.bytes += stream.bytes.len();
        let mut policy: Option<String> = None;
        let mut reassembler = Reassembler::default();
        let mut pos = 0;
        while pos < stream.bytes.len() {
            match parse_chunk(&stream.bytes[pos..], MAX_CHUNK_SIZE) {
                Ok(Some((chunk, used))) => {
                    assert_eq!(
                        (used, chunk.bytes.len()),
                        (chunk.header.size as usize, used)
                    );
                    assert!(pos + used <= stream.bytes.len());
                    self.chunks += 1;
                    self.chunk(&chunk, &mut policy, &mut reassembler);
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.chunk_errors += 1;
                    *self.kinds.entry(e.kind()).or_default() += 1;
                    let next = stream.segment_starts.iter().find(|&&start| start > pos);
                    let Some(&next) = next else { break };
                    pos = next;
                }
            }
        }
    }

    fn chunk(
        &mut self,
        chunk: &opcua::Chunk<'_>,
        policy: &mut Option<String>,
        reassembler: &mut Reassembler,
    ) {
        match chunk.body {
            ChunkBody::Open(open) => {
                *policy = Some(open.security_policy_uri.to_owned());
                // Other policies encrypt the OPN with the receiver's public key.
                if open.is_security_none() {
                    let (_, body) = parse_sequence_header(open.rest).unwrap();
                    self.decode(body, false);
                }
            }
            ChunkBody::Message(header) | ChunkBody::Close(header) => {
                let signature = policy.as_deref().map_or(Some(0), opcua::signature_len);
                let signed = signature != Some(0);
                let Ok((sequence, body)) = parse_sequence_header(header.rest) else {
                    *self.kinds.entry("sequence_header").or_default() += 1;
                    return;
                };
                // In Sign mode the body is plaintext followed by the signature; in
                // SignAndEncrypt mode it does not decode, which is all the proxy can learn.
                let body = &body[..body.len().saturating_sub(signature.unwrap_or(0))];
                match reassembler.push(sequence.request_id, chunk.header.chunk_type, body) {
                    Ok(Some(message)) => self.decode(&message, signed),
                    Ok(None) => {}
                    Err(e) => {
                        *self.kinds.entry(e.kind()).or_default() += 1;
                        *reassembler = Reassembler::default();
                    }
                }
            }
            _ => {}
        }
    }

    fn decode(&mut self, message: &[u8], signed: bool) {
        match decode_request(message) {
            Ok(request) => {
                self.requests += 1;
                self.signed_requests += usize::from(signed);
                *self.services.entry(request.service.name()).or_default() += 1;
                if let DecodedRequest::ActivateSession(activate) = &request.request {
                    let _ = opcua::identity_token(activate);
                }
            }
            Err(_) if signed => self.secured += 1,
            Err(e) => {
                self.decode_errors += 1;
                *self.kinds.entry(e.kind()).or_default() += 1;
            }
        }
    }

    fn add(&mut self, other: &OpcUaTally) {
        self.streams += other.streams;
        self.bytes += other.bytes;
        self.chunks += other.chunks;
        self.chunk_errors += other.chunk_errors;
        self.requests += other.requests;
        self.signed_requests += other.signed_requests;
        self.decode_errors += other.decode_errors;
        self.secured += other.secured;
        for (service, n) in &other.services {
            *self.services.entry(service).or_default() += n;
        }
        for (kind, n) in &other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
    }
}

/// A seed's class: its first chunk's message and chunk type, and for a plaintext final MSG the
/// service it decodes to.
fn opcua_class(segment: &[u8]) -> String {
    match parse_chunk(segment, MAX_CHUNK_SIZE) {
        Ok(Some((chunk, _))) => {
            let service = match chunk.body {
                ChunkBody::Message(header) if chunk.header.chunk_type == ChunkType::Final => {
                    parse_sequence_header(header.rest)
                        .ok()
                        .and_then(|(_, body)| decode_request(body).ok())
                        .map_or(Service::Unknown, |request| request.service)
                        .name()
                }
                _ => "",
            };
            format!(
                "{}{}-{service}",
                chunk.header.message_type,
                char::from(chunk.header.chunk_type.as_byte())
            )
        }
        Ok(None) => "partial".to_owned(),
        Err(e) => format!("error-{}", e.kind()),
    }
}

/// Which way a stream flows relative to the Modbus server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

type Endpoint = (IpAddr, u16);
/// (source, destination) of one direction of one TCP connection.
type StreamKey = (Endpoint, Endpoint);

/// One direction of one TCP connection, in capture order.
#[derive(Debug, Default)]
struct Stream {
    bytes: Vec<u8>,
    /// Offsets in `bytes` where a segment began: where to resynchronise after an error.
    segment_starts: Vec<usize>,
    next_seq: Option<u32>,
}

impl Stream {
    fn push(&mut self, seq: u32, syn: bool, payload: &[u8]) {
        // SYN takes one sequence number before the data.
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let mut payload = payload;
        if let Some(next) = self.next_seq {
            let ahead = data_seq.wrapping_sub(next) as i32;
            if ahead < 0 {
                // Some or all of it was seen already: a retransmission.
                let seen = ahead.unsigned_abs() as usize;
                if seen >= payload.len() {
                    return;
                }
                payload = &payload[seen..];
            }
        }
        let end = data_seq.wrapping_add(payload.len() as u32);
        // A gap (lost segment) is kept as is: the parser resynchronises at segment starts.
        if self
            .next_seq
            .is_none_or(|next| end.wrapping_sub(next) as i32 > 0)
        {
            self.next_seq = Some(end);
        }
        if !payload.is_empty() {
            self.segment_starts.push(self.bytes.len());
            self.bytes.extend_from_slice(payload);
        }
    }

    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self
            .segment_starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.bytes.len()]);
        self.segment_starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| &self.bytes[start..end])
    }
}

/// The TCP streams of one capture file.
#[derive(Debug, Default)]
struct Capture {
    streams: BTreeMap<StreamKey, Stream>,
    /// Endpoints that a connection-opening SYN went to.
    syn_targets: HashSet<Endpoint>,
    /// Packets that were not readable as IP/TCP (other link types, cut by the snap length).
    unread: usize,
}

impl Capture {
    fn read(path: &Path) -> Self {
        let mut capture = Capture::default();
        let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // By content, not name: opcua_with-gap_with-handshake.pcap is pcapng.
        let mut magic = [0; 4];
        std::io::Read::read_exact(&mut &file, &mut magic)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::io::Seek::rewind(&mut &file).unwrap();
        if magic == PCAPNG_MAGIC {
            let mut reader = PcapNgReader::new(file)
                .unwrap_or_else(|e| panic!("{}: not pcapng: {e}", path.display()));
            // Link types by interface id, as the blocks describe them.
            let mut links = Vec::new();
            while let Some(block) = reader.next_block() {
                match block.unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
                    Block::InterfaceDescription(interface) => links.push(interface.linktype),
                    Block::EnhancedPacket(packet) => {
                        let link = links.get(packet.interface_id as usize).copied();
                        capture.packet(link, &packet.data);
                    }
                    Block::SimplePacket(packet) => {
                        capture.packet(links.first().copied(), &packet.data)
                    }
                    _ => {}
                }
            }
        } else {
            let mut reader = PcapReader::new(file)
                .unwrap_or_else(|e| panic!("{}: not pcap: {e}", path.display()));
            let link = reader.header().datalink;
            while let Some(packet) = reader.next_packet() {
                let packet = packet.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                capture.packet(Some(link), &packet.data);
            }
        }
        capture
    }

    fn packet(&mut self, link: Option<DataLink>, data: &[u8]) {
        let sliced = match link {
            Some(DataLink::ETHERNET) => SlicedPacket::from_ethernet(data).ok(),
            Some(DataLink::LINUX_SLL) => SlicedPacket::from_linux_sll(data).ok(),
            Some(DataLink::RAW | DataLink::IPV4 | DataLink::IPV6) => {
                SlicedPacket::from_ip(data).ok()
            }
            // BSD loopback: a 4-byte address family, then IP.
            Some(DataLink::NULL | DataLink::LOOP) => {
                data.get(4..).and_then(|ip| SlicedPacket::from_ip(ip).ok())
            }
            _ => None,
        };
        let Some(sliced) = sliced else {
            self.unread += 1;
            return;
        };
        let (source, destination) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            ),
            _ => return,
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            return;
        };
        let from = (source, tcp.source_port());
        let to = (destination, tcp.destination_port());
        if tcp.syn() && !tcp.ack() {
            self.syn_targets.insert(to);
        }
        self.streams.entry((from, to)).or_default().push(
            tcp.sequence_number(),
            tcp.syn(),
            tcp.payload(),
        );
    }

    /// OPC UA: the side that sent HEL is the client; without a handshake in the capture, the
    /// server port decides. Other connections between ephemeral ports (the open62541 captures
    /// hold some local HTTP-like traffic) are not OPC UA.
    fn opcua_direction(&self, key: &StreamKey) -> Option<Direction> {
        let sent_hello = |key: &StreamKey| {
            self.streams
                .get(key)
                .is_some_and(|stream| stream.bytes.starts_with(b"HEL"))
        };
        if sent_hello(key) {
            Some(Direction::ToServer)
        } else if sent_hello(&(key.1, key.0)) {
            Some(Direction::ToClient)
        } else if OPCUA_PORTS.contains(&key.1.1) {
            Some(Direction::ToServer)
        } else if OPCUA_PORTS.contains(&key.0.1) {
            Some(Direction::ToClient)
        } else {
            None
        }
    }

    fn direction(&self, (from, to): &StreamKey, server_ports: &[u16]) -> Option<Direction> {
        if server_ports.contains(&to.1) {
            Some(Direction::ToServer)
        } else if server_ports.contains(&from.1) {
            Some(Direction::ToClient)
        } else if self.syn_targets.contains(to) {
            Some(Direction::ToServer)
        } else if self.syn_targets.contains(from) {
            Some(Direction::ToClient)
        } else {
            None
        }
    }
}

/// Frames parsed and refused in some streams.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    errors: usize,
    bytes: usize,
    functions: BTreeMap<u8, usize>,
    kinds: BTreeMap<&'static str, usize>,
}

impl Tally {
    /// Consumes the stream frame after frame; after an error, goes on at the next segment start.
    fn replay(
        &mut self,
        stream: &Stream,
        parse: impl Fn(&[u8]) -> Result<Option<(u8, usize)>, ModbusError>,
    ) {
        self.bytes += stream.bytes.len();
        let mut pos = 0;
        while pos < stream.bytes.len() {
            match parse(&stream.bytes[pos..]) {
                Ok(Some((function, used))) => {
                    assert!(used > 0 && pos + used <= stream.bytes.len());
                    self.ok += 1;
                    *self.functions.entry(function).or_default() += 1;
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.errors += 1;
                    *self.kinds.entry(e.kind()).or_default() += 1;
                    let next = stream.segment_starts.iter().find(|&&start| start > pos);
                    let Some(&next) = next else { break };
                    pos = next;
                }
            }
        }
    }

    /// "01:12 03:4" (function code in hex: frames).
    fn function_counts(&self) -> String {
        let counts: Vec<String> = self
            .functions
            .iter()
            .map(|(function, n)| format!("{function:02X}:{n}"))
            .collect();
        counts.join(" ")
    }

    fn add(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.bytes += other.bytes;
        for (kind, n) in &other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
    }
}

/// A varied sample of client->server segments for the fuzzer's seed corpus: a few per request
/// kind and error kind of their first frame, small ones only.
#[derive(Debug, Default)]
struct Corpus {
    picked: HashMap<String, Vec<Vec<u8>>>,
    seen: HashSet<Vec<u8>>,
}

impl Corpus {
    const PER_CLASS: usize = 5;
    const MAX_SEGMENT: usize = 1024;

    fn collect(&mut self, stream: &Stream) {
        self.collect_classified(stream, Self::MAX_SEGMENT, Self::PER_CLASS, |segment| {
            match parse_request(segment) {
                Ok(Some((frame, _))) => frame.body.name().to_owned(),
                Ok(None) => "partial".to_owned(),
                Err(e) => format!("error-{}", e.kind()),
            }
        });
    }

    /// Up to `per_class` segments of at most `max_segment` bytes per class that `classify`
    /// gives.
    fn collect_classified(
        &mut self,
        stream: &Stream,
        max_segment: usize,
        per_class: usize,
        classify: impl Fn(&[u8]) -> String,
    ) {
        for segment in stream.segments() {
            if segment.len() > max_segment || !self.seen.insert(segment.to_vec()) {
                continue;
            }
            let picked = self.picked.entry(classify(segment)).or_default();
            if picked.len() < per_class {
                picked.push(segment.to_vec());
            }
        }
    }

    fn write(&self, out: &Path) {
        std::fs::create_dir_all(out).unwrap();
        let mut written = 0;
        for seeds in self.picked.values() {
            for seed in seeds {
                std::fs::write(out.join(format!("{:016x}", fnv1a(seed))), seed).unwrap();
                written += 1;
            }
        }
        eprintln!("wrote {written} seeds to {}", out.display());
    }
}

/// FNV-1a: a stable content hash for seed file names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

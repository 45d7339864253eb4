//! The kernel's drop log: the packets the ruleset drops, read as typed records.
//!
//! The forward, input and output chains end with a rate-limited `log group N prefix "zonegate
//! drop <chain> "` rule (see [`DROP_LOG_PREFIX`]). The kernel hands those packets to nfnetlink_log
//! (NFLOG), which sends them to the one netlink socket bound to group N in the same network
//! namespace. [`DropLog`] is that socket: it binds the group, asks for the first
//! [`COPY_RANGE`] bytes of each packet (the IP and transport headers) and turns each message
//! into a [`Drop`]. Messages of other log rules on the same group are skipped.
//!
//! It does not bind nfnetlink_log as the namespace's default logger for IPv4/IPv6
//! (`NFULNL_CFG_CMD_PF_BIND`): `log group N` reaches the group without it, and the default
//! logger serves `log` rules *without* a group, which would then stop writing to the kernel log.
//!
//! The reader blocks; the daemon runs it on a thread of its own. Parsing is pure and never
//! panics on what the kernel sends ([`parse_packet`] and the message parser below); only
//! [`DropLog::open`] and [`DropLog::next`] touch the kernel.

use std::collections::VecDeque;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage, config_request,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use nix::libc;
use nix::sys::socket::NetlinkAddr;
use socket2::{Domain, Protocol, Socket, Type};

use super::ruleset::DROP_LOG_PREFIX;

/// Bytes of each dropped packet the kernel copies to us: an IPv4 header with the largest
/// options (60) or an IPv6 header (40) with a few extension headers, plus the transport ports.
pub const COPY_RANGE: u32 = 128;
/// Receive buffer for one datagram. The kernel batches messages into datagrams of at most its
/// `nlbufsiz` (default about a page, 128 KiB at most); with [`QUEUE_THRESHOLD`] 1 each datagram
/// holds one message of a few hundred bytes.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// Messages the kernel queues before it sends them: 1 sends each drop at once instead of after
/// up to 100 drops or one second (the kernel's defaults). The drop rule is rate-limited anyway.
pub const QUEUE_THRESHOLD: u32 = 1;
/// How long [`DropLog::open`] waits for the kernel to acknowledge the bind.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Extension headers [`parse_packet`] walks through before it gives up on an IPv6 packet's
/// transport header (there is no legitimate reason for more).
const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

/// IP protocol numbers (IANA) that matter here.
mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const DCCP: u8 = 33;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const IPV6_ICMP: u8 = 58;
    pub const IPV6_DEST_OPTS: u8 = 60;
    pub const HOP_BY_HOP: u8 = 0;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// One packet the ruleset dropped and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    /// The chain that dropped it: `forward`, `input` or `output` (from the log prefix).
    pub chain: String,
    /// The interface it came in on, by name in the reader's network namespace (none in `output`,
    /// or when the interface is gone by the time the message is read).
    pub in_interface: Option<String>,
    /// The interface it was routed to (none in `input`).
    pub out_interface: Option<String>,
    pub source: IpAddr,
    pub destination: IpAddr,
    /// ECS `network.transport`: `tcp`, `udp`, `icmp`, `ipv6-icmp` or `other`.
    pub transport: &'static str,
    /// ECS `network.iana_number`: the IP protocol number (for IPv6 the header after the
    /// extension headers).
    pub iana_number: u8,
    /// Transport ports, for TCP, UDP, UDP-Lite, SCTP and DCCP (not for later fragments).
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    /// The packet's length on the wire as its IP header says (IPv4 total length; IPv6 payload
    /// length plus the 40-byte header), whatever part of it was copied.
    pub length: u16,
}

/// The IP and transport header fields of one packet, as [`parse_packet`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IP protocol number; for IPv6 the first header that is not an extension header, or the
    /// last one that could be read.
    pub iana_number: u8,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    /// IPv4 total length, or IPv6 payload length + 40 (saturating at 65535).
    pub length: u16,
}

impl Packet {
    /// ECS `network.transport` for [`Packet::iana_number`].
    pub fn transport(&self) -> &'static str {
        transport(self.iana_number)
    }
}

/// ECS `network.transport` for an IP protocol number.
pub fn transport(iana_number: u8) -> &'static str {
    match iana_number {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        proto::IPV6_ICMP => "ipv6-icmp",
        _ => "other",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DropLogError {
    /// Fatal: no netlink socket (e.g. not allowed to make one).
    #[error("cannot open a netfilter netlink socket for the drop log: {0}")]
    Socket(#[source] io::Error),
    /// Fatal: the kernel refused the group, or did not answer.
    #[error(
        "cannot bind nftables log group {group}: {source}{}",
        bind_hint(source)
    )]
    Bind {
        group: u16,
        #[source]
        source: io::Error,
    },
    /// Fatal: the socket failed.
    #[error("cannot read the drop log: {0}")]
    Receive(#[source] io::Error),
    /// Not fatal: the socket's receive buffer overflowed (ENOBUFS), so the kernel discarded
    /// drop messages; how many is unknown. The drops are still counted by the ruleset's drop
    /// counters. Count it and call [`DropLog::next`] again.
    #[error("drop log messages were lost: the socket's receive buffer overran")]
    Overrun,
    /// Not fatal: a message could not be read and was skipped. Count it and read on.
    #[error("malformed drop log message skipped: {0}")]
    Malformed(String),
    /// Not fatal: nothing arrived within the timeout set with [`DropLog::set_timeout`].
    #[error("no drop log message within the timeout")]
    TimedOut,
}

impl DropLogError {
    /// Whether the reader is unusable after this error. After the others, call
    /// [`DropLog::next`] again.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DropLogError::Socket(_) | DropLogError::Bind { .. } | DropLogError::Receive(_)
        )
    }
}

fn bind_hint(e: &io::Error) -> &'static str {
    // nfnetlink_log answers EPERM both when another socket has the group and when the caller
    // lacks CAP_NET_ADMIN (EBUSY only when the same socket binds twice).
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            " (another program, e.g. ulogd or a second zonegate, reads this group in this network namespace, or reading the drop log needs CAP_NET_ADMIN)"
        }
        _ => "",
    }
}

/// The reader of one nftables log group in the calling thread's network namespace.
///
/// Interface names are looked up in the network namespace of the thread that calls
/// [`DropLog::next`], so call it from a thread in the namespace where it was opened (the daemon
/// runs in one namespace; tests open and read inside the same `setns` thread).
///
/// Closing it (drop) unbinds the group.
#[derive(Debug)]
pub struct DropLog {
    socket: Socket,
    group: u16,
    buffer: Vec<u8>,
    /// Drops already received, from a datagram that held several, or during the bind.
    queue: VecDeque<Drop>,
    sequence: u32,
    timeout: Option<Duration>,
}

impl DropLog {
    /// Binds nftables log group `group` (zones.yaml `gateway.drop_log.group`), asking for the
    /// first [`COPY_RANGE`] bytes of each packet. Fails (EPERM) if another socket has the group.
    pub fn open(group: u16) -> Result<DropLog, DropLogError> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM,
            Some(Protocol::from(libc::NETLINK_NETFILTER)),
        )
        .map_err(DropLogError::Socket)?;
        // Connected to the kernel (port id 0), the socket takes messages from the kernel only;
        // unconnected, any process with CAP_NET_ADMIN in the namespace could send it forged drops.
        nix::sys::socket::connect(socket.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| DropLogError::Socket(e.into()))?;
        let mut log = DropLog {
            socket,
            group,
            buffer: vec![0; RECEIVE_BUFFER],
            queue: VecDeque::new(),
            sequence: 0,
            timeout: None,
        };
        // One request: the kernel creates the group's instance (bound to this socket) and then
        // applies the settings to it.
        log.configure(vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(COPY_RANGE).into(),
            ConfigNla::QThresh(QUEUE_THRESHOLD),
        ])?;
        Ok(log)
    }

    /// The log group this reader has bound.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Makes [`DropLog::next`] return [`DropLogError::TimedOut`] when nothing arrives within
    /// `timeout` (`None`: wait for ever, the default), e.g. so that a thread can look at a stop
    /// flag now and then.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), DropLogError> {
        self.socket
            .set_read_timeout(timeout)
            .map_err(DropLogError::Receive)?;
        self.timeout = timeout;
        Ok(())
    }

    /// Blocks until the next zonegate drop arrives; skips other log messages on the group.
    /// [`DropLogError::is_fatal`] says whether to go on after an error.
    #[allow(clippy::should_implement_trait)] // Not an iterator: it blocks, and some errors are not the end.
    pub fn next(&mut self) -> Result<Drop, DropLogError> {
        loop {
            if let Some(drop) = self.queue.pop_front() {
                return Ok(drop);
            }
            if let Some(why) = self.receive()?.malformed {
                return Err(DropLogError::Malformed(why));
            }
        }
    }

    /// Sends one nfnetlink_log config request for the group and waits for its acknowledgement.
    fn configure(&mut self, nlas: Vec<ConfigNla>) -> Result<(), DropLogError> {
        let group = self.group;
        let bind_error = |source| DropLogError::Bind { group, source };
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut request = config_request(NetfilterProtoFamily::Unspec, group, nlas);
        request.header.sequence_number = sequence;
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes).map_err(bind_error)?;
        self.socket
            .set_read_timeout(Some(ACK_TIMEOUT))
            .map_err(bind_error)?;
        let answer = loop {
            match self.receive() {
                Ok(received) => {
                    if let Some(&(_, errno)) = received.acks.iter().find(|(s, _)| *s == sequence) {
                        break Ok(errno);
                    }
                }
                Err(DropLogError::Overrun) => {}
                Err(DropLogError::TimedOut) => {
                    break Err(bind_error(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the kernel did not acknowledge the request",
                    )));
                }
                Err(e) => break Err(e),
            }
        };
        self.socket
            .set_read_timeout(self.timeout)
            .map_err(bind_error)?;
        match answer? {
            None => Ok(()),
            Some(errno) => Err(bind_error(io::Error::from_raw_os_error(errno))),
        }
    }

    /// Reads one datagram and queues the zonegate drops in it; returns what else it held.
    fn receive(&mut self) -> Result<Received, DropLogError> {
        let len = loop {
            match (&self.socket).read(&mut self.buffer) {
                Ok(len) => break len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(DropLogError::TimedOut);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(DropLogError::Overrun);
                }
                Err(e) => return Err(DropLogError::Receive(e)),
            }
        };
        let mut received = Received::default();
        for message in parse_datagram(self.buffer.get(..len).unwrap_or_default()) {
            match message {
                Ok(Message::Drop(logged)) => self.queue.push_back(logged.resolve(interface_name)),
                Ok(Message::Ack { sequence, errno }) => received.acks.push((sequence, errno)),
                Ok(Message::Ignored) => {}
                Err(why) => {
                    received.malformed.get_or_insert(why);
                }
            }
        }
        Ok(received)
    }
}

/// What a datagram held besides zonegate drops.
#[derive(Debug, Default)]
struct Received {
    /// Answers to requests: sequence number, and the error number of a refusal.
    acks: Vec<(u32, Option<i32>)>,
    /// The first message that could not be read.
    malformed: Option<String>,
}

/// An interface's name in the calling thread's network namespace (SIOCGIFNAME on a socket made
/// there; /sys/class/net would show the namespace sysfs was mounted in).
fn interface_name(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()?
        .into_string()
        .ok()
}

/// One netlink message of the drop-log socket, as far as the reader cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    /// NLMSG_ERROR: the answer to request `sequence`; `errno` is `None` for an acknowledgement.
    Ack { sequence: u32, errno: Option<i32> },
    /// An NFLOG packet message with a zonegate drop prefix.
    Drop(Logged),
    /// Another rule's log message, NLMSG_DONE after a batch, and anything else.
    Ignored,
}

/// A zonegate drop as the kernel sent it, interfaces still as ifindex.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Logged {
    chain: String,
    in_ifindex: Option<u32>,
    out_ifindex: Option<u32>,
    packet: Packet,
}

impl Logged {
    fn resolve(self, name_of: impl Fn(u32) -> Option<String>) -> Drop {
        Drop {
            chain: self.chain,
            in_interface: self.in_ifindex.and_then(&name_of),
            out_interface: self.out_ifindex.and_then(&name_of),
            source: self.packet.source,
            destination: self.packet.destination,
            transport: self.packet.transport(),
            iana_number: self.packet.iana_number,
            source_port: self.packet.source_port,
            destination_port: self.packet.destination_port,
            length: self.packet.length,
        }
    }
}

/// Splits a datagram into its netlink messages (each padded to 4 bytes) and reads each. A
/// message that cannot be read is an `Err` and the others are still read; a header that cannot
/// be read ends the datagram.
/// The datagram reader, for the fuzz target: how many messages it read.
#[doc(hidden)]
pub fn read_datagram(datagram: &[u8]) -> usize {
    parse_datagram(datagram)
        .iter()
        .filter(|m| matches!(m, Ok(Message::Drop(_) | Message::Ack { .. })))
        .count()
}

fn parse_datagram(datagram: &[u8]) -> Vec<Result<Message, String>> {
    let mut messages = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let length = match NetlinkBuffer::new_checked(rest) {
            Ok(header) => header.length(),
            Err(e) => {
                messages.push(Err(format!("netlink header: {e}")));
                break;
            }
        };
        // new_checked made sure that 16 <= length <= rest.len().
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        messages.push(parse_message(rest.get(..length).unwrap_or(rest)));
        let padded = length.checked_next_multiple_of(4).unwrap_or(usize::MAX);
        rest = rest.get(padded..).unwrap_or_default();
    }
    messages
}

/// nlmsg_type of an NFLOG packet: subsystem NFNL_SUBSYS_ULOG (4) << 8 | NFULNL_MSG_PACKET (0).
const NFLOG_PACKET: u16 = 4 << 8;
/// nlmsg_type NLMSG_ERROR (an acknowledgement or a refusal).
const NLMSG_ERROR: u16 = 2;
/// Netlink header (16 bytes) and nfgenmsg (4 bytes) before an NFLOG message's attributes.
const NFLOG_ATTRIBUTES_AT: usize = 20;

fn parse_message(bytes: &[u8]) -> Result<Message, String> {
    // Only the two kinds this socket expects go to the netlink crates, and an NFLOG message
    // only once its attributes are framed soundly: netlink-packet-core panics on an attribute
    // length below its header (found by fuzzing), which would end the reader thread.
    let kind = bytes
        .get(4..6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_le_bytes);
    match kind {
        Some(NLMSG_ERROR) => {}
        Some(NFLOG_PACKET) => {
            if !attributes_well_framed(bytes.get(NFLOG_ATTRIBUTES_AT..).unwrap_or_default()) {
                return Err("NFLOG attribute with a bad length".into());
            }
        }
        _ => return Ok(Message::Ignored),
    }
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
        .map_err(|e| format!("netlink message: {e}"))?;
    match message.payload {
        NetlinkPayload::Error(e) => Ok(Message::Ack {
            sequence: message.header.sequence_number,
            errno: e.code.map(|c| c.get().checked_neg().unwrap_or(i32::MAX)),
        }),
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) => Ok(logged_drop(&nlas)?.map_or(Message::Ignored, Message::Drop)),
        _ => Ok(Message::Ignored),
    }
}

/// Every attribute's length covers at least its 4-byte header and stays inside `bytes`
/// (attributes are padded to 4 bytes; the last one's padding may be missing).
fn attributes_well_framed(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(len) = bytes
            .get(..2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(|b| usize::from(u16::from_le_bytes(b)))
        else {
            return false;
        };
        if len < 4 || len > bytes.len() {
            return false;
        }
        let padded = len.next_multiple_of(4).min(bytes.len());
        bytes = bytes.get(padded..).unwrap_or_default();
    }
    true
}

/// A zonegate drop from an NFLOG packet message's attributes; `Ok(None)` for another rule's log.
fn logged_drop(nlas: &[PacketNla]) -> Result<Option<Logged>, String> {
    let mut prefix = None;
    let mut payload = None;
    let mut in_ifindex = None;
    let mut out_ifindex = None;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => prefix = Some(p.as_bytes()),
            PacketNla::Payload(p) => payload = Some(p.as_slice()),
            PacketNla::IfIndexInDev(i) => in_ifindex = Some(*i),
            PacketNla::IfIndexOutDev(i) => out_ifindex = Some(*i),
            _ => {}
        }
    }
    let Some(chain) = prefix.and_then(|p| p.strip_prefix(DROP_LOG_PREFIX.as_bytes())) else {
        return Ok(None);
    };
    let chain = std::str::from_utf8(chain)
        .ok()
        .and_then(|c| c.split_whitespace().next())
        .ok_or_else(|| format!("drop log prefix without a chain: {:?}", prefix))?;
    let payload = payload.ok_or("zonegate drop without the packet (copy mode is not packet?)")?;
    let packet = parse_packet(payload).ok_or_else(|| {
        format!(
            "zonegate drop in {chain}: not an IPv4 or IPv6 packet ({} bytes copied)",
            payload.len()
        )
    })?;
    Ok(Some(Logged {
        chain: chain.to_owned(),
        in_ifindex,
        out_ifindex,
        packet,
    }))
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(field.try_into().ok()?))
}

fn octets<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Source and destination port of a transport header that starts with them.
fn ports(iana_number: u8, transport_header: &[u8]) -> (Option<u16>, Option<u16>) {
    match iana_number {
        proto::TCP | proto::UDP | proto::UDPLITE | proto::SCTP | proto::DCCP => {
            (u16_at(transport_header, 0), u16_at(transport_header, 2))
        }
        _ => (None, None),
    }
}

/// Reads the IP header (IPv4 with options, IPv6 with its extension headers) and the transport
/// ports of a packet's first bytes. `None` if it is not IPv4 or IPv6 or the fixed IP header is
/// cut short. A cut-short transport header only leaves the ports out.
pub fn parse_packet(payload: &[u8]) -> Option<Packet> {
    let first = *payload.first()?;
    match first >> 4 {
        4 => parse_ipv4(payload, first),
        6 => parse_ipv6(payload),
        _ => None,
    }
}

fn parse_ipv4(payload: &[u8], first: u8) -> Option<Packet> {
    // IHL: header length in 32-bit words, 5 (20 bytes) to 15 (60 bytes).
    let header_len = usize::from(first & 0x0f).saturating_mul(4);
    if header_len < 20 {
        return None;
    }
    let length = u16_at(payload, 2)?;
    let fragment_offset = u16_at(payload, 6)? & 0x1fff;
    let iana_number = *payload.get(9)?;
    let source = Ipv4Addr::from(octets::<4>(payload, 12)?);
    let destination = Ipv4Addr::from(octets::<4>(payload, 16)?);
    // Only the first fragment carries the transport header.
    let (source_port, destination_port) = match payload.get(header_len..) {
        Some(transport_header) if fragment_offset == 0 => ports(iana_number, transport_header),
        _ => (None, None),
    };
    Some(Packet {
        source: source.into(),
        destination: destination.into(),
        iana_number,
        source_port,
        destination_port,
        length,
    })
}

fn parse_ipv6(payload: &[u8]) -> Option<Packet> {
    const FIXED_HEADER: u16 = 40;
    let payload_length = u16_at(payload, 4)?;
    let mut next_header = *payload.get(6)?;
    let source = Ipv6Addr::from(octets::<16>(payload, 8)?);
    let destination = Ipv6Addr::from(octets::<16>(payload, 24)?);
    let packet = |iana_number, (source_port, destination_port)| Packet {
        source: source.into(),
        destination: destination.into(),
        iana_number,
        source_port,
        destination_port,
        length: payload_length.saturating_add(FIXED_HEADER),
    };
    let mut at = usize::from(FIXED_HEADER);
    for _ in 0..MAX_IPV6_EXTENSION_HEADERS {
        // Each extension header starts with the next header's number and (but for the fragment
        // header) its own length, in units that differ per kind.
        let header_len = match next_header {
            proto::HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_DEST_OPTS => payload
                .get(at.saturating_add(1))
                .map(|l| usize::from(*l).saturating_add(1).saturating_mul(8)),
            proto::AH => payload
                .get(at.saturating_add(1))
                .map(|l| usize::from(*l).saturating_add(2).saturating_mul(4)),
            proto::IPV6_FRAGMENT => Some(8),
            _ => {
                let ports = payload
                    .get(at..)
                    .map_or((None, None), |header| ports(next_header, header));
                return Some(packet(next_header, ports));
            }
        };
        let (Some(header_len), Some(following)) = (header_len, payload.get(at).copied()) else {
            // Cut short inside the extension headers: the transport is unknown.
            return Some(packet(next_header, (None, None)));
        };
        if next_header == proto::IPV6_FRAGMENT {
            let fragment_offset = u16_at(payload, at.saturating_add(2)).map(|o| o >> 3);
            if fragment_offset != Some(0) {
                // A later fragment (or cut short): no transport header here.
                return Some(packet(following, (None, None)));
            }
        }
        next_header = following;
        at = at.saturating_add(header_len);
    }
    Some(packet(next_header, (None, None)))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;

    /// IPv4 TCP SYN from the ERP server to inverter-1's Modbus port, no IP options.
    const IPV4_TCP_SYN: [u8; 40] = [
        0x45, 0x00, //              version 4, IHL 5 (20 bytes); DSCP/ECN 0
        0x00, 0x3c, //              total length 60 (the SYN's options were not copied)
        0x12, 0x34, //              identification
        0x40, 0x00, //              flags DF, fragment offset 0
        0x40, 0x06, //              TTL 64, protocol 6 (TCP)
        0x00, 0x00, //              header checksum (not checked)
        10, 40, 0, 10, //           source 10.40.0.10
        10, 21, 0, 11, //           destination 10.21.0.11
        0xc3, 0x50, //              TCP source port 50000
        0x01, 0xf6, //              destination port 502
        0x00, 0x00, 0x00, 0x01, //  sequence number
        0x00, 0x00, 0x00, 0x00, //  acknowledgement number
        0xa0, 0x02, //              data offset 10 (40 bytes), flags SYN
        0xfa, 0xf0, //              window
        0x00, 0x00, //              checksum
        0x00, 0x00, //              urgent pointer
    ];

    #[test]
    fn ipv4_tcp() {
        let p = parse_packet(&IPV4_TCP_SYN).unwrap();
        assert_eq!(
            p,
            Packet {
                source: "10.40.0.10".parse().unwrap(),
                destination: "10.21.0.11".parse().unwrap(),
                iana_number: 6,
                source_port: Some(50000),
                destination_port: Some(502),
                length: 60,
            }
        );
        assert_eq!(p.transport(), "tcp");
    }

    #[test]
    fn ipv4_options_are_skipped_by_ihl() {
        let packet = [
            0x46, 0x00, //              version 4, IHL 6 (24 bytes: 4 bytes of options)
            0x00, 0x24, //              total length 36
            0x00, 0x01, //              identification
            0x00, 0x00, //              no flags, fragment offset 0
            0x40, 0x11, //              TTL 64, protocol 17 (UDP)
            0x00, 0x00, //              header checksum
            10, 21, 0, 10, //           source 10.21.0.10
            10, 30, 0, 20, //           destination 10.30.0.20
            0x01, 0x01, 0x01, 0x00, //  options: NOP NOP NOP EOL
            0xd4, 0x31, //              UDP source port 54321
            0x02, 0x02, //              destination port 514
            0x00, 0x0c, //              UDP length 12
            0x00, 0x00, //              checksum
        ];
        let p = parse_packet(&packet).unwrap();
        assert_eq!(
            (p.source_port, p.destination_port),
            (Some(54321), Some(514))
        );
        assert_eq!((p.iana_number, p.transport(), p.length), (17, "udp", 36));
    }

    #[test]
    fn ipv4_later_fragment_has_no_ports() {
        let mut packet = IPV4_TCP_SYN;
        packet[6] = 0x00; //        flags 0
        packet[7] = 0xb9; //        fragment offset 185 (1480 bytes): the TCP header is elsewhere
        let p = parse_packet(&packet).unwrap();
        assert_eq!(
            (p.iana_number, p.source_port, p.destination_port),
            (6, None, None)
        );
    }

    #[test]
    fn ipv4_icmp_has_no_ports() {
        let packet = [
            0x45, 0x00, //              version 4, IHL 5
            0x00, 0x54, //              total length 84
            0x00, 0x01, //              identification
            0x40, 0x00, //              DF
            0x40, 0x01, //              TTL 64, protocol 1 (ICMP)
            0x00, 0x00, //              checksum
            10, 30, 0, 11, //           source 10.30.0.11
            10, 21, 0, 11, //           destination 10.21.0.11
            0x08, 0x00, //              echo request, code 0
            0x00, 0x00, //              checksum
            0x00, 0x01, 0x00, 0x01, //  identifier, sequence
        ];
        let p = parse_packet(&packet).unwrap();
        assert_eq!(
            (
                p.transport(),
                p.iana_number,
                p.source_port,
                p.destination_port,
                p.length
            ),
            ("icmp", 1, None, None, 84)
        );
    }

    /// IPv6 TCP SYN from an enterprise host to the DMZ historian's port 8443.
    fn ipv6_tcp_syn() -> Vec<u8> {
        let mut packet = vec![
            0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
            0x00, 0x14, //             payload length 20
            0x06, //                   next header 6 (TCP)
            0x40, //                   hop limit 64
        ];
        // source fd5a:40::c8
        packet.extend_from_slice(&"fd5a:40::c8".parse::<Ipv6Addr>().unwrap().octets());
        // destination fd5a:35::20
        packet.extend_from_slice(&"fd5a:35::20".parse::<Ipv6Addr>().unwrap().octets());
        packet.extend_from_slice(&[
            0x9c, 0x40, //             TCP source port 40000
            0x20, 0xfb, //             destination port 8443
            0, 0, 0, 1, 0, 0, 0, 0, // sequence, acknowledgement
            0x50, 0x02, //             data offset 5, SYN
            0xfa, 0xf0, 0, 0, 0, 0, // window, checksum, urgent pointer
        ]);
        packet
    }

    #[test]
    fn ipv6_tcp() {
        let p = parse_packet(&ipv6_tcp_syn()).unwrap();
        assert_eq!(
            p,
            Packet {
                source: "fd5a:40::c8".parse().unwrap(),
                destination: "fd5a:35::20".parse().unwrap(),
                iana_number: 6,
                source_port: Some(40000),
                destination_port: Some(8443),
                length: 60,
            }
        );
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let mut packet = vec![
            0x60, 0x00, 0x00, 0x00, // version 6
            0x00, 0x20, //             payload length 32
            0x00, //                   next header 0 (hop-by-hop options)
            0x40, //                   hop limit 64
        ];
        packet.extend_from_slice(&[0xfd, 0x5a, 0, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc8]); // source fd5a:30::c8
        packet.extend_from_slice(&[0xfd, 0x5a, 0, 0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20]); // destination fd5a:35::20
        packet.extend_from_slice(&[
            44,
            0, //                  hop-by-hop: next header 44 (fragment), length 0 (8 bytes)
            0x01, 0x04, 0, 0, 0, 0, // PadN option of 4 bytes
            17, 0, //                  fragment: next header 17 (UDP), reserved
            0x00, 0x01, //             fragment offset 0, more fragments: the first fragment
            0, 0, 0, 7, //             identification
            0x13, 0x88, //             UDP source port 5000
            0x00, 0x35, //             destination port 53
            0x00, 0x10, 0, 0, //       UDP length, checksum
        ]);
        let p = parse_packet(&packet).unwrap();
        assert_eq!(
            (
                p.iana_number,
                p.transport(),
                p.source_port,
                p.destination_port,
                p.length
            ),
            (17, "udp", Some(5000), Some(53), 72)
        );

        // A later fragment of the same datagram: UDP, but no ports in it.
        packet[50] = 0x05; //          fragment offset 160 (1280 bytes), more fragments
        packet[51] = 0x01;
        let p = parse_packet(&packet).unwrap();
        assert_eq!(
            (p.iana_number, p.source_port, p.destination_port),
            (17, None, None)
        );

        // Cut inside the hop-by-hop header: the transport cannot be known.
        let p = parse_packet(&packet[..40]).unwrap();
        assert_eq!(
            (p.iana_number, p.transport(), p.source_port),
            (0, "other", None)
        );
    }

    #[test]
    fn ipv6_icmp() {
        let mut packet = ipv6_tcp_syn();
        packet[4] = 0x00; //           payload length 8
        packet[5] = 0x08;
        packet[6] = 58; //             next header 58 (ICMPv6)
        packet.truncate(48);
        packet[40] = 128; //           echo request
        let p = parse_packet(&packet).unwrap();
        assert_eq!(
            (p.transport(), p.iana_number, p.source_port),
            ("ipv6-icmp", 58, None)
        );
    }

    #[test]
    fn ipv6_length_saturates() {
        let mut packet = ipv6_tcp_syn();
        packet[4] = 0xff; //           payload length 65535
        packet[5] = 0xff;
        assert_eq!(parse_packet(&packet).unwrap().length, u16::MAX);
    }

    #[test]
    fn not_ip_or_cut_short_is_none_and_never_panics() {
        assert_eq!(parse_packet(&[]), None);
        let mut not_ip = IPV4_TCP_SYN;
        not_ip[0] = 0x55; //           version 5
        assert_eq!(parse_packet(&not_ip), None);
        let mut short_ihl = IPV4_TCP_SYN;
        short_ihl[0] = 0x44; //        IHL 4 (16 bytes): below the minimum
        assert_eq!(parse_packet(&short_ihl), None);

        for (packet, fixed_header) in [(IPV4_TCP_SYN.to_vec(), 20), (ipv6_tcp_syn(), 40)] {
            for cut in 0..packet.len() {
                let parsed = parse_packet(&packet[..cut]);
                if cut < fixed_header {
                    assert_eq!(parsed, None, "cut at {cut}");
                } else {
                    // The addresses are there; the ports only once both are.
                    let p = parsed.unwrap();
                    assert_eq!(p.destination_port.is_some(), cut >= fixed_header + 4);
                }
            }
        }
    }

    // --- nfnetlink_log messages

    /// One netlink attribute: length (header included, unpadded) and type in host order
    /// (little-endian here), the value, padding to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = (u16::try_from(value.len()).unwrap() + 4)
            .to_le_bytes()
            .to_vec();
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// An NFLOG packet message as the kernel sends it for a packet logged by the forward chain.
    fn nflog_packet(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![
            2, //                      nfgenmsg: family NFPROTO_IPV4
            0, //                      version NFNETLINK_V0
            0x00, 0x01, //             resource id: group 1 (big-endian)
        ];
        // NFULA_PACKET_HDR (1): hardware protocol 0x0800 (IPv4), hook 2 (forward), padding
        body.extend(nla(1, &[0x08, 0x00, 2, 0]));
        // NFULA_PREFIX (10): the log rule's prefix, NUL-terminated
        body.extend(nla(10, format!("{prefix}\0").as_bytes()));
        // NFULA_IFINDEX_INDEV (4), NFULA_IFINDEX_OUTDEV (5): ifindex, big-endian
        body.extend(nla(4, &7u32.to_be_bytes()));
        body.extend(nla(5, &9u32.to_be_bytes()));
        // NFULA_PAYLOAD (9): the packet's first bytes
        body.extend(nla(9, payload));
        let mut message = (u32::try_from(body.len()).unwrap() + 16)
            .to_le_bytes()
            .to_vec(); // nlmsg_len
        message.extend_from_slice(&0x0400u16.to_le_bytes()); // type: subsystem 4 (ULOG) << 8 | NFULNL_MSG_PACKET (0)
        message.extend_from_slice(&0u16.to_le_bytes()); //      flags
        message.extend_from_slice(&0u32.to_le_bytes()); //      sequence number
        message.extend_from_slice(&0u32.to_le_bytes()); //      port id 0: from the kernel
        message.extend(body);
        message
    }

    /// NLMSG_ERROR answering request `sequence` with `error` (0: acknowledged, -errno: refused).
    fn nlmsg_error(sequence: u32, error: i32) -> Vec<u8> {
        let mut message = 36u32.to_le_bytes().to_vec(); //     nlmsg_len: header, error, request header
        message.extend_from_slice(&2u16.to_le_bytes()); //     type NLMSG_ERROR
        message.extend_from_slice(&0x0100u16.to_le_bytes()); // flags NLM_F_CAPPED (request payload left out)
        message.extend_from_slice(&sequence.to_le_bytes()); //  the request's sequence number
        message.extend_from_slice(&0u32.to_le_bytes()); //     port id 0: from the kernel
        message.extend_from_slice(&error.to_le_bytes()); //    error
        message.extend_from_slice(&[0; 16]); //                the request's header (not read)
        message
    }

    fn names(ifindex: u32) -> Option<String> {
        match ifindex {
            7 => Some("ent0".into()),
            9 => Some("bess0".into()),
            _ => None,
        }
    }

    fn one_drop(datagram: &[u8]) -> Logged {
        match parse_datagram(datagram).as_slice() {
            [Ok(Message::Drop(logged))] => logged.clone(),
            other => panic!("not one drop: {other:?}"),
        }
    }

    #[test]
    fn a_zonegate_drop_is_read_from_its_nflog_message() {
        let datagram = nflog_packet("zonegate drop forward ", &IPV4_TCP_SYN);
        assert_eq!(
            one_drop(&datagram).resolve(names),
            Drop {
                chain: "forward".into(),
                in_interface: Some("ent0".into()),
                out_interface: Some("bess0".into()),
                source: "10.40.0.10".parse().unwrap(),
                destination: "10.21.0.11".parse().unwrap(),
                transport: "tcp",
                iana_number: 6,
                source_port: Some(50000),
                destination_port: Some(502),
                length: 60,
            }
        );
    }

    #[test]
    fn an_interface_that_is_gone_has_no_name() {
        let datagram = nflog_packet("zonegate drop input ", &ipv6_tcp_syn());
        let drop = one_drop(&datagram).resolve(|_| None);
        assert_eq!(
            (drop.chain.as_str(), drop.in_interface, drop.out_interface),
            ("input", None, None)
        );
        assert_eq!(drop.destination_port, Some(8443));
    }

    #[test]
    fn other_log_rules_and_control_messages_are_ignored() {
        // A batch: another rule's log on the same group, a zonegate drop, then NLMSG_DONE.
        let mut datagram = nflog_packet("sshd ", &IPV4_TCP_SYN);
        datagram.extend(nflog_packet("zonegate drop output ", &IPV4_TCP_SYN));
        datagram.extend_from_slice(&[
            20, 0, 0, 0, //            nlmsg_len 20
            3, 0, //                   type NLMSG_DONE
            0x02, 0, //                flags NLM_F_MULTI
            0, 0, 0, 0, 0, 0, 0, 0, // sequence number, port id
            0, 0, 0, 0, //             done: error 0
        ]);
        let parsed = parse_datagram(&datagram);
        assert_eq!(parsed.len(), 3, "{parsed:?}");
        assert_eq!(parsed[0], Ok(Message::Ignored));
        assert!(matches!(&parsed[1], Ok(Message::Drop(l)) if l.chain == "output"));
        assert_eq!(parsed[2], Ok(Message::Ignored));
    }

    #[test]
    fn acknowledgements_and_refusals() {
        let mut datagram = nlmsg_error(7, 0);
        datagram.extend(nlmsg_error(8, -1)); // EPERM: the group has another reader
        assert_eq!(
            parse_datagram(&datagram),
            vec![
                Ok(Message::Ack {
                    sequence: 7,
                    errno: None
                }),
                Ok(Message::Ack {
                    sequence: 8,
                    errno: Some(libc::EPERM)
                }),
            ]
        );
    }

    #[test]
    fn a_zonegate_drop_that_cannot_be_read_is_malformed() {
        // The prefix without a chain.
        let datagram = nflog_packet("zonegate drop ", &IPV4_TCP_SYN);
        assert!(matches!(parse_datagram(&datagram)[..], [Err(_)]));
        // Not an IP packet.
        let datagram = nflog_packet("zonegate drop forward ", &[0x00; 40]);
        assert!(matches!(parse_datagram(&datagram)[..], [Err(_)]));
        // Another rule's log with a payload that is not IP is none of our business.
        let datagram = nflog_packet("other ", &[0x00; 40]);
        assert_eq!(parse_datagram(&datagram), vec![Ok(Message::Ignored)]);
    }

    #[test]
    fn cut_or_corrupted_datagrams_never_panic() {
        let mut datagram = nflog_packet("zonegate drop forward ", &IPV4_TCP_SYN);
        datagram.extend(nlmsg_error(1, 0));
        for cut in 0..datagram.len() {
            let _ = parse_datagram(&datagram[..cut]);
        }
        // Every byte flipped in turn, including lengths and types.
        for at in 0..datagram.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = datagram.clone();
                bad[at] = value;
                let _ = parse_datagram(&bad);
            }
        }
    }

    #[test]
    fn transports_by_number() {
        assert_eq!(
            [6, 17, 1, 58, 132, 0].map(transport),
            ["tcp", "udp", "icmp", "ipv6-icmp", "other", "other"]
        );
    }

    #[test]
    fn only_socket_and_bind_failures_are_fatal() {
        assert!(!DropLogError::Overrun.is_fatal());
        assert!(!DropLogError::TimedOut.is_fatal());
        assert!(!DropLogError::Malformed(String::new()).is_fatal());
        assert!(DropLogError::Receive(io::Error::from_raw_os_error(libc::EBADF)).is_fatal());
        let busy = DropLogError::Bind {
            group: 1,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(busy.is_fatal());
        assert!(busy.to_string().contains("another program"), "{busy}");
    }
}

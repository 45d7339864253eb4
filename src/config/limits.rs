//! zones.yaml `limits:` and `inspection.write_rate` into [`Limits`] and [`WriteRate`]: the bounds
//! of the inspection proxy, each checked against a sane range.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::problems::Problems;
use super::raw::{RawLimits, RawOpcUaLimits, RawWriteRate};
use crate::proto::opcua::{MAX_CHUNK_COUNT, MAX_CHUNK_SIZE, MAX_MESSAGE_SIZE};

/// The inspection proxy's bounds, gateway-wide. The defaults are what the proxy always did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Proxied connections at once, all conduits and protocols together.
    pub connections: usize,
    /// Proxied connections at once from one client address.
    pub connections_per_source: usize,
    /// Requests forwarded and not yet answered, per connection (OPC UA: not counting Publish);
    /// beyond it the client is not read until the device answers.
    pub in_flight_per_connection: usize,
    /// A connection with nothing in flight and nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// A request (Modbus frame, OPC UA chunk) once started must be complete within this.
    pub request_timeout: Duration,
    /// How long the device has to accept the proxy's connection.
    pub connect_timeout: Duration,
    /// How long a Modbus device or OPC UA server has to answer a request (OPC UA: but Publish).
    pub response_timeout: Duration,
    /// Most wall-clock time one policy decision may take; then it is a deny.
    pub policy_time: Duration,
    /// OPC UA frame sizes (`limits.opcua`). Modbus frames have no such setting: the protocol
    /// bounds an ADU at 260 bytes, and the parser holds every frame to it.
    pub opcua: OpcUaFrames,
}

/// The OPC UA frame sizes the proxy accepts from either side and negotiates for both: the
/// Hello and Acknowledge it passes on carry no larger buffer sizes, message size or chunk count.
/// At most the parser's own bounds, lower where a site wants less held per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpcUaFrames {
    /// Largest chunk in bytes, header included.
    pub max_chunk_size: u32,
    /// Largest message, all its chunks' bodies together.
    pub max_message_size: usize,
    /// Most chunks per message.
    pub max_chunks: usize,
}

impl Default for OpcUaFrames {
    fn default() -> Self {
        OpcUaFrames {
            max_chunk_size: MAX_CHUNK_SIZE,
            max_message_size: MAX_MESSAGE_SIZE,
            max_chunks: MAX_CHUNK_COUNT,
        }
    }
}

/// Smallest OPC UA buffer (chunk) size a peer must accept (OPC 10000-6, 7.1.2.3).
const MIN_OPCUA_CHUNK: u32 = 8192;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 1024,
            connections_per_source: 64,
            in_flight_per_connection: 16,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(5),
            policy_time: Duration::from_millis(50),
            opcua: OpcUaFrames::default(),
        }
    }
}

/// A conduit's write rate: a token bucket shared by its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Tokens the bucket holds at most (writes that may come at once).
    pub burst: u32,
}

/// Most connections the proxy may be configured for (file descriptors: two per connection).
const MAX_CONNECTIONS: u32 = 65_536;
/// Most requests in flight per connection; Modbus transaction ids and device queues are small.
const MAX_IN_FLIGHT: u32 = 256;
/// Most writes per second (or burst) a conduit may be configured for.
const MAX_WRITE_RATE: u32 = 1_000_000;

/// Validated limits; defaults when the section or a field is absent.
pub(super) fn limits(raw: Option<&Spanned<RawLimits>>, p: &mut Problems) -> Limits {
    let mut l = Limits::default();
    let Some(raw) = raw.map(|r| &r.value) else {
        return l;
    };
    let count =
        |v: &Option<Spanned<u32>>, field: &str, max: u32, default: usize, p: &mut Problems| {
            let Some(v) = v else { return default };
            if v.value == 0 || v.value > max {
                p.at(
                    v,
                    format!("limits.{field} {} is out of range", v.value),
                    Some(format!("use 1 to {max}")),
                );
                return default;
            }
            usize::try_from(v.value).unwrap_or(default)
        };
    l.connections = count(
        &raw.connections,
        "connections",
        MAX_CONNECTIONS,
        l.connections,
        p,
    );
    l.connections_per_source = count(
        &raw.connections_per_source,
        "connections_per_source",
        MAX_CONNECTIONS,
        l.connections_per_source.min(l.connections),
        p,
    );
    if let Some(v) = &raw.connections_per_source
        && l.connections_per_source > l.connections
    {
        p.at(
            v,
            format!(
                "limits.connections_per_source {} is more than limits.connections {}",
                l.connections_per_source, l.connections
            ),
            Some("a source cannot have more connections than the gateway".into()),
        );
    }
    l.in_flight_per_connection = count(
        &raw.in_flight_per_connection,
        "in_flight_per_connection",
        MAX_IN_FLIGHT,
        l.in_flight_per_connection,
        p,
    );
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    l.idle_timeout = duration(
        &raw.idle_timeout,
        "idle_timeout",
        s(1),
        s(86_400),
        l.idle_timeout,
        p,
    );
    l.request_timeout = duration(
        &raw.request_timeout,
        "request_timeout",
        ms(100),
        s(300),
        l.request_timeout,
        p,
    );
    l.connect_timeout = duration(
        &raw.connect_timeout,
        "connect_timeout",
        ms(100),
        s(60),
        l.connect_timeout,
        p,
    );
    l.response_timeout = duration(
        &raw.response_timeout,
        "response_timeout",
        ms(100),
        s(300),
        l.response_timeout,
        p,
    );
    l.policy_time = duration(
        &raw.policy_time,
        "policy_time",
        ms(1),
        s(1),
        l.policy_time,
        p,
    );
    if let Some(o) = &raw.opcua {
        l.opcua = opcua_frames(&o.value, p);
    }
    l
}

/// `limits.opcua`, each size within what the protocol needs and the parser allows.
fn opcua_frames(raw: &RawOpcUaLimits, p: &mut Problems) -> OpcUaFrames {
    let mut f = OpcUaFrames::default();
    let size = |v: &Option<Spanned<u32>>, field: &str, min: u32, max: u32, p: &mut Problems| {
        let v = v.as_ref()?;
        if v.value < min || v.value > max {
            p.at(
                v,
                format!("limits.opcua.{field} {} is out of range", v.value),
                Some(format!("use {min} to {max}")),
            );
            return None;
        }
        Some(v.value)
    };
    let max_message = u32::try_from(MAX_MESSAGE_SIZE).unwrap_or(u32::MAX);
    let max_chunks = u32::try_from(MAX_CHUNK_COUNT).unwrap_or(u32::MAX);
    if let Some(v) = size(
        &raw.max_chunk_size,
        "max_chunk_size",
        MIN_OPCUA_CHUNK,
        MAX_CHUNK_SIZE,
        p,
    ) {
        f.max_chunk_size = v;
    }
    if let Some(v) = size(
        &raw.max_message_size,
        "max_message_size",
        MIN_OPCUA_CHUNK,
        max_message,
        p,
    ) {
        f.max_message_size = usize::try_from(v).unwrap_or(f.max_message_size);
    }
    if let Some(v) = size(&raw.max_chunks, "max_chunks", 1, max_chunks, p) {
        f.max_chunks = usize::try_from(v).unwrap_or(f.max_chunks);
    }
    f
}

/// A humantime duration (`300s`, `1m 30s`, `50ms`) within `min..=max`.
fn duration(
    v: &Option<Spanned<String>>,
    field: &str,
    min: Duration,
    max: Duration,
    default: Duration,
    p: &mut Problems,
) -> Duration {
    let Some(v) = v else { return default };
    let range = format!(
        "use {} to {}",
        humantime::format_duration(min),
        humantime::format_duration(max)
    );
    match humantime::parse_duration(v.value.trim()) {
        Ok(d) if d >= min && d <= max => d,
        Ok(_) => {
            p.at(
                v,
                format!("limits.{field} {} is out of range", v.value),
                Some(range),
            );
            default
        }
        Err(e) => {
            p.at(
                v,
                format!("limits.{field} `{}` is not a duration: {e}", v.value),
                Some(format!(
                    "write it with a unit, e.g. `5s` or `500ms`; {range}"
                )),
            );
            default
        }
    }
}

/// A conduit's validated `inspection.write_rate`; `burst` defaults to `per_second`.
pub(super) fn write_rate(
    conduit: &str,
    raw: &Spanned<RawWriteRate>,
    p: &mut Problems,
) -> Option<WriteRate> {
    let r = &raw.value;
    let mut ok = true;
    for (field, v) in [
        ("per_second", Some(&r.per_second)),
        ("burst", r.burst.as_ref()),
    ] {
        if let Some(v) = v
            && (v.value == 0 || v.value > MAX_WRITE_RATE)
        {
            p.at(
                v,
                format!(
                    "conduit `{conduit}`: inspection.write_rate.{field} {} is out of range",
                    v.value
                ),
                Some(format!("use 1 to {MAX_WRITE_RATE}")),
            );
            ok = false;
        }
    }
    ok.then(|| WriteRate {
        per_second: r.per_second.value,
        burst: r.burst.as_ref().map_or(r.per_second.value, |b| b.value),
    })
}

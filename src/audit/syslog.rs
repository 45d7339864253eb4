//! Audit events as syslog messages: RFC 5424 with the event's JSON as MSG, or ArcSight CEF
//! (revision 25) as MSG under the same RFC 5424 header. Pure functions: the remote sinks
//! ([`super::remote`]) frame and send what these write.
//!
//! Choices a receiver sees:
//!
//! - Facility 13, "log audit" (RFC 5424 table 1): these are audit records of security decisions.
//!   Facilities 4 and 10 ("security/authorization") carry logins and sudo on most Linux hosts,
//!   where a relay's default rules would file the events among them; rsyslog names 13 `audit`.
//! - `[meta sequenceId="N"]` (RFC 5424 section 7.3.1) carries the event's sequence number so that a
//!   receiver can see loss and duplicates. Its range is 1..=2147483647: sequence numbers above
//!   that wrap round to 1 (sequence 2147483648 is sent as 1). The JSON keeps the full number.
//! - No BOM before the JSON: RFC 5424 allows MSG-ANY, and a BOM would have to be stripped by
//!   every JSON consumer.
//! - CEF goes as the MSG of the same RFC 5424 header (what rsyslog's mmnormalize is given as
//!   `msg`), followed by one space after the Severity field: liblognorm's `cef` parser (2.0.6)
//!   skips the character after the final `|`, so without the space it would eat the first key's
//!   first letter. Other CEF parsers skip spaces before a key.
//! - CEF `rt` is milliseconds since the epoch, the unambiguous form of the two the dictionary
//!   allows.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

/// RFC 5424 facility "log audit".
pub const FACILITY: u8 = 13;
/// APP-NAME of every message.
pub const APP_NAME: &str = "zonegate";
/// RFC 5424 limits of the header fields (section 6).
pub const MAX_HOSTNAME: usize = 255;
pub const MAX_MSGID: usize = 32;
/// The largest `sequenceId` RFC 5424 section 7.3.1 allows; larger sequence numbers wrap to 1.
pub const MAX_SEQUENCE_ID: u64 = 2_147_483_647;
/// TIME-SECFRAC has at most 6 digits (RFC 5424 section 6.2.3).
const MAX_SECFRAC_DIGITS: usize = 6;

/// How an event is written as a syslog message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424 with the event's JSON as MSG.
    Rfc5424,
    /// ArcSight CEF as MSG of an RFC 5424 header.
    Cef,
}

/// Syslog severities (RFC 5424 table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Emergency = 0,
    Alert = 1,
    Critical = 2,
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    fn code(self) -> u8 {
        self as u8
    }

    /// CEF's 0-10 scale: 0-3 low, 4-6 medium, 7-8 high, 9-10 very high.
    pub fn cef(self) -> u8 {
        match self {
            Severity::Emergency => 10,
            Severity::Alert => 9,
            Severity::Critical => 8,
            Severity::Error => 7,
            Severity::Warning => 6,
            Severity::Notice => 4,
            Severity::Info => 3,
            Severity::Debug => 0,
        }
    }
}

/// What a formatter needs of one audit event (the writer fills it from the event).
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// The event's sequence number, >= 1.
    pub sequence: u64,
    /// RFC 3339 UTC with microseconds, e.g. `2026-12-01T17:00:00.123456Z`.
    pub timestamp: &'a str,
    pub severity: Severity,
    /// The event's action, e.g. `modbus-request`: the MSGID and CEF's signature id.
    pub action: &'a str,
    /// `success`, `failure` or `unknown`.
    pub outcome: &'a str,
    /// The complete event as one JSON object: the MSG of the RFC 5424 form.
    pub json: &'a [u8],
    /// Fields of the CEF form.
    pub cef: Cef<'a>,
}

/// The fields of the CEF form that the JSON carries in its own structure.
#[derive(Debug, Clone, Default)]
pub struct Cef<'a> {
    /// Human summary: CEF's Name.
    pub name: &'a str,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub source_zone: Option<&'a str>,
    pub destination_zone: Option<&'a str>,
    pub conduit: Option<&'a str>,
    /// `allow`, `deny`, ...: CEF's `act`.
    pub decision: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub rule: Option<&'a str>,
    /// `tcp`, `udp`: CEF's `proto`.
    pub transport: Option<&'a str>,
    /// `modbus`, `opcua`: CEF's `app`.
    pub protocol: Option<&'a str>,
}

/// Appends one syslog message (no transport framing) for `message` to `out`.
pub fn format(
    format: Format,
    message: &Message<'_>,
    hostname: &str,
    procid: u32,
    out: &mut Vec<u8>,
) {
    header(message, hostname, procid, out);
    match format {
        Format::Rfc5424 => out.extend_from_slice(message.json),
        Format::Cef => cef(message, hostname, out),
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [meta sequenceId="N"] ` (with the space before
/// MSG).
fn header(message: &Message<'_>, hostname: &str, procid: u32, out: &mut Vec<u8>) {
    let pri = u16::from(FACILITY)
        .saturating_mul(8)
        .saturating_add(u16::from(message.severity.code()));
    let mut text = String::with_capacity(128);
    let _ = write!(text, "<{pri}>1 ");
    timestamp(message.timestamp, &mut text);
    text.push(' ');
    print_us_ascii(hostname, MAX_HOSTNAME, &mut text);
    let _ = write!(text, " {APP_NAME} {procid} ");
    print_us_ascii(message.action, MAX_MSGID, &mut text);
    text.push_str(" [meta sequenceId=\"");
    sd_param_value(&sequence_id(message.sequence).to_string(), &mut text);
    text.push_str("\"] ");
    out.extend_from_slice(text.as_bytes());
}

/// The `sequenceId` for a sequence number: 1..=2147483647, wrapping round to 1 (0, which the
/// writer never uses, is sent as 1).
pub fn sequence_id(sequence: u64) -> u64 {
    sequence
        .saturating_sub(1)
        .checked_rem(MAX_SEQUENCE_ID)
        .unwrap_or(0)
        .saturating_add(1)
}

/// Writes `value` as a PRINTUSASCII header field of at most `max` characters: anything else
/// (spaces, controls, non-ASCII) becomes `_`; an empty value is the NILVALUE `-`.
fn print_us_ascii(value: &str, max: usize, out: &mut String) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    out.extend(
        value
            .chars()
            .take(max)
            .map(|c| if c.is_ascii_graphic() { c } else { '_' }),
    );
}

/// SD-PARAM value escaping (RFC 5424 section 6.3.3): `"`, `\` and `]` get a backslash.
pub fn sd_param_value(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The RFC 5424 TIMESTAMP: `value` if it is an RFC 3339 date-time as RFC 5424 restricts it
/// (`T` and `Z` upper case, at most 6 fraction digits: more are cut), else the NILVALUE.
fn timestamp(value: &str, out: &mut String) {
    match rfc5424_timestamp(value) {
        Some((kept, zone)) => {
            out.push_str(kept);
            out.push_str(zone);
        }
        None => out.push('-'),
    }
}

/// Splits a valid timestamp into what is kept of date, time and fraction, and the zone.
fn rfc5424_timestamp(value: &str) -> Option<(&str, &str)> {
    let b = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    // YYYY-MM-DDTHH:MM:SS
    let base = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19);
    if !base {
        return None;
    }
    let mut end = 19;
    let mut kept = 19;
    if at(19, b'.') {
        let frac = b
            .get(20..)
            .unwrap_or_default()
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if frac == 0 {
            return None;
        }
        end = 20_usize.saturating_add(frac);
        kept = 20_usize.saturating_add(frac.min(MAX_SECFRAC_DIGITS));
    }
    let zone = value.get(end..)?;
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && matches!(zone.as_bytes().first(), Some(b'+' | b'-'))
            && digits(end.saturating_add(1)..end.saturating_add(3))
            && at(end.saturating_add(3), b':')
            && digits(end.saturating_add(4)..end.saturating_add(6)));
    if !zone_ok {
        return None;
    }
    Some((value.get(..kept)?, zone))
}

/// `CEF:0|zonegate|zonegate|VERSION|ACTION|NAME|SEVERITY| key=value ...`
fn cef(message: &Message<'_>, hostname: &str, out: &mut Vec<u8>) {
    let c = &message.cef;
    let mut text = String::with_capacity(256);
    text.push_str("CEF:0|");
    for field in [
        APP_NAME,
        APP_NAME,
        env!("CARGO_PKG_VERSION"),
        message.action,
    ] {
        cef_header_field(field, &mut text);
        text.push('|');
    }
    cef_header_field(
        if c.name.is_empty() {
            message.action
        } else {
            c.name
        },
        &mut text,
    );
    let _ = write!(text, "|{}|", message.severity.cef());
    // The space liblognorm skips (see the module comment); each pair then starts with one.
    let mut ext = Extension(&mut text);
    if let Some(ms) = epoch_millis(message.timestamp) {
        ext.pair("rt", &ms.to_string());
    }
    ext.pair("dvchost", hostname);
    ext.pair("cn1Label", "sequence");
    ext.pair("cn1", &message.sequence.to_string());
    ext.pair("outcome", message.outcome);
    ext.opt("act", c.decision);
    ext.opt("reason", c.reason);
    if let Some(s) = c.source {
        ext.pair("src", &s.ip().to_string());
        ext.pair("spt", &s.port().to_string());
    }
    if let Some(d) = c.destination {
        ext.pair("dst", &d.ip().to_string());
        ext.pair("dpt", &d.port().to_string());
    }
    ext.opt("proto", c.transport);
    ext.opt("app", c.protocol);
    for (key, label, value) in [
        ("cs1", "conduit", c.conduit),
        ("cs2", "sourceZone", c.source_zone),
        ("cs3", "destinationZone", c.destination_zone),
        ("cs4", "rule", c.rule),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            ext.pair(&format!("{key}Label"), label);
            ext.pair(key, value);
        }
    }
    out.extend_from_slice(text.as_bytes());
}

/// CEF header field: `\` and `|` escaped; line breaks, which the header may not hold, become
/// spaces. An empty field becomes `-`: liblognorm cannot parse `||`.
fn cef_header_field(value: &str, out: &mut String) {
    if value.is_empty() {
        out.push('-');
        return;
    }
    for c in value.chars() {
        match c {
            '\\' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// The extension part of a CEF message: ` key=value` pairs.
struct Extension<'a>(&'a mut String);

impl Extension<'_> {
    /// Appends the pair; an empty value is left out, as CEF readers differ on `key= `.
    fn pair(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        self.0.push(' ');
        self.0.push_str(key);
        self.0.push('=');
        cef_extension_value(value, self.0);
    }

    fn opt(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.pair(key, value);
        }
    }
}

/// CEF extension value: `\` and `=` escaped, CR and LF written as `\r` and `\n`.
pub fn cef_extension_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp.
fn epoch_millis(timestamp: &str) -> Option<u128> {
    let t = humantime::parse_rfc3339(timestamp).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    const JSON: &[u8] = br#"{"event":{"action":"modbus-request"},"sequence":7}"#;

    fn message<'a>(cef: Cef<'a>) -> Message<'a> {
        Message {
            sequence: 7,
            timestamp: "2026-12-01T17:00:00.123456Z",
            severity: Severity::Warning,
            action: "modbus-request",
            outcome: "failure",
            json: JSON,
            cef,
        }
    }

    fn text(f: Format, m: &Message<'_>, host: &str) -> String {
        let mut out = Vec::new();
        format(f, m, host, 4242, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc5424_message() {
        assert_eq!(
            text(Format::Rfc5424, &message(Cef::default()), "gw-1.plant"),
            concat!(
                "<108>1 2026-12-01T17:00:00.123456Z gw-1.plant zonegate 4242 modbus-request ",
                r#"[meta sequenceId="7"] {"event":{"action":"modbus-request"},"sequence":7}"#
            )
        );
    }

    #[test]
    fn priority_is_audit_facility_and_severity() {
        for (sev, pri) in [
            (Severity::Alert, "<105>"),
            (Severity::Notice, "<109>"),
            (Severity::Info, "<110>"),
        ] {
            let mut m = message(Cef::default());
            m.severity = sev;
            assert!(text(Format::Rfc5424, &m, "h").starts_with(pri));
        }
    }

    #[test]
    fn sequence_id_wraps_into_its_range() {
        assert_eq!(sequence_id(1), 1);
        assert_eq!(sequence_id(2_147_483_647), 2_147_483_647);
        assert_eq!(sequence_id(2_147_483_648), 1);
        assert_eq!(sequence_id(2 * 2_147_483_647 + 5), 5);
        assert_eq!(sequence_id(0), 1);
        assert_eq!(sequence_id(u64::MAX), (u64::MAX - 1) % 2_147_483_647 + 1);
        let mut m = message(Cef::default());
        m.sequence = 2_147_483_650;
        assert!(text(Format::Rfc5424, &m, "h").contains(r#"[meta sequenceId="3"]"#));
    }

    #[test]
    fn hostname_and_msgid_are_sanitized() {
        let mut m = message(Cef::default());
        m.action = "modbus request\u{e9}\n-with-a-very-long-name-beyond-32-chars";
        let t = text(Format::Rfc5424, &m, "gate way\u{1}");
        assert!(
            t.starts_with(
                "<108>1 2026-12-01T17:00:00.123456Z gate_way_ zonegate 4242 modbus_request__-with-a-very-lon ["
            ),
            "{t}"
        );
        let mut m = message(Cef::default());
        m.action = "";
        let t = text(Format::Rfc5424, &m, "");
        assert!(t.starts_with("<108>1 2026-12-01T17:00:00.123456Z - zonegate 4242 - [meta"));
        let long = "h".repeat(300);
        let t = text(Format::Rfc5424, &message(Cef::default()), &long);
        assert!(t.contains(&format!(" {} zonegate", "h".repeat(255))));
    }

    #[test]
    fn timestamps_are_checked() {
        let ok = |s: &str| {
            let mut out = String::new();
            timestamp(s, &mut out);
            out
        };
        assert_eq!(
            ok("2026-12-01T17:00:00.123456Z"),
            "2026-12-01T17:00:00.123456Z"
        );
        assert_eq!(ok("2026-12-01T17:00:00Z"), "2026-12-01T17:00:00Z");
        assert_eq!(
            ok("2026-12-01T17:00:00.123456789Z"),
            "2026-12-01T17:00:00.123456Z"
        );
        assert_eq!(
            ok("2026-12-01T17:00:00.5+01:00"),
            "2026-12-01T17:00:00.5+01:00"
        );
        for bad in [
            "",
            "yesterday",
            "2026-12-01 17:00:00Z",
            "2026-12-01T17:00:00",
            "2026-12-01T17:00:00.Z",
            "2026-12-01T17:00:00Z x",
            "2026-12-01T17:00:00+0100",
        ] {
            assert_eq!(ok(bad), "-", "{bad}");
        }
    }

    #[test]
    fn sd_param_escaping() {
        let mut out = String::new();
        sd_param_value(r#"a"b\c]d"#, &mut out);
        assert_eq!(out, r#"a\"b\\c\]d"#);
    }

    #[test]
    fn cef_message() {
        let cef = Cef {
            name: "write refused",
            source: Some("10.30.0.10:50123".parse().unwrap()),
            destination: Some("[fd5a:21::10]:502".parse().unwrap()),
            source_zone: Some("operations"),
            destination_zone: Some("bess"),
            conduit: Some("scada-bess"),
            decision: Some("deny"),
            reason: Some("active_power_setpoint 3000 kW is outside -2500..2500"),
            rule: Some("bess.write.out_of_range"),
            transport: Some("tcp"),
            protocol: Some("modbus"),
        };
        assert_eq!(
            text(Format::Cef, &message(cef), "gw-1"),
            concat!(
                r#"<108>1 2026-12-01T17:00:00.123456Z gw-1 zonegate 4242 modbus-request [meta sequenceId="7"] "#,
                "CEF:0|zonegate|zonegate|",
                env!("CARGO_PKG_VERSION"),
                "|modbus-request|write refused|6| rt=1796144400123 dvchost=gw-1 cn1Label=sequence cn1=7",
                " outcome=failure act=deny reason=active_power_setpoint 3000 kW is outside -2500..2500",
                " src=10.30.0.10 spt=50123 dst=fd5a:21::10 dpt=502 proto=tcp app=modbus",
                " cs1Label=conduit cs1=scada-bess cs2Label=sourceZone cs2=operations",
                " cs3Label=destinationZone cs3=bess cs4Label=rule cs4=bess.write.out_of_range"
            )
        );
    }

    #[test]
    fn cef_escaping() {
        let cef = Cef {
            name: "a|b\\c\nd",
            reason: Some("x=1 \\ y\r\nz|"),
            decision: Some(""),
            ..Cef::default()
        };
        let mut m = message(cef);
        m.action = "act|ion";
        m.timestamp = "not a time";
        let t = text(Format::Cef, &m, "h");
        let cef = t.split_once("CEF:").unwrap().1;
        assert_eq!(
            cef,
            concat!(
                "0|zonegate|zonegate|",
                env!("CARGO_PKG_VERSION"),
                r"|act\|ion|a\|b\\c d|6| dvchost=h cn1Label=sequence cn1=7 outcome=failure",
                r" reason=x\=1 \\ y\r\nz|"
            )
        );
        // The MSGID keeps the pipe: only CEF's header escapes it.
        assert!(t.contains(" act|ion [meta"));
    }

    #[test]
    fn cef_name_defaults_to_the_action() {
        let t = text(Format::Cef, &message(Cef::default()), "h");
        assert!(t.contains("|modbus-request|modbus-request|6| rt="), "{t}");
    }
}

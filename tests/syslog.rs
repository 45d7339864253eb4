//! Remote audit sinks against a real rsyslogd (tests/support/rsyslog.rs), each test in a network
//! namespace of its own: RFC 5424 and CEF as rsyslog parses them over TCP, TLS, UDP and RELP, a
//! receiver that stops and comes back mid-stream (exactly once over RELP), the spool across a
//! sink restart, and what a full spool does.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::plant::in_ns;
use support::rsyslog::{Netns, Rsyslog, sequence_id};
use zonegate::audit::remote::{
    Remote, RemoteSettings, RemoteStats, TlsSettings, Transport, WhenFull,
};
use zonegate::audit::syslog::{self, Cef, Format, Message, Severity};

const HOST: &str = "gw-test";
const PROCID: u32 = 4242;
const TIMESTAMP: &str = "2026-12-01T17:00:00.123456Z";
const ARRIVAL: Duration = Duration::from_secs(30);

/// rsyslog in its own namespace. Fields drop in order: rsyslog, its files, the namespace.
struct Setup {
    rsyslog: Rsyslog,
    dir: tempfile::TempDir,
    ns: Netns,
}

fn setup(label: &str) -> Setup {
    let ns = Netns::new(label);
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(Some(&ns.name), &dir.path().join("rsyslog"));
    Setup { rsyslog, dir, ns }
}

impl Setup {
    fn spool(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("spool-{name}"))
    }

    fn tls_settings(&self, client: bool) -> TlsSettings {
        TlsSettings {
            ca: self.rsyslog.ca_pem(),
            server_name: None,
            client_cert: client.then(|| self.rsyslog.client_cert()),
            client_key: client.then(|| self.rsyslog.client_key()),
        }
    }

    fn tls(&self, client: bool) -> Transport {
        Transport::Tls(self.tls_settings(client))
    }

    /// The port, transport and rsyslog input name of a receiver kind.
    fn receiver(&self, kind: Kind) -> (u16, Transport, &'static str) {
        let rs = &self.rsyslog;
        match kind {
            Kind::Tcp => (rs.tcp_port(), Transport::Tcp, "tcp"),
            Kind::Tls => (rs.tls_port(), self.tls(false), "tls"),
            Kind::Relp => (rs.relp_port(), Transport::Relp, "relp"),
            Kind::RelpTls => (
                rs.relp_tls_port(),
                Transport::RelpTls(self.tls_settings(true)),
                "relptls",
            ),
        }
    }

    /// A sink whose thread runs in the namespace.
    fn remote(&self, name: &str, port: u16, transport: Transport, opts: Opts) -> Remote {
        let settings = RemoteSettings {
            name: name.into(),
            address: self.rsyslog.address(port),
            transport,
            format: opts.format,
            spool_dir: opts.spool.unwrap_or_else(|| self.spool(name)),
            spool_max_bytes: opts.spool_max_bytes,
            when_full: opts.when_full,
        };
        in_ns(&self.ns.name, move || Remote::start(settings).unwrap())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Tls,
    Relp,
    RelpTls,
}

struct Opts {
    format: Format,
    spool: Option<PathBuf>,
    spool_max_bytes: u64,
    when_full: WhenFull,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            format: Format::Rfc5424,
            spool: None,
            spool_max_bytes: 64 << 20,
            when_full: WhenFull::DropOldest,
        }
    }
}

fn event_json(seq: u64) -> Value {
    json!({
        "@timestamp": TIMESTAMP,
        "event": {"kind": "event", "action": "modbus-request", "outcome": "failure"},
        "source": {"ip": "10.30.0.10", "port": 50123, "zone": "operations"},
        "zonegate": {"sequence": seq, "decision": "deny", "reason": "quote \" and \\ and ] stay JSON"},
    })
}

fn rfc5424(seq: u64) -> Vec<u8> {
    let json = serde_json::to_vec(&event_json(seq)).unwrap();
    let m = Message {
        sequence: seq,
        timestamp: TIMESTAMP,
        severity: Severity::Warning,
        action: "modbus-request",
        outcome: "failure",
        json: &json,
        cef: Cef::default(),
    };
    let mut out = Vec::new();
    syslog::format(Format::Rfc5424, &m, HOST, PROCID, &mut out);
    out
}

fn of_input<'a>(records: &'a [Value], input: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["input"] == input).collect()
}

/// Waits until every sequence number 1..=n has arrived on `input`; returns the sequence numbers
/// in arrival order (duplicates included).
fn wait_for_all(rsyslog: &Rsyslog, input: &str, n: u64) -> Vec<u64> {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        let seqs: Vec<u64> = of_input(&rsyslog.records(), input)
            .into_iter()
            .map(sequence_id)
            .collect();
        let distinct: HashSet<u64> = seqs.iter().copied().collect();
        if (1..=n).all(|s| distinct.contains(&s)) {
            return seqs;
        }
        assert!(
            Instant::now() < deadline,
            "{input}: {} of {n} sequence numbers arrived; missing e.g. {:?}",
            distinct.len(),
            (1..=n)
                .filter(|s| !distinct.contains(s))
                .take(10)
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Every sequence number 1..=n in order: duplicates (sent again after a reset) repeat a run
/// already seen, and are no more than the sink says it sent again. Returns the duplicates.
fn assert_in_order(seqs: &[u64], n: u64, resent: u64) -> usize {
    let mut seen = HashSet::new();
    let first: Vec<u64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
    assert_eq!(
        first,
        (1..=n).collect::<Vec<_>>(),
        "first arrivals out of order"
    );
    let duplicates = seqs.len() - first.len();
    assert!(
        u64::try_from(duplicates).unwrap() <= resent,
        "{duplicates} duplicates but only {resent} sent again"
    );
    duplicates
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rfc5424_over_tcp_tls_and_udp() {
    let s = setup("fmt");
    let rs = &s.rsyslog;
    let sinks = [
        (
            "tcp",
            s.remote("tcp", rs.tcp_port(), Transport::Tcp, Opts::default()),
        ),
        (
            "tls",
            s.remote("tls", rs.tls_port(), s.tls(false), Opts::default()),
        ),
        (
            "mtls",
            s.remote("mtls", rs.mtls_port(), s.tls(true), Opts::default()),
        ),
        (
            "udp",
            s.remote("udp", rs.udp_port(), Transport::Udp, Opts::default()),
        ),
    ];
    const N: u64 = 200;
    for seq in 1..=N {
        for (_, sink) in &sinks {
            sink.push(seq, rfc5424(seq));
        }
    }
    let records = rs.wait_for(4 * usize::try_from(N).unwrap(), ARRIVAL);
    for (input, sink) in &sinks {
        assert_fields(&records, input, N);
        // Written events count as delivered once the connection has stayed intact a while.
        wait_until("delivery confirmed", Duration::from_secs(5), || {
            sink.stats().delivered == N
        });
        let stats = sink.stats();
        assert!(stats.connected, "{input}: {stats:?}");
        assert_eq!((stats.dropped, stats.spooled_bytes), (0, 0), "{input}");
    }
    eprintln!(
        "facility as rsyslog names it: {}",
        records[0]["facilitytext"]
    );
}

/// Events 1..=n arrived on `input`, once each and in order, with every RFC 5424 field as sent.
fn assert_fields(records: &[Value], input: &str, n: u64) {
    let got = of_input(records, input);
    let seqs: Vec<u64> = got.iter().map(|r| sequence_id(r)).collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{input}");
    for (r, seq) in got.iter().zip(1..) {
        assert_eq!(r["version"], "1");
        assert_eq!(r["timereported"], TIMESTAMP);
        assert_eq!(r["hostname"], HOST);
        assert_eq!(r["appname"], "zonegate");
        assert_eq!(r["procid"], "4242");
        assert_eq!(r["msgid"], "modbus-request");
        assert_eq!(r["facility"], "13", "log audit");
        assert_eq!(r["severity"], "4", "warning");
        assert_eq!(r["structureddata"], format!("[meta sequenceId=\"{seq}\"]"));
        let msg: Value = serde_json::from_str(r["msg"].as_str().unwrap()).unwrap();
        assert_eq!(msg, event_json(seq), "{input}");
    }
}

#[test]
fn rfc5424_over_relp_and_relp_in_tls() {
    let s = setup("relp");
    let sinks: Vec<_> = [Kind::Relp, Kind::RelpTls]
        .into_iter()
        .map(|kind| {
            let (port, transport, input) = s.receiver(kind);
            (input, s.remote(input, port, transport, Opts::default()))
        })
        .collect();
    const N: u64 = 200;
    for seq in 1..=N {
        for (_, sink) in &sinks {
            sink.push(seq, rfc5424(seq));
        }
    }
    let records = s.rsyslog.wait_for(2 * usize::try_from(N).unwrap(), ARRIVAL);
    for (input, sink) in &sinks {
        assert_fields(&records, input, N);
        // Delivered means acknowledged: every event's `rsp 200` came back.
        wait_until("acknowledgements", Duration::from_secs(5), || {
            sink.stats().delivered == N
        });
        let stats = sink.stats();
        assert!(stats.connected, "{input}: {stats:?}");
        assert_eq!(
            (
                stats.dropped,
                stats.spooled_bytes,
                stats.resent,
                stats.queued_events
            ),
            (0, 0, 0, 0),
            "{input}"
        );
    }
}

#[test]
fn cef_over_tcp_as_mmnormalize_parses_it() {
    let s = setup("cef");
    let sink = s.remote(
        "cef",
        s.rsyslog.tcp_port(),
        Transport::Tcp,
        Opts {
            format: Format::Cef,
            ..Opts::default()
        },
    );
    let json = serde_json::to_vec(&event_json(1)).unwrap();
    let reason = "setpoint=3000 kW \\ outside\nline two";
    let messages = [
        Message {
            sequence: 1,
            timestamp: TIMESTAMP,
            severity: Severity::Warning,
            action: "modbus-request",
            outcome: "failure",
            json: &json,
            cef: Cef {
                name: "write refused | out of range",
                source: Some("10.30.0.10:50123".parse().unwrap()),
                destination: Some("[fd5a:21::10]:502".parse().unwrap()),
                source_zone: Some("operations"),
                destination_zone: Some("bess"),
                conduit: Some("scada-bess"),
                decision: Some("deny"),
                reason: Some(reason),
                rule: Some("bess.write.out_of_range"),
                transport: Some("tcp"),
                protocol: Some("modbus"),
            },
        },
        Message {
            sequence: 2,
            timestamp: TIMESTAMP,
            severity: Severity::Notice,
            action: "daemon-start",
            outcome: "success",
            json: &json,
            cef: Cef {
                name: "zonegate started",
                ..Cef::default()
            },
        },
    ];
    for m in &messages {
        let mut out = Vec::new();
        syslog::format(Format::Cef, m, HOST, PROCID, &mut out);
        sink.push(m.sequence, out);
    }
    let records = s.rsyslog.wait_for(2, ARRIVAL);
    let cef = &records[0]["parsed"]["cef"];
    assert_eq!(cef["DeviceVendor"], "zonegate", "{}", records[0]);
    assert_eq!(cef["DeviceProduct"], "zonegate");
    assert_eq!(cef["DeviceVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(cef["SignatureID"], "modbus-request");
    assert_eq!(cef["Name"], "write refused | out of range");
    assert_eq!(cef["Severity"], "6");
    let ext = &cef["Extensions"];
    let expected = json!({
        "rt": "1796144400123",
        "dvchost": HOST,
        "cn1Label": "sequence", "cn1": "1",
        "outcome": "failure",
        "act": "deny",
        "reason": reason,
        "src": "10.30.0.10", "spt": "50123",
        "dst": "fd5a:21::10", "dpt": "502",
        "proto": "tcp", "app": "modbus",
        "cs1Label": "conduit", "cs1": "scada-bess",
        "cs2Label": "sourceZone", "cs2": "operations",
        "cs3Label": "destinationZone", "cs3": "bess",
        "cs4Label": "rule", "cs4": "bess.write.out_of_range",
    });
    assert_eq!(ext, &expected);
    // The syslog header around it is the RFC 5424 one.
    assert_eq!(records[0]["msgid"], "modbus-request");
    assert_eq!(records[0]["structureddata"], "[meta sequenceId=\"1\"]");
    let second = &records[1]["parsed"]["cef"];
    assert_eq!(second["SignatureID"], "daemon-start");
    assert_eq!(second["Severity"], "4");
    assert_eq!(second["Extensions"]["outcome"], "success");
    assert_eq!(second["Extensions"]["cn1"], "2");
}

/// Pushes every 2 ms for 3 s while rsyslog is stopped for 2 s in the middle. Returns how many
/// events were pushed, their sequence numbers in arrival order (duplicates included) and the
/// sink's counters.
fn receiver_outage(label: &str, kind: Kind) -> (u64, Vec<u64>, RemoteStats) {
    let mut s = setup(label);
    let (port, transport, input) = s.receiver(kind);
    let sink = s.remote(label, port, transport, Opts::default());
    let rsyslog = &mut s.rsyslog;
    let begin = Instant::now();
    let (pushed, stopped_at, restarted_at) = thread::scope(|scope| {
        let pusher = scope.spawn(|| {
            let mut seq = 0;
            while begin.elapsed() < Duration::from_secs(3) {
                seq += 1;
                sink.push(seq, rfc5424(seq));
                thread::sleep(Duration::from_millis(2));
            }
            seq
        });
        thread::sleep(Duration::from_millis(700));
        rsyslog.stop();
        let stopped_at = begin.elapsed();
        thread::sleep(Duration::from_secs(2));
        rsyslog.start_again();
        let restarted_at = begin.elapsed();
        (pusher.join().unwrap(), stopped_at, restarted_at)
    });
    wait_for_all(&s.rsyslog, input, pushed);
    let all_in = begin.elapsed();
    wait_until("delivery confirmed", Duration::from_secs(5), || {
        sink.stats().delivered >= pushed
    });
    // A late copy would show up within this (rsyslog writes what it took within milliseconds).
    thread::sleep(Duration::from_millis(500));
    let seqs: Vec<u64> = of_input(&s.rsyslog.records(), input)
        .into_iter()
        .map(sequence_id)
        .collect();
    let stats = sink.stats();
    let duplicates = seqs.len() - seqs.iter().collect::<HashSet<_>>().len();
    eprintln!(
        "{label}: {pushed} events; rsyslog stopped at {stopped_at:?}, back at {restarted_at:?}; \
         all in at {all_in:?}; {duplicates} duplicates; {stats:?}"
    );
    assert_eq!(stats.dropped, 0);
    (pushed, seqs, stats)
}

#[test]
fn receiver_outage_over_tcp_loses_nothing() {
    let (pushed, seqs, stats) = receiver_outage("outtcp", Kind::Tcp);
    assert_in_order(&seqs, pushed, stats.resent);
}

#[test]
fn receiver_outage_over_tls_loses_nothing() {
    let (pushed, seqs, stats) = receiver_outage("outtls", Kind::Tls);
    assert_in_order(&seqs, pushed, stats.resent);
}

/// RELP: what rsyslog did not acknowledge before it stopped is sent again, and only that.
#[test]
fn receiver_outage_over_relp_is_exactly_once() {
    let (pushed, seqs, stats) = receiver_outage("outrelp", Kind::Relp);
    assert_eq!(seqs, (1..=pushed).collect::<Vec<_>>(), "{stats:?}");
    assert_eq!(stats.delivered, pushed);
}

#[test]
fn receiver_outage_over_relp_in_tls_is_exactly_once() {
    let (pushed, seqs, stats) = receiver_outage("outrelptls", Kind::RelpTls);
    assert_eq!(seqs, (1..=pushed).collect::<Vec<_>>(), "{stats:?}");
    assert_eq!(stats.delivered, pushed);
}

#[test]
fn spool_is_sent_after_a_sink_restart() {
    let mut s = setup("restart");
    s.rsyslog.stop();
    let spool = s.spool("restart");
    let opts = || Opts {
        spool: Some(spool.clone()),
        ..Opts::default()
    };
    let first = s.remote("restart", s.rsyslog.tcp_port(), Transport::Tcp, opts());
    for seq in 1..=100 {
        first.push(seq, rfc5424(seq));
    }
    first.shutdown(Duration::from_millis(300));
    assert!(
        std::fs::read_dir(&spool).unwrap().any(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "seg")),
        "nothing spooled"
    );

    let second = s.remote("restart", s.rsyslog.tcp_port(), Transport::Tcp, opts());
    assert!(second.stats().spooled_bytes > 0);
    for seq in 101..=150 {
        second.push(seq, rfc5424(seq));
    }
    s.rsyslog.start_again();
    let seqs = wait_for_all(&s.rsyslog, "tcp", 150);
    // The receiver was down, not dying: nothing was written to it twice.
    assert_eq!(seqs, (1..=150).collect::<Vec<_>>());
    wait_until("delivery confirmed", Duration::from_secs(5), || {
        second.stats().delivered == 150
    });
    second.shutdown(Duration::from_secs(1));
    assert!(
        !std::fs::read_dir(&spool).unwrap().any(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "seg")),
        "spool not emptied"
    );
}

/// A spool that holds about 30 of these messages.
const TINY_SPOOL: u64 = 8 * 1024;

fn fill_while_down(s: &mut Setup, when_full: WhenFull) -> Remote {
    s.rsyslog.stop();
    let sink = s.remote(
        "full",
        s.rsyslog.tcp_port(),
        Transport::Tcp,
        Opts {
            spool_max_bytes: TINY_SPOOL,
            when_full,
            ..Opts::default()
        },
    );
    for seq in 1..=100 {
        sink.push(seq, rfc5424(seq));
    }
    // The first connection attempt fails at once; then everything is on its way to the spool.
    wait_until(
        "the sink to give up connecting",
        Duration::from_secs(5),
        || !sink.stats().connected && sink.stats().spooled_bytes > 0,
    );
    thread::sleep(Duration::from_millis(300));
    sink
}

#[test]
fn drop_oldest_reports_a_gap() {
    let mut s = setup("gap");
    let sink = fill_while_down(&mut s, WhenFull::DropOldest);
    let gap = sink.take_gap().expect("a gap");
    let stats = sink.stats();
    assert!(sink.healthy());
    assert_eq!(gap.first, 1, "{gap:?}");
    assert_eq!(gap.last, gap.count, "the oldest, in a row: {gap:?}");
    assert!(gap.count > 50 && gap.count < 90, "{gap:?}");
    assert_eq!(stats.dropped, gap.count);
    assert!(stats.spooled_bytes <= TINY_SPOOL);
    assert_eq!(sink.take_gap(), None);

    s.rsyslog.start_again();
    let kept = 100 - gap.count;
    let records = s.rsyslog.wait_for(usize::try_from(kept).unwrap(), ARRIVAL);
    let seqs: Vec<u64> = records.iter().map(sequence_id).collect();
    assert_eq!(seqs, (gap.last + 1..=100).collect::<Vec<_>>());
}

#[test]
fn fail_closed_is_unhealthy_until_there_is_room() {
    let mut s = setup("failclosed");
    let sink = fill_while_down(&mut s, WhenFull::FailClosed);
    assert!(!sink.healthy());
    let stats = sink.stats();
    // Refused by the spool, the rest waits in memory (bounded) rather than being dropped.
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert!(stats.queued_events > 0, "{stats:?}");
    assert!(stats.spooled_bytes <= TINY_SPOOL);
    assert_eq!(sink.take_gap(), None);

    s.rsyslog.start_again();
    let seqs = wait_for_all(&s.rsyslog, "tcp", 100);
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    wait_until("healthy again", Duration::from_secs(5), || sink.healthy());
}

#[test]
fn tls_refuses_a_server_the_ca_did_not_sign() {
    let s = setup("badca");
    // The client certificate is no CA of the server's certificate.
    let transport = Transport::Tls(TlsSettings {
        ca: s.rsyslog.client_cert(),
        server_name: None,
        client_cert: None,
        client_key: None,
    });
    let sink = s.remote("badca", s.rsyslog.tls_port(), transport, Opts::default());
    for seq in 1..=5 {
        sink.push(seq, rfc5424(seq));
    }
    thread::sleep(Duration::from_millis(1500));
    let stats = sink.stats();
    assert!(!stats.connected, "{stats:?}");
    assert_eq!(stats.delivered, 0);
    assert!(stats.spooled_bytes > 0);
    assert!(s.rsyslog.records().is_empty());
}

#[test]
fn bad_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |address: &str, transport: Transport| RemoteSettings {
        name: "bad".into(),
        address: address.into(),
        transport,
        format: Format::Rfc5424,
        spool_dir: dir.path().join("spool"),
        spool_max_bytes: 1 << 20,
        when_full: WhenFull::DropOldest,
    };
    let err = Remote::start(settings("no-port", Transport::Tcp)).unwrap_err();
    assert!(err.to_string().contains("not HOST:PORT"), "{err}");
    let tls = |ca: &Path, cert: Option<&Path>| {
        Transport::Tls(TlsSettings {
            ca: ca.to_owned(),
            server_name: None,
            client_cert: cert.map(Path::to_owned),
            client_key: None,
        })
    };
    let missing = dir.path().join("missing.pem");
    let err = Remote::start(settings("127.0.0.1:6514", tls(&missing, None))).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let err = Remote::start(settings("127.0.0.1:6514", tls(&empty, None))).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let err = Remote::start(settings("127.0.0.1:6514", tls(&empty, Some(&empty)))).unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    // Two sinks on one spool would interleave it.
    let one = Remote::start(settings("127.0.0.1:9", Transport::Tcp)).unwrap();
    let err = Remote::start(settings("127.0.0.1:9", Transport::Tcp)).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    one.shutdown(Duration::ZERO);
}

#[test]
fn udp_spools_on_port_unreachable() {
    let mut s = setup("udp");
    s.rsyslog.stop();
    let sink = s.remote("udp", s.rsyslog.udp_port(), Transport::Udp, Opts::default());
    for seq in 1..=50 {
        sink.push(seq, rfc5424(seq));
        thread::sleep(Duration::from_millis(5));
    }
    // The first datagram draws an ICMP port unreachable: from then on the sink spools.
    wait_until("spooling", Duration::from_secs(5), || {
        sink.stats().spooled_bytes > 0
    });
    s.rsyslog.start_again();
    let seqs = wait_for_all(&s.rsyslog, "udp", 50);
    let stats = sink.stats();
    assert_in_order(&seqs, 50, stats.resent);
    eprintln!("udp: {stats:?}");
}

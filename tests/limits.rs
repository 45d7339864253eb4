//! The proxy's bounds (zones.yaml `limits:`, `inspection.write_rate`) as a client meets them,
//! with short configured timeouts: a slow client is cut off while others are served, a device
//! that is down or silent earns 0x0A or 0x0B in time, a source over its connection limit is
//! refused, and writes over the conduit's rate are refused like policy denials. Each hit is
//! audited and counted in `zonegate_limit_hits_total`.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use socket2::{Domain, SockAddr, Socket, Type};
use support::bess::{Bench, INVERTER, SCADA};
use support::mgmt;
use support::modbus::exception;
use support::plant::{in_ns, sh};

/// The HMI, which the test's zones.yaml adds to the sources of conduit scada-bess.
const HMI: &str = "10.30.0.11";
/// Short bounds, so that the tests wait seconds, not minutes.
const LIMITS: &str = "limits:\n  connections_per_source: 2\n  request_timeout: 1s\n  connect_timeout: 1s\n  response_timeout: 1s\n";
/// What a timeout may overrun by on this shared machine (scheduling, a loaded CI run).
const MARGIN: Duration = Duration::from_millis(1500);

/// The shipped plant with [`LIMITS`], the HMI as a second source of scada-bess, a write rate of
/// 1 per second (burst 3) on it, and the management API (for the metrics).
fn zones(dir: &Path) -> PathBuf {
    zones_with(dir, "", |t| t)
}

/// [`zones`] with `more_limits` (indented lines) added to [`LIMITS`] and `edit` applied.
fn zones_with(dir: &Path, more_limits: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let path = mgmt::zones_with_api(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    let conduit =
        "    sources: [scada]\n    destinations: [bess-controller, inverter-1, inverter-2]\n";
    assert!(
        text.contains(conduit),
        "the shipped scada-bess conduit changed"
    );
    let text = text
        .replacen(
            conduit,
            "    sources: [scada, hmi]\n    destinations: [bess-controller, inverter-1, inverter-2]\n",
            1,
        )
        .replacen(
            "      on_deny: illegal-function   # exception 01",
            "      write_rate: {per_second: 1, burst: 3}\n      on_deny: illegal-function   # exception 01",
            1,
        );
    assert!(
        text.contains("write_rate"),
        "the shipped scada-bess inspection changed"
    );
    std::fs::write(&path, edit(format!("{text}\n{LIMITS}{more_limits}"))).unwrap();
    path
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP connection from `source` in the operations zone to inverter-1's Modbus port, made
/// and used on a thread inside the operations namespace.
fn connect(ns: &str, source: &str) -> TcpStream {
    let source = ip(source);
    in_ns(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(source, 0))).unwrap();
        let dst: SocketAddr = format!("{INVERTER}:502").parse().unwrap();
        s.connect_timeout(&SockAddr::from(dst), Duration::from_secs(2))
            .unwrap();
        let s: TcpStream = s.into();
        s.set_nodelay(true).unwrap();
        s
    })
}

/// FC03, one holding register at 300, with transaction id `tid`.
fn read_request(tid: u16) -> Vec<u8> {
    support::modbus::read_holding_registers(tid, 300, 1)
}

/// Reads one Modbus response (or what ends the connection) within `wait`: the bytes, or why
/// there were none (`closed`, `timeout`, an error).
fn response(s: &mut TcpStream, wait: Duration) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 260];
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= 6 && got.len() >= 6 + usize::from(got[5]) {
                    return Ok(got);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("timeout".into());
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err("closed".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `zonegate_limit_hits_total{limit="<limit>"}` from the management API.
fn limit_hits(bench: &Bench, dir: &Path, limit: &str) -> u64 {
    mgmt::limit_hits(&bench.plant, dir, limit)
}

#[test]
fn a_slow_client_is_cut_off_after_request_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path()));
    let ns = bench.plant.zone_ns("operations");

    // Three bytes of an MBAP header, then silence.
    let mut slow = connect(&ns, SCADA);
    slow.write_all(&[0x00, 0x01, 0x00]).unwrap();
    let started = Instant::now();

    // Meanwhile another client (another source: the per-source limit is 2) is answered.
    let mut other = connect(&ns, HMI);
    for tid in 1..=5u16 {
        other.write_all(&read_request(tid)).unwrap();
        let r = response(&mut other, Duration::from_secs(2)).unwrap();
        assert_eq!(
            r[..2],
            tid.to_be_bytes(),
            "answer to transaction {tid}: {r:02x?}"
        );
        assert_eq!(exception(&r), None, "{r:02x?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The slow one is closed once request_timeout (1 s) has passed, not before.
    let end = response(&mut slow, Duration::from_secs(1) + MARGIN);
    let took = started.elapsed();
    assert_eq!(end, Err("closed".into()), "after {took:?}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(1) + MARGIN,
        "closed after {took:?}, expected about 1 s"
    );
    // The other client still works after.
    other.write_all(&read_request(9)).unwrap();
    let r = response(&mut other, Duration::from_secs(2)).unwrap();
    assert_eq!(exception(&r), None, "{r:02x?}");

    let e = bench.audit_event("modbus-request-timeout", |e| {
        e["event"]["action"] == "modbus-request-timeout" && e["source"]["ip"] == SCADA
    });
    assert!(
        e["zonegate"]["reason"]
            .as_str()
            .unwrap()
            .contains("limits.request_timeout"),
        "{e}"
    );
    assert_eq!(limit_hits(&bench, dir.path(), "request_timeout"), 1);
}

#[test]
fn a_client_that_never_reads_its_answers_is_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path()));
    let ns = bench.plant.zone_ns("operations");
    // A small receive window, so that unread answers fill it soon.
    let deaf: TcpStream = in_ns(&ns, || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.bind(&SockAddr::from(SocketAddr::new(ip(SCADA), 0)))
            .unwrap();
        let dst: SocketAddr = format!("{INVERTER}:502").parse().unwrap();
        s.connect_timeout(&SockAddr::from(dst), Duration::from_secs(2))
            .unwrap();
        s.into()
    });
    deaf.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Requests without end, answers never read: the proxy's writes back stall, then so do its
    // reads of this client, then this client's writes.
    let mut sent = 0u32;
    let started = Instant::now();
    while (&deaf).write_all(&read_request(sent as u16)).is_ok() {
        sent += 1;
        assert!(started.elapsed() < Duration::from_secs(20), "never stalled");
    }
    let stalled = Instant::now();
    eprintln!("{sent} requests written before the connection stalled");

    // Meanwhile another client is answered.
    let mut other = connect(&ns, HMI);
    other.write_all(&read_request(1)).unwrap();
    let r = response(&mut other, Duration::from_secs(2)).unwrap();
    assert_eq!(exception(&r), None, "{r:02x?}");

    // The proxy gives the stalled write request_timeout (1 s), then closes the connection.
    let mut hits = 0;
    while stalled.elapsed() < Duration::from_secs(20) {
        hits = limit_hits(&bench, dir.path(), "request_timeout");
        if hits > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "counted {:?} after the client's write stalled",
        stalled.elapsed()
    );
    assert_eq!(
        hits, 1,
        "the stalled connection counts as a request_timeout hit"
    );
    let mut buf = vec![0u8; 65536];
    deaf.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let closed = loop {
        match (&deaf).read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the proxy closed the connection");
    let e = bench.audit_event("modbus-write-timeout", |e| {
        e["event"]["action"] == "modbus-write-timeout" && e["source"]["ip"] == SCADA
    });
    assert!(
        e["zonegate"]["reason"]
            .as_str()
            .unwrap()
            .contains("limits.request_timeout"),
        "{e}"
    );
}

#[test]
fn a_source_over_its_connection_limit_is_refused_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path()));
    let ns = bench.plant.zone_ns("operations");

    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(&ns, SCADA)).collect();
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&read_request(u16::try_from(i).unwrap()))
            .unwrap();
        let r = response(s, Duration::from_secs(2)).unwrap();
        assert_eq!(exception(&r), None, "{r:02x?}");
    }
    // The third from SCADA: accepted by the kernel, then closed by the proxy at once.
    let mut third = connect(&ns, SCADA);
    let _ = third.write_all(&read_request(7));
    assert_eq!(
        response(&mut third, Duration::from_secs(2)),
        Err("closed".into())
    );
    // The HMI is another source.
    let mut hmi = connect(&ns, HMI);
    hmi.write_all(&read_request(8)).unwrap();
    let r = response(&mut hmi, Duration::from_secs(2)).unwrap();
    assert_eq!(exception(&r), None, "{r:02x?}");

    let e = bench.audit_event("connection-limit", |e| {
        e["event"]["action"] == "connection-limit" && e["source"]["ip"] == SCADA
    });
    assert_eq!(e["zonegate"]["decision"], "refuse", "{e}");
    assert_eq!(e["rule"]["name"], "zonegate.limits.connections_per_source");
    assert_eq!(limit_hits(&bench, dir.path(), "connections_per_source"), 1);

    // A place frees when a connection closes.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect(&ns, SCADA);
    again.write_all(&read_request(10)).unwrap();
    let r = response(&mut again, Duration::from_secs(2)).unwrap();
    assert_eq!(exception(&r), None, "{r:02x?}");
}

#[test]
fn the_gateway_wide_connection_limit_refuses_any_source_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones_with(dir.path(), "  connections: 3\n", |t| t));
    let ns = bench.plant.zone_ns("operations");
    // Two from SCADA (its own limit) and one from the HMI fill the gateway's three places.
    let mut held: Vec<TcpStream> = [SCADA, SCADA, HMI]
        .iter()
        .map(|source| connect(&ns, source))
        .collect();
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&read_request(u16::try_from(i).unwrap()))
            .unwrap();
        let r = response(s, Duration::from_secs(2)).unwrap();
        assert_eq!(exception(&r), None, "{r:02x?}");
    }
    // The HMI's second is under its own limit but over the gateway's.
    let mut fourth = connect(&ns, HMI);
    let _ = fourth.write_all(&read_request(7));
    assert_eq!(
        response(&mut fourth, Duration::from_secs(2)),
        Err("closed".into())
    );
    let e = bench.audit_event("connection-limit", |e| {
        e["event"]["action"] == "connection-limit" && e["source"]["ip"] == HMI
    });
    assert_eq!(e["rule"]["name"], "zonegate.limits.connections", "{e}");
    assert_eq!(limit_hits(&bench, dir.path(), "connections"), 1);
    assert_eq!(limit_hits(&bench, dir.path(), "connections_per_source"), 0);

    // A place freed by SCADA is taken by the HMI.
    drop(held.remove(0));
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connect(&ns, HMI);
    again.write_all(&read_request(10)).unwrap();
    let r = response(&mut again, Duration::from_secs(2)).unwrap();
    assert_eq!(exception(&r), None, "{r:02x?}");
}

#[test]
fn a_decision_over_policy_time_is_a_deny_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Reads are decided at once; any write makes the policy count through a million pairs,
    // far beyond 20 ms.
    let policy = dir.path().join("slow.rego");
    std::fs::write(
        &policy,
        "package zonegate.slow\nimport rego.v1\n\
         default decision := {\"allow\": false, \"reason\": \"not allowed\", \"rule\": \"slow.default\"}\n\
         decision := {\"allow\": true, \"reason\": \"\", \"rule\": \"slow.read\"} if {\n\
         \tinput.modbus.access == \"read\"\n\
         } else := {\"allow\": true, \"reason\": \"\", \"rule\": \"slow.write\"} if {\n\
         \tinput.modbus.access == \"write\"\n\
         \tcount([x | some x in numbers.range(1, 1000); some y in numbers.range(1, 1000); x == y]) > 0\n\
         }\n",
    )
    .unwrap();
    let zones = zones_with(dir.path(), "  policy_time: 20ms\n", |t| {
        let bess = format!("{}/policies/bess.rego", env!("CARGO_MANIFEST_DIR"));
        assert!(t.contains(&bess), "scada-bess names bess.rego");
        t.replacen(&bess, policy.to_str().unwrap(), 1)
    });
    let bench = Bench::start(&zones);
    let results = bench.client(
        SCADA,
        &[
            "--sequence",
            r#"[["read-holding", 300, 1], ["write-register", 40, 1], ["read-holding", 301, 1]]"#,
        ],
    );
    assert_eq!(results[0]["ok"], true, "{results:?}");
    // Refused as any deny on this conduit is: exception 01.
    assert_eq!(results[1]["exception"], 1, "{results:?}");
    assert_eq!(
        results[2]["ok"], true,
        "the connection goes on: {results:?}"
    );
    let e = bench.audit_event("policy budget deny", |e| {
        e["event"]["action"] == "modbus-request" && e["rule"]["name"] == "zonegate.policy.budget"
    });
    assert_eq!(e["zonegate"]["decision"], "deny", "{e}");
    assert_eq!(limit_hits(&bench, dir.path(), "policy_time"), 1);
    assert!(
        bench.device_frames().iter().all(|f| f["function"] != 6),
        "the write never reached the device"
    );
}

#[test]
fn writes_over_the_conduit_rate_are_refused_like_a_denial_and_reads_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path()));
    // Burst 3 at 1 per second: four heartbeats at once, the fourth over the rate.
    let results = bench.client(
        SCADA,
        &[
            "--sequence",
            r#"[["write-register", 40, 1], ["write-register", 40, 2], ["write-register", 40, 3],
                ["write-register", 40, 4], ["read-holding", 300, 1], ["read-holding", 300, 1]]"#,
        ],
    );
    for r in &results[..3] {
        assert_eq!(r["ok"], true, "{results:?}");
    }
    assert_eq!(
        results[3]["exception"], 1,
        "on_deny illegal-function: {results:?}"
    );
    assert_eq!(results[4]["ok"], true, "{results:?}");
    assert_eq!(results[5]["ok"], true, "{results:?}");
    assert_eq!(
        bench.device_register(40),
        3,
        "the refused write reached the device"
    );

    let e = bench.audit_event("write over the rate", |e| {
        e["event"]["action"] == "modbus-request" && e["zonegate"]["decision"] == "deny"
    });
    assert!(
        e["zonegate"]["reason"]
            .as_str()
            .unwrap()
            .contains("write rate limit"),
        "{e}"
    );
    assert_eq!(e["rule"]["name"], "zonegate.limits.write_rate");
    assert_eq!(e["modbus"]["values"][0], 4, "{e}");
    assert_eq!(limit_hits(&bench, dir.path(), "write_rate"), 1);
}

/// Sends one read on a fresh connection from SCADA; the answer and how long it took.
fn timed_read(ns: &str) -> (Result<Vec<u8>, String>, Duration) {
    let mut s = connect(ns, SCADA);
    let started = Instant::now();
    s.write_all(&read_request(42)).unwrap();
    let r = response(&mut s, Duration::from_secs(1) + MARGIN + MARGIN);
    (r, started.elapsed())
}

#[test]
fn a_device_down_earns_0x0a_and_a_silent_one_0x0b_within_the_configured_times() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path()));
    let ns = bench.plant.zone_ns("operations");
    let bess = bench.plant.zone_ns("bess");
    let (r, _) = timed_read(&ns);
    assert_eq!(exception(&r.unwrap()), None, "the device answers at first");

    // Silent: the device process is stopped; its kernel still accepts connections.
    let device = Pid::from_raw(i32::try_from(bench.device_pid()).unwrap());
    kill(device, Signal::SIGSTOP).unwrap();
    let (r, took) = timed_read(&ns);
    kill(device, Signal::SIGCONT).unwrap();
    let r = r.unwrap();
    assert_eq!(exception(&r), Some(0x0b), "{r:02x?}");
    assert_eq!(r[..2], 42u16.to_be_bytes(), "for the request's transaction");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(1) + MARGIN,
        "0x0B after {took:?}, expected about response_timeout (1 s)"
    );
    bench.audit_event("modbus-device-timeout", |e| {
        e["event"]["action"] == "modbus-device-timeout"
    });

    // Down: SYNs to the device vanish (in the test's own device namespace), so the proxy's
    // connection attempt times out.
    let nft = |rules: &str| sh(&["ip", "netns", "exec", &bess, "nft", rules]);
    let out = nft(
        "add table inet limits_test; add chain inet limits_test in { type filter hook input priority -10; }; add rule inet limits_test in tcp dport 502 drop",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (r, took) = timed_read(&ns);
    let _ = nft("delete table inet limits_test");
    let r = r.unwrap();
    assert_eq!(exception(&r), Some(0x0a), "{r:02x?}");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(1) + MARGIN,
        "0x0A after {took:?}, expected about connect_timeout (1 s)"
    );
    bench.audit_event("modbus-device-unreachable", |e| {
        e["event"]["action"] == "modbus-device-unreachable"
            && e["zonegate"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("limits.connect_timeout"))
    });

    // Down: nothing listens (the device is gone): 0x0A at once.
    let _ = kill(device, Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    let (r, took) = timed_read(&ns);
    assert_eq!(exception(&r.unwrap()), Some(0x0a));
    assert!(
        took < Duration::from_secs(1),
        "refused at once, took {took:?}"
    );

    assert_eq!(limit_hits(&bench, dir.path(), "response_timeout"), 1);
    assert_eq!(limit_hits(&bench, dir.path(), "connect_timeout"), 1);
}

#[test]
fn a_late_answer_is_dropped_and_a_device_reset_ends_the_session_audited() {
    let dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&zones(dir.path()));
    let ns = bench.plant.zone_ns("operations");
    let device = Pid::from_raw(i32::try_from(bench.device_pid()).unwrap());
    let mut s = connect(&ns, SCADA);

    // The device is stopped: transaction 42 gets 0x0B after response_timeout (1 s).
    kill(device, Signal::SIGSTOP).unwrap();
    s.write_all(&read_request(42)).unwrap();
    let r = response(&mut s, Duration::from_secs(1) + MARGIN + MARGIN).unwrap();
    assert_eq!((r[..2].to_vec(), exception(&r)), (vec![0, 42], Some(0x0b)));
    // Woken, it answers 42 after all: no request is waiting for that answer any more, so the
    // client must not get it.
    kill(device, Signal::SIGCONT).unwrap();
    let late = bench.audit_event("modbus-unsolicited-response", |e| {
        e["event"]["action"] == "modbus-unsolicited-response"
    });
    assert_eq!(late["modbus"]["transaction_id"], 42, "{late}");
    assert_eq!(late["zonegate"]["decision"], "drop", "{late}");
    // The connection goes on: the next answer the client reads is to its next request.
    s.write_all(&read_request(43)).unwrap();
    let r = response(&mut s, Duration::from_secs(2)).unwrap();
    assert_eq!((r[..2].to_vec(), exception(&r)), (vec![0, 43], None));
    assert!(limit_hits(&bench, dir.path(), "response_timeout") >= 1);

    // Stopped again with a request unread in its socket, then killed: its kernel resets the
    // connection. The session ends, and the audit says why.
    kill(device, Signal::SIGSTOP).unwrap();
    s.write_all(&read_request(44)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill(device, Signal::SIGKILL).unwrap();
    let end = response(&mut s, Duration::from_secs(2));
    assert_eq!(end, Err("closed".into()));
    let e = bench.audit_event("device read error", |e| {
        e["event"]["action"] == "modbus-device-closed"
    });
    let reason = e["zonegate"]["reason"].as_str().unwrap();
    assert!(reason.contains("reading from the device failed"), "{e}");
}

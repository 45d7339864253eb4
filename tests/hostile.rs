//! Hostile traffic against the running proxy, in a plant of namespaces (issue 7, acceptance 1): a
//! boofuzz campaign (tests/peers/modbus_boofuzz.py) and a flood of malformed frames over many
//! connections, both from SCADA to inverter-1 through `zonegate run`. Afterwards the daemon is
//! still alive and serving, its memory stayed bounded, and every frame the device received was a
//! well-formed request that the conduit's policy allows.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use support::bess::{Bench, INVERTER, REPO, SCADA, python};
use support::modbus::mbap;
use support::plant::in_ns;
use support::shipped_zones;
use zonegate::policy::{ConnectionInput, Peer, Policy, RegisterMap};
use zonegate::proto::modbus::parse_request;

/// The daemon's resident memory after all of it; it idles at about 12 MiB.
const MAX_RSS_KIB: u64 = 64 * 1024;
/// Its peak while under the flood (16 connections at a time, each closed on its first bad frame).
const MAX_PEAK_KIB: u64 = 128 * 1024;
const FLOOD_SECONDS: u64 = 10;
const FLOOD_THREADS: usize = 16;

/// `VmRSS` or `VmHWM` of a process, in KiB; `None` when it is gone.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Alive and not a zombie (the plant is its parent and reaps it only at the end).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("State:"))
                .map(|st| !st.trim().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// xorshift64*: reproducible noise without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One frame of the flood: mostly broken in one of the ways a parser must catch, some random
/// well-framed PDUs (mostly refused by the policy), and one in eight a plain read, so that the
/// proxy also forwards while it is being flooded.
fn hostile_frame(rng: &mut Rng) -> Vec<u8> {
    let tid = rng.next() as u16;
    match rng.below(8) {
        0 => {
            let n = 1 + rng.below(300) as usize;
            rng.bytes(n)
        }
        1 => mbap(tid, 1 + rng.below(0xFFFF) as u16, 6, 1, &[3, 1, 44, 0, 10]),
        2 => {
            let length = [0, 1, 255, 256, 300, 0xFFFF][rng.below(6) as usize];
            let n = rng.below(40) as usize;
            mbap(tid, 0, length, 1, &rng.bytes(n))
        }
        3 => {
            let n = 1 + rng.below(6) as usize;
            mbap(tid, 0, 6, 1, &[3, 1, 44, 0, 10])[..n].to_vec()
        }
        4 => {
            let n = 1 + rng.below(252) as usize;
            let pdu = rng.bytes(n);
            mbap(tid, 0, (n + 1) as u16, rng.next() as u8, &pdu)
        }
        // FC16 whose byte count disagrees with its quantity.
        5 => mbap(tid, 0, 11, 1, &[0x10, 0, 40, 0, 1, 4, 0, 7, 0, 0]),
        // FC15 with more coils than its byte count holds.
        6 => mbap(tid, 0, 8, 1, &[0x0F, 0, 0, 0, 9, 1, 0xFF]),
        _ => mbap(tid, 0, 6, 1, &[3, 1, 44, 0, 10]),
    }
}

/// A connection to inverter-1 from SCADA's address.
fn connect(timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let src: IpAddr = SCADA.parse().unwrap();
    socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    let dst = SocketAddr::new(INVERTER.parse().unwrap(), 502);
    socket.connect_timeout(&SockAddr::from(dst), timeout)?;
    Ok(socket.into())
}

#[derive(Debug, Default)]
struct FloodStats {
    connections: AtomicU64,
    connect_errors: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    answered: AtomicU64,
}

/// `FLOOD_THREADS` clients, each connection after connection: a few hostile frames in one
/// write, then half-close and read what comes back until the proxy closes.
fn flood(ns: &str, seconds: u64) -> Arc<FloodStats> {
    let stats = Arc::new(FloodStats::default());
    let s = stats.clone();
    in_ns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let workers: Vec<_> = (0..FLOOD_THREADS)
            .map(|i| {
                let stats = s.clone();
                // Threads started here inherit this thread's network namespace.
                std::thread::spawn(move || {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
                    while Instant::now() < deadline {
                        let Ok(mut conn) = connect(Duration::from_secs(1)) else {
                            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        stats.connections.fetch_add(1, Ordering::Relaxed);
                        let frames = 1 + rng.below(8);
                        let mut out = Vec::new();
                        for _ in 0..frames {
                            out.extend(hostile_frame(&mut rng));
                        }
                        // The proxy may close (or reset) on the first bad frame: not an error.
                        if conn.write_all(&out).is_ok() {
                            stats.frames.fetch_add(frames, Ordering::Relaxed);
                            stats.bytes.fetch_add(out.len() as u64, Ordering::Relaxed);
                        }
                        let _ = conn.shutdown(Shutdown::Write);
                        conn.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = conn.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            stats.answered.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    stats
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The policy input the proxy builds for SCADA -> inverter-1 on scada-bess (src/policy/input.rs).
fn scada_to_inverter() -> ConnectionInput {
    let map = RegisterMap::load(std::path::Path::new(&format!(
        "{REPO}/profiles/bess-inverter.yaml"
    )))
    .unwrap();
    ConnectionInput::new(
        "scada-bess",
        "enforce",
        Peer {
            address: SCADA.parse().unwrap(),
            port: None,
            zone: "operations",
            asset: Some("scada"),
            kind: Some("scada"),
        },
        Peer {
            address: INVERTER.parse().unwrap(),
            port: Some(502),
            zone: "bess",
            asset: Some("inverter-1"),
            kind: Some("bess-inverter"),
        },
        Some(Arc::new(map)),
    )
}

#[test]
fn boofuzz_and_a_malformed_flood_never_reach_the_device_or_stop_the_proxy() {
    let bench = Bench::start(&shipped_zones());
    let pid = bench.daemon;
    let ops = bench.plant.zone_ns("operations");
    let read = bench.op(&["read-holding", "300", "1"]);
    assert_eq!(read["ok"], true, "{read}");
    let rss_start = status_kib(pid, "VmRSS").unwrap();

    // 1. boofuzz: MBAP fields and PDUs of FC 03, 06, 10, 08, 2B, an unknown code, random PDUs.
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ops, &python()])
        .arg(format!("{REPO}/tests/peers/modbus_boofuzz.py"))
        .args(["--host", INVERTER, "--port", "502", "--source", SCADA])
        .args(["--max-cases", "1000", "--seconds", "45"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boofuzz failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fuzz: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!(
        "boofuzz: {fuzz} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Every request definition had its share (about 20 test cases a second on this machine).
    assert!(
        fuzz["cases"].as_u64().unwrap() >= 300,
        "boofuzz ran too few cases: {fuzz}"
    );
    for (name, n) in fuzz["by_request"].as_object().unwrap() {
        assert!(n.as_u64().unwrap() >= 20, "boofuzz: {name} got {n} cases");
    }
    assert_eq!(fuzz["by_request"].as_object().unwrap().len(), 7, "{fuzz}");
    assert!(alive(pid), "zonegate exited during the boofuzz campaign");
    let rss_boofuzz = status_kib(pid, "VmRSS").unwrap();

    // 2. The flood.
    let stats = flood(&ops, FLOOD_SECONDS);
    let frames = stats.frames.load(Ordering::Relaxed);
    let connections = stats.connections.load(Ordering::Relaxed);
    eprintln!(
        "flood: {frames} frames ({} bytes) on {connections} connections in {FLOOD_SECONDS} s \
         ({} frames/s, {} connections/s), {} connect errors, {} reads answered",
        stats.bytes.load(Ordering::Relaxed),
        frames / FLOOD_SECONDS,
        connections / FLOOD_SECONDS,
        stats.connect_errors.load(Ordering::Relaxed),
        stats.answered.load(Ordering::Relaxed),
    );
    assert!(alive(pid), "zonegate exited during the flood");
    assert!(
        connections >= 500,
        "the flood made only {connections} connections"
    );

    // Still serving: a normal read and the heartbeat write go through with the device's answer.
    let read = bench.op(&["read-holding", "300", "1"]);
    assert_eq!(read["ok"], true, "{read}");
    assert_eq!(read["registers"], serde_json::json!([4810]));
    let hb = bench.op(&["write-register", "40", "4242"]);
    assert_eq!(hb["ok"], true, "{hb}");
    assert_eq!(bench.device_register(40), 4242);

    // Memory stayed bounded.
    let rss_end = status_kib(pid, "VmRSS").unwrap();
    let peak = status_kib(pid, "VmHWM").unwrap();
    eprintln!(
        "zonegate RSS: {rss_start} KiB at start, {rss_boofuzz} KiB after boofuzz, \
         {rss_end} KiB after the flood, peak {peak} KiB"
    );
    assert!(rss_end < MAX_RSS_KIB, "RSS {rss_end} KiB after the flood");
    assert!(peak < MAX_PEAK_KIB, "peak RSS {peak} KiB");

    // Every frame the device received is a whole, well-formed request the policy allows.
    let policy = Policy::load(std::path::Path::new(&format!("{REPO}/policies/bess.rego"))).unwrap();
    let conn = scada_to_inverter();
    let journal = bench.device_frames();
    let mut by_function = std::collections::BTreeMap::<u64, u64>::new();
    for entry in &journal {
        assert!(
            entry.get("error").is_none(),
            "the device received a broken frame: {entry}"
        );
        assert_eq!(
            entry["peer"].as_str().unwrap().split(':').next(),
            Some(SCADA)
        );
        let raw = unhex(entry["raw"].as_str().unwrap());
        let (frame, used) = match parse_request(&raw) {
            Ok(Some(parsed)) => parsed,
            other => panic!("the device received a malformed request {entry}: {other:?}"),
        };
        assert_eq!(
            used,
            raw.len(),
            "trailing bytes reached the device: {entry}"
        );
        let decision = policy.decide(conn.modbus_input(frame.header.unit_id, &frame.body));
        assert!(
            decision.is_allow(),
            "the device received a request the policy refuses ({}): {entry}",
            decision.rule()
        );
        *by_function
            .entry(entry["function"].as_u64().unwrap())
            .or_default() += 1;
    }
    eprintln!(
        "device: {} requests received, all well-formed and allowed; by function code {by_function:?}",
        journal.len()
    );
    // The fuzzed reads and heartbeats, the flood's reads and the checks above did arrive.
    assert!(
        journal.len() > 100,
        "only {} requests reached the device",
        journal.len()
    );
    // Bench's drop verifies the audit log's chain and every event's schema.
}

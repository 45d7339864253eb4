//! `gateway.failure_mode` with the real kernel and a real daemon: what crosses between zones after
//! `zonegate run` is killed (`kill -9`, under traffic), stopped (SIGTERM), or never ran
//! (`zonegate apply`).
//! The kernel notices a dead daemon by itself: the liveness elements the daemon renews expire.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};
use support::bess::{Bench, SCADA, zones_variant};
use support::nft::counter;
use support::plant::{Plant, Probe, in_ns, tcp_echo, tcp_probe};
use support::{shipped_zones, zonegate_bin};
use zonegate::nft::liveness::{RENEW_INTERVAL, TIMEOUT};

/// Long enough for a SYN and its answer inside one machine.
const PROBE_WAIT: Duration = Duration::from_millis(700);
/// After the liveness timeout: time for the kernel's garbage collection and one more probe.
const MARGIN: Duration = Duration::from_secs(3);
/// conduit historian-mirror-web (L4): enterprise -> dmz-historian tcp/443.
const ERP: &str = "10.40.0.10";
const MIRROR: &str = "10.35.0.20:443";
const INVERTER_MODBUS: &str = "10.21.0.11:502";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), sig).unwrap();
}

/// Polls `probe` until it returns true; the time it took, or a panic naming `what` at `deadline`.
fn within(deadline: Duration, what: &str, mut probe: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !probe() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Whether a TCP connection from `src` in `ns` to `dst` is established at all.
fn connects(ns: &str, src: IpAddr, dst: SocketAddr) -> bool {
    in_ns(ns, move || {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0))).unwrap();
        sock.connect_timeout(&SockAddr::from(dst), PROBE_WAIT)
            .is_ok()
    })
}

/// The liveness set's elements as the kernel lists them.
fn alive_elements(plant: &Plant) -> Vec<Value> {
    let out = plant.gateway_cmd(&["nft", "-j", "list", "set", "inet", "zonegate", "alive"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["set"]["elem"].as_array().cloned())
        .unwrap_or_default()
}

/// Flows that keep going: each loop counts answered round trips and replaces a broken
/// connection with a new one, until `stop`.
#[derive(Default)]
struct Traffic {
    l4_answered: AtomicU64,
    modbus_answered: AtomicU64,
    stop: AtomicBool,
}

/// Sets `stop` when dropped, so that a failed assertion does not leave the loops running and
/// the scope waiting for them.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Traffic {
    fn counts(&self) -> (u64, u64) {
        (
            self.l4_answered.load(Ordering::SeqCst),
            self.modbus_answered.load(Ordering::SeqCst),
        )
    }

    /// Lines to the echo server at `dst`.
    fn l4(&self, ns: &str, src: IpAddr, dst: SocketAddr) {
        self.keep_going(ns, src, dst, &self.l4_answered, |s| {
            s.write_all(b"ping\n").is_ok() && {
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
            }
        });
    }

    /// FC03 reads of one register, answered by the device through the proxy.
    fn modbus(&self, ns: &str, src: IpAddr, dst: SocketAddr) {
        let mut tid: u16 = 0;
        self.keep_going(ns, src, dst, &self.modbus_answered, |s| {
            tid = tid.wrapping_add(1);
            let t = tid.to_be_bytes();
            // MBAP: transaction id, protocol 0, length 6, unit 1; PDU: FC03, address 300, 1 register.
            let request = [t[0], t[1], 0, 0, 0, 6, 1, 3, 0x01, 0x2c, 0, 1];
            let mut answer = [0u8; 11];
            s.write_all(&request).is_ok()
                && s.read_exact(&mut answer).is_ok()
                && answer[..2] == t
                && answer[7] == 3
        });
    }

    fn keep_going(
        &self,
        ns: &str,
        src: IpAddr,
        dst: SocketAddr,
        answered: &AtomicU64,
        mut round_trip: impl FnMut(&mut TcpStream) -> bool,
    ) {
        let mut stream: Option<TcpStream> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if stream.is_none() {
                stream = in_ns(ns, move || {
                    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    sock.bind(&SockAddr::from(SocketAddr::new(src, 0))).unwrap();
                    sock.connect_timeout(&SockAddr::from(dst), PROBE_WAIT)
                        .ok()
                        .map(|()| TcpStream::from(sock))
                });
                if let Some(s) = &stream {
                    s.set_read_timeout(Some(PROBE_WAIT)).unwrap();
                }
            }
            let answered_now = stream.as_mut().is_some_and(&mut round_trip);
            if answered_now {
                answered.fetch_add(1, Ordering::SeqCst);
            } else {
                stream = None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn closed_kill_9_under_traffic_stops_every_flow_until_zonegate_is_back() {
    let mut bench = Bench::start(&shipped_zones());
    let enterprise = bench.plant.zone_ns("enterprise");
    let operations = bench.plant.zone_ns("operations");
    let web = tcp_echo(&bench.plant.zone_ns("dmz"), addr(MIRROR));
    let traffic = Traffic::default();
    thread::scope(|s| {
        let _stop = StopOnDrop(&traffic.stop);
        s.spawn(|| traffic.l4(&enterprise, ip(ERP), web.addr));
        s.spawn(|| traffic.modbus(&operations, ip(SCADA), addr(INVERTER_MODBUS)));
        within(Duration::from_secs(10), "both flows cross", || {
            let (l4, modbus) = traffic.counts();
            l4 >= 20 && modbus >= 20
        });

        signal(bench.daemon, Signal::SIGKILL);
        let killed = Instant::now();
        // The proxy's connections die with it; the L4 flow lasts until liveness expires.
        thread::sleep(TIMEOUT + MARGIN);
        let (l4, modbus) = traffic.counts();
        let frames = bench.device_frames().len();
        let dropped = counter(&bench.plant, "drop_zonegate_down");
        thread::sleep(Duration::from_secs(3));
        assert_eq!(
            traffic.counts(),
            (l4, modbus),
            "nothing is answered across zones {:?} after kill -9",
            killed.elapsed()
        );
        assert_eq!(
            bench.device_frames().len(),
            frames,
            "no Modbus request reaches the device"
        );
        assert!(
            counter(&bench.plant, "drop_zonegate_down") > dropped,
            "the flows' packets are dropped in the kernel"
        );
        eprintln!("after kill -9: {l4} L4 echoes and {modbus} Modbus reads answered in all");

        // Management access to the gateway is not gated: the operator can still log in.
        let ssh = tcp_echo(&bench.plant.gateway, addr("0.0.0.0:22"));
        let (mgmt_ns, mgmt_host) = bench.plant.management.clone().unwrap();
        assert_eq!(
            tcp_probe(&mgmt_ns, mgmt_host, addr("10.99.0.1:22"), PROBE_WAIT),
            Probe::Passed
        );
        assert_eq!(ssh.accepted.load(Ordering::SeqCst), 1);

        let second_log = bench.dir.path().join("audit-after-restart.jsonl");
        bench.restart_daemon(&second_log);
        let took = within(
            Duration::from_secs(20),
            "both flows back after restart",
            || {
                let (l4_now, modbus_now) = traffic.counts();
                l4_now > l4 + 10 && modbus_now > modbus + 10
            },
        );
        eprintln!("both flows answered again {took:?} after the restart");
        assert!(bench.device_frames().len() > frames);
        support::audit::check_log(&second_log);
    });
}

#[test]
fn open_after_kill_9_the_modbus_conduit_carries_traffic_uninspected() {
    let dir = tempfile::tempdir().unwrap();
    let zones = zones_variant(dir.path(), |t| {
        t.replace("failure_mode: closed ", "failure_mode: open ")
    });
    let bench = Bench::start(&zones);
    let plant = &bench.plant;
    let operations = plant.zone_ns("operations");
    let enterprise = plant.zone_ns("enterprise");
    let web = tcp_echo(&plant.zone_ns("dmz"), addr(MIRROR));
    // While zonegate is up, the policy refuses grid_disconnect (104).
    assert_eq!(bench.op(&["write-register", "104", "1"])["exception"], 1);
    assert_eq!(bench.device_register(104), 0);

    signal(bench.daemon, Signal::SIGKILL);
    let took = within(
        TIMEOUT + MARGIN + Duration::from_secs(5),
        "Modbus bypass",
        || bench.attempt(&["read-holding", "300", "1"])["ok"] == true,
    );
    eprintln!("the Modbus conduit passed uninspected after {took:?}");
    let r = bench.attempt(&["write-register", "104", "1"]);
    assert_eq!(
        r["ok"], true,
        "uninspected: the policy no longer refuses: {r}"
    );
    assert_eq!(bench.device_register(104), 1);
    let last = bench.device_frames().pop().unwrap();
    assert!(
        last["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{SCADA}:")),
        "{last}"
    );

    // Everything else as before: the L4 conduit works, nothing undeclared crosses.
    let decoy = tcp_echo(&plant.zone_ns("bess"), addr("10.21.0.11:8502"));
    assert_eq!(
        tcp_probe(&enterprise, ip(ERP), web.addr, PROBE_WAIT),
        Probe::Passed
    );
    let stranger = plant.stranger("operations");
    let (ops1, ops2, ops3) = (operations.clone(), operations.clone(), operations.clone());
    let not_on_conduit = thread::spawn(move || connects(&ops1, stranger, addr(INVERTER_MODBUS)));
    let other_port = thread::spawn(move || connects(&ops2, ip(SCADA), addr("10.21.0.11:8502")));
    let undeclared_zone = thread::spawn(move || connects(&ops3, ip(SCADA), addr(MIRROR)));
    assert!(
        !not_on_conduit.join().unwrap(),
        "a host not on the conduit stays out"
    );
    assert!(!other_port.join().unwrap(), "another port stays closed");
    assert!(
        !undeclared_zone.join().unwrap(),
        "operations -> dmz:443 stays dropped"
    );
    assert_eq!(decoy.accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn closed_a_clean_stop_withdraws_liveness_at_once() {
    let bench = Bench::start(&shipped_zones());
    let plant = &bench.plant;
    let enterprise = plant.zone_ns("enterprise");
    let web = tcp_echo(&plant.zone_ns("dmz"), addr(MIRROR));
    assert_eq!(
        tcp_probe(&enterprise, ip(ERP), web.addr, PROBE_WAIT),
        Probe::Passed
    );
    assert_eq!(alive_elements(plant).len(), 2);
    signal(bench.daemon, Signal::SIGTERM);
    // Expiry would take at least TIMEOUT - RENEW_INTERVAL after the last renewal.
    within(TIMEOUT - RENEW_INTERVAL * 2, "liveness withdrawn", || {
        alive_elements(plant).is_empty()
    });
    assert_eq!(
        tcp_probe(&enterprise, ip(ERP), web.addr, PROBE_WAIT),
        Probe::TimedOut
    );
    bench.audit_event("daemon-stop", |e| e["event"]["action"] == "daemon-stop");
}

#[test]
fn a_one_shot_apply_keeps_conduits_open_past_the_liveness_timeout() {
    let model = zonegate::config::load(&shipped_zones()).unwrap();
    let plant = Plant::build(&model);
    let out = plant.gateway_cmd(&[zonegate_bin(), "apply", shipped_zones().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elements = alive_elements(&plant);
    assert_eq!(elements, vec![Value::from("ipv4"), Value::from("ipv6")]);
    let web = tcp_echo(&plant.zone_ns("dmz"), addr(MIRROR));
    // Past the timeout on purpose: nothing may expire.
    thread::sleep(TIMEOUT + Duration::from_secs(1));
    assert_eq!(alive_elements(&plant), elements);
    assert_eq!(
        tcp_probe(&plant.zone_ns("enterprise"), ip(ERP), web.addr, PROBE_WAIT),
        Probe::Passed
    );
}

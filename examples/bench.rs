//! The benchmark: Modbus/TCP requests per second and latency, direct (the kernel forwards the
//! conduit as plain `tcp/502`), through a plain transparent relay that inspects nothing (what any
//! proxy costs on this machine), and through zonegate's inspection proxy (policy in `enforce` and
//! in `monitor` mode), with the proxy's CPU time per request, the whole machine's, and the proxy's
//! peak RSS, for several numbers of concurrent connections. Prints one Markdown table and a
//! PASS/MISS line per target.
//!
//! Everything runs on this machine, in the namespaces of a plant built from the shipped
//! zones.yaml: a tokio-modbus device on inverter-1 (bess zone) that answers reads with zeros and
//! accepts writes, and a closed-loop tokio-modbus load generator on scada (operations zone). Each
//! cell gets a fresh `zonegate run`; the direct path keeps zonegate running (with scada-bess as
//! `tcp/502`) so that both paths cross the same gateway and the same nftables ruleset shape.
//!
//! Run it through `scripts/bench` (root; builds zonegate and this example with `--release`):
//!     scripts/bench [--seconds N] [--connections 1,16,64] [--paths direct,relay,enforce,monitor]
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_modbus::prelude::*;
use zonegate::config::{Mode, Model, Service};
use zonegate_testkit::REPO;
use zonegate_testkit::daemon::Daemon;
use zonegate_testkit::plant::{self, Plant};
/// The conduit under test and its two ends in the shipped zones.yaml.
const CONDUIT: &str = "scada-bess";
const CLIENT_ASSET: &str = "scada";
const DEVICE_ASSET: &str = "inverter-1";
/// Requests before the measured window (connections, caches, the proxy's upstream connects).
const WARMUP: Duration = Duration::from_secs(1);
/// FC03: 10 holding registers from 300 (a measurement block); policy `bess.read`.
const READ_ADDR: u16 = 300;
const READ_QTY: u16 = 10;
/// Every WRITE_EVERY-th request per connection: FC06 to the watchdog heartbeat (register 40),
/// which bess.rego allows with any value (`bess.write.heartbeat`).
const HEARTBEAT: u16 = 40;
const WRITE_EVERY: u64 = 10;
const UNIT: u8 = 1;
/// A request not answered within this is counted as an error and its connection is made anew.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long zonegate may take from start to a Modbus read that passes through it.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Set by Ctrl-C: the current cell ends early, no further cell starts, everything is removed.
static STOP: AtomicBool = AtomicBool::new(false);

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PathKind {
    Direct,
    /// A plain transparent TCP relay in place of zonegate's proxy: what any proxy costs here.
    Relay,
    Enforce,
    Monitor,
}

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::Enforce => "enforce",
            PathKind::Monitor => "monitor",
        }
    }

    /// Whether zonegate inspects this path's requests.
    fn inspects(self) -> bool {
        matches!(self, PathKind::Enforce | PathKind::Monitor)
    }

    fn parse(s: &str) -> Option<PathKind> {
        [
            PathKind::Direct,
            PathKind::Relay,
            PathKind::Enforce,
            PathKind::Monitor,
        ]
        .into_iter()
        .find(|p| p.name() == s)
    }
}

/// What the load generator sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    /// Modbus/TCP scada -> inverter-1: FC03 reads, every 10th an FC06 heartbeat.
    Modbus,
    /// OPC UA hmi -> cnc-1 (SecurityPolicy None): Read of one node.
    OpcUaRead,
    /// OPC UA hmi -> cnc-1: Write of one node (an allowed value).
    OpcUaWrite,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Modbus => "modbus",
            Workload::OpcUaRead => "opcua read",
            Workload::OpcUaWrite => "opcua write",
        }
    }

    fn is_opcua(self) -> bool {
        self != Workload::Modbus
    }
}

/// OPC UA cells run at most this many connections: the asyncua server answers a few thousand
/// requests a second, and more connections only queue at it.
const OPCUA_MAX_CONNECTIONS: usize = 16;
/// The OPC UA conduit under test, its ends, and the node read and written.
const OPCUA_CONDUIT: &str = "hmi-cnc";
const OPCUA_CLIENT_ASSET: &str = "hmi";
const OPCUA_DEVICE_ASSET: &str = "cnc-1";
const OPCUA_PORT: u16 = 4840;
const OPCUA_NODE: &str = "Machine.FeedOverride";

struct Args {
    seconds: u64,
    protocols: Vec<&'static str>,
    rounds: u32,
    connections: Vec<usize>,
    paths: Vec<PathKind>,
}

const USAGE: &str =
    "usage: bench [--seconds N] [--connections 1,16,64] [--paths direct,enforce,monitor]
  --seconds N        measured seconds per cell and round (default 3; plus 1 s warm-up)
  --rounds N         run every cell N times, interleaved, and pool them (default 3)
  --connections L    concurrent client connections, comma-separated (default 1,16,64)
  --paths L          which paths to run (default direct,relay,enforce,monitor); ratios need direct
  --protocols L      modbus, opcua or both (default both; OPC UA: up to 16 connections, no monitor)
Run it through scripts/bench (root, release build).";

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 3,
        protocols: vec!["modbus", "opcua"],
        rounds: 3,
        connections: vec![1, 16, 64],
        paths: vec![
            PathKind::Direct,
            PathKind::Relay,
            PathKind::Enforce,
            PathKind::Monitor,
        ],
    };
    let mut it = std::env::args().skip(1);
    let fail = |msg: String| -> ! {
        eprintln!("bench: {msg}\n{USAGE}");
        std::process::exit(2)
    };
    while let Some(a) = it.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        if key == "-h" || key == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = inline
            .or_else(|| it.next())
            .unwrap_or_else(|| fail(format!("{key} needs a value")));
        match key.as_str() {
            "--seconds" => {
                args.seconds = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .unwrap_or_else(|| fail(format!("--seconds {value}: a positive integer")));
            }
            "--protocols" => {
                args.protocols = value
                    .split(',')
                    .map(|p| ["modbus", "opcua"].into_iter().find(|k| *k == p.trim()))
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| fail(format!("--protocols {value}: some of modbus,opcua")));
            }
            "--rounds" => {
                args.rounds = value
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .unwrap_or_else(|| fail(format!("--rounds {value}: a positive integer")));
            }
            "--connections" => {
                args.connections = value
                    .split(',')
                    .map(|c| c.trim().parse().ok().filter(|n: &usize| *n > 0))
                    .collect::<Option<Vec<usize>>>()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| fail(format!("--connections {value}: e.g. 1,16,64")));
            }
            "--paths" => {
                args.paths = value
                    .split(',')
                    .map(|p| PathKind::parse(p.trim()))
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| {
                        fail(format!(
                            "--paths {value}: some of direct,relay,enforce,monitor"
                        ))
                    });
            }
            _ => fail(format!("unknown argument {a}")),
        }
    }
    args
}

// ---------------------------------------------------------------------------------------------
// zones.yaml variants

/// The shipped zones.yaml with absolute policy/profile paths, the conduit under test changed for
/// `path`: direct = plain `tcp/PORT` without `inspection:`; monitor = `mode: monitor`.
fn zones_variant(dir: &Path, path: PathKind, port: u16) -> PathBuf {
    let text = std::fs::read_to_string(format!("{REPO}/zones.yaml")).unwrap();
    let text = text
        .replace("policy: policies/", &format!("policy: {REPO}/policies/"))
        .replace(
            "register_map: profiles/",
            &format!("register_map: {REPO}/profiles/"),
        );
    let mut out = String::new();
    let mut in_conduit = false;
    let mut in_inspection = false;
    let mut edited = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent == 2 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_conduit = trimmed == format!("{CONDUIT}:");
        }
        if indent < 2 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_conduit = false;
        }
        if in_inspection && (indent > 4 || trimmed.is_empty()) && path == PathKind::Direct {
            continue;
        }
        in_inspection = false;
        if in_conduit && indent == 4 {
            if trimmed.starts_with("services:") && path == PathKind::Direct {
                let services = trimmed.trim_start_matches("services:").trim();
                let services = services
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(|s| {
                        let s = s.trim();
                        if s == "modbus" || s.starts_with("modbus/") {
                            format!("tcp/{port}")
                        } else {
                            s.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                writeln!(out, "    services: [{services}]").unwrap();
                edited = true;
                continue;
            }
            if trimmed.starts_with("inspection:") {
                in_inspection = true;
                if path == PathKind::Direct {
                    continue;
                }
            }
        }
        if in_conduit && indent == 6 && path == PathKind::Monitor && trimmed.starts_with("mode:") {
            writeln!(out, "      mode: monitor").unwrap();
            edited = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        edited || matches!(path, PathKind::Enforce | PathKind::Relay),
        "zones.yaml: could not edit conduit {CONDUIT} for {path:?}"
    );
    let file = dir.join(format!("zones-{}.yaml", path.name()));
    std::fs::write(&file, out).unwrap();
    // Check that the variant says what it must, with zonegate's own loader.
    let model = zonegate::config::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let conduit = model
        .conduits
        .iter()
        .find(|c| c.name == CONDUIT)
        .unwrap_or_else(|| panic!("{}: no conduit {CONDUIT}", file.display()));
    let mode = conduit.inspection.as_ref().map(|i| i.mode);
    let expected = match path {
        PathKind::Direct => None,
        PathKind::Enforce | PathKind::Relay => Some(Mode::Enforce),
        PathKind::Monitor => Some(Mode::Monitor),
    };
    assert_eq!(mode, expected, "{}: conduit {CONDUIT}", file.display());
    file
}

/// The zones.yaml for an OPC UA cell: for `direct`, the shipped file (absolute paths) with the
/// OPC UA conduit's `opcua` service as plain `tcp/4840` and no OPC UA policy; else the shipped
/// file as the enforce variant has it.
fn opcua_zones_variant(dir: &Path, path: PathKind, enforce: &Path) -> PathBuf {
    if path != PathKind::Direct {
        return enforce.to_owned();
    }
    let text = std::fs::read_to_string(enforce).unwrap();
    let needle = "services: [modbus, opcua]";
    assert!(
        text.contains(needle),
        "zones.yaml: conduit {OPCUA_CONDUIT} changed"
    );
    let text: String = text
        .replace(needle, &format!("services: [modbus, tcp/{OPCUA_PORT}]"))
        .lines()
        .filter(|l| !l.trim_start().starts_with("opcua_policy:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = dir.join("zones-opcua-direct.yaml");
    std::fs::write(&file, text).unwrap();
    let model = zonegate::config::load(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let conduit = model
        .conduits
        .iter()
        .find(|c| c.name == OPCUA_CONDUIT)
        .unwrap();
    assert!(
        conduit
            .services
            .iter()
            .all(|s| !matches!(s, Service::OpcUa { .. })),
        "{}: {OPCUA_CONDUIT} still inspects OPC UA",
        file.display()
    );
    file
}

/// The Modbus port of the conduit under test in the shipped model.
fn modbus_port(model: &Model) -> u16 {
    model
        .conduits
        .iter()
        .find(|c| c.name == CONDUIT)
        .and_then(|c| {
            c.services.iter().find_map(|s| match s {
                Service::Modbus { port } => Some(*port),
                _ => None,
            })
        })
        .unwrap_or_else(|| panic!("zones.yaml: conduit {CONDUIT} has no modbus service"))
}

fn asset_addr(model: &Model, name: &str) -> IpAddr {
    model
        .assets
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.address)
        .unwrap_or_else(|| panic!("zones.yaml: no asset {name}"))
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Clock ticks per second of /proc's utime/stime.
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// (utime, stime) of a process or thread (`/proc/PID/stat` or `/proc/self/task/TID/stat`).
fn cpu_split(stat_path: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state; utime and stime are fields 14 and 15 of the full line.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// utime + stime of a process or thread.
fn cpu_ticks(stat_path: &str) -> Option<u64> {
    cpu_split(stat_path).map(|(u, s)| u + s)
}

/// Busy time of all CPUs (the `cpu` line of /proc/stat, less idle and iowait), in ticks.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest is part of user)
    Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
}

/// A `VmXxx:   1234 kB` line of /proc/PID/status, in KiB.
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

/// The calling thread's id (for /proc/self/task/TID/stat).
fn my_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// threads in namespaces

/// Like `plant::in_ns`, but does not wait: the thread keeps running in the namespace.
fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .unwrap()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// the device

/// Holding registers that read as zeros and accept every write; counts what it served.
#[derive(Debug, Default)]
struct DeviceService {
    served: AtomicU64,
}

impl tokio_modbus::server::Service for DeviceService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.served.fetch_add(1, Ordering::Relaxed);
        std::future::ready(match req {
            Request::ReadHoldingRegisters(_, qty) => {
                Ok(Response::ReadHoldingRegisters(vec![0; usize::from(qty)]))
            }
            Request::WriteSingleRegister(addr, value) => {
                Ok(Response::WriteSingleRegister(addr, value))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

struct Device {
    service: Arc<DeviceService>,
    tid: u32,
}

/// Starts the device on its own thread (own current-thread runtime) in namespace `ns`.
fn start_device(ns: &str, addr: SocketAddr) -> Device {
    let service = Arc::new(DeviceService::default());
    let (tx, rx) = mpsc::channel();
    let svc = service.clone();
    // Never joined: it serves until the process exits.
    drop(spawn_in_ns(ns, "device", move || {
        let rt = current_thread_runtime();
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("device: bind {addr}: {e}")));
                    return;
                }
            };
            let _ = tx.send(Ok(my_tid()));
            let server = tokio_modbus::server::tcp::Server::new(listener);
            let on_connected = move |stream: tokio::net::TcpStream, peer: SocketAddr| {
                let svc = svc.clone();
                async move {
                    stream.set_nodelay(true)?;
                    tokio_modbus::server::tcp::accept_tcp_connection(stream, peer, |_| {
                        Ok(Some(svc.clone()))
                    })
                }
            };
            if let Err(e) = server.serve(&on_connected, |_e| {}).await {
                eprintln!("bench: device server stopped: {e}");
            }
        });
    }));
    let tid = rx
        .recv()
        .unwrap_or_else(|_| panic!("device thread died"))
        .unwrap_or_else(|e| panic!("{e}"));
    Device { service, tid }
}

/// The asyncua CNC server of the integration tests (tests/peers/opcua_server.py), SecurityPolicy
/// None only; stopped when dropped.
struct OpcUaServer {
    child: Child,
    pid: u32,
}

impl OpcUaServer {
    fn start(ns: &str, addr: SocketAddr) -> OpcUaServer {
        let python = format!("{REPO}/.venv/bin/python");
        assert!(
            Path::new(&python).exists(),
            "{python} is missing: run scripts/bench (its scripts/setup makes it)"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, &python])
            .arg(format!("{REPO}/tests/peers/opcua_server.py"))
            .args([
                "--host",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            // No journal: it writes and flushes a line per request, which would be what is
            // measured.
            .args(["--security", "None"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the OPC UA server: {e}"));
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(
            line.starts_with("READY"),
            "OPC UA server did not start: {line:?}"
        );
        let pid = child.id();
        OpcUaServer { child, pid }
    }
}

impl Drop for OpcUaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn zone_of(model: &Model, asset: &str) -> String {
    model
        .assets
        .iter()
        .find(|a| a.name == asset)
        .map(|a| a.zone.clone())
        .unwrap_or_else(|| panic!("zones.yaml: no asset {asset}"))
}

// ---------------------------------------------------------------------------------------------
// zonegate

/// The process in the gateway namespace that carries the conduit: `zonegate run` (enforce,
/// monitor; the direct path keeps it running for the ruleset), or this benchmark's plain relay
/// after `zonegate apply`. Stopped (SIGTERM, then SIGKILL) when dropped.
struct Zonegate {
    daemon: Daemon,
    pid: u32,
    audit: PathBuf,
}

impl Zonegate {
    fn start(
        plant: &Plant,
        bin: &str,
        zones: &Path,
        dir: &Path,
        path: PathKind,
        tag: &str,
    ) -> Zonegate {
        // The previous ruleset stays in the kernel when zonegate stops: remove it, so that its
        // reappearance shows that this zonegate has applied its own.
        let _ = plant.gateway_cmd(&["nft", "delete", "table", "inet", "zonegate"]);
        let suffix = format!("-{tag}");
        let daemon = if path == PathKind::Relay {
            // zonegate's ruleset diverts the conduit to the proxy port; the relay listens there.
            let zones = zones.to_str().unwrap();
            let applied = plant.gateway_cmd(&[bin, "apply", zones]);
            assert!(
                applied.status.success(),
                "zonegate apply {zones}: {}",
                String::from_utf8_lossy(&applied.stderr)
            );
            let model = zonegate::config::load(Path::new(zones)).unwrap();
            let me = std::env::current_exe().unwrap();
            let relay = Daemon::spawn(
                plant,
                &[
                    me.to_str().unwrap().to_owned(),
                    RELAY_ARG.to_owned(),
                    format!(
                        "{},{}",
                        model.gateway.modbus_proxy_port, model.gateway.opcua_proxy_port
                    ),
                ],
                &dir.join(format!("zonegate{suffix}.log")),
            );
            relay.wait_exec(&me.file_name().unwrap().to_string_lossy());
            relay
        } else {
            Daemon::run(plant, zones, dir, &suffix)
        };
        Zonegate {
            pid: daemon.pid,
            daemon,
            audit: Daemon::audit_log(dir, &suffix),
        }
    }

    fn alive(&mut self) -> bool {
        self.daemon.alive()
    }

    fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    fn cpu_split(&self) -> Option<(u64, u64)> {
        cpu_split(&format!("/proc/{}/stat", self.pid))
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmHWM")
    }

    /// Waits until the ruleset is back and one Modbus read passes the gateway.
    fn wait_ready(&mut self, plant: &Plant, load: &LoadSpec) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            assert!(
                self.alive(),
                "zonegate exited; its log:\n{}",
                self.log_text()
            );
            if plant
                .gateway_cmd(&["nft", "list", "table", "inet", "zonegate"])
                .status
                .success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "zonegate did not apply its ruleset; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut last = String::new();
        while Instant::now() < deadline && !stopped() {
            match probe(load) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            stopped(),
            "no Modbus read passed the gateway within {READY_TIMEOUT:?}: {last}; zonegate's log:\n{}",
            self.log_text()
        );
    }

    fn stop(self) -> String {
        self.daemon.stop()
    }
}

// ---------------------------------------------------------------------------------------------
// the plain relay

/// `bench --relay PORT`: the process the `relay` path runs in the gateway namespace.
const RELAY_ARG: &str = "--relay";

/// A plain transparent TCP relay on the divert port: accepts what nftables TPROXYs to `port`,
/// connects to the original destination from the client's address (as zonegate does), and copies
/// bytes both ways without looking at them. The same runtime as `zonegate run` (multi-thread, one
/// worker per CPU), so that the difference to zonegate is what inspection costs.
fn relay_main(ports: &[u16]) -> ! {
    zonegate::proxy::routing::install(zonegate::proxy::routing::ipv6_available())
        .unwrap_or_else(|e| panic!("relay: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut listeners = tokio::task::JoinSet::new();
        for (ip, &port) in [
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        ]
        .iter()
        .flat_map(|ip| ports.iter().map(move |p| (*ip, p)))
        {
            let listener = relay_listener(SocketAddr::new(ip, port))
                .unwrap_or_else(|e| panic!("relay: listen on port {port}: {e}"));
            listeners.spawn(async move {
                loop {
                    let Ok((mut client, peer)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        // With TPROXY the local address is the device the client addressed.
                        let Ok(device) = client.local_addr() else {
                            return;
                        };
                        let Ok(mut upstream) =
                            zonegate::proxy::connect_transparent(peer, device).await
                        else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                }
            });
        }
        while listeners.join_next().await.is_some() {}
    });
    std::process::exit(1)
}

fn relay_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_ip_transparent_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

// ---------------------------------------------------------------------------------------------
// an OPC UA client for load (SecurityPolicy None)

/// A minimal OPC UA client over one secure channel with SecurityPolicy None: Hello, open,
/// create and activate an anonymous session, then Read or Write one node per request. Enough to
/// load the proxy; async-opcua-types does the encoding.
mod ua {
    use std::io::Cursor;

    use opcua_types::{
        ActivateSessionRequest, ActivateSessionResponse, AnonymousIdentityToken,
        ApplicationDescription, BinaryDecodable, BinaryEncodable, ByteString, ContextOwned,
        CreateSessionRequest, CreateSessionResponse, DataValue, ExtensionObject,
        MessageSecurityMode, NodeId, ObjectId, OpenSecureChannelRequest, OpenSecureChannelResponse,
        ReadRequest, ReadResponse, ReadValueId, RequestHeader, SecurityTokenRequestType, UAString,
        UserTokenType, Variant, WriteRequest, WriteResponse, WriteValue,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const NONE: &[u8] = b"http://opcfoundation.org/UA/SecurityPolicy#None";

    pub struct Client {
        stream: TcpStream,
        ctx: ContextOwned,
        channel_id: u32,
        token_id: u32,
        sequence: u32,
        request_id: u32,
        auth: NodeId,
        buf: Vec<u8>,
    }

    type Result<T> = std::result::Result<T, String>;

    impl Client {
        pub async fn connect(stream: TcpStream, url: &str) -> Result<Client> {
            let mut c = Client {
                stream,
                ctx: ContextOwned::default(),
                channel_id: 0,
                token_id: 0,
                sequence: 0,
                request_id: 0,
                auth: NodeId::null(),
                buf: Vec::with_capacity(65536),
            };
            // HEL (Part 6 7.1.2.3) -> ACK.
            let mut hel = Vec::new();
            hel.extend_from_slice(b"HELF");
            hel.extend_from_slice(&(32 + url.len() as u32).to_le_bytes());
            for v in [0u32, 65535, 65535, 0, 0] {
                hel.extend_from_slice(&v.to_le_bytes());
            }
            hel.extend_from_slice(&(url.len() as i32).to_le_bytes());
            hel.extend_from_slice(url.as_bytes());
            c.stream.write_all(&hel).await.map_err(|e| e.to_string())?;
            let ack = c.chunk().await?;
            if !ack.starts_with(b"ACK") {
                return Err(format!("expected ACK, got {:?}", ack.get(..3)));
            }
            // OPN with SecurityPolicy None.
            let open = OpenSecureChannelRequest {
                request_header: c.header(),
                client_protocol_version: 0,
                request_type: SecurityTokenRequestType::Issue,
                security_mode: MessageSecurityMode::None,
                client_nonce: ByteString::null(),
                requested_lifetime: 3_600_000,
            };
            let body = c.body(
                ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary,
                &open,
            );
            let mut opn = Vec::new();
            opn.extend_from_slice(b"OPNF");
            let size = 8 + 4 + 4 + NONE.len() + 8 + 8 + body.len();
            opn.extend_from_slice(&(size as u32).to_le_bytes());
            opn.extend_from_slice(&0u32.to_le_bytes());
            opn.extend_from_slice(&(NONE.len() as i32).to_le_bytes());
            opn.extend_from_slice(NONE);
            opn.extend_from_slice(&(-1i32).to_le_bytes());
            opn.extend_from_slice(&(-1i32).to_le_bytes());
            c.sequence += 1;
            c.request_id += 1;
            opn.extend_from_slice(&c.sequence.to_le_bytes());
            opn.extend_from_slice(&c.request_id.to_le_bytes());
            opn.extend_from_slice(&body);
            c.stream.write_all(&opn).await.map_err(|e| e.to_string())?;
            let reply = c.chunk().await?;
            // Header 8, channel id 4, policy uri 4 + n, two null byte strings 8, sequence 8.
            let at = 8 + 4 + 4 + NONE.len() + 8 + 8;
            let response: OpenSecureChannelResponse =
                c.decode(reply.get(at..).ok_or("short OPN response")?)?;
            c.channel_id = response.security_token.channel_id;
            c.token_id = response.security_token.token_id;
            // CreateSession, ActivateSession (anonymous).
            let create = CreateSessionRequest {
                request_header: c.header(),
                client_description: ApplicationDescription {
                    application_uri: "urn:zonegate:bench".into(),
                    ..ApplicationDescription::default()
                },
                endpoint_url: url.into(),
                session_name: "zonegate bench".into(),
                requested_session_timeout: 600_000.0,
                ..CreateSessionRequest::default()
            };
            let created: CreateSessionResponse = c
                .call(
                    ObjectId::CreateSessionRequest_Encoding_DefaultBinary,
                    &create,
                )
                .await?;
            c.auth = created.authentication_token.clone();
            let policy_id = created
                .server_endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.user_identity_tokens.iter().flatten())
                .find(|t| t.token_type == UserTokenType::Anonymous)
                .map(|t| t.policy_id.clone())
                .unwrap_or_else(|| UAString::from("anonymous"));
            let activate = ActivateSessionRequest {
                request_header: c.header(),
                user_identity_token: ExtensionObject::from_message(AnonymousIdentityToken {
                    policy_id,
                }),
                ..ActivateSessionRequest::default()
            };
            let _: ActivateSessionResponse = c
                .call(
                    ObjectId::ActivateSessionRequest_Encoding_DefaultBinary,
                    &activate,
                )
                .await?;
            Ok(c)
        }

        /// Reads the value of `node`; Err unless it is Good.
        pub async fn read(&mut self, node: &NodeId) -> Result<()> {
            let read = ReadRequest {
                request_header: self.header(),
                nodes_to_read: Some(vec![ReadValueId {
                    node_id: node.clone(),
                    attribute_id: 13,
                    ..ReadValueId::default()
                }]),
                ..ReadRequest::default()
            };
            let r: ReadResponse = self
                .call(ObjectId::ReadRequest_Encoding_DefaultBinary, &read)
                .await?;
            match r.results.as_deref() {
                Some([v]) if v.status.is_none_or(|s| s.is_good()) => Ok(()),
                other => Err(format!("read: {other:?}")),
            }
        }

        /// Writes a Double to `node`; Err unless it is Good.
        pub async fn write(&mut self, node: &NodeId, value: f64) -> Result<()> {
            let write = WriteRequest {
                request_header: self.header(),
                nodes_to_write: Some(vec![WriteValue {
                    node_id: node.clone(),
                    attribute_id: 13,
                    value: DataValue::value_only(Variant::Double(value)),
                    ..WriteValue::default()
                }]),
            };
            let r: WriteResponse = self
                .call(ObjectId::WriteRequest_Encoding_DefaultBinary, &write)
                .await?;
            match r.results.as_deref() {
                Some([s]) if s.is_good() => Ok(()),
                other => Err(format!("write: {other:?}")),
            }
        }

        fn header(&mut self) -> RequestHeader {
            RequestHeader {
                authentication_token: self.auth.clone(),
                request_handle: self.request_id + 1,
                timeout_hint: 5_000,
                ..RequestHeader::default()
            }
        }

        fn body<T: BinaryEncodable>(&self, type_id: ObjectId, message: &T) -> Vec<u8> {
            let ctx = self.ctx.context();
            let mut out = Vec::new();
            let _ = NodeId::from(type_id as u32).encode(&mut out, &ctx);
            let _ = message.encode(&mut out, &ctx);
            out
        }

        fn decode<T: BinaryDecodable>(&self, bytes: &[u8]) -> Result<T> {
            let ctx = self.ctx.context();
            let mut cursor = Cursor::new(bytes);
            let type_id = NodeId::decode(&mut cursor, &ctx).map_err(|e| e.to_string())?;
            if type_id == NodeId::from(ObjectId::ServiceFault_Encoding_DefaultBinary as u32) {
                return Err("ServiceFault".into());
            }
            T::decode(&mut cursor, &ctx).map_err(|e| e.to_string())
        }

        async fn call<Q: BinaryEncodable, R: BinaryDecodable>(
            &mut self,
            type_id: ObjectId,
            request: &Q,
        ) -> Result<R> {
            let body = self.body(type_id, request);
            self.sequence += 1;
            self.request_id += 1;
            let mut msg = Vec::with_capacity(24 + body.len());
            msg.extend_from_slice(b"MSGF");
            msg.extend_from_slice(&((24 + body.len()) as u32).to_le_bytes());
            msg.extend_from_slice(&self.channel_id.to_le_bytes());
            msg.extend_from_slice(&self.token_id.to_le_bytes());
            msg.extend_from_slice(&self.sequence.to_le_bytes());
            msg.extend_from_slice(&self.request_id.to_le_bytes());
            msg.extend_from_slice(&body);
            self.stream
                .write_all(&msg)
                .await
                .map_err(|e| e.to_string())?;
            let reply = self.chunk().await?;
            if !reply.starts_with(b"MSGF") {
                return Err(format!("expected MSGF, got {:?}", reply.get(..4)));
            }
            self.decode(reply.get(24..).ok_or("short MSG")?)
        }

        /// The next whole chunk from the peer.
        async fn chunk(&mut self) -> Result<Vec<u8>> {
            loop {
                if self.buf.len() >= 8 {
                    let size = u32::from_le_bytes(self.buf[4..8].try_into().unwrap()) as usize;
                    if self.buf.len() >= size {
                        let chunk: Vec<u8> = self.buf.drain(..size).collect();
                        if chunk.starts_with(b"ERR") {
                            return Err(format!("ERR {:02x?}", chunk.get(8..12)));
                        }
                        return Ok(chunk);
                    }
                }
                if self
                    .stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    return Err("connection closed".into());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the load generator

#[derive(Clone)]
struct LoadSpec {
    workload: Workload,
    ns: String,
    src: IpAddr,
    dst: SocketAddr,
}

/// One client connection of either protocol.
enum Conn {
    Modbus(tokio_modbus::client::Context),
    Ua(Box<ua::Client>),
}

impl Conn {
    async fn disconnect(self) {
        if let Conn::Modbus(mut ctx) = self {
            let _ = ctx.disconnect().await;
        }
    }
}

async fn connect(load: &LoadSpec) -> std::io::Result<Conn> {
    let socket = match load.src {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(load.src, 0))?;
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(load.dst))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    if load.workload.is_opcua() {
        let url = format!("opc.tcp://{}/cnc", load.dst);
        let client = tokio::time::timeout(REQUEST_TIMEOUT * 3, ua::Client::connect(stream, &url))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "OPC UA session set-up timed out",
                )
            })?
            .map_err(std::io::Error::other)?;
        return Ok(Conn::Ua(Box::new(client)));
    }
    Ok(Conn::Modbus(tokio_modbus::client::tcp::attach_slave(
        stream,
        Slave(UNIT),
    )))
}

/// The `n`th request of a connection: whether it is a write, and how it went.
async fn next_request(conn: &mut Conn, workload: Workload, n: u64) -> (bool, Outcome) {
    match conn {
        Conn::Modbus(ctx) => {
            let write = n.is_multiple_of(WRITE_EVERY).then_some(n as u16);
            (write.is_some(), request(ctx, write).await)
        }
        Conn::Ua(client) => {
            let node = opcua_types::NodeId::new(2, OPCUA_NODE);
            let write = workload == Workload::OpcUaWrite;
            let r = if write {
                // Allowed by opcua.rego (0..120 %), and a new value every time (no decision
                // comes from the connection's cache).
                let value = 100.0 + (n as f64 * 1e-6) % 20.0;
                tokio::time::timeout(REQUEST_TIMEOUT, client.write(&node, value)).await
            } else {
                tokio::time::timeout(REQUEST_TIMEOUT, client.read(&node)).await
            };
            let outcome = match r {
                Ok(Ok(())) => Outcome::Ok,
                Ok(Err(e))
                    if e.starts_with("read:") || e.starts_with("write:") || e == "ServiceFault" =>
                {
                    Outcome::Exception(e)
                }
                Ok(Err(e)) => Outcome::Transport(e),
                Err(_) => Outcome::Transport(format!("no answer within {REQUEST_TIMEOUT:?}")),
            };
            (write, outcome)
        }
    }
}

enum Outcome {
    Ok,
    Exception(String),
    Transport(String),
}

async fn request(ctx: &mut tokio_modbus::client::Context, write: Option<u16>) -> Outcome {
    let r = match write {
        Some(value) => {
            tokio::time::timeout(REQUEST_TIMEOUT, ctx.write_single_register(HEARTBEAT, value))
                .await
                .map(|r| r.map(|r| r.map(|()| READ_QTY as usize)))
        }
        None => tokio::time::timeout(
            REQUEST_TIMEOUT,
            ctx.read_holding_registers(READ_ADDR, READ_QTY),
        )
        .await
        .map(|r| r.map(|r| r.map(|v| v.len()))),
    };
    match r {
        Ok(Ok(Ok(n))) if n == usize::from(READ_QTY) => Outcome::Ok,
        Ok(Ok(Ok(n))) => Outcome::Exception(format!("read returned {n} registers")),
        Ok(Ok(Err(code))) => Outcome::Exception(format!(
            "{} answered with exception {code:?}",
            if write.is_some() { "FC06" } else { "FC03" }
        )),
        Ok(Err(e)) => Outcome::Transport(e.to_string()),
        Err(_) => Outcome::Transport(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// One read through the gateway on a fresh connection: is the path up?
fn probe(load: &LoadSpec) -> Result<(), String> {
    let l = load.clone();
    plant::in_ns(&load.ns, move || {
        current_thread_runtime().block_on(async move {
            let mut conn = connect(&l).await.map_err(|e| format!("connect: {e}"))?;
            // Request 1 is a read in every workload but OPC UA writes.
            let r = match next_request(&mut conn, l.workload, 1).await.1 {
                Outcome::Ok => Ok(()),
                Outcome::Exception(e) | Outcome::Transport(e) => Err(e),
            };
            conn.disconnect().await;
            r
        })
    })
}

#[derive(Default)]
struct ConnStats {
    /// Latencies of the requests completed (successfully) inside the measured window, in us.
    latencies: Vec<u32>,
    /// Successful requests in all phases (warm-up, window, tail).
    completed: u64,
    /// Of those, FC06 writes (zonegate audits every write; allowed reads may be aggregated).
    writes: u64,
    exceptions: u64,
    transport_errors: u64,
    first_error: Option<String>,
}

impl ConnStats {
    fn error(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// The measured window, known once every connection is up.
struct Window {
    start: Instant,
    end: Instant,
    tid: u32,
}

/// Closed loop on one connection: the next request leaves when the previous answer is in.
async fn client_loop(
    load: Arc<LoadSpec>,
    ctx: Conn,
    index: u64,
    window: (Instant, Instant),
    capacity: usize,
) -> ConnStats {
    let (t0, t1) = window;
    let mut st = ConnStats {
        latencies: Vec::with_capacity(capacity),
        ..ConnStats::default()
    };
    // Stagger the writes across connections.
    let mut n = index;
    let mut ctx = Some(ctx);
    loop {
        if stopped() || Instant::now() >= t1 {
            break;
        }
        let Some(c) = ctx.as_mut() else {
            // Reconnect after a transport error.
            tokio::time::sleep(Duration::from_millis(20)).await;
            match connect(&load).await {
                Ok(c) => ctx = Some(c),
                Err(e) => {
                    st.transport_errors += 1;
                    st.error(format!("reconnect: {e}"));
                }
            }
            continue;
        };
        n += 1;
        let start = Instant::now();
        let (write, outcome) = next_request(c, load.workload, n).await;
        let end = Instant::now();
        match outcome {
            Outcome::Ok => {
                st.completed += 1;
                if write {
                    st.writes += 1;
                }
                if end >= t0 && end < t1 {
                    let us = end.duration_since(start).as_micros();
                    st.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            Outcome::Exception(e) => {
                st.exceptions += 1;
                st.error(e);
            }
            Outcome::Transport(e) => {
                st.transport_errors += 1;
                st.error(e);
                ctx = None;
            }
        }
    }
    if let Some(c) = ctx {
        c.disconnect().await;
    }
    st
}

/// Starts `conns` closed-loop connections in the client's namespace; sends the window once all
/// are connected.
fn start_load(
    load: &LoadSpec,
    conns: usize,
    seconds: u64,
    window_tx: mpsc::Sender<Result<Window, String>>,
    release: mpsc::Receiver<()>,
) -> JoinHandle<Vec<ConnStats>> {
    let load = Arc::new(load.clone());
    spawn_in_ns(&load.ns.clone(), "loadgen", move || {
        let stats = current_thread_runtime().block_on(async move {
            let mut contexts = Vec::with_capacity(conns);
            for _ in 0..conns {
                match connect(&load).await {
                    Ok(c) => contexts.push(c),
                    Err(e) => {
                        let _ = window_tx.send(Err(format!(
                            "connection {} of {conns} failed: {e}",
                            contexts.len() + 1
                        )));
                        return Vec::new();
                    }
                }
            }
            let t0 = Instant::now() + WARMUP;
            let t1 = t0 + Duration::from_secs(seconds);
            let _ = window_tx.send(Ok(Window {
                start: t0,
                end: t1,
                tid: my_tid(),
            }));
            // Room for 200k requests/s in all, so that recording never allocates.
            let capacity = (200_000 * seconds as usize / conns).max(1024);
            let mut set = tokio::task::JoinSet::new();
            for (i, ctx) in contexts.into_iter().enumerate() {
                set.spawn(client_loop(load.clone(), ctx, i as u64, (t0, t1), capacity));
            }
            let mut all = Vec::with_capacity(conns);
            while let Some(r) = set.join_next().await {
                all.push(r.unwrap());
            }
            all
        });
        // Stay until the main thread has read this thread's CPU time at the window's end.
        let _ = release.recv_timeout(Duration::from_secs(30));
        stats
    })
}

// ---------------------------------------------------------------------------------------------
// one cell

struct Cell {
    workload: Workload,
    path: PathKind,
    conns: usize,
    window: Duration,
    requests: u64,
    /// Latencies of the requests in the window, in us, sorted.
    latencies: Vec<u32>,
    zonegate_cpu_ticks: Option<u64>,
    zonegate_user_ticks: Option<u64>,
    zonegate_sys_ticks: Option<u64>,
    client_cpu_ticks: Option<u64>,
    device_cpu_ticks: Option<u64>,
    /// All CPUs' busy time in the window: what is not ours is another process disturbing the run.
    machine_busy_ticks: Option<u64>,
    peak_rss_kib: Option<u64>,
    exceptions: u64,
    transport_errors: u64,
    first_error: Option<String>,
    /// Requests the loadgen completed in all phases (for the audit comparison).
    completed_all: u64,
    writes_all: u64,
    audit_requests: u64,
    audit_not_allowed: u64,
    log_problems: Vec<String>,
    interrupted: bool,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    fn p50(&self) -> u32 {
        percentile(&self.latencies, 0.50)
    }

    fn p99(&self) -> u32 {
        percentile(&self.latencies, 0.99)
    }

    fn p999(&self) -> u32 {
        percentile(&self.latencies, 0.999)
    }

    /// Adds another round of the same path and connection count: times, counts and CPU ticks
    /// add up, latencies pool, so that rates and per-request figures are over all rounds.
    fn absorb(&mut self, other: Cell) {
        let add = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        self.window += other.window;
        self.requests += other.requests;
        self.latencies.extend_from_slice(&other.latencies);
        self.latencies.sort_unstable();
        self.zonegate_cpu_ticks = add(self.zonegate_cpu_ticks, other.zonegate_cpu_ticks);
        self.zonegate_user_ticks = add(self.zonegate_user_ticks, other.zonegate_user_ticks);
        self.zonegate_sys_ticks = add(self.zonegate_sys_ticks, other.zonegate_sys_ticks);
        self.client_cpu_ticks = add(self.client_cpu_ticks, other.client_cpu_ticks);
        self.device_cpu_ticks = add(self.device_cpu_ticks, other.device_cpu_ticks);
        self.machine_busy_ticks = add(self.machine_busy_ticks, other.machine_busy_ticks);
        self.peak_rss_kib = self.peak_rss_kib.max(other.peak_rss_kib);
        self.exceptions += other.exceptions;
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.completed_all += other.completed_all;
        self.writes_all += other.writes_all;
        self.audit_requests += other.audit_requests;
        self.audit_not_allowed += other.audit_not_allowed;
        self.log_problems.extend(other.log_problems);
        self.interrupted |= other.interrupted;
    }

    /// CPU time used in the window by others than zonegate, the load generator and the device,
    /// as a share of one CPU.
    fn others_share(&self, tck: u64) -> Option<f64> {
        let ours = self.zonegate_cpu_ticks.unwrap_or(0)
            + self.client_cpu_ticks.unwrap_or(0)
            + self.device_cpu_ticks.unwrap_or(0);
        let other = self.machine_busy_ticks?.saturating_sub(ours);
        Some(other as f64 / tck as f64 / self.window.as_secs_f64())
    }

    fn errors(&self) -> u64 {
        self.exceptions + self.transport_errors
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sleeps until `t` unless Ctrl-C comes first; false if it did.
fn sleep_until(t: Instant) -> bool {
    loop {
        if stopped() {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(50)));
    }
}

/// Counts the audit file's request events and those that were not `allow`, once the writer has
/// caught up (the count stops growing).
fn audit_counts(path: &Path, action: &str) -> (u64, u64) {
    let mut last = (u64::MAX, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let needle = format!("\"action\":\"{action}\"");
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let requests = text.matches(&needle).count() as u64;
        let allowed = text.matches("\"decision\":\"allow\"").count() as u64;
        let now = (requests, requests.saturating_sub(allowed));
        if now.0 == last.0 || Instant::now() >= deadline {
            return now;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[allow(clippy::too_many_arguments)]
fn run_cell(
    plant: &Plant,
    bin: &str,
    zones: &Path,
    dir: &Path,
    path: PathKind,
    conns: usize,
    seconds: u64,
    load: &LoadSpec,
    device_stat: &str,
) -> Option<Cell> {
    let tag = format!(
        "{}-{}-{conns}",
        load.workload.name().replace(' ', "-"),
        path.name()
    );
    let mut zg = Zonegate::start(plant, bin, zones, dir, path, &tag);
    zg.wait_ready(plant, load);

    let (tx, rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let handle = start_load(load, conns, seconds, tx, release_rx);
    let window = match rx.recv() {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => panic!(
            "{tag}: load generator: {e}; zonegate's log:\n{}",
            zg.log_text()
        ),
        Err(_) => {
            let _ = handle.join();
            panic!("{tag}: the load generator died before it connected");
        }
    };
    let client_stat = format!("/proc/self/task/{}/stat", window.tid);
    if !sleep_until(window.start) {
        // Ctrl-C before the window: nothing measured.
        drop(release_tx);
        let _ = handle.join();
        return None;
    }
    let mut interrupted = false;
    let before = (
        zg.cpu_split(),
        cpu_ticks(&client_stat),
        cpu_ticks(device_stat),
        machine_busy_ticks(),
    );
    interrupted |= !sleep_until(window.end);
    let after = (
        zg.cpu_split(),
        cpu_ticks(&client_stat),
        cpu_ticks(device_stat),
        machine_busy_ticks(),
    );
    // The load generator's thread may exit now.
    drop(release_tx);
    let measured = if interrupted {
        Instant::now().saturating_duration_since(window.start)
    } else {
        window.end - window.start
    };
    let stats = handle
        .join()
        .unwrap_or_else(|_| panic!("{tag}: the load generator panicked"));
    let peak_rss_kib = zg.peak_rss_kib();
    let alive = zg.alive();
    let (audit_requests, audit_not_allowed) = if !path.inspects() {
        (0, 0)
    } else {
        let action = if load.workload.is_opcua() {
            "opcua-request"
        } else {
            "modbus-request"
        };
        audit_counts(&zg.audit, action)
    };
    let audit_file = zg.audit.clone();
    let log = zg.stop();
    let _ = std::fs::remove_file(audit_file);
    let mut log_problems: Vec<String> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    if !alive {
        log_problems.insert(
            0,
            "zonegate was no longer running at the end of the cell".into(),
        );
    }

    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let zg_user = delta(before.0.map(|t| t.0), after.0.map(|t| t.0));
    let zg_sys = delta(before.0.map(|t| t.1), after.0.map(|t| t.1));
    let mut latencies: Vec<u32> = Vec::with_capacity(stats.iter().map(|s| s.latencies.len()).sum());
    let mut cell = Cell {
        workload: load.workload,
        path,
        conns,
        window: measured.max(Duration::from_millis(1)),
        requests: 0,
        latencies: Vec::new(),
        zonegate_cpu_ticks: zg_user.zip(zg_sys).map(|(u, s)| u + s),
        zonegate_user_ticks: zg_user,
        zonegate_sys_ticks: zg_sys,
        client_cpu_ticks: delta(before.1, after.1),
        device_cpu_ticks: delta(before.2, after.2),
        machine_busy_ticks: delta(before.3, after.3),
        peak_rss_kib,
        exceptions: 0,
        transport_errors: 0,
        first_error: None,
        completed_all: 0,
        writes_all: 0,
        audit_requests,
        audit_not_allowed,
        log_problems,
        interrupted,
    };
    for s in stats {
        latencies.extend_from_slice(&s.latencies);
        cell.completed_all += s.completed;
        cell.writes_all += s.writes;
        cell.exceptions += s.exceptions;
        cell.transport_errors += s.transport_errors;
        if cell.first_error.is_none() {
            cell.first_error = s.first_error;
        }
    }
    latencies.sort_unstable();
    cell.requests = latencies.len() as u64;
    cell.latencies = latencies;
    Some(cell)
}

// ---------------------------------------------------------------------------------------------
// one policy decision, in-process

/// Decisions timed per request kind.
const DECISIONS: u32 = 20_000;

/// What one decision of the conduit's policy costs in this process, per kind of request: what a
/// request costs the first time a connection sends it (repeats come from the connection's
/// decision cache). The interpreter is what the gateway runs; the VM is shown for comparison.
fn policy_costs(site: &zonegate::site::Site, model: &Model) -> String {
    use zonegate::policy::{ConnectionInput, Peer};
    use zonegate::proto::modbus::parse_request;

    let policy = site
        .policy(CONDUIT)
        .unwrap_or_else(|| panic!("zones.yaml: conduit {CONDUIT} has no policy"));
    let peer = |name: &'static str, port: Option<u16>| {
        let asset = model.assets.iter().find(|a| a.name == name).unwrap();
        Peer {
            address: asset.address,
            port,
            zone: &asset.zone,
            asset: Some(&asset.name),
            kind: Some(asset.kind.as_str()),
        }
    };
    let connection = ConnectionInput::new(
        CONDUIT,
        "enforce",
        peer(CLIENT_ASSET, None),
        peer(DEVICE_ASSET, Some(modbus_port(model))),
        site.register_map(DEVICE_ASSET).cloned(),
    );
    let frames: [(&str, &[u8]); 3] = [
        // MBAP: transaction 1, protocol 0, length 6, unit 1; FC03 read 10 registers from 300.
        ("FC03 read", &[0, 1, 0, 0, 0, 6, 1, 0x03, 0x01, 0x2C, 0, 10]),
        // FC06 write register 40 (watchdog heartbeat) = 7.
        ("FC06 heartbeat", &[0, 2, 0, 0, 0, 6, 1, 0x06, 0, 40, 0, 7]),
        // FC16 write 4 registers from 100, 8 bytes: active power 1500.0 kW (i32 15000 x 0.1),
        // reactive power -200.0 kvar (i32 -2000 x 0.1).
        (
            "FC16 two setpoints",
            &[
                0, 3, 0, 0, 0, 15, 1, 0x10, 0, 100, 0, 4, 8, 0x00, 0x00, 0x3A, 0x98, 0xFF, 0xFF,
                0xF8, 0x30,
            ],
        ),
    ];
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..DECISIONS / 10 {
            f();
        }
        let t = Instant::now();
        for _ in 0..DECISIONS {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(DECISIONS)
    };
    let mut gateway = Vec::new();
    let mut vm = Vec::new();
    for (label, bytes) in frames {
        let (frame, _) = parse_request(bytes).unwrap().unwrap();
        let unit = frame.header.unit_id;
        let decision = policy.decide(connection.modbus_input(unit, &frame.body));
        assert!(decision.is_allow(), "{label}: {decision:?}");
        let us = time(&mut || {
            std::hint::black_box(policy.decide(connection.modbus_input(unit, &frame.body)));
        });
        gateway.push(format!("{label} {us:.1} us"));
        let mut evaluator = policy.vm();
        let us = time(&mut || {
            std::hint::black_box(evaluator.decide(connection.modbus_input(unit, &frame.body)));
        });
        vm.push(format!("{us:.1}"));
    }
    format!(
        "- one decision of {} in this process (input built, interpreter; a request a connection repeats comes from its decision cache instead): {}; regorus's VM, which the gateway does not use (docs/decisions/0003-regorus-interpreter-not-vm.md), would take {} us",
        policy.name(),
        gateway.join(", "),
        vm.join(" / ")
    )
}

// ---------------------------------------------------------------------------------------------
// report

fn per_request_us(ticks: Option<u64>, tck: u64, requests: u64) -> Option<f64> {
    let t = ticks?;
    if requests == 0 {
        return None;
    }
    Some(t as f64 * 1e6 / tck as f64 / requests as f64)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn report(cells: &[Cell], tck: u64, device_served: u64, decisions: &str) {
    let direct_of = |w: Workload, conns: usize| {
        cells
            .iter()
            .find(|c| c.path == PathKind::Direct && c.workload == w && c.conns == conns)
    };
    println!(
        "| load | path | conns | req/s | vs direct | p50 us | p99 us | p99.9 us | proxy CPU us/req (user + sys) | machine CPU us/req | added vs direct us/req | proxy peak RSS MiB | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for c in cells {
        let direct = |conns| direct_of(c.workload, conns);
        let proxied = c.path != PathKind::Direct;
        let pcpu = if proxied && c.zonegate_cpu_ticks.is_some() && c.requests > 0 {
            format!(
                "{} ({} + {})",
                fmt_opt(per_request_us(c.zonegate_cpu_ticks, tck, c.requests), 1),
                fmt_opt(per_request_us(c.zonegate_user_ticks, tck, c.requests), 1),
                fmt_opt(per_request_us(c.zonegate_sys_ticks, tck, c.requests), 1)
            )
        } else {
            "-".into()
        };
        let rss = if proxied {
            fmt_opt(c.peak_rss_kib.map(|k| k as f64 / 1024.0), 1)
        } else {
            "-".into()
        };
        let vs = match direct(c.conns) {
            Some(d) if d.requests > 0 => format!("{:.0} %", 100.0 * c.rate() / d.rate()),
            _ => "-".into(),
        };
        let machine = per_request_us(c.machine_busy_ticks, tck, c.requests);
        let added = match direct(c.conns) {
            Some(d) if proxied => machine
                .zip(per_request_us(d.machine_busy_ticks, tck, d.requests))
                .map(|(m, d)| m - d),
            _ => None,
        };
        let mut errors = if c.errors() == 0 {
            "0".to_owned()
        } else {
            format!(
                "**{}** ({} exceptions, {} transport)",
                c.errors(),
                c.exceptions,
                c.transport_errors
            )
        };
        if c.interrupted {
            errors.push_str(" (interrupted)");
        }
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.workload.name(),
            c.path.name(),
            c.conns,
            c.rate(),
            vs,
            c.p50(),
            c.p99(),
            c.p999(),
            pcpu,
            fmt_opt(machine, 1),
            fmt_opt(added, 1),
            rss,
            errors
        );
    }
    println!();

    // Targets (the Modbus issue's), from the numbers above.
    let direct = |conns| direct_of(Workload::Modbus, conns);
    let all_inspected: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.path.inspects() && c.requests > 0)
        .collect();
    let inspected: Vec<&Cell> = all_inspected
        .iter()
        .copied()
        .filter(|c| c.workload == Workload::Modbus)
        .collect();
    if inspected.is_empty() {
        println!("- the Modbus targets: not measured (no inspected Modbus run)");
    }
    // The proxy process's CPU includes kernel work a real gateway does not do: each send runs the
    // receiving peer's TCP stack too (veth delivers in the sender's context). The relay pays the
    // same, so zonegate minus relay is what inspection itself costs.
    let relay_cost: Vec<String> = all_inspected
        .iter()
        .filter_map(|c| {
            let r = cells.iter().find(|r| {
                r.path == PathKind::Relay
                    && r.workload == c.workload
                    && r.conns == c.conns
                    && r.requests > 0
            })?;
            let zg = per_request_us(c.zonegate_cpu_ticks, tck, c.requests)?;
            let relay = per_request_us(r.zonegate_cpu_ticks, tck, r.requests)?;
            Some(format!(
                "{} {} x{} {:.1} us ({zg:.1} - {relay:.1})",
                c.workload.name(),
                c.path.name(),
                c.conns,
                zg - relay
            ))
        })
        .collect();
    if !relay_cost.is_empty() {
        println!(
            "- inspection's own CPU per request (zonegate minus the plain relay): {}",
            relay_cost.join("; ")
        );
    }
    if !inspected.is_empty() {
        let worst_cpu = inspected
            .iter()
            .filter_map(|c| Some((per_request_us(c.zonegate_cpu_ticks, tck, c.requests)?, c)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match worst_cpu {
            Some((us, c)) => println!(
                "- CPU per checked request: {us:.1} us at worst ({} x{}) (target <= 10): {}",
                c.path.name(),
                c.conns,
                verdict(us <= 10.0)
            ),
            None => println!("- CPU per checked request: not measured (no inspected run)"),
        }
        let one: Vec<String> = inspected
            .iter()
            .filter(|c| c.conns == 1)
            .filter_map(|c| {
                let d = direct(1)?;
                let added = i64::from(c.p99()) - i64::from(d.p99());
                Some(format!(
                    "{} {added} us ({}): {}",
                    c.path.name(),
                    c.p99(),
                    verdict(added <= 100)
                ))
            })
            .collect();
        if one.is_empty() {
            println!(
                "- p99 added latency at 1 connection: not measured (needs direct and inspected runs with 1 connection)"
            );
        } else {
            println!(
                "- p99 added latency at 1 connection (target <= 100 us): {}",
                one.join("; ")
            );
        }
        let max_conns = inspected.iter().map(|c| c.conns).max().unwrap_or(0);
        let big: Vec<String> = inspected
            .iter()
            .filter(|c| c.conns == max_conns)
            .filter_map(|c| {
                let d = direct(max_conns)?;
                let ratio = 100.0 * c.rate() / d.rate();
                Some(format!(
                    "{} {ratio:.0} %: {}",
                    c.path.name(),
                    verdict(ratio >= 50.0)
                ))
            })
            .collect();
        if big.is_empty() {
            println!(
                "- throughput at {max_conns} connections vs direct: not measured (needs direct and inspected runs)"
            );
        } else {
            println!(
                "- throughput at {max_conns} connections vs direct (target >= 50 %{}): {}",
                if max_conns == 64 {
                    ""
                } else {
                    "; the target is for 64"
                },
                big.join("; ")
            );
        }
    }
    let errors: u64 = cells.iter().map(Cell::errors).sum();
    if errors == 0 {
        println!("- errors: none (every request was answered and allowed)");
    } else {
        println!("- errors: **{errors}** requests failed:");
        for c in cells.iter().filter(|c| c.errors() > 0) {
            println!(
                "  - {} {} x{}: {}",
                c.workload.name(),
                c.path.name(),
                c.conns,
                c.first_error.as_deref().unwrap_or("?")
            );
        }
    }

    // What else the run saw.
    let mut notes = Vec::new();
    for c in &all_inspected {
        if c.audit_requests < c.writes_all || c.audit_not_allowed > 0 {
            notes.push(format!(
                "{} {} x{}: **audit log has {} request events ({} not `allow`) for {} answered writes** ({} requests in all)",
                c.workload.name(),
                c.path.name(),
                c.conns,
                c.audit_requests,
                c.audit_not_allowed,
                c.writes_all,
                c.completed_all
            ));
        }
    }
    for c in cells {
        for l in c.log_problems.iter().take(3) {
            notes.push(format!(
                "{} {} x{}: zonegate log: {l}",
                c.workload.name(),
                c.path.name(),
                c.conns
            ));
        }
        if c.log_problems.len() > 3 {
            notes.push(format!(
                "{} x{}: ... {} more warnings/errors in zonegate's log",
                c.path.name(),
                c.conns,
                c.log_problems.len() - 3
            ));
        }
    }
    if !notes.is_empty() {
        println!("- observed:");
        for n in notes {
            println!("  - {n}");
        }
    }
    let shares: Vec<(f64, &Cell)> = cells
        .iter()
        .filter_map(|c| Some((c.others_share(tck)?, c)))
        .collect();
    if let Some((max, worst)) = shares.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        let avg = shares.iter().map(|s| s.0).sum::<f64>() / shares.len() as f64;
        let disturbed: Vec<String> = shares
            .iter()
            .filter(|s| s.0 > 0.25)
            .map(|s| format!("{} x{}", s.1.path.name(), s.1.conns))
            .collect();
        println!(
            "- other load on the machine during the windows (CPU time not used by zonegate, client or device, kernel work included): {:.0} % of a CPU on average, {:.0} % at most ({} x{}){}",
            avg * 100.0,
            max * 100.0,
            worst.path.name(),
            worst.conns,
            if disturbed.is_empty() {
                String::new()
            } else {
                format!(
                    "; **disturbed by other processes, repeat on an idle machine**: {}",
                    disturbed.join(", ")
                )
            }
        );
    }
    let (events, answered_inspected) = cells
        .iter()
        .filter(|c| c.path.inspects() && c.workload == Workload::Modbus)
        .fold((0, 0), |(e, a), c| {
            (e + c.audit_requests, a + c.completed_all)
        });
    if answered_inspected > 0 {
        println!(
            "- audit log (Modbus): {events} request events for {answered_inspected} answered inspected requests ({:.0} %; writes are {:.0} % of the mix)",
            100.0 * events as f64 / answered_inspected as f64,
            100.0 / WRITE_EVERY as f64
        );
    }
    println!("{decisions}");
    let answered: u64 = cells
        .iter()
        .filter(|c| c.workload == Workload::Modbus)
        .map(|c| c.completed_all)
        .sum();
    println!(
        "- the Modbus device answered {device_served} requests in all (the load generator counted {answered} answered, plus readiness probes)"
    );
}

fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some(RELAY_ARG) {
        let ports: Option<Vec<u16>> = argv
            .next()
            .and_then(|p| p.split(',').map(|p| p.parse().ok()).collect());
        relay_main(&ports.unwrap_or_else(|| panic!("usage: bench {RELAY_ARG} PORT,...")));
    }
    let args = parse_args();
    let zonegate = zonegate_testkit::zonegate_bin();
    // Ctrl-C ends the current cell early and skips the rest; the plant is removed on the way out.
    {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            current_thread_runtime().block_on(async move {
                let mut int =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
                let _ = tx.send(());
                if let (Ok(int), Ok(term)) = (int.as_mut(), term.as_mut()) {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    eprintln!("bench: interrupted; stopping and removing the plant");
                    STOP.store(true, Ordering::Relaxed);
                }
            });
        });
        let _ = rx.recv();
    }

    let shipped = PathBuf::from(format!("{REPO}/zones.yaml"));
    let site = zonegate::site::Site::load(&shipped).unwrap_or_else(|e| panic!("{e}"));
    let model = site.model.clone();
    let port = modbus_port(&model);
    let client = asset_addr(&model, CLIENT_ASSET);
    let device_addr = SocketAddr::new(asset_addr(&model, DEVICE_ASSET), port);
    let dir = tempfile::Builder::new()
        .prefix("zonegate-bench-")
        .tempdir()
        .unwrap();
    let variants: Vec<(PathKind, PathBuf)> = args
        .paths
        .iter()
        .map(|p| (*p, zones_variant(dir.path(), *p, port)))
        .collect();
    let tck = clock_ticks();

    eprintln!("bench: building the plant");
    let plant = Plant::build(&model);
    let device_zone = model
        .assets
        .iter()
        .find(|a| a.name == DEVICE_ASSET)
        .map(|a| a.zone.clone())
        .unwrap();
    let client_zone = model
        .assets
        .iter()
        .find(|a| a.name == CLIENT_ASSET)
        .map(|a| a.zone.clone())
        .unwrap();
    let device = start_device(&plant.zone_ns(&device_zone), device_addr);
    let modbus_stat = format!("/proc/self/task/{}/stat", device.tid);
    let modbus_load = LoadSpec {
        workload: Workload::Modbus,
        ns: plant.zone_ns(&client_zone),
        src: client,
        dst: device_addr,
    };
    // OPC UA: the asyncua server of the tests as cnc-1, an OPC UA client as the HMI.
    let opcua = args.protocols.contains(&"opcua");
    let mut opcua_server = None;
    let mut opcua_cells: Vec<(Workload, PathKind, PathBuf)> = Vec::new();
    let opcua_device = SocketAddr::new(asset_addr(&model, OPCUA_DEVICE_ASSET), OPCUA_PORT);
    if opcua {
        let enforce = zones_variant(dir.path(), PathKind::Enforce, port);
        for path in args.paths.iter().filter(|p| **p != PathKind::Monitor) {
            let zones = opcua_zones_variant(dir.path(), *path, &enforce);
            for w in [Workload::OpcUaRead, Workload::OpcUaWrite] {
                opcua_cells.push((w, *path, zones.clone()));
            }
        }
        opcua_server = Some(OpcUaServer::start(
            &plant.zone_ns(&zone_of(&model, OPCUA_DEVICE_ASSET)),
            opcua_device,
        ));
    }
    let opcua_stat = opcua_server
        .as_ref()
        .map(|s| format!("/proc/{}/stat", s.pid))
        .unwrap_or_default();
    let opcua_load = |workload| LoadSpec {
        workload,
        ns: plant.zone_ns(&zone_of(&model, OPCUA_CLIENT_ASSET)),
        src: asset_addr(&model, OPCUA_CLIENT_ASSET),
        dst: opcua_device,
    };
    let modbus = args.protocols.contains(&"modbus");

    // Rounds interleave the paths, so that a slow spell of the machine (other tenants of its
    // host) weighs on all of them alike; each cell's figures pool its rounds.
    let mut cells: Vec<Cell> = Vec::new();
    'outer: for round in 1..=args.rounds {
        for &conns in &args.connections {
            let modbus_cells = variants
                .iter()
                .filter(|_| modbus)
                .map(|(path, zones)| (Workload::Modbus, *path, zones.clone()));
            let opcua_cells = opcua_cells
                .iter()
                .filter(|_| conns <= OPCUA_MAX_CONNECTIONS)
                .cloned();
            for (workload, path, zones) in modbus_cells.chain(opcua_cells) {
                if stopped() {
                    break 'outer;
                }
                eprintln!(
                    "bench: round {round}/{}: {} {} x{conns}: {} s (+{} s warm-up)",
                    args.rounds,
                    workload.name(),
                    path.name(),
                    args.seconds,
                    WARMUP.as_secs()
                );
                let (load, stat) = match workload {
                    Workload::Modbus => (modbus_load.clone(), modbus_stat.as_str()),
                    w => (opcua_load(w), opcua_stat.as_str()),
                };
                let cell = run_cell(
                    &plant,
                    zonegate,
                    &zones,
                    dir.path(),
                    path,
                    conns,
                    args.seconds,
                    &load,
                    stat,
                );
                let Some(cell) = cell else { continue };
                match cells.iter_mut().find(|c| {
                    c.workload == cell.workload && c.path == cell.path && c.conns == cell.conns
                }) {
                    Some(pooled) => pooled.absorb(cell),
                    None => cells.push(cell),
                }
            }
        }
    }

    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## zonegate benchmark: Modbus/TCP {CLIENT_ASSET} ({client}) -> {DEVICE_ASSET} ({device_addr}), conduit {CONDUIT}\n"
    );
    println!(
        "{cpus} CPUs, Linux {kernel}; {} round(s) of {} s measured per cell after {} s warm-up, interleaved and pooled; closed loop; requests: FC03 {READ_QTY} registers at {READ_ADDR}, every {WRITE_EVERY}th FC06 register {HEARTBEAT} with a new value (all allowed by policy); direct = the conduit as plain tcp/{port} forwarded by the kernel; relay = a plain transparent TCP relay (tokio, no inspection) on zonegate's divert port; CPU from /proc (CLK_TCK {tck}) over the measured window; proxy CPU = the relay's or zonegate's process, which here also pays for the peers' TCP receive (veth delivers in the sender's context); machine CPU = all CPUs' busy time; added = machine CPU minus the direct path's, what the proxy path costs on top of kernel forwarding\n",
        args.rounds,
        args.seconds,
        WARMUP.as_secs()
    );
    // Measured after the cells, on this otherwise idle process.
    let decisions = policy_costs(&site, &model);
    report(
        &cells,
        tck,
        device.service.served.load(Ordering::Relaxed),
        &decisions,
    );
    drop(opcua_server);
    drop(plant);
    if stopped() {
        std::process::exit(130);
    }
}

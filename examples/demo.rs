//! The demo plant: the shipped zones.yaml (or another) enforced by `zonegate run` in a gateway
//! namespace, with one namespace per zone. It opens a few connections across the gateway, shows
//! which pass and which are dropped, sends Modbus and OPC UA requests through the inspection
//! proxy, prints their audit events and the kernel's counters, and removes everything.
//!
//! Run it through `scripts/demo` (it installs what is needed and runs as root):
//!     scripts/demo            # show, then clean up
//!     scripts/demo --hold     # keep the plant up until Ctrl-C, to explore with `ip netns exec`
//!
//! Its daemon keeps everything in a directory of its own (`$TMPDIR/zonegate-demo-PID`: audit
//! log, state, control socket), never the host's defaults, so that it does not meet a zonegate
//! the host runs. Ctrl-C (SIGINT) or SIGTERM at any point removes all it made: the daemon, the
//! namespaces (`zgtPID-*`) and that directory.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use zonegate_testkit::daemon::{run_args, spawn_run};
use zonegate_testkit::plant::{Plant, Probe, tcp_echo, tcp_probe, udp_echo, udp_probe};

const WAIT: Duration = Duration::from_millis(1500);

/// OPC UA steps of one HMI session, what they show, and whether opcua.rego allows them.
type OpcUaCase = (&'static str, fn() -> serde_json::Value, bool);

const OPCUA_CASES: &[OpcUaCase] = &[
    (
        "read the feed override",
        || serde_json::json!({"op": "read", "node": "ns=2;s=Machine.FeedOverride"}),
        true,
    ),
    (
        "set the feed override to 110 % (within 0..120)",
        || serde_json::json!({"op": "write", "node": "ns=2;s=Machine.FeedOverride", "value": 110.0, "type": "Double"}),
        true,
    ),
    (
        "change the tool offset (not writable from operations)",
        || serde_json::json!({"op": "write", "node": "ns=2;s=Machine.ToolOffset", "value": 0.5, "type": "Double"}),
        false,
    ),
    (
        "call Unlock (not an allowed method)",
        || serde_json::json!({"op": "call", "object": "ns=2;s=Machine", "method": "ns=2;s=Machine.Unlock", "args": []}),
        false,
    ),
    (
        "select released program 1001, same session",
        || serde_json::json!({"op": "call", "object": "ns=2;s=Machine", "method": "ns=2;s=Machine.SelectProgram", "args": [{"value": 1001, "type": "UInt32"}]}),
        true,
    ),
];

struct Case {
    what: &'static str,
    from_zone: &'static str,
    src: &'static str,
    dst: &'static str,
    udp: bool,
    expect_pass: bool,
}

const CASES: &[Case] = &[
    Case {
        what: "office ERP reads the historian mirror (conduit historian-mirror-web)",
        from_zone: "enterprise",
        src: "10.40.0.10",
        dst: "10.35.0.20:443",
        udp: false,
        expect_pass: true,
    },
    Case {
        what: "site historian replicates to the DMZ (historian-replication)",
        from_zone: "operations",
        src: "10.30.0.20",
        dst: "10.35.0.20:5450",
        udp: false,
        expect_pass: true,
    },
    Case {
        what: "DNC server sends an NC program to cnc-1 (dnc-programs)",
        from_zone: "operations",
        src: "10.30.0.30",
        dst: "10.22.0.11:8193",
        udp: false,
        expect_pass: true,
    },
    Case {
        what: "BESS controller sends syslog to the historian (bess-syslog)",
        from_zone: "bess",
        src: "10.21.0.10",
        dst: "10.30.0.20:514",
        udp: true,
        expect_pass: true,
    },
    Case {
        what: "office ERP tries the DMZ on an undeclared port",
        from_zone: "enterprise",
        src: "10.40.0.10",
        dst: "10.35.0.20:8443",
        udp: false,
        expect_pass: false,
    },
    Case {
        what: "DMZ historian connects back into the office (reverse direction)",
        from_zone: "dmz",
        src: "10.35.0.20",
        dst: "10.40.0.10:443",
        udp: false,
        expect_pass: false,
    },
    Case {
        what: "office ERP goes straight to the BESS controller (no conduit)",
        from_zone: "enterprise",
        src: "10.40.0.10",
        dst: "10.21.0.10:502",
        udp: false,
        expect_pass: false,
    },
    Case {
        what: "HMI tries the DNC port on cnc-1 (only dnc-server may)",
        from_zone: "operations",
        src: "10.30.0.11",
        dst: "10.22.0.11:8193",
        udp: false,
        expect_pass: false,
    },
];

/// Modbus requests from SCADA (10.30.0.10) to inverter-1 (10.21.0.11), judged by policies/bess.rego.
const MODBUS_CASES: &[(&str, &[&str], bool)] = &[
    (
        "read the inverter's measurements",
        &["read-holding", "300", "3"],
        true,
    ),
    (
        "write the watchdog heartbeat",
        &["write-register", "40", "1"],
        true,
    ),
    (
        "set active power to 1500 kW (within -2500..2500)",
        &["write-registers", "100", "0", "15000"],
        true,
    ),
    (
        "set active power to 3000 kW (outside the rating)",
        &["write-registers", "100", "0", "30000"],
        false,
    ),
    (
        "open the grid disconnect (not whitelisted)",
        &["write-register", "104", "1"],
        false,
    ),
    (
        "FC 08 diagnostics (restart communications)",
        &["diagnostics", "1"],
        false,
    ),
];

/// Set once SIGINT or SIGTERM arrived: the demo stops showing and removes what it made.
static STOPPING: AtomicBool = AtomicBool::new(false);

fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// The demo's own directory (audit log, state, control socket, device journal); removed on drop,
/// so also when the demo panics.
struct DemoDir(PathBuf);

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Takes SIGINT and SIGTERM on one thread, so that no signal kills the demo before it has
/// cleaned up. Called before any other thread starts, so that every thread inherits the blocked
/// mask; children get the default mask back (std resets it when it spawns them).
fn take_stop_signals() -> mpsc::Receiver<Signal> {
    let signals: SigSet = [Signal::SIGINT, Signal::SIGTERM].into_iter().collect();
    signals.thread_block().expect("block SIGINT and SIGTERM");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            STOPPING.store(true, Ordering::SeqCst);
            println!("\n== {signal}: removing the plant");
            let _ = tx.send(signal);
        }
    });
    rx
}

/// Stops the daemon as systemd would (SIGTERM), so that it removes its control socket, and waits
/// up to 5 s for it.
fn stop_daemon(pid: u32, socket: &Path) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() {
    let stop = take_stop_signals();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hold = args.iter().any(|a| a == "--hold");
    let zones = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/zones.yaml")));
    let zonegate = zonegate_testkit::zonegate_bin();
    let model = zonegate::config::load(&zones).unwrap_or_else(|e| panic!("{e}"));
    let dir = DemoDir(std::env::temp_dir().join(format!("zonegate-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap_or_else(|e| panic!("{}: {e}", dir.0.display()));
    let audit_log = dir.0.join("audit.jsonl");
    let socket = dir.0.join("control.sock");

    println!(
        "== building the plant: a gateway and {} zones in network namespaces",
        model.zones.len()
    );
    let plant = Plant::build(&model);
    for z in &model.zones {
        println!(
            "   {:<12} level {:<3} SL-T {}  namespace {}",
            z.name,
            z.level.to_string(),
            z.security_level.value(),
            plant.zone_ns(&z.name)
        );
    }
    println!(
        "   gateway                          namespace {}",
        plant.gateway
    );

    println!(
        "\n== starting `zonegate run {}` in the gateway",
        zones.display()
    );
    println!(
        "   audit log, state and control socket in {}",
        dir.0.display()
    );
    let daemon = spawn_run(
        &plant,
        &run_args(&zones, &audit_log, &dir.0.join("state"), Some(&socket)),
        None,
    );
    let started = Instant::now();
    while !stopping()
        && !plant
            .gateway_cmd(&["nft", "list", "table", "inet", "zonegate"])
            .status
            .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "zonegate did not apply the ruleset"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrong = if stopping() {
        0
    } else {
        show(&plant, &model, zonegate, &dir.0, &audit_log)
    };

    if hold && !stopping() {
        println!("\n== holding the plant; explore it, e.g.:");
        println!(
            "   ip netns exec {} nft list table inet zonegate",
            plant.gateway
        );
        println!(
            "   ip netns exec {} ping -c1 10.21.0.11",
            plant.zone_ns("operations")
        );
        println!("   {zonegate} reload --control-socket {}", socket.display());
        println!("   press Ctrl-C to remove it");
        let _ = stop.recv();
    }
    stop_daemon(daemon, &socket);
    drop(plant);
    drop(dir);
    println!("\n== plant removed");
    if stopping() {
        std::process::exit(130);
    }
    if wrong > 0 {
        eprintln!("{wrong} connection(s) did not behave as zones.yaml says");
        std::process::exit(1);
    }
}

/// Connections, Modbus and OPC UA requests across the running gateway, their audit events and
/// counters; how many did not behave as zones.yaml says. Returns early once the demo is stopping.
fn show(
    plant: &Plant,
    model: &zonegate::config::Model,
    zonegate: &str,
    dir: &Path,
    audit_log: &Path,
) -> usize {
    // A server on every destination, so that "dropped" means the gateway, not a closed port.
    let mut listening: Vec<(bool, SocketAddr)> = Vec::new();
    for c in CASES {
        let dst: SocketAddr = c.dst.parse().unwrap();
        if listening.contains(&(c.udp, dst)) {
            continue;
        }
        listening.push((c.udp, dst));
        let zone = model
            .zones
            .iter()
            .find(|z| z.networks.iter().any(|n| n.contains(&dst.ip())))
            .unwrap();
        let ns = plant.zone_ns(&zone.name);
        if c.udp {
            udp_echo(&ns, dst);
        } else {
            tcp_echo(&ns, dst);
        }
    }

    println!("\n== connections across the gateway");
    let mut wrong = 0;
    for c in CASES {
        let ns = plant.zone_ns(c.from_zone);
        let src: IpAddr = c.src.parse().unwrap();
        let dst: SocketAddr = c.dst.parse().unwrap();
        let probe = if c.udp {
            udp_probe(&ns, src, dst, WAIT)
        } else {
            tcp_probe(&ns, src, dst, WAIT)
        };
        let passed = probe == Probe::Passed;
        let verdict = if passed { "PASSED " } else { "DROPPED" };
        let ok = passed == c.expect_pass;
        if !ok {
            wrong += 1;
        }
        println!(
            "   {verdict} {} {:>15} -> {:<16} {}{}",
            if c.udp { "udp" } else { "tcp" },
            c.src,
            c.dst,
            c.what,
            if ok {
                ""
            } else {
                "   <-- NOT AS zones.yaml SAYS"
            }
        );
    }

    if stopping() {
        return wrong;
    }

    println!(
        "\n== Modbus/TCP through the inspection proxy (pymodbus SCADA -> pymodbus inverter-1)"
    );
    let repo = env!("CARGO_MANIFEST_DIR");
    let python = format!("{repo}/.venv/bin/python");
    let state = dir.join("device.jsonl");
    let mut device = Command::new("ip")
        .args(["netns", "exec", &plant.zone_ns("bess"), &python])
        .arg(format!("{repo}/tests/peers/modbus_device.py"))
        .args([
            "--host",
            "10.21.0.11",
            "--port",
            "502",
            "--profile",
            "bess",
            "--journal",
        ])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the pymodbus device (scripts/setup installs it)");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(device.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    for (what, op, expect_ok) in MODBUS_CASES {
        let out = Command::new("ip")
            .args(["netns", "exec", &plant.zone_ns("operations"), &python])
            .arg(format!("{repo}/tests/peers/modbus_client.py"))
            .args([
                "--host",
                "10.21.0.11",
                "--port",
                "502",
                "--source",
                "10.30.0.10",
                "--unit",
                "1",
                "--timeout",
                "2",
            ])
            .args(*op)
            .output()
            .unwrap();
        let result: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap_or_default())
                .unwrap_or_default();
        let ok = result["ok"] == true;
        let verdict = match (ok, result["exception"].as_u64()) {
            (true, _) => "ALLOWED".to_owned(),
            (false, Some(code)) => format!("REFUSED (exception {code:02x})"),
            (false, None) => format!("FAILED ({})", result["error"]),
        };
        if ok != *expect_ok {
            wrong += 1;
        }
        println!(
            "   {verdict:<22} {what}{}",
            if ok == *expect_ok {
                ""
            } else {
                "   <-- NOT AS policies/bess.rego SAYS"
            }
        );
    }
    let _ = device.kill();
    let _ = device.wait();
    if stopping() {
        return wrong;
    }

    println!(
        "\n== OPC UA through the inspection proxy (asyncua HMI -> asyncua cnc-1, SecurityPolicy None)"
    );
    let mut server = Command::new("ip")
        .args(["netns", "exec", &plant.zone_ns("cnc-cell"), &python])
        .arg(format!("{repo}/tests/peers/opcua_server.py"))
        .args([
            "--host",
            "10.22.0.11",
            "--port",
            "4840",
            "--security",
            "None",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the asyncua server (scripts/setup installs it)");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    let steps: Vec<serde_json::Value> = OPCUA_CASES.iter().map(|(_, step, _)| step()).collect();
    let out = Command::new("ip")
        .args(["netns", "exec", &plant.zone_ns("operations"), &python])
        .arg(format!("{repo}/tests/peers/opcua_client.py"))
        .args([
            "--url",
            "opc.tcp://10.22.0.11:4840/cnc",
            "--bind",
            "10.30.0.11",
            "--timeout",
            "3",
            "--steps",
            &serde_json::Value::from(steps).to_string(),
        ])
        .output()
        .unwrap();
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| !r["step"].is_null())
        .collect();
    for (i, (what, _, expect_ok)) in OPCUA_CASES.iter().enumerate() {
        let result = results.get(i).cloned().unwrap_or_default();
        let ok = result["ok"] == true;
        let verdict = if ok {
            "ALLOWED".to_owned()
        } else {
            format!(
                "REFUSED ({})",
                result["status"].as_str().unwrap_or("no answer")
            )
        };
        if ok != *expect_ok {
            wrong += 1;
        }
        println!(
            "   {verdict:<31} {what}{}",
            if ok == *expect_ok {
                ""
            } else {
                "   <-- NOT AS policies/opcua.rego SAYS"
            }
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    if stopping() {
        return wrong;
    }

    println!(
        "\n== audit events of those requests ({})",
        audit_log.display()
    );
    std::thread::sleep(Duration::from_millis(200));
    for line in std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
    {
        let e: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if e["event"]["action"] == "network-drop" {
            let side = |s: &str| {
                let place = &e["zonegate"][s];
                format!(
                    "{}:{} ({} L{})",
                    e[s]["ip"].as_str().unwrap_or_default(),
                    e[s]["port"],
                    place["zone"].as_str().unwrap_or("no zone"),
                    place["level"]
                )
            };
            println!(
                "   {:<6} {} -> {}  {}",
                "drop",
                side("source"),
                side("destination"),
                e["network"]["transport"].as_str().unwrap_or_default()
            );
        }
        if e["event"]["action"] == "modbus-reads" {
            println!(
                "   {:<6} {} allowed read(s), counted rather than logged one by one",
                "allow", e["modbus"]["allowed_reads"]
            );
        }
        if e["event"]["action"] == "opcua-reads" {
            println!(
                "   {:<6} {} allowed OPC UA read/browse/session request(s), counted",
                "allow", e["opcua"]["allowed_requests"]
            );
        }
        if e["event"]["action"] == "opcua-channel" || e["event"]["action"] == "opcua-request" {
            let what = match e["opcua"]["service"].as_str() {
                Some(service) => format!(
                    "opcua {service} {}",
                    e["opcua"]["nodes"][0].as_str().unwrap_or_default()
                ),
                None => format!(
                    "opcua channel {}",
                    e["opcua"]["security_policy"].as_str().unwrap_or_default()
                ),
            };
            println!(
                "   {:<6} {:<44} {:<30} {}",
                e["zonegate"]["decision"].as_str().unwrap_or_default(),
                what,
                e["rule"]["name"].as_str().unwrap_or_default(),
                e["zonegate"]["reason"].as_str().unwrap_or_default()
            );
        }
        if e["event"]["action"] == "modbus-request" {
            println!(
                "   {:<6} {:<26} {:<22} {}",
                e["zonegate"]["decision"].as_str().unwrap_or_default(),
                e["modbus"]["function"]["name"].as_str().unwrap_or_default(),
                e["rule"]["name"].as_str().unwrap_or_default(),
                e["zonegate"]["reason"].as_str().unwrap_or_default()
            );
        }
    }

    println!("\n== the audit log's hash chain (zonegate audit verify)");
    // The daemon is still writing: check the complete lines written so far.
    let sealed = audit_log.with_extension("verify.jsonl");
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    let _ = std::fs::write(&sealed, complete);
    let out = Command::new(zonegate)
        .args(["audit", "verify"])
        .arg(&sealed)
        .output();
    if let Ok(out) = out {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("   {line}");
        }
        if !out.status.success() {
            wrong += 1;
        }
    }
    let _ = std::fs::remove_file(&sealed);

    println!("\n== counters read back from the kernel (zonegate counters)");
    let out = plant.gateway_cmd(&[zonegate, "counters"]);
    print!("{}", String::from_utf8_lossy(&out.stdout));
    wrong
}

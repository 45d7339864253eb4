//! The BESS bench: a plant with `zonegate run` in its gateway and a pymodbus server as
//! inverter-1, SCADA's pymodbus client and raw frames from the operations zone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub use crate::REPO;
use crate::daemon::run_args;
use crate::plant::Plant;
use crate::shipped_zones;

pub const INVERTER: &str = "10.21.0.11";
pub const SCADA: &str = "10.30.0.10";

pub fn python() -> String {
    let p = format!("{REPO}/.venv/bin/python");
    assert!(
        Path::new(&p).exists(),
        "{p} is missing: run scripts/setup (the README's test command does)"
    );
    p
}

/// A plant with zonegate running on `zones` and one pymodbus BESS device on inverter-1.
pub struct Bench {
    pub plant: Plant,
    pub dir: tempfile::TempDir,
    /// zonegate's audit log.
    pub audit_log: PathBuf,
    /// Process id of `zonegate run` (the last one started).
    pub daemon: u32,
    zones: PathBuf,
    args: Vec<String>,
    env: Vec<String>,
    device: Child,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.device.kill();
        let _ = self.device.wait();
        if self.audit_log.is_file() {
            crate::audit::check_log(&self.audit_log);
        }
    }
}

impl Bench {
    pub fn start(zones: &Path) -> Bench {
        Bench::start_with(zones, None, &[])
    }

    /// With another audit log than the bench's own, and more arguments for `zonegate run`.
    pub fn start_with(zones: &Path, audit_log: Option<&Path>, args: &[&str]) -> Bench {
        Bench::start_env(zones, audit_log, args, &[])
    }

    /// With environment variables (`NAME=value`) for the daemon, too.
    pub fn start_env(zones: &Path, audit_log: Option<&Path>, args: &[&str], env: &[&str]) -> Bench {
        let model = zonegate::config::load(zones).unwrap();
        let plant = Plant::build(&model);
        let dir = tempfile::tempdir().unwrap();
        let audit = audit_log.map_or_else(|| dir.path().join("audit.jsonl"), Path::to_owned);
        let daemon = spawn_daemon(&plant, zones, &audit, dir.path(), args, env);
        let journal = dir.path().join("device.jsonl");
        let mut device = Command::new("ip")
            .args(["netns", "exec", &plant.zone_ns("bess"), &python()])
            .arg(format!("{REPO}/tests/peers/modbus_device.py"))
            .args([
                "--host",
                INVERTER,
                "--port",
                "502",
                "--profile",
                "bess",
                "--journal",
            ])
            .arg(&journal)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(device.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("READY"), "device did not start: {line:?}");
        let bench = Bench {
            plant,
            dir,
            audit_log: audit,
            daemon,
            zones: zones.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: env.iter().map(|a| (*a).to_owned()).collect(),
            device,
        };
        bench.plant.wait_for_ruleset();
        bench
    }

    /// Starts `zonegate run` again (after the last one was killed) with the same zones.yaml and
    /// arguments, its audit events in `audit_log` (a killed daemon's chain ends where it died).
    pub fn restart_daemon(&mut self, audit_log: &Path) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<&str> = self.env.iter().map(String::as_str).collect();
        self.daemon = spawn_daemon(
            &self.plant,
            &self.zones,
            audit_log,
            self.dir.path(),
            &args,
            &env,
        );
    }

    /// One operation on a fresh connection, whatever happens: a connection that cannot be made
    /// is `{"op": "connect", "ok": false, "error": ...}`.
    pub fn attempt(&self, op: &[&str]) -> Value {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.plant.zone_ns("operations"),
                &python(),
            ])
            .arg(format!("{REPO}/tests/peers/modbus_client.py"))
            .args([
                "--host",
                INVERTER,
                "--port",
                "502",
                "--source",
                SCADA,
                "--unit",
                "1",
                "--timeout",
                "2",
            ])
            .args(op)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().next().unwrap_or_else(|| {
            panic!(
                "client printed nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Runs the pymodbus client as SCADA (or `source`) against inverter-1; one JSON result per op.
    pub fn client(&self, source: &str, ops: &[&str]) -> Vec<Value> {
        self.client_in("operations", Some(source), ops)
    }

    fn client_in(&self, zone: &str, source: Option<&str>, ops: &[&str]) -> Vec<Value> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.plant.zone_ns(zone), &python()])
            .arg(format!("{REPO}/tests/peers/modbus_client.py"))
            .args([
                "--host",
                INVERTER,
                "--port",
                "502",
                "--unit",
                "1",
                "--timeout",
                "3",
            ]);
        if let Some(source) = source {
            cmd.args(["--source", source]);
        }
        let out = cmd.args(ops).output().unwrap();
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// One operation on a fresh connection.
    pub fn op(&self, op: &[&str]) -> Value {
        self.client(SCADA, op).into_iter().next().unwrap()
    }

    /// Raw bytes on one connection from SCADA.
    pub fn raw(&self, hex: &[&str]) -> Value {
        self.raw_from("operations", Some(SCADA), hex)
    }

    /// Raw bytes on one connection to inverter-1 from inside its own zone: no gateway on the
    /// path, the device's own answers to compare the gateway's with.
    pub fn raw_direct(&self, hex: &[&str]) -> Value {
        self.raw_from("bess", None, hex)
    }

    /// The pymodbus client as in [`Bench::client`], but from inside inverter-1's own zone (no
    /// gateway on the path).
    pub fn client_direct(&self, ops: &[&str]) -> Vec<Value> {
        self.client_in("bess", None, ops)
    }

    /// `mbpoll` (libmodbus, a C client) against inverter-1: through the gateway from SCADA, or
    /// `direct` from inside the device's zone. Exit status, stdout, stderr.
    pub fn mbpoll(&self, direct: bool, args: &[&str]) -> (i32, String, String) {
        let zone = if direct { "bess" } else { "operations" };
        let out = Command::new("ip")
            .args(["netns", "exec", &self.plant.zone_ns(zone), "mbpoll"])
            .args(["-m", "tcp", "-p", "502", "-a", "1", "-0", "-1", "-o", "2"])
            .args(args)
            .output()
            .expect("mbpoll is missing: run scripts/setup");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn raw_from(&self, zone: &str, source: Option<&str>, hex: &[&str]) -> Value {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.plant.zone_ns(zone), &python()])
            .arg(format!("{REPO}/tests/peers/modbus_raw.py"))
            .args(["--host", INVERTER, "--port", "502", "--timeout", "1"]);
        if let Some(source) = source {
            cmd.args(["--source", source]);
        }
        for h in hex {
            cmd.args(["--hex", h]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "raw failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Process id of the device (pymodbus on inverter-1), e.g. to stop it (`SIGSTOP`: silent).
    pub fn device_pid(&self) -> u32 {
        self.device.id()
    }

    /// Request frames the device received, as its journal recorded them.
    pub fn device_frames(&self) -> Vec<Value> {
        read_lines(&self.dir.path().join("device.jsonl"))
    }

    /// The device's own registers, read from its state file (not through the gateway).
    pub fn device_register(&self, address: usize) -> u64 {
        let state: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("device.jsonl.state")).unwrap(),
        )
        .unwrap();
        state["holding_registers"][address].as_u64().unwrap()
    }

    pub fn audit(&self) -> Vec<Value> {
        crate::audit::events(&self.audit_log)
    }

    /// Waits until the audit log holds an event matching `pred` (the writer is asynchronous).
    pub fn audit_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        crate::audit::wait_for_event(&self.audit_log, what, pred)
    }
}

/// `zonegate run` in the gateway; `env` (`NAME=value`) through env(1), which execs it: the pid
/// is the daemon's. Its control socket is in `dir` unless `args` name one: the host's default
/// belongs to whichever daemon took it first.
fn spawn_daemon(
    plant: &Plant,
    zones: &Path,
    audit: &Path,
    dir: &Path,
    args: &[&str],
    env: &[&str],
) -> u32 {
    let prefix: &[&str] = if env.is_empty() { &[] } else { &["env"] };
    let socket = dir.join("control.sock");
    let own_socket = (!args.contains(&"--control-socket")).then_some(socket.as_path());
    let run = run_args(zones, audit, &dir.join("state"), own_socket);
    plant.spawn_in_gateway(
        &prefix
            .iter()
            .copied()
            .chain(env.iter().copied())
            .chain(run.iter().map(String::as_str))
            .chain(args.iter().copied())
            .collect::<Vec<_>>(),
    )
}

pub fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The shipped zones.yaml with its policy and profile paths made absolute and `edit` applied.
pub fn zones_variant(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(shipped_zones()).unwrap();
    let text = text
        .replace("policy: policies/", &format!("policy: {REPO}/policies/"))
        .replace(
            "register_map: profiles/",
            &format!("register_map: {REPO}/profiles/"),
        );
    let path = dir.join("zones.yaml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

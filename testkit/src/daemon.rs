//! The zonegate daemon as the tests, the benchmark and the soak start it: `zonegate run` in a
//! plant's gateway namespace, with its audit log, state directory and control socket in the
//! run's own directory. [`run_args`] is the one command line; [`Daemon`] owns a process started
//! in the gateway (its stderr in a log file) and stops it (SIGTERM, then SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::plant::Plant;
use crate::zonegate_bin;

/// How long a stopped daemon has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `zonegate run ZONES` with the audit log, the state directory and (unless the caller names its
/// own) the control socket.
pub fn run_args(
    zones: &Path,
    audit_log: &Path,
    state_dir: &Path,
    control_socket: Option<&Path>,
) -> Vec<String> {
    let mut args = vec![
        zonegate_bin().to_owned(),
        "run".to_owned(),
        path(zones),
        "--audit-log".to_owned(),
        path(audit_log),
        "--state-dir".to_owned(),
        path(state_dir),
    ];
    if let Some(socket) = control_socket {
        args.extend(["--control-socket".to_owned(), path(socket)]);
    }
    args
}

fn path(p: &Path) -> String {
    p.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", p.display()))
        .to_owned()
}

/// Starts `run` ([`run_args`], maybe with more arguments) in the gateway namespace, owned by the
/// plant (stopped when it goes), its stderr to `log` if given; returns its pid.
pub fn spawn_run(plant: &Plant, run: &[String], log: Option<&Path>) -> u32 {
    let args: Vec<&str> = run.iter().map(String::as_str).collect();
    match log {
        Some(log) => plant.spawn_in_gateway_logged(&args, log),
        None => plant.spawn_in_gateway(&args),
    }
}

/// A process in the gateway namespace, owned here rather than by the plant, so that it can be
/// watched (alive, pid, log) and stopped before the plant goes.
pub struct Daemon {
    child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Daemon {
    /// `zonegate run zones` with its files in `dir`, each name carrying `suffix`:
    /// `zonegate{suffix}.log` (stderr), `audit{suffix}.jsonl`, `state{suffix}/`,
    /// `control{suffix}.sock`.
    pub fn run(plant: &Plant, zones: &Path, dir: &Path, suffix: &str) -> Daemon {
        let args = run_args(
            zones,
            &Daemon::audit_log(dir, suffix),
            &dir.join(format!("state{suffix}")),
            Some(&dir.join(format!("control{suffix}.sock"))),
        );
        let daemon = Daemon::spawn(plant, &args, &dir.join(format!("zonegate{suffix}.log")));
        daemon.wait_exec("zonegate");
        daemon
    }

    /// The audit log of [`Daemon::run`] with the same `dir` and `suffix`.
    pub fn audit_log(dir: &Path, suffix: &str) -> PathBuf {
        dir.join(format!("audit{suffix}.jsonl"))
    }

    /// Starts `command` (program and arguments) in the gateway namespace, stderr to `log`.
    pub fn spawn(plant: &Plant, command: &[String], log: &Path) -> Daemon {
        let stderr = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", &plant.gateway])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let pid = child.id();
        Daemon {
            child,
            pid,
            log: log.to_owned(),
        }
    }

    /// Waits until `ip netns exec` has exec'd the program (same pid), whose name the kernel cuts
    /// to 15 bytes, so that what is measured of the pid is the program's.
    pub fn wait_exec(&self, program: &str) {
        let comm: String = program.chars().take(15).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now =
                std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
            if now.trim() == comm {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} is {now:?}, not {comm}; its log:\n{}",
                self.pid,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process and returns its log.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log_text()
    }

    /// SIGTERM, [`STOP_GRACE`] to exit, then SIGKILL.
    fn terminate(&mut self) {
        if self.alive()
            && let Ok(pid) = i32::try_from(self.pid)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}

//! zonegate as the shipped unit runs it: as an unprivileged service user (systemd's
//! `DynamicUser=yes`, here a test uid with the unit's ambient capabilities) that reads its secrets
//! from `$CREDENTIALS_DIRECTORY` and cannot read root's 0600 files; and one daemon per control
//! socket, so that a second `zonegate run` on the host leaves the first alone.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::bess::zones_variant;
use support::mgmt::{self, API_KEY, bearer};
use support::plant::Plant;
use support::{shipped_zones, zonegate_bin};

/// The service user of these tests, as systemd's DynamicUser would allocate one (61184-65519).
const SERVICE_UID: u32 = 61234;
/// What zonegate.service grants the daemon (`AmbientCapabilities=`).
const UNIT_CAPS: &str = "+net_admin,+net_raw";
/// The audit chain's HMAC key (at least 16 bytes).
const AUDIT_KEY: &str = "zg-test-audit-key-3f9a61c2d8e4";

/// `args` run as [`SERVICE_UID`] with the unit's capabilities, as systemd starts the service;
/// `env` (`NAME=value`) set for it.
fn as_service_user(env: &[String], args: &[&str]) -> Vec<String> {
    let uid = SERVICE_UID.to_string();
    let mut out: Vec<String> = [
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        &format!("--inh-caps={UNIT_CAPS}"),
        &format!("--ambient-caps={UNIT_CAPS}"),
        "env",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    out.extend(env.iter().cloned());
    out.extend(args.iter().map(|s| (*s).to_owned()));
    out
}

/// [`as_service_user`] as a command, in the root network namespace (for `check`).
fn service_command(env: &[String], args: &[&str]) -> Command {
    let all = as_service_user(env, args);
    let mut cmd = Command::new(&all[0]);
    cmd.args(&all[1..]);
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// 1-based line and column where `needle` first starts in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in the file"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = at - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

/// A directory owned by the service user, mode 0700: what systemd makes of StateDirectory=,
/// LogsDirectory= and RuntimeDirectory= for a dynamic user.
fn service_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).unwrap();
    chown(path, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.to_owned()
}

/// `file` with `content`, owned by `owner` (uid and gid), with `mode`.
fn write_owned(file: &Path, content: &str, owner: u32, mode: u32) {
    std::fs::write(file, content).unwrap();
    chown(file, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The shipped zones.yaml with a management API and a keyed audit chain: `api_key`,
/// `tls_key` and `audit_key` as written in the file (credentials or paths); the certificate
/// and client CA readable files in `dir`; policies and register maps the copies in `installed`
/// ([`installed_copy`]).
fn zones_with_secrets(
    dir: &Path,
    installed: &Path,
    api_key: &str,
    tls_key: &str,
    audit_key: &str,
) -> PathBuf {
    let d = dir.display();
    let api = format!(
        "    tcp_ports: [22, 9443]\n    api:\n      port: {}\n      api_key_file: {api_key}\n      tls:\n        certificate: {d}/server.pem\n        key: {tls_key}\n        client_ca: {d}/ca.pem\n",
        mgmt::API_PORT
    );
    let repo = support::bess::REPO;
    let installed = installed.display();
    zones_variant(dir, |t| {
        t.replace(
            &format!("{repo}/policies/"),
            &format!("{installed}/policies/"),
        )
        .replace(
            &format!("{repo}/profiles/"),
            &format!("{installed}/profiles/"),
        )
        .replacen(
            "    tcp_ports: [22, 9443]     # ssh, zonegate management API\n",
            &api,
            1,
        )
        .replacen(
            "  # key_file: credential:audit-key",
            &format!("  key_file: {audit_key}"),
            1,
        )
    })
}

/// The files the service user runs and reads that live in the checkout (the binary, policies,
/// register maps), copied into `dir`: a checkout may sit below a directory other users cannot
/// enter (CI clones into a 0700 one), where /usr/sbin and /etc/zonegate are open to all.
/// Returns the copied binary; zones.yaml files made afterwards by [`zones_with_secrets`] name
/// the copies.
fn installed_copy(dir: &Path) -> PathBuf {
    let open = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    for sub in ["policies", "profiles"] {
        let to = dir.join(sub);
        std::fs::create_dir_all(&to).unwrap();
        open(&to, 0o755);
        for entry in std::fs::read_dir(Path::new(support::bess::REPO).join(sub)).unwrap() {
            let from = entry.unwrap().path();
            if from.is_file() {
                let copy = to.join(from.file_name().unwrap());
                std::fs::copy(&from, &copy).unwrap();
                open(&copy, 0o644);
            }
        }
    }
    let bin = dir.join("zonegate");
    std::fs::copy(zonegate_bin(), &bin).unwrap();
    open(&bin, 0o755);
    bin
}

/// Lets the service user traverse `dir` and read its certificates, as /etc/zonegate is.
fn readable_config_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["zones.yaml", "server.pem", "ca.pem"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// The uid a process runs as (its real uid, from /proc).
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Acceptance: the service user reads its API key, the API's TLS key and the audit key through
/// `$CREDENTIALS_DIRECTORY` (files it owns, mode 0400, as systemd makes them), `check` passes
/// for it and the daemon starts: the API answers with the key and the audit chain is sealed
/// with the audit key. The same secrets as root's 0600 files fail for it, in `check` and `run`,
/// at the line and column that names each.
#[test]
fn service_user_reads_its_secrets_as_credentials_and_not_roots_files() {
    support::plant::require_root();
    let dir = tempfile::tempdir().unwrap();
    let installed_bin = installed_copy(dir.path());
    let bin = installed_bin.to_str().unwrap();
    let config = dir.path().join("etc");
    std::fs::create_dir(&config).unwrap();
    mgmt::make_credentials(&config);
    let server_key = std::fs::read_to_string(config.join("server.key")).unwrap();

    // As systemd's LoadCredential= leaves them: a directory only the service user may read.
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for (name, content) in [
        ("api-key", format!("{API_KEY}\n")),
        ("api-tls-key", server_key.clone()),
        ("audit-key", format!("{AUDIT_KEY}\n")),
    ] {
        write_owned(&creds.join(name), &content, SERVICE_UID, 0o400);
    }
    chown(&creds, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // The same secrets as files root keeps to itself.
    for (name, content) in [
        ("api.key", format!("{API_KEY}\n")),
        ("audit.key", format!("{AUDIT_KEY}\n")),
    ] {
        write_owned(&config.join(name), &content, 0, 0o600);
    }
    std::fs::set_permissions(
        config.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let c = config.display();
    let roots = zones_with_secrets(
        &config,
        dir.path(),
        &format!("{c}/api.key"),
        &format!("{c}/server.key"),
        &format!("{c}/audit.key"),
    );
    let roots_text = std::fs::read_to_string(&roots).unwrap();
    let roots = config.join("zones-root-files.yaml");
    std::fs::write(&roots, &roots_text).unwrap();
    let zones = zones_with_secrets(
        &config,
        dir.path(),
        "credential:api-key",
        "credential:api-tls-key",
        "credential:audit-key",
    );
    readable_config_dir(&config);
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cred_env = format!("CREDENTIALS_DIRECTORY={}", creds.display());

    // Root's 0600 files: `check` names each one where zones.yaml names it.
    let out = service_command(&[], &[bin, "check", roots.to_str().unwrap()])
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for (field, value) in [
        (
            "gateway.management.api.api_key_file",
            format!("{c}/api.key"),
        ),
        ("gateway.management.api.tls.key", format!("{c}/server.key")),
        ("audit.key_file", format!("{c}/audit.key")),
    ] {
        let (line, column) = position(&roots_text, &format!(": {value}"));
        let at = format!("{}:{line}:{}: error: {field}", roots.display(), column + 2);
        assert!(
            said.lines().any(|l| l.starts_with(&at)
                && l.contains(&format!(
                    "cannot be read by uid {SERVICE_UID}: permission denied"
                ))),
            "expected a line starting `{at}` that says uid {SERVICE_UID} cannot read it:\n{said}"
        );
    }

    let plant = Plant::build(&zonegate::config::load(&shipped_zones()).unwrap());
    let state = service_dir(&dir.path().join("state"));
    let run = |zones: &Path, env: &[String]| {
        as_service_user(
            env,
            &[
                bin,
                "run",
                zones.to_str().unwrap(),
                "--audit-log",
                state.join("audit.jsonl").to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
                "--control-socket",
                state.join("control.sock").to_str().unwrap(),
            ],
        )
    };
    // `run` refuses the same way, before it touches anything.
    let args = run(&roots, &[]);
    let refused = plant.gateway_cmd(&strs(&args));
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "audit.key_file: {c}/audit.key cannot be read by uid {SERVICE_UID}"
        )),
        "{said}"
    );
    assert!(!state.join("audit.jsonl").exists());

    // Credentials: `check` (the unit's ExecStartPre=) passes for the service user ...
    let out = service_command(
        std::slice::from_ref(&cred_env),
        &[bin, "check", zones.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // ... and the daemon starts as that user.
    let log = dir.path().join("zonegate.log");
    let args = run(&zones, &[cred_env]);
    let pid = plant.spawn_in_gateway_logged(&strs(&args), &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reply = loop {
        let reply = mgmt::get(&plant, &config, "/status", &["-H", &bearer(API_KEY)]);
        if reply.status == 200 {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "the API did not answer with the key ({reply:?}); zonegate's log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reply.body.contains("\"zones\""), "{}", reply.body);
    assert_eq!(
        uid_of(pid),
        Some(SERVICE_UID),
        "zonegate runs as the service user"
    );
    assert_eq!(
        mgmt::get(&plant, &config, "/status", &["-H", &bearer("not-the-key")]).status,
        401
    );
    plant.wait_for_ruleset();

    // The audit chain is sealed with the audit key from the credential: it verifies with it.
    let audit = state.join("audit.jsonl");
    let started = support::audit::wait_for_event(&audit, "daemon-start", |e| {
        e["event"]["action"] == "daemon-start"
    });
    assert_eq!(
        started["zonegate"]["chain"]["alg"], "hmac-sha256",
        "{started}"
    );
    let key = dir.path().join("audit-key-copy");
    std::fs::write(&key, AUDIT_KEY).unwrap();
    let complete = dir.path().join("audit-complete.jsonl");
    let logged = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&complete, &logged[..=logged.rfind('\n').unwrap()]).unwrap();
    let verify = Command::new(zonegate_bin())
        .args(["audit", "verify", "--key-file"])
        .arg(&key)
        .arg(&complete)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("hmac-sha256"), "{}", text(&verify));
}

/// `zonegate run` in the plant's gateway with the default control socket: systemd's
/// `$RUNTIME_DIRECTORY/control.sock`, here in `runtime`. Its audit log and state in `dir/NAME`.
fn daemon_args(runtime: &Path, dir: &Path, name: &str) -> Vec<String> {
    vec![
        "env".into(),
        "-u".into(),
        "ZONEGATE_CONTROL_SOCKET".into(),
        format!("RUNTIME_DIRECTORY={}", runtime.display()),
        zonegate_bin().into(),
        "run".into(),
        shipped_zones().display().to_string(),
        "--audit-log".into(),
        dir.join(format!("{name}.jsonl")).display().to_string(),
        "--state-dir".into(),
        dir.join(name).display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `zonegate reload` on the default socket in `runtime`.
fn reload(runtime: &Path) -> Output {
    Command::new(zonegate_bin())
        .arg("reload")
        .env_remove("ZONEGATE_CONTROL_SOCKET")
        .env("RUNTIME_DIRECTORY", runtime)
        .output()
        .unwrap()
}

/// The handle of `table inet zonegate` in the gateway: a new one after every apply (the
/// transaction deletes and adds the table).
fn table_handle(plant: &Plant) -> String {
    let out = plant.gateway_cmd(&["nft", "-a", "list", "tables"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("table inet zonegate"))
        .unwrap_or_else(|| panic!("no table inet zonegate: {}", text(&out)))
        .to_owned()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Acceptance: a second `zonegate run` with the default socket, while one runs on the host,
/// exits with an error naming `--control-socket` and touches nothing (the first keeps its
/// ruleset and still answers `zonegate reload`). A stopped daemon removes its socket; a killed
/// one leaves a stale socket, which the next daemon replaces.
#[test]
fn a_second_daemon_leaves_the_first_and_its_control_socket_alone() {
    let plant = Plant::build(&zonegate::config::load(&shipped_zones()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    let socket = runtime.join("control.sock");
    let first = plant.spawn_in_gateway_logged(
        &strs(&daemon_args(&runtime, dir.path(), "first")),
        &dir.path().join("first.log"),
    );
    plant.wait_for_ruleset();
    wait_until(
        "the first daemon made no control socket",
        Duration::from_secs(10),
        || socket.exists(),
    );
    let applied = table_handle(&plant);

    let mut second = Command::new("ip")
        .args(["netns", "exec", &plant.gateway])
        .args(daemon_args(&runtime, dir.path(), "second"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = second.kill();
            let out = second.wait_with_output().unwrap();
            panic!("the second daemon kept running:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "control socket {}: a zonegate daemon (pid {first}) already answers on it",
            socket.display()
        )) && said.contains("--control-socket"),
        "{said}"
    );
    // Nothing of the second's: no audit log, no state, no new ruleset.
    assert!(!dir.path().join("second.jsonl").exists());
    assert!(!dir.path().join("second").exists());
    assert_eq!(table_handle(&plant), applied);
    let answer = reload(&runtime);
    assert!(answer.status.success(), "{}", text(&answer));
    assert!(text(&answer).contains("reloaded"), "{}", text(&answer));

    // Stopped, the first removes its socket.
    kill(Pid::from_raw(first as i32), Signal::SIGTERM).unwrap();
    wait_until(
        "the stopped daemon left its control socket behind",
        Duration::from_secs(10),
        || !socket.exists(),
    );

    // Killed, a daemon cannot: the next one replaces the stale socket.
    let third = plant.spawn_in_gateway(&strs(&daemon_args(&runtime, dir.path(), "third")));
    wait_until(
        "the third daemon made no control socket",
        Duration::from_secs(20),
        || socket.exists(),
    );
    kill(Pid::from_raw(third as i32), Signal::SIGKILL).unwrap();
    wait_until(
        "the killed daemon is still there",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{third}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        },
    );
    assert!(socket.exists(), "a killed daemon cannot remove its socket");
    assert!(!reload(&runtime).status.success());
    let log = dir.path().join("fourth.log");
    plant.spawn_in_gateway_logged(&strs(&daemon_args(&runtime, dir.path(), "fourth")), &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reload(&runtime).status.success() {
        assert!(
            Instant::now() < deadline,
            "the fourth daemon did not take the stale socket; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

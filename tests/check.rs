//! `zonegate check` as an operator runs it: the shipped example passes, a risky file passes with a
//! warning, and every file under `tests/data/broken/` fails with an editor-style
//! `FILE:LINE:COLUMN: error:` line that points at its one mistake.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// One broken file, where `check` must point, and a distinctive part of what it must say there.
/// A column is where the offending value (or key) starts; file line 1 is the comment naming the
/// mistake.
struct Broken {
    file: &'static str,
    line: u64,
    column: u64,
    message: &'static str,
}

const fn broken(file: &'static str, line: u64, column: u64, message: &'static str) -> Broken {
    Broken {
        file,
        line,
        column,
        message,
    }
}

const BROKEN: &[Broken] = &[
    broken("unknown-field.yaml", 27, 5, "unknown field `securty_level`"),
    broken(
        "duplicate-zone.yaml",
        30,
        3,
        "duplicate mapping key: operations",
    ),
    broken(
        "duplicate-asset-field.yaml",
        48,
        5,
        "duplicate mapping key: address",
    ),
    broken(
        "overlapping-networks.yaml",
        28,
        30,
        "network fd5a::/16 overlaps fd5a:30::/64 of zone `operations`",
    ),
    broken(
        "asset-outside-zone.yaml",
        38,
        14,
        "address 10.31.0.20 is outside zone `operations`",
    ),
    broken(
        "conduit-unknown-zone.yaml",
        53,
        9,
        "conduit `scada-bess`: unknown zone `battery`",
    ),
    broken(
        "conduit-unknown-asset.yaml",
        55,
        49,
        "unknown asset `inverter-2` in destinations",
    ),
    broken(
        "conduit-same-zone.yaml",
        61,
        9,
        "conduit `inverter-controller` starts and ends in zone `bess`",
    ),
    broken(
        "destination-in-other-zone.yaml",
        55,
        37,
        "asset `historian` in destinations is in zone `operations`, not `bess`",
    ),
    broken(
        "level-fractional.yaml",
        26,
        12,
        "level 2.5 is not a Purdue level",
    ),
    broken("level-6.yaml", 14, 12, "level 6 is not a Purdue level"),
    broken(
        "security-level-5.yaml",
        27,
        21,
        "security_level 5 is outside IEC 62443 SL 1-4",
    ),
    broken(
        "service-port-out-of-range.yaml",
        64,
        25,
        "service `tcp/70000`: `70000` is not a port",
    ),
    broken(
        "service-unknown-protocol.yaml",
        56,
        30,
        "service `http`: unknown protocol `http`",
    ),
    broken(
        "network-host-bits.yaml",
        22,
        16,
        "network `10.30.0.1/24` has host bits set",
    ),
    broken(
        "unknown-asset-kind.yaml",
        47,
        11,
        "asset `inverter-1`: unknown kind `inverter`",
    ),
    // The parser notices the open `[` only at the next line's `:`.
    broken(
        "syntax-unclosed-bracket.yaml",
        56,
        13,
        "illegal placement of ':' indicator",
    ),
    broken(
        "syntax-bad-indent.yaml",
        39,
        10,
        "mapping values are not allowed in this context",
    ),
    // The message does not name the field; the position does.
    broken(
        "wrong-type.yaml",
        27,
        21,
        "expected a whole number from 0 to 255",
    ),
    broken(
        "wrong-type-port.yaml",
        9,
        17,
        "expected a whole number from 0 to 65535",
    ),
    // Points at the zone's last field, not at the zone.
    broken("missing-field.yaml", 28, 5, "missing field `level`"),
    broken(
        "inspection-missing.yaml",
        50,
        3,
        "conduit `scada-bess` carries deep-inspected services but names no policy",
    ),
    broken(
        "api-port-not-admitted.yaml",
        11,
        13,
        "the management API port 9443 is not one of gateway.management.tcp_ports",
    ),
    broken(
        "api-without-authentication.yaml",
        11,
        7,
        "gateway.management.api names no way to authenticate clients",
    ),
    broken(
        "syslog-tls-without-ca.yaml",
        69,
        18,
        "a tls syslog receiver needs `ca`",
    ),
    broken(
        "syslog-unknown-transport.yaml",
        70,
        18,
        "unknown syslog transport `kafka`",
    ),
    broken(
        "inspection-bad-mode.yaml",
        57,
        52,
        "unknown inspection mode `audit`",
    ),
    broken(
        "quarantine-bad-duration.yaml",
        57,
        77,
        "conduit `scada-bess`: quarantine.within `10 parsecs` is not a duration",
    ),
    broken(
        "quarantine-after-zero.yaml",
        57,
        66,
        "conduit `scada-bess`: quarantine.after 0 is outside 1-100",
    ),
    broken(
        "quarantine-too-long.yaml",
        57,
        87,
        "conduit `scada-bess`: quarantine.for `30d` is outside 1s-7days",
    ),
    broken(
        "quarantine-unknown-field.yaml",
        57,
        82,
        "unknown field `duration`",
    ),
    broken("asset-critical-not-bool.yaml", 36, 15, "invalid boolean"),
    broken(
        "failure-mode-unknown.yaml",
        5,
        17,
        "unknown gateway.failure_mode `fail-open`",
    ),
    broken(
        "inspection-on-l4-conduit.yaml",
        65,
        17,
        "has `inspection:` but no modbus or opcua service",
    ),
    broken(
        "opcua-policy-without-opcua.yaml",
        57,
        60,
        "conduit `scada-bess` has `inspection.opcua_policy` but no opcua service",
    ),
    broken(
        "limits-out-of-range.yaml",
        5,
        27,
        "limits.connections_per_source 0 is out of range",
    ),
    broken(
        "limits-duration-without-unit.yaml",
        5,
        20,
        "limits.request_timeout `5x` is not a duration",
    ),
    broken(
        "egress-inspected-service.yaml",
        12,
        52,
        "egress peer `inverter-1`: modbus/502 is inspected between zones",
    ),
    broken(
        "write-rate-zero.yaml",
        58,
        86,
        "conduit `scada-bess`: inspection.write_rate.per_second 0 is out of range",
    ),
];

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn check(file: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zonegate"))
        .arg("check")
        .arg(file)
        .output()
        .expect("run zonegate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn broken_files_are_rejected_at_the_mistake() {
    let mut failures = Vec::new();
    for case in BROKEN {
        let path = data("broken").join(case.file);
        let out = check(&path);
        let stderr = text(&out.stderr);
        let at = format!("{}:{}:{}: error:", path.display(), case.line, case.column);
        let mut wrong = Vec::new();
        if out.status.code() != Some(1) {
            wrong.push(format!("exit status {}, expected 1", out.status));
        }
        if !stderr
            .lines()
            .any(|l| l.starts_with(&at) && l.contains(case.message))
        {
            wrong.push(format!(
                "no line starting `{at}` that contains `{}`",
                case.message
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr:\n{}",
                case.file,
                wrong.join("; "),
                indent(&stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} broken files misreported:\n\n{}",
        failures.len(),
        BROKEN.len(),
        failures.join("\n\n")
    );
}

/// A broken file added without a table row would otherwise never be checked.
#[test]
fn every_broken_file_is_in_the_table() {
    let mut on_disk: Vec<String> = std::fs::read_dir(data("broken"))
        .expect("list tests/data/broken")
        .map(|e| {
            e.expect("read entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = BROKEN.iter().map(|c| c.file.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "tests/data/broken and BROKEN differ");
}

#[test]
fn shipped_example_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/zones.yaml"));
    let out = check(path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        indent(&text(&out.stderr))
    );
    assert!(
        text(&out.stdout).contains("ok:"),
        "stdout: {}",
        text(&out.stdout)
    );
}

/// Legal, so exit 0, but the level 4 to level 1 shortcut must be pointed out where it is written.
#[test]
fn enterprise_to_control_conduit_warns() {
    let path = data("warn/enterprise-to-control.yaml");
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", indent(&stderr));
    // 36:3 is the conduit's name, where a reader looks for it.
    let at = format!("{}:36:3: warning:", path.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&at) && l.contains("reaches level 1 (`control`) directly")),
        "expected a line starting `{at}` about the level 4 to 1 conduit; stderr:\n{}",
        indent(&stderr)
    );
    assert!(
        text(&out.stdout).contains("ok:"),
        "stdout: {}",
        text(&out.stdout)
    );
}

#[test]
fn missing_file_is_named() {
    let path = data("no-such-zones.yaml");
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", indent(&stderr));
    assert!(
        stderr.contains(&format!("{}: cannot read", path.display())),
        "stderr:\n{}",
        indent(&stderr)
    );
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// One mistake, one error: a rejected network or asset must not make everything that refers to it
/// look wrong too.
#[test]
fn one_mistake_gives_one_error() {
    for file in [
        "network-host-bits.yaml",
        "unknown-asset-kind.yaml",
        "conduit-unknown-zone.yaml",
    ] {
        let path = data(&format!("broken/{file}"));
        let stderr = text(&check(&path).stderr);
        let errors = stderr.lines().filter(|l| l.contains(": error: ")).count();
        assert_eq!(errors, 1, "{file}:\n{}", indent(&stderr));
    }
}

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// 1-based line and column where `needle` starts in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` is not in the file"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = at - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

/// The shipped zones.yaml in `dir`, its policies and register maps named by absolute path, with
/// a management API (`api_key`, certificate, TLS key, client CA as written), an audit key and a
/// TLS syslog receiver whose CA is `syslog_ca`.
fn zones_naming(
    dir: &Path,
    api_key: &str,
    [certificate, tls_key, client_ca]: [&str; 3],
    audit_key: &str,
    syslog_ca: &str,
) -> (PathBuf, String) {
    let text = std::fs::read_to_string(format!("{REPO}/zones.yaml"))
        .unwrap()
        .replace("policy: policies/", &format!("policy: {REPO}/policies/"))
        .replace(
            "register_map: profiles/",
            &format!("register_map: {REPO}/profiles/"),
        )
        .replacen(
            "    tcp_ports: [22, 9443]     # ssh, zonegate management API\n",
            &format!(
                "    tcp_ports: [22, 9443]\n    api:\n      port: 9443\n      api_key_file: {api_key}\n      tls:\n        certificate: {certificate}\n        key: {tls_key}\n        client_ca: {client_ca}\n"
            ),
            1,
        )
        .replacen(
            "  # key_file: credential:audit-key",
            &format!(
                "  key_file: {audit_key}\n  syslog:\n    - address: 10.99.0.20:6514\n      transport: tls\n      ca: {syslog_ca}\n"
            ),
            1,
        );
    let path = dir.join("zones.yaml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn check_env(file: &Path, credentials: Option<&Path>) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_zonegate"));
    cmd.arg("check")
        .arg(file)
        .env_remove("CREDENTIALS_DIRECTORY");
    if let Some(dir) = credentials {
        cmd.env("CREDENTIALS_DIRECTORY", dir);
    }
    cmd.output().expect("run zonegate")
}

/// Asserts a `FILE:LINE:COLUMN: error:` line at `value` in `text` that starts with `field` and
/// contains `says`.
fn assert_error_at(stderr: &str, file: &Path, text: &str, field: &str, value: &str, says: &str) {
    let (line, column) = position(text, &format!(" {value}\n"));
    let at = format!("{}:{line}:{}: error: {field}", file.display(), column + 1);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&at) && l.contains(says)),
        "expected a line starting `{at}` that says `{says}`; stderr:\n{}",
        indent(stderr)
    );
}

/// Acceptance: every file the configuration names for zonegate to read, missing (a key, a
/// certificate, a CA, a policy, a register map): `check` fails and names each one at the line
/// and column that names it, all in one run, before it reads any of them.
#[test]
fn missing_files_are_named_where_the_configuration_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (api_key, certificate, tls_key, client_ca, audit_key, syslog_ca) = (
        format!("{d}/no/api.key"),
        format!("{d}/no/api.crt"),
        "no/api.key.pem".to_owned(),
        format!("{d}/no/clients-ca.pem"),
        format!("{d}/no/audit.key"),
        format!("{d}/no/siem-ca.pem"),
    );
    let (path, yaml) = zones_naming(
        dir.path(),
        &api_key,
        [&certificate, &tls_key, &client_ca],
        &audit_key,
        &syslog_ca,
    );
    let broken = |from: &str, to: &str| yaml.replacen(from, to, 1);
    let yaml = broken(
        &format!("policy: {REPO}/policies/bess.rego"),
        "policy: no/bess.rego",
    );
    let yaml = yaml.replacen(
        &format!("opcua_policy: {REPO}/policies/opcua.rego"),
        "opcua_policy: no/opcua.rego",
        1,
    );
    let yaml = yaml.replacen(
        &format!("register_map: {REPO}/profiles/cnc.yaml"),
        &format!("register_map: {d}/no/cnc.yaml"),
        1,
    );
    std::fs::write(&path, &yaml).unwrap();
    let out = check_env(&path, None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", indent(&stderr));
    for (field, value, shown) in [
        (
            "gateway.management.api.api_key_file",
            api_key.clone(),
            api_key.clone(),
        ),
        (
            "gateway.management.api.tls.certificate",
            certificate.clone(),
            certificate.clone(),
        ),
        // Relative: to the directory of zones.yaml.
        (
            "gateway.management.api.tls.key",
            tls_key.clone(),
            format!("{d}/{tls_key}"),
        ),
        (
            "gateway.management.api.tls.client_ca",
            client_ca.clone(),
            client_ca.clone(),
        ),
        ("audit.key_file", audit_key.clone(), audit_key.clone()),
        (
            "syslog receiver 10.99.0.20:6514: ca",
            syslog_ca.clone(),
            syslog_ca.clone(),
        ),
        (
            "asset `cnc-1`: register_map",
            format!("{d}/no/cnc.yaml"),
            format!("{d}/no/cnc.yaml"),
        ),
    ] {
        assert_error_at(
            &stderr,
            &path,
            &yaml,
            field,
            &value,
            &format!("{shown} does not exist"),
        );
    }
    for (field, value) in [
        ("conduit `scada-bess`: inspection.policy", "no/bess.rego"),
        (
            "conduit `hmi-cnc`: inspection.opcua_policy",
            "no/opcua.rego",
        ),
    ] {
        let (line, column) = position(&yaml, &format!(" {value}"));
        let at = format!("{}:{line}:{}: error: {field}", path.display(), column + 1);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&at) && l.contains(&format!("{d}/{value} does not exist"))),
            "expected a line starting `{at}`; stderr:\n{}",
            indent(&stderr)
        );
    }
    let errors = stderr.lines().filter(|l| l.contains(": error: ")).count();
    assert_eq!(
        errors,
        9,
        "one error per missing file:\n{}",
        indent(&stderr)
    );
}

/// `credential:NAME` is `$CREDENTIALS_DIRECTORY/NAME`: without the variable `check` says so at
/// the value; with it, a missing credential is named with the unit line it needs; with the
/// files there, the configuration passes.
#[test]
fn credentials_are_read_from_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    let pem = readable_pem(dir.path());
    let (path, yaml) = zones_naming(
        dir.path(),
        "credential:api-key",
        [&pem, "credential:api-tls-key", &pem],
        "credential:audit-key",
        &pem,
    );

    let out = check_env(&path, None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", indent(&stderr));
    for (field, name) in [
        ("gateway.management.api.api_key_file", "api-key"),
        ("gateway.management.api.tls.key", "api-tls-key"),
        ("audit.key_file", "audit-key"),
    ] {
        assert_error_at(
            &stderr,
            &path,
            &yaml,
            field,
            &format!("credential:{name}"),
            &format!("names credential `{name}`, but $CREDENTIALS_DIRECTORY is not set"),
        );
    }

    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("api-key"), "zg-test-key\n").unwrap();
    std::fs::write(
        credentials.join("audit-key"),
        "zg-test-audit-key-0123456789\n",
    )
    .unwrap();
    let out = check_env(&path, Some(&credentials));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", indent(&stderr));
    assert_error_at(
        &stderr,
        &path,
        &yaml,
        "gateway.management.api.tls.key (credential `api-tls-key`)",
        "credential:api-tls-key",
        &format!("{}/api-tls-key does not exist", credentials.display()),
    );
    assert!(
        stderr.contains("hint: the unit needs `LoadCredential=api-tls-key:PATH`"),
        "stderr:\n{}",
        indent(&stderr)
    );
    assert_eq!(stderr.matches(": error: ").count(), 1, "{stderr}");

    std::fs::copy(&pem, credentials.join("api-tls-key")).unwrap();
    let out = check_env(&path, Some(&credentials));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        indent(&text(&out.stderr))
    );
}

/// A credential name is a file name in the credentials directory, never a way out of it.
#[test]
fn a_credential_name_is_a_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let pem = readable_pem(dir.path());
    let (path, yaml) = zones_naming(
        dir.path(),
        "credential:../../etc/shadow",
        [&pem, &pem, &pem],
        "credential:..",
        &pem,
    );
    let out = check_env(&path, Some(dir.path()));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", indent(&stderr));
    assert_error_at(
        &stderr,
        &path,
        &yaml,
        "gateway.management.api.api_key_file",
        "credential:../../etc/shadow",
        "credential name `../../etc/shadow` is not a file name",
    );
    assert_error_at(
        &stderr,
        &path,
        &yaml,
        "audit.key_file",
        "credential:..",
        "credential name `..` is not a file name",
    );
}

/// A file that is there and readable; `check` does not parse certificates (`run` does).
fn readable_pem(dir: &Path) -> String {
    let path = dir.join("readable.pem");
    std::fs::write(&path, "certificates are parsed by `run`, not `check`\n").unwrap();
    path.display().to_string()
}

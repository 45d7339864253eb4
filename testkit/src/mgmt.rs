//! The management side of a test plant: certificates for the management API (made with the
//! `openssl` CLI), a zones.yaml with `gateway.management.api`, and HTTP requests from the
//! management namespace with `curl`, as an operator's workstation would make them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bess::zones_variant;
use crate::plant::Plant;

/// The shipped zones.yaml's management address and API port.
pub const MGMT_ADDR: &str = "10.99.0.1";
pub const API_PORT: u16 = 9443;
/// The API key the test configuration uses.
pub const API_KEY: &str = "zg-test-key-5b1d7e0c9a";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is missing ({e}): run scripts/setup"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn ca(dir: &Path, name: &str, cn: &str) {
    let subj = format!("/CN={cn}");
    let keyout = format!("{name}.key");
    let out = format!("{name}.pem");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subj];
    args.extend_from_slice(&KEY);
    args.extend_from_slice(&["-keyout", &keyout, "-out", &out]);
    openssl(dir, &args);
}

fn leaf(dir: &Path, name: &str, ca: &str, subj: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    let keyout = format!("{name}.key");
    let csr = format!("{name}.csr");
    let mut req = vec!["req", "-subj", subj, "-keyout", &keyout, "-out", &csr];
    req.extend_from_slice(&KEY);
    openssl(dir, &req);
    let ca_pem = format!("{ca}.pem");
    let ca_key = format!("{ca}.key");
    let pem = format!("{name}.pem");
    let extfile = format!("{name}.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &extfile,
        ],
    );
}

/// In `dir`: `ca.pem` (signs the server and `client`), `server.pem`/`.key` for the management
/// address, `client.pem`/`.key` (CN=prometheus), and `stranger.pem`/`.key` signed by another
/// CA (`other-ca.pem`); `api.key` holds [`API_KEY`] with a line end.
pub fn make_credentials(dir: &Path) {
    ca(dir, "ca", "zonegate test management CA");
    ca(dir, "other-ca", "some other CA");
    leaf(
        dir,
        "server",
        "ca",
        "/CN=gateway",
        &format!("subjectAltName=IP:{MGMT_ADDR}\nextendedKeyUsage=serverAuth\n"),
    );
    leaf(
        dir,
        "client",
        "ca",
        "/O=plant/CN=prometheus",
        "extendedKeyUsage=clientAuth\n",
    );
    leaf(
        dir,
        "stranger",
        "other-ca",
        "/CN=stranger",
        "extendedKeyUsage=clientAuth\n",
    );
    std::fs::write(dir.join("api.key"), format!("{API_KEY}\n")).unwrap();
}

/// The shipped zones.yaml with a management API on 9443: TLS, API key and client CA from `dir`.
pub fn zones_with_api(dir: &Path) -> PathBuf {
    make_credentials(dir);
    let d = dir.display();
    zones_variant(dir, |text| {
        text.replacen(
            "    tcp_ports: [22, 9443]     # ssh, zonegate management API\n",
            &format!(
                "    tcp_ports: [22, 9443]\n    api:\n      port: {API_PORT}\n      api_key_file: {d}/api.key\n      tls: {{certificate: {d}/server.pem, key: {d}/server.key, client_ca: {d}/ca.pem}}\n"
            ),
            1,
        )
    })
}

/// What one HTTPS request answered: the status (0 when no HTTP exchange happened) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// `curl` from the management namespace to the API, trusting `dir/ca.pem`; `extra` adds curl
/// options (a key header, a client certificate).
pub fn get(plant: &Plant, dir: &Path, path: &str, extra: &[&str]) -> Reply {
    let (ns, _) = plant
        .management
        .as_ref()
        .expect("the plant has a management namespace");
    let body = dir.join("curl-body");
    let _ = std::fs::remove_file(&body);
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "--max-time", "5"])
        .arg("--cacert")
        .arg(dir.join("ca.pem"))
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("https://{MGMT_ADDR}:{API_PORT}{path}"))
        .output()
        .expect("curl is missing: run scripts/setup");
    Reply {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
    }
}

/// The `Authorization` header with `key`.
pub fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}")
}

/// `zonegate_limit_hits_total{limit="<limit>"}` from the management API (with the API key).
#[allow(dead_code)]
pub fn limit_hits(plant: &Plant, dir: &Path, limit: &str) -> u64 {
    let reply = get(plant, dir, "/metrics", &["-H", &bearer(API_KEY)]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let series = format!("zonegate_limit_hits_total{{limit=\"{limit}\"}} ");
    reply
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{}", reply.body))
}

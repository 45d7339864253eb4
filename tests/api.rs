//! The management API and metrics as an operator uses them: a real Prometheus scrapes
//! `/metrics` over mutual TLS with the API key and loads the shipped alerting rules; without a
//! credential every endpoint but `/healthz` answers 401; the API cannot be reached from any zone;
//! every request is an `api-access` audit event.
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
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::bess::{Bench, REPO};
use support::mgmt::{self, API_KEY, API_PORT, MGMT_ADDR, bearer};
use support::plant::in_ns;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/ops/prometheus/zonegate-rules.yml"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana/zonegate.json");

fn tool(name: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "{name} is missing: run scripts/setup"
    );
}

#[test]
fn promtool_accepts_the_shipped_alerting_rules() {
    tool("promtool");
    let out = Command::new("promtool")
        .args(["check", "rules", RULES])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It checked rules, not an empty file.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("SUCCESS") && !said.contains(" 0 rules"),
        "{said}"
    );
}

/// Every `zonegate_*` metric the rules and the dashboard query, without the suffixes
/// OpenMetrics adds to a family's samples.
fn referenced_metrics() -> Vec<String> {
    let mut text = std::fs::read_to_string(RULES).unwrap();
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
        .expect("the dashboard is JSON");
    for panel in dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
    {
        for target in panel["targets"].as_array().into_iter().flatten() {
            text.push_str(target["expr"].as_str().unwrap_or_default());
            text.push('\n');
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("zonegate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &tail[end..];
    }
    names
}

/// Sends a query to Prometheus's HTTP API from inside `ns` (plain HTTP/1.0 on its loopback).
fn prometheus_get(ns: &str, port: u16, path_and_query: &str) -> Value {
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let reply = in_ns(ns, move || {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(request.as_bytes())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok::<String, std::io::Error>(reply)
    });
    match reply {
        Ok(r) => match r.split_once("\r\n\r\n") {
            Some((_, body)) => serde_json::from_str(body).unwrap_or(Value::Null),
            None => Value::Null,
        },
        Err(_) => Value::Null,
    }
}

fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of an instant query's first series, once Prometheus has one that satisfies `ok`.
fn wait_for_series(ns: &str, port: u16, query: &str, ok: impl Fn(f64) -> bool) -> (Value, f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = format!("/api/v1/query?query={}", encode_query(query));
    loop {
        let reply = prometheus_get(ns, port, &path);
        if let Some(first) = reply["data"]["result"].as_array().and_then(|r| r.first()) {
            let value: f64 = first["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            if ok(value) {
                return (first["metric"].clone(), value);
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no series for {query} satisfying the test; last answer: {reply}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(ns: &str, dir: &Path, port: u16) -> Prometheus {
    tool("prometheus");
    std::fs::write(dir.join("prometheus-key"), format!("{API_KEY}\n")).unwrap();
    let d = dir.display();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {RULES}\nscrape_configs:\n  - job_name: zonegate\n    scheme: https\n    metrics_path: /metrics\n    authorization:\n      credentials_file: {d}/prometheus-key\n    tls_config:\n      ca_file: {d}/ca.pem\n      cert_file: {d}/client.pem\n      key_file: {d}/client.key\n    static_configs:\n      - targets: ['{MGMT_ADDR}:{API_PORT}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "prometheus"])
        .arg(format!("--config.file={d}/prometheus.yml"))
        .arg(format!("--storage.tsdb.path={d}/tsdb"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Prometheus(child)
}

#[test]
fn prometheus_scrapes_the_gateway_over_mutual_tls_and_reads_its_series_back() {
    let dir = tempfile::tempdir().unwrap();
    let zones = mgmt::zones_with_api(dir.path());
    let bench = Bench::start(&zones);
    let (ns, _) = bench.plant.management.clone().unwrap();
    let port = 9090;
    let _prometheus = start_prometheus(&ns, dir.path(), port);

    // Traffic on the scada-bess conduit: allowed and denied requests. The kernel counts the
    // diverted packets on the conduit's counter.
    assert_eq!(bench.op(&["read-holding", "300", "1"])["ok"], true);
    assert_eq!(
        bench.op(&["write-register", "104", "1"])["exception"],
        1,
        "the forbidden write is refused"
    );

    let (_, up) = wait_for_series(&ns, port, r#"up{job="zonegate"}"#, |v| v == 1.0);
    assert_eq!(up, 1.0);
    let (labels, _) = wait_for_series(&ns, port, "zonegate_build_info", |v| v == 1.0);
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    for decision in ["allow", "deny"] {
        let q = format!(
            r#"sum(zonegate_requests_total{{conduit="scada-bess",protocol="modbus",decision="{decision}"}})"#
        );
        wait_for_series(&ns, port, &q, |v| v >= 1.0);
    }
    let (labels, _) = wait_for_series(
        &ns,
        port,
        r#"zonegate_requests_total{conduit="scada-bess",decision="deny"}"#,
        |v| v >= 1.0,
    );
    assert_eq!(labels["function"], "write_single_register", "{labels}");
    wait_for_series(
        &ns,
        port,
        r#"zonegate_kernel_packets_total{counter="conduit_scada_bess"}"#,
        |v| v >= 2.0,
    );
    wait_for_series(&ns, port, "zonegate_ready", |v| v == 1.0);
    wait_for_series(
        &ns,
        port,
        r#"zonegate_decision_duration_seconds_count{conduit="scada-bess"}"#,
        |v| v >= 2.0,
    );
    let (labels, _) = wait_for_series(
        &ns,
        port,
        r#"zonegate_policy_info{conduit="scada-bess"}"#,
        |v| v == 1.0,
    );
    assert_eq!(
        labels["revision"].as_str().map(str::len),
        Some(64),
        "{labels}"
    );

    // The shipped rules loaded into this Prometheus.
    let rules = prometheus_get(&ns, port, "/api/v1/rules");
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|g| g["rules"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert!(loaded >= 5, "Prometheus loaded {loaded} rules: {rules}");

    // Every metric the rules and the dashboard use is one the gateway exports.
    let scraped = mgmt::get(
        &bench.plant,
        dir.path(),
        "/metrics",
        &["-H", &bearer(API_KEY)],
    );
    assert_eq!(scraped.status, 200);
    // Per-receiver audit series exist only for configured syslog receivers (none here): those
    // must at least be documented.
    let documented = std::fs::read_to_string(format!("{REPO}/docs/api.md")).unwrap();
    for name in referenced_metrics() {
        let family = ["_total", "_bucket", "_count", "_sum", "_info"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        if family.starts_with("zonegate_audit_receiver_") || family == "zonegate_audit_spool_bytes"
        {
            assert!(
                documented.contains(&format!("`{name}`")),
                "{name} is not documented in docs/api.md"
            );
            continue;
        }
        assert!(
            scraped.body.contains(&format!("# TYPE {family} ")),
            "{name} is queried by the rules or dashboard but not exported:\n{}",
            scraped.body
        );
    }

    // Prometheus's scrapes were audited, authenticated by its certificate.
    let e = bench.audit_event("Prometheus's scrape", |e| {
        e["event"]["action"] == "api-access"
            && e["url"]["path"] == "/metrics"
            && e["zonegate"]["api"]["credential"] == "certificate"
    });
    assert!(
        e["zonegate"]["api"]["certificate_subject"]
            .as_str()
            .is_some_and(|s| s.contains("CN=prometheus")),
        "{e}"
    );
}

/// A TCP connection from `src` in `ns` to `dst` within `timeout`.
fn connects(ns: &str, src: IpAddr, dst: SocketAddr, timeout: Duration) -> bool {
    in_ns(ns, move || {
        let domain = if dst.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
                .unwrap();
        sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
        sock.connect_timeout(&dst.into(), timeout).is_ok()
    })
}

#[test]
fn only_authenticated_clients_on_the_management_network_get_answers_and_each_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let zones = mgmt::zones_with_api(dir.path());
    let bench = Bench::start(&zones);
    let plant = &bench.plant;
    let d = dir.path();
    let key = bearer(API_KEY);
    let wrong = bearer("zg-test-key-5b1d7e0c9b");
    let cert = d.join("client.pem").display().to_string();
    let cert_key = d.join("client.key").display().to_string();
    let with_cert = ["--cert", cert.as_str(), "--key", cert_key.as_str()];

    // Liveness needs no credential.
    let health = mgmt::get(plant, d, "/healthz", &[]);
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    for path in ["/readyz", "/status", "/metrics", "/nothing-here"] {
        assert_eq!(
            mgmt::get(plant, d, path, &[]).status,
            401,
            "{path} without credential"
        );
        assert_eq!(
            mgmt::get(plant, d, path, &["-H", &wrong]).status,
            401,
            "{path} with a wrong key"
        );
        assert_eq!(
            mgmt::get(plant, d, path, &["-H", "Authorization: Basic emc="]).status,
            401,
            "{path} with another scheme"
        );
    }
    for path in ["/healthz", "/readyz", "/status", "/metrics"] {
        assert_eq!(
            mgmt::get(plant, d, path, &["-H", &key]).status,
            200,
            "{path} with the key"
        );
        assert_eq!(
            mgmt::get(plant, d, path, &with_cert).status,
            200,
            "{path} with the certificate"
        );
    }
    assert_eq!(
        mgmt::get(plant, d, "/nothing-here", &["-H", &key]).status,
        404
    );

    // What /status and /readyz say.
    let status: Value =
        serde_json::from_str(&mgmt::get(plant, d, "/status", &["-H", &key]).body).unwrap();
    assert_eq!(status["ready"], true, "{status}");
    let model = zonegate::config::load(&zones).unwrap();
    let zone_names: Vec<&str> = status["config"]["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = model.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(zone_names, expected);
    let scada_bess = status["config"]["conduits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "scada-bess")
        .cloned()
        .unwrap();
    let bess_rego = std::fs::read(format!("{REPO}/policies/bess.rego")).unwrap();
    assert_eq!(
        scada_bess["policy_revision"],
        zonegate::policy::revision(&bess_rego),
        "{scada_bess}"
    );
    assert_eq!(
        status["config"]["sha256"],
        zonegate::policy::revision(&std::fs::read(&zones).unwrap())
    );
    assert!(status["uptime_seconds"].as_u64().is_some(), "{status}");
    let ready = mgmt::get(plant, d, "/readyz", &["-H", &key]);
    let ready: Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(ready["ruleset_verified"], true);
    assert_eq!(ready["policies_compiled"], true);

    // A certificate from another CA does not get through the handshake.
    let stranger = d.join("stranger.pem").display().to_string();
    let stranger_key = d.join("stranger.key").display().to_string();
    let refused = mgmt::get(
        plant,
        d,
        "/status",
        &["--cert", &stranger, "--key", &stranger_key],
    );
    assert!(
        refused.status == 0 || refused.status == 401,
        "a certificate from another CA got {}",
        refused.status
    );
    // Plain HTTP on the TLS port gets nothing either.
    let (ns, _) = plant.management.clone().unwrap();
    let plain = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "curl",
            "-s",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{http_code}", "-H", &key])
        .arg(format!("http://{MGMT_ADDR}:{API_PORT}/status"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout).trim(), "200");

    // No zone reaches the listener: not on the management address, not on the gateway's own
    // address in the zone.
    let mut probes = Vec::new();
    for zone in &model.zones {
        let ns = plant.zone_ns(&zone.name);
        for net in zone.networks.iter().filter(|n| n.addr().is_ipv4()) {
            let src = plant.stranger(&zone.name);
            let gw_side = net.hosts().next().unwrap();
            for dst in [MGMT_ADDR.parse().unwrap(), gw_side] {
                let ns = ns.clone();
                probes.push(std::thread::spawn(move || {
                    let dst = SocketAddr::new(dst, API_PORT);
                    (
                        ns.clone(),
                        dst,
                        connects(&ns, src, dst, Duration::from_millis(1500)),
                    )
                }));
            }
        }
    }
    assert!(probes.len() >= 2 * model.zones.len());
    for p in probes {
        let (ns, dst, connected) = p.join().unwrap();
        assert!(!connected, "{dst} is reachable from {ns}");
    }
    // The same probe from the management network does connect (the probe can succeed).
    let (_, mgmt_host) = plant.management.clone().unwrap();
    assert!(connects(
        &ns,
        mgmt_host,
        SocketAddr::new(MGMT_ADDR.parse().unwrap(), API_PORT),
        Duration::from_secs(2)
    ));

    // Each access is audited: who, what, the answer, and how it was authenticated.
    let denied = bench.audit_event("a refused /status", |e| {
        e["event"]["action"] == "api-access"
            && e["url"]["path"] == "/status"
            && e["http"]["response"]["status_code"] == 401
    });
    assert_eq!(denied["event"]["kind"], "alert");
    assert_eq!(denied["zonegate"]["api"]["credential"], "none");
    assert_eq!(denied["source"]["ip"], mgmt_host.to_string());
    assert_eq!(denied["http"]["request"]["method"], "GET");
    let by_key = bench.audit_event("/metrics with the key", |e| {
        e["event"]["action"] == "api-access"
            && e["url"]["path"] == "/metrics"
            && e["zonegate"]["api"]["credential"] == "api_key"
    });
    assert_eq!(by_key["http"]["response"]["status_code"], 200);
    bench.audit_event("/readyz with the certificate", |e| {
        e["event"]["action"] == "api-access"
            && e["url"]["path"] == "/readyz"
            && e["zonegate"]["api"]["certificate_subject"]
                .as_str()
                .is_some_and(|s| s.contains("CN=prometheus"))
    });
    // 4 paths x 3 refusals + 4 x 2 accepted + /healthz + 404 + /status + /readyz at least.
    let accesses = bench
        .audit()
        .into_iter()
        .filter(|e| e["event"]["action"] == "api-access")
        .count();
    assert!(accesses >= 24, "{accesses} api-access events");
    // The key itself is never written down.
    let log = std::fs::read_to_string(&bench.audit_log).unwrap();
    assert!(!log.contains(API_KEY), "the API key is in the audit log");
}

//! The shipped zones.yaml enforced by the real kernel, in namespaces these tests create:
//! declared conduits pass, everything else between zones is dropped, and the ruleset zonegate
//! plans is the one it installs.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::{run_args, spawn_run};
use support::nft::counter;
use support::plant::{Plant, Probe, in_ns, ping, tcp_echo, tcp_probe, udp_echo, udp_probe};
use support::{shipped_zones, zonegate_bin};
use zonegate::config;
use zonegate::nft::{
    self,
    ruleset::{Addrs, Match},
};

/// Long enough for a SYN and its answer inside one machine, short enough to keep drops cheap.
const DROP_WAIT: Duration = Duration::from_millis(1500);

fn model() -> config::Model {
    config::load(&shipped_zones()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn apply(plant: &Plant, file: &std::path::Path) {
    let out = plant.gateway_cmd(&[zonegate_bin(), "apply", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The table as the kernel holds it, in JSON, without handles and counter values: what two
/// installs of the same ruleset have in common.
fn table_shape(ns: &str) -> Vec<Value> {
    let ns = ns.to_owned();
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns, "nft", "-j", "list", "table", "inet", "zonegate",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("metainfo").is_none())
        .map(|o| {
            let mut o = o.clone();
            if let Some(obj) = o
                .as_object_mut()
                .and_then(|m| m.values_mut().next())
                .and_then(Value::as_object_mut)
            {
                obj.remove("handle");
                obj.remove("packets");
                obj.remove("bytes");
                // The liveness set's elements count down while `zonegate run` renews them.
                for e in obj
                    .get_mut("elem")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(e) = e.get_mut("elem").and_then(Value::as_object_mut) {
                        e.remove("expires");
                    }
                }
            }
            o
        })
        .collect()
}

#[test]
fn declared_conduit_passes_and_everything_else_is_dropped() {
    let plant = Plant::build(&model());
    apply(&plant, &shipped_zones());
    let dmz = plant.zone_ns("dmz");
    let enterprise = plant.zone_ns("enterprise");
    let operations = plant.zone_ns("operations");
    // conduit historian-mirror-web: enterprise -> dmz-historian (10.35.0.20) tcp/443
    let web = tcp_echo(&dmz, "10.35.0.20:443".parse().unwrap());
    let undeclared = tcp_echo(&dmz, "10.35.0.20:8443".parse().unwrap());
    let erp_listener = tcp_echo(&enterprise, "10.40.0.10:443".parse().unwrap());
    let before = counter(&plant, "conduit_historian_mirror_web");
    let drops_before = counter(&plant, "drop_forward");

    // Allowed: from the ERP server and from an unnamed enterprise host; the echo proves replies pass.
    assert_eq!(
        tcp_probe(&enterprise, ip("10.40.0.10"), web.addr, DROP_WAIT),
        Probe::Passed
    );
    assert_eq!(
        tcp_probe(
            &enterprise,
            plant.stranger("enterprise"),
            web.addr,
            DROP_WAIT
        ),
        Probe::Passed
    );

    // Dropped, probed in parallel: the same port from another zone, the reverse direction, an
    // undeclared port.
    let (ops, ent, web_addr, erp_addr, undeclared_addr) = (
        operations.clone(),
        enterprise.clone(),
        web.addr,
        erp_listener.addr,
        undeclared.addr,
    );
    let other_zone = thread::spawn(move || tcp_probe(&ops, ip("10.30.0.10"), web_addr, DROP_WAIT));
    let reverse = {
        let dmz = dmz.clone();
        thread::spawn(move || tcp_probe(&dmz, ip("10.35.0.20"), erp_addr, DROP_WAIT))
    };
    let wrong_port =
        thread::spawn(move || tcp_probe(&ent, ip("10.40.0.10"), undeclared_addr, DROP_WAIT));
    assert_eq!(
        other_zone.join().unwrap(),
        Probe::TimedOut,
        "operations -> dmz:443 must be dropped"
    );
    assert_eq!(
        reverse.join().unwrap(),
        Probe::TimedOut,
        "dmz -> enterprise:443 must be dropped"
    );
    assert_eq!(
        wrong_port.join().unwrap(),
        Probe::TimedOut,
        "enterprise -> dmz:8443 must be dropped"
    );

    assert_eq!(web.accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        undeclared
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_eq!(
        erp_listener
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let after = counter(&plant, "conduit_historian_mirror_web");
    assert_eq!(
        after - before,
        2,
        "one new-connection packet per allowed connection"
    );
    assert!(
        counter(&plant, "drop_forward") > drops_before,
        "drops are counted"
    );
}

#[test]
fn udp_conduit_is_one_way_and_narrowed_to_its_source() {
    let plant = Plant::build(&model());
    apply(&plant, &shipped_zones());
    let bess = plant.zone_ns("bess");
    let operations = plant.zone_ns("operations");
    // conduit bess-syslog: bess-controller (10.21.0.10) -> historian (10.30.0.20) udp/514
    let syslog = SocketAddr::new(ip("10.30.0.20"), 514);
    let received = udp_echo(&operations, syslog);
    let reverse = udp_echo(&bess, SocketAddr::new(ip("10.21.0.10"), 514));

    assert_eq!(
        udp_probe(&bess, ip("10.21.0.10"), syslog, DROP_WAIT),
        Probe::Passed
    );
    assert_eq!(
        udp_probe(&bess, ip("10.21.0.11"), syslog, DROP_WAIT),
        Probe::TimedOut,
        "inverter is not a source"
    );
    assert_eq!(
        udp_probe(
            &operations,
            ip("10.30.0.20"),
            SocketAddr::new(ip("10.21.0.10"), 514),
            DROP_WAIT
        ),
        Probe::TimedOut,
        "conduits are one-way"
    );
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(reverse.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(counter(&plant, "conduit_bess_syslog"), 1);
}

#[test]
fn gateway_accepts_only_management() {
    let plant = Plant::build(&model());
    apply(&plant, &shipped_zones());
    let gw = plant.gateway.clone();
    // A service on the gateway, listening on every address, as sshd would.
    let ssh = tcp_echo(&gw, "0.0.0.0:22".parse().unwrap());
    let (mgmt_ns, mgmt_host) = plant.management.clone().unwrap();
    assert_eq!(
        tcp_probe(
            &mgmt_ns,
            mgmt_host,
            "10.99.0.1:22".parse().unwrap(),
            DROP_WAIT
        ),
        Probe::Passed
    );
    // The same port on the gateway's address in a zone is dropped.
    let ops = plant.zone_ns("operations");
    assert_eq!(
        tcp_probe(
            &ops,
            ip("10.30.0.10"),
            "10.30.0.1:22".parse().unwrap(),
            DROP_WAIT
        ),
        Probe::TimedOut
    );
    assert_eq!(
        tcp_probe(
            &ops,
            ip("10.30.0.10"),
            "10.99.0.1:22".parse().unwrap(),
            DROP_WAIT
        ),
        Probe::TimedOut
    );
    assert_eq!(ssh.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(counter(&plant, "drop_input") >= 2);
}

#[test]
fn reapplying_is_idempotent() {
    let plant = Plant::build(&model());
    apply(&plant, &shipped_zones());
    let once = table_shape(&plant.gateway);
    apply(&plant, &shipped_zones());
    apply(&plant, &shipped_zones());
    assert_eq!(once, table_shape(&plant.gateway));
    // The replace is whole: still exactly one zonegate table.
    let out = plant.gateway_cmd(&["nft", "list", "tables"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("zonegate")
            .count(),
        1
    );
}

#[test]
fn refused_apply_leaves_previous_ruleset_in_force() {
    let plant = Plant::build(&model());
    apply(&plant, &shipped_zones());
    let before = table_shape(&plant.gateway);
    let web = tcp_echo(&plant.zone_ns("dmz"), "10.35.0.20:443".parse().unwrap());

    // A ruleset the kernel refuses: its last rule names a set that does not exist.
    let mut broken = nft::render(&model());
    let forward = broken
        .chains
        .iter_mut()
        .find(|c| c.name == "forward")
        .unwrap();
    let rule = forward.rules.last_mut().unwrap();
    rule.matches.push(Match::Saddr(
        nft::ruleset::Family::V4,
        Addrs::Set("no_such_set".into()),
    ));
    let result = in_ns(&plant.gateway, move || nft::apply(&broken));
    let err = result.expect_err("the kernel must refuse a rule naming a missing set");
    assert!(matches!(err, nft::NftError::Refused { .. }), "{err}");
    assert!(
        err.to_string().contains("no_such_set"),
        "nft's own message is kept: {err}"
    );

    assert_eq!(
        before,
        table_shape(&plant.gateway),
        "the previous ruleset is untouched"
    );
    let ent = plant.zone_ns("enterprise");
    assert_eq!(
        tcp_probe(&ent, ip("10.40.0.10"), web.addr, DROP_WAIT),
        Probe::Passed,
        "and still enforced"
    );
}

#[test]
fn plan_text_checks_and_matches_what_apply_installs() {
    let dir = tempfile::tempdir().unwrap();
    let plan_file = dir.path().join("plan.nft");
    let out = std::process::Command::new(zonegate_bin())
        .args(["plan", shipped_zones().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&plan_file, &out.stdout).unwrap();

    // Two gateways: one gets the reviewed text through nft -f, the other zonegate apply.
    let by_text = Plant::build(&model());
    let by_apply = Plant::build(&model());
    let check = by_text.gateway_cmd(&["nft", "-c", "-f", plan_file.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "nft -c -f: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let load = by_text.gateway_cmd(&["nft", "-f", plan_file.to_str().unwrap()]);
    assert!(
        load.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    apply(&by_apply, &shipped_zones());
    let text_shape = table_shape(&by_text.gateway);
    assert!(text_shape.len() > 20, "the plan holds the whole ruleset");
    assert_eq!(text_shape, table_shape(&by_apply.gateway));
}

#[test]
fn early_block_forwards_nothing_and_apply_replaces_it() {
    let plant = Plant::build(&model());
    let out = plant.gateway_cmd(&[zonegate_bin(), "early-block"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let web = tcp_echo(&plant.zone_ns("dmz"), "10.35.0.20:443".parse().unwrap());
    let ent = plant.zone_ns("enterprise");
    assert_eq!(
        tcp_probe(&ent, ip("10.40.0.10"), web.addr, DROP_WAIT),
        Probe::TimedOut
    );
    apply(&plant, &shipped_zones());
    assert_eq!(
        tcp_probe(&ent, ip("10.40.0.10"), web.addr, DROP_WAIT),
        Probe::Passed
    );
}

/// Modbus conduits are diverted, not forwarded: with no inspection proxy listening nothing gets
/// through (fail-closed); with a transparent listener on the proxy port the connection lands on
/// the gateway, still addressed to the device and coming from the client's own address.
#[test]
fn modbus_conduit_is_diverted_to_the_proxy_port_and_fails_closed_without_it() {
    let model = model();
    let plant = Plant::build(&model);
    apply(&plant, &shipped_zones());
    let ops = plant.zone_ns("operations");
    let inverter = tcp_echo(&plant.zone_ns("bess"), "10.21.0.11:502".parse().unwrap());

    assert_eq!(
        tcp_probe(&ops, ip("10.30.0.10"), inverter.addr, DROP_WAIT),
        Probe::TimedOut
    );
    assert_eq!(
        inverter.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never forwarded"
    );
    assert!(
        counter(&plant, "conduit_scada_bess") >= 1,
        "the divert rule saw it"
    );

    // A stand-in for the proxy: policy routing for the mark, and a transparent listener.
    let gw = plant.gateway.clone();
    let mark = format!("{:#x}", nft::ruleset::PROXY_MARK);
    support::plant::sh(&[
        "ip", "-n", &gw, "rule", "add", "fwmark", &mark, "lookup", "100",
    ]);
    support::plant::sh(&[
        "ip",
        "-n",
        &gw,
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "100",
    ]);
    let port = model.gateway.modbus_proxy_port;
    let listener = in_ns(&gw, move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_ip_transparent_v4(true).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SocketAddr::new(ip("0.0.0.0"), port).into())
            .unwrap();
        s.listen(8).unwrap();
        std::net::TcpListener::from(s)
    });
    let seen = thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let local = conn.local_addr().unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut conn, &mut buf).unwrap();
        std::io::Write::write_all(&mut conn, &buf[..n]).unwrap();
        (peer.ip(), local)
    });
    assert_eq!(
        tcp_probe(&ops, ip("10.30.0.10"), inverter.addr, DROP_WAIT),
        Probe::Passed
    );
    let (peer, local) = seen.join().unwrap();
    assert_eq!(
        peer,
        ip("10.30.0.10"),
        "the proxy sees the client's own address"
    );
    assert_eq!(local, inverter.addr, "and the device it addressed");
    assert_eq!(
        inverter.accepted.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // Another operations host is not on the conduit: not diverted, and dropped in forward.
    assert_eq!(
        tcp_probe(&ops, plant.stranger("operations"), inverter.addr, DROP_WAIT),
        Probe::TimedOut
    );
}

/// IPv6 conduits are enforced like IPv4 ones, and neighbour discovery keeps working under the
/// gateway's input/output policy of drop.
#[test]
fn ipv6_conduit_passes_and_the_rest_drops() {
    let file = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kernel/dual-stack.yaml"
    ));
    let model = config::load(&file).unwrap();
    let plant = Plant::build(&model);
    apply(&plant, &file);
    let office = plant.zone_ns("office");
    let dmz = plant.zone_ns("dmz");
    let mirror = tcp_echo(&dmz, "[fd5a:35::20]:443".parse().unwrap());
    let other_port = tcp_echo(&dmz, "[fd5a:35::20]:8443".parse().unwrap());
    let office_host = plant.stranger_v6("office");
    assert_eq!(
        tcp_probe(&office, office_host, mirror.addr, DROP_WAIT),
        Probe::Passed
    );
    assert_eq!(
        tcp_probe(&office, office_host, other_port.addr, DROP_WAIT),
        Probe::TimedOut
    );
    let back = tcp_echo(&office, SocketAddr::new(office_host, 443));
    assert_eq!(
        tcp_probe(&dmz, ip("fd5a:35::20"), back.addr, DROP_WAIT),
        Probe::TimedOut
    );
    assert_eq!(counter(&plant, "conduit_mirror"), 1);
}

/// `zonegate run` puts the ruleset back when someone removes it from the kernel.
#[test]
fn run_restores_a_flushed_ruleset() {
    let plant = Plant::build(&model());
    // Its audit log, state and control socket in a directory of the test's, not the host's.
    let dir = tempfile::tempdir().unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let run = run_args(
        &shipped_zones(),
        &audit_log,
        dir.path(),
        Some(&dir.path().join("control.sock")),
    );
    spawn_run(&plant, &run, None);
    let wait_for = |present: bool| {
        let deadline = std::time::Instant::now() + zonegate::control::VERIFY_INTERVAL * 3;
        while plant
            .gateway_cmd(&["nft", "list", "table", "inet", "zonegate"])
            .status
            .success()
            != present
        {
            assert!(
                std::time::Instant::now() < deadline,
                "table present={present} not reached"
            );
            thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(true);
    let applied = table_shape(&plant.gateway);
    assert!(
        plant
            .gateway_cmd(&["nft", "flush", "ruleset"])
            .status
            .success()
    );
    wait_for(true);
    assert_eq!(applied, table_shape(&plant.gateway));
    support::audit::check_log(&audit_log);
}

/// Starts `zonegate run` on `zones` in the gateway (its audit log, state and control socket in
/// `dir`, its own log in `dir/zonegate.log`, which it returns) and waits for its ruleset.
fn start_daemon(plant: &Plant, zones: &Path, dir: &Path) -> PathBuf {
    let log = dir.join("zonegate.log");
    let run = run_args(
        zones,
        &dir.join("audit.jsonl"),
        dir,
        Some(&dir.join("control.sock")),
    );
    spawn_run(plant, &run, Some(&log));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !plant
        .gateway_cmd(&["nft", "list", "table", "inet", "zonegate"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "zonegate run did not apply its ruleset; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    log
}

/// A TCP handshake from `src` in `ns` to `dst`: `Ok` once established (whatever follows), the
/// error's kind otherwise (`TimedOut`: the SYN got no answer).
fn connect(ns: &str, src: IpAddr, dst: SocketAddr) -> Result<(), std::io::ErrorKind> {
    in_ns(ns, move || {
        let domain = socket2::Domain::for_address(dst);
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
        sock.connect_timeout(&dst.into(), DROP_WAIT)
            .map_err(|e| e.kind())
    })
}

/// Polls until `n` connections reached `server`, or fails naming `what`.
fn accepted_within(server: &support::plant::EchoServer, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.accepted.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The proxy's listeners are bound to every address, but only what a divert rule sends reaches
/// them. A SYN to the Modbus or OPC UA proxy port on any of the gateway's addresses, or to a
/// device's address on that port (no conduit diverts it), gets no answer and counts as a drop;
/// the inspected conduit's own connections still reach the proxy and, through it, the device.
#[test]
fn proxy_ports_are_reachable_only_through_a_divert_rule() {
    let model = model();
    let plant = Plant::build(&model);
    let dir = tempfile::tempdir().unwrap();
    start_daemon(&plant, &shipped_zones(), dir.path());
    let ops = plant.zone_ns("operations");
    let scada = ip("10.30.0.10");
    let (modbus, opcua) = (
        model.gateway.modbus_proxy_port,
        model.gateway.opcua_proxy_port,
    );
    // Devices listening on the proxy's port numbers: a connection no conduit allows reaches
    // neither them nor the proxy.
    let inverter_on_proxy_port = tcp_echo(
        &plant.zone_ns("bess"),
        SocketAddr::new(ip("10.21.0.11"), modbus),
    );
    let cnc_on_proxy_port = tcp_echo(
        &plant.zone_ns("cnc-cell"),
        SocketAddr::new(ip("10.22.0.11"), opcua),
    );
    let input_drops = counter(&plant, "drop_input");
    let forward_drops = counter(&plant, "drop_forward");

    // (namespace, source, destination): SCADA, on the inspected conduits, and others.
    let (mgmt_ns, mgmt_host) = plant.management.clone().unwrap();
    let ops_v6 = plant.stranger_v6("operations");
    let to_gateway = [
        // the gateway's address in the client's own zone, both proxy ports
        (ops.clone(), scada, SocketAddr::new(ip("10.30.0.1"), modbus)),
        (ops.clone(), scada, SocketAddr::new(ip("10.30.0.1"), opcua)),
        // its address in the devices' zone
        (ops.clone(), scada, SocketAddr::new(ip("10.21.0.1"), modbus)),
        (ops.clone(), scada, SocketAddr::new(ip("10.22.0.1"), opcua)),
        // its IPv6 address
        (
            ops.clone(),
            ops_v6,
            SocketAddr::new(ip("fd5a:30::1"), modbus),
        ),
        (
            ops.clone(),
            ops_v6,
            SocketAddr::new(ip("fd5a:30::1"), opcua),
        ),
        // its management address, from the management network
        (
            mgmt_ns.clone(),
            mgmt_host,
            SocketAddr::new(ip("10.99.0.1"), modbus),
        ),
        (mgmt_ns, mgmt_host, SocketAddr::new(ip("10.99.0.1"), opcua)),
    ];
    let to_devices = [
        (ops.clone(), scada, inverter_on_proxy_port.addr),
        (ops.clone(), ip("10.30.0.11"), cnc_on_proxy_port.addr),
        (
            ops.clone(),
            plant.stranger("operations"),
            inverter_on_proxy_port.addr,
        ),
    ];
    let probes: Vec<_> = to_gateway
        .iter()
        .chain(&to_devices)
        .cloned()
        .map(|(ns, src, dst)| (src, dst, thread::spawn(move || connect(&ns, src, dst))))
        .collect();
    let answered: Vec<String> = probes
        .into_iter()
        .filter_map(|(src, dst, probe)| match probe.join().unwrap() {
            Err(std::io::ErrorKind::TimedOut) => None,
            other => Some(format!("{src} -> {dst}: {other:?}")),
        })
        .collect();
    assert!(answered.is_empty(), "SYNs answered: {answered:#?}");
    for server in [&inverter_on_proxy_port, &cnc_on_proxy_port] {
        assert_eq!(
            server.accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{}",
            server.addr
        );
    }
    // Each SYN (and its retransmissions) is counted where it was dropped.
    let input_grew = counter(&plant, "drop_input") - input_drops;
    let forward_grew = counter(&plant, "drop_forward") - forward_drops;
    assert!(
        input_grew >= to_gateway.len() as u64,
        "drop_input grew by {input_grew}"
    );
    assert!(
        forward_grew >= to_devices.len() as u64,
        "drop_forward grew by {forward_grew}"
    );

    // Diverted: SCADA's Modbus connection to inverter-1 reaches the proxy, which connects on
    // to the device.
    let inverter = tcp_echo(&plant.zone_ns("bess"), "10.21.0.11:502".parse().unwrap());
    assert_eq!(connect(&ops, scada, inverter.addr), Ok(()));
    accepted_within(&inverter, 1, "the proxy did not connect to the device");
}

/// On a host with IPv6 disabled (here: every namespace of the plant, before its interfaces
/// exist), `zonegate run` starts, enforces the IPv4 conduits (L4 and inspected), drops the
/// rest, installs no IPv6 policy routing, and warns about the conduit that names an IPv6
/// network it cannot serve.
#[test]
fn run_enforces_an_ipv4_plant_where_ipv6_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let zones = support::bess::zones_variant(dir.path(), |text| {
        text.replacen(
            "conduits:\n",
            "conduits:\n  mirror-v6:\n    from: enterprise\n    to: dmz\n    \
             destinations: ['fd5a:35::20']\n    services: [tcp/8443]\n",
            1,
        )
    });
    let model = config::load(&zones).unwrap();
    let plant = Plant::build_ipv4_only(&model);
    assert_eq!(
        String::from_utf8_lossy(
            &plant
                .gateway_cmd(&["sysctl", "-n", "net.ipv6.conf.lo.disable_ipv6"])
                .stdout
        )
        .trim(),
        "1"
    );
    let log = start_daemon(&plant, &zones, dir.path());

    let dmz = plant.zone_ns("dmz");
    let enterprise = plant.zone_ns("enterprise");
    let ops = plant.zone_ns("operations");
    let web = tcp_echo(&dmz, "10.35.0.20:443".parse().unwrap());
    let undeclared = tcp_echo(&dmz, "10.35.0.20:8443".parse().unwrap());
    let before = counter(&plant, "conduit_historian_mirror_web");
    assert_eq!(
        tcp_probe(&enterprise, ip("10.40.0.10"), web.addr, DROP_WAIT),
        Probe::Passed
    );
    assert_eq!(counter(&plant, "conduit_historian_mirror_web") - before, 1);
    let forward_drops = counter(&plant, "drop_forward");
    assert_eq!(
        tcp_probe(&ops, ip("10.30.0.10"), web.addr, DROP_WAIT),
        Probe::TimedOut,
        "operations -> dmz:443 is no conduit"
    );
    assert_eq!(
        tcp_probe(&enterprise, ip("10.40.0.10"), undeclared.addr, DROP_WAIT),
        Probe::TimedOut,
        "enterprise -> dmz:8443 only in IPv6"
    );
    assert!(counter(&plant, "drop_forward") > forward_drops);

    // The inspected conduit: diverted to the proxy through the IPv4 policy route, and on to
    // the device; a host not on the conduit is dropped.
    let inverter = tcp_echo(&plant.zone_ns("bess"), "10.21.0.11:502".parse().unwrap());
    assert_eq!(connect(&ops, ip("10.30.0.10"), inverter.addr), Ok(()));
    accepted_within(&inverter, 1, "the proxy did not connect to the device");
    assert_eq!(
        tcp_probe(&ops, plant.stranger("operations"), inverter.addr, DROP_WAIT),
        Probe::TimedOut
    );
    assert_eq!(
        inverter.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1
    );

    let mark = format!("fwmark {:#x}", nft::ruleset::PROXY_MARK);
    let rules = |family: &str| {
        String::from_utf8_lossy(&plant.gateway_cmd(&["ip", family, "rule", "show"]).stdout)
            .into_owned()
    };
    assert!(rules("-4").contains(&mark), "{}", rules("-4"));
    assert!(!rules("-6").contains(&mark), "{}", rules("-6"));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains(
                "IPv6 is disabled on this host: conduit(s) mirror-v6 name IPv6 networks"
            )),
        "{log}"
    );
    // `zonegate check` on this host says so too.
    let check = plant.gateway_cmd(&[zonegate_bin(), "check", zones.to_str().unwrap()]);
    assert!(check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("conduit(s) mirror-v6 name IPv6 networks"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The shipped plant with a named egress peer: an NTP server at operations' unnamed host.
fn with_site_ntp(dir: &Path) -> PathBuf {
    support::bess::zones_variant(dir, |text| {
        text.replacen(
            "    tcp_ports: [22, 9443]     # ssh, zonegate management API\n",
            "    tcp_ports: [22, 9443]     # ssh, zonegate management API\n    egress:\n      \
             site-ntp: {address: 10.30.0.200, services: [udp/123]}\n",
            1,
        )
    })
}

/// Issue 14: a process on the gateway cannot reach into a zone, whatever address it binds to;
/// it reaches its management peers and the egress peers zones.yaml names, and operators can
/// ping the management address from the management network, and nothing of the gateway from a
/// zone.
#[test]
fn the_gateway_is_no_way_into_a_zone() {
    let dir = tempfile::tempdir().unwrap();
    let zones = with_site_ntp(dir.path());
    let plant = Plant::build(&config::load(&zones).unwrap());
    apply(&plant, &zones);
    let gw = plant.gateway.clone();
    let (mgmt_ns, mgmt_host) = plant.management.clone().unwrap();
    let bess = plant.zone_ns("bess");
    let ops = plant.zone_ns("operations");
    let controller = tcp_echo(&bess, "10.21.0.10:22".parse().unwrap());
    let drops = counter(&plant, "drop_output");

    // Bound to the management address, or left to the route's own (the zone-side) address.
    for src in ["10.99.0.1", "10.21.0.1"] {
        assert_eq!(
            tcp_probe(&gw, ip(src), controller.addr, DROP_WAIT),
            Probe::TimedOut,
            "gateway {src} -> the BESS controller"
        );
    }
    assert_eq!(
        controller
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(
        !ping(&gw, ip("10.99.0.1"), ip("10.21.0.10"), DROP_WAIT),
        "nor an echo request"
    );
    let grew = counter(&plant, "drop_output") - drops;
    assert!(grew >= 3, "drop_output grew by {grew}");

    // Its management peers: a workstation on the management network.
    let workstation = tcp_echo(&mgmt_ns, SocketAddr::new(mgmt_host, 22));
    assert_eq!(
        tcp_probe(&gw, ip("10.99.0.1"), workstation.addr, DROP_WAIT),
        Probe::Passed
    );
    assert!(ping(&gw, ip("10.99.0.1"), mgmt_host, DROP_WAIT));

    // The named egress peer, on its service only.
    let ntp = SocketAddr::new(plant.stranger("operations"), 123);
    let ntp_received = udp_echo(&ops, ntp);
    assert_eq!(
        udp_probe(&gw, ip("10.30.0.1"), ntp, DROP_WAIT),
        Probe::Passed
    );
    let scada_ntp = udp_echo(&ops, "10.30.0.10:123".parse().unwrap());
    assert_ne!(
        udp_probe(
            &gw,
            ip("10.30.0.1"),
            "10.30.0.10:123".parse().unwrap(),
            DROP_WAIT
        ),
        Probe::Passed,
        "a host zones.yaml does not name"
    );
    let ntp_ssh = tcp_echo(&ops, SocketAddr::new(ntp.ip(), 22));
    assert_eq!(
        tcp_probe(&gw, ip("10.30.0.1"), ntp_ssh.addr, DROP_WAIT),
        Probe::TimedOut,
        "a service the peer is not named for"
    );
    assert_eq!(ntp_received.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(scada_ntp.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Operators ping the management address; zone hosts reach nothing of the gateway.
    assert!(ping(&mgmt_ns, mgmt_host, ip("10.99.0.1"), DROP_WAIT));
    let input_drops = counter(&plant, "drop_input");
    for (ns, src, dst) in [
        (&ops, "10.30.0.10", "10.30.0.1"),
        (&ops, "10.30.0.10", "10.99.0.1"),
        (&bess, "10.21.0.10", "10.21.0.1"),
    ] {
        assert!(!ping(ns, ip(src), ip(dst), DROP_WAIT), "{src} -> {dst}");
    }
    assert!(counter(&plant, "drop_input") - input_drops >= 3);
}

/// The daemon's own audit receivers are named in zones.yaml, so the output chain admits them
/// wherever they are: here a syslog receiver on the historian, in a zone, which the gateway
/// reaches from its zone-side address.
#[test]
fn the_daemon_reaches_its_syslog_receiver_in_a_zone() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let zones = support::bess::zones_variant(dir.path(), |text| {
        text.replacen(
            "\naudit:\n",
            &format!(
                "\naudit:\n  spool: {{directory: {}}}\n  syslog:\n    \
                 - {{address: '10.30.0.20:6514', transport: tcp}}\n",
                spool.display()
            ),
            1,
        )
    });
    let plant = Plant::build(&config::load(&zones).unwrap());
    let receiver = tcp_echo(
        &plant.zone_ns("operations"),
        "10.30.0.20:6514".parse().unwrap(),
    );
    // Another port on the same host is no receiver.
    let other = tcp_echo(
        &plant.zone_ns("operations"),
        "10.30.0.20:6515".parse().unwrap(),
    );
    // The ruleset is in force before the daemon's first connection (else that connection
    // would be older than the ruleset and pass as established).
    apply(&plant, &zones);
    let log = start_daemon(&plant, &zones, dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon did not reach its receiver; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        tcp_probe(&plant.gateway, ip("10.30.0.1"), other.addr, DROP_WAIT),
        Probe::TimedOut
    );
}

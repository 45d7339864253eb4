//! The kernel's drop log read back as typed drops: the shipped zones.yaml applied in a gateway
//! namespace, a connection that no conduit allows, and the `Drop` the reader gets for it.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::plant::{Plant, Probe, in_ns, tcp_probe};
use support::{shipped_zones, zonegate_bin};
use zonegate::config;
use zonegate::nft::droplog::{Drop, DropLog, DropLogError};

/// Long enough for a SYN and its first retransmission inside one machine.
const DROP_WAIT: Duration = Duration::from_millis(1500);
/// How long the reader waits for the expected drop.
const READ_WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The shipped plant with its ruleset applied, and the drop log group it logs to.
fn applied_plant() -> (u16, Plant) {
    let model = config::load(&shipped_zones()).unwrap();
    let plant = Plant::build(&model);
    let out = plant.gateway_cmd(&[zonegate_bin(), "apply", shipped_zones().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (model.gateway.drop_log_group, plant)
}

/// Opens the drop log in the gateway namespace, tries a TCP connection from `src` (in namespace
/// `ns`) to `dst`, which the gateway must drop, and returns the first drop of that flow the
/// reader gets. The reader opens and reads in one thread inside the gateway namespace, so that
/// interface names are looked up there.
fn drop_of_connection(plant: &Plant, group: u16, ns: &str, src: IpAddr, dst: SocketAddr) -> Drop {
    let (ready_tx, ready_rx) = mpsc::channel();
    let gateway = plant.gateway.clone();
    let reader = thread::spawn(move || {
        in_ns(&gateway, move || {
            let mut log = DropLog::open(group).unwrap();
            assert_eq!(log.group(), group);
            log.set_timeout(Some(Duration::from_millis(200))).unwrap();
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + READ_WAIT;
            let mut seen = Vec::new();
            while Instant::now() < deadline {
                match log.next() {
                    Ok(d) if d.source == src && d.destination == dst.ip() => return d,
                    // Other drops, e.g. MLD reports of the zone hosts in the input chain.
                    Ok(d) => seen.push(d),
                    Err(e) if !e.is_fatal() => {}
                    Err(e) => panic!("drop log failed: {e}"),
                }
            }
            panic!("no drop of {src} -> {dst} within {READ_WAIT:?}; other drops: {seen:?}");
        })
    });
    ready_rx.recv().unwrap();
    assert_eq!(
        tcp_probe(ns, src, dst, DROP_WAIT),
        Probe::TimedOut,
        "{src} -> {dst} must be dropped"
    );
    reader.join().unwrap()
}

#[test]
fn a_connection_between_zones_without_a_conduit_is_logged_as_a_drop() {
    let (group, plant) = applied_plant();
    let enterprise = plant.zone_ns("enterprise");
    // The ERP server goes straight to inverter-1's Modbus port: no conduit from enterprise to
    // bess (scada-bess is diverted only for scada), so the forward chain drops and logs it.
    let dst: SocketAddr = "10.21.0.11:502".parse().unwrap();
    let drop = drop_of_connection(&plant, group, &enterprise, ip("10.40.0.10"), dst);
    assert_eq!(drop.chain, "forward");
    assert_eq!(drop.in_interface.as_deref(), Some("ent0"));
    assert_eq!(drop.out_interface.as_deref(), Some("bess0"));
    assert_eq!(drop.source, ip("10.40.0.10"));
    assert_eq!(drop.destination, ip("10.21.0.11"));
    assert_eq!((drop.transport, drop.iana_number), ("tcp", 6));
    assert_eq!(drop.destination_port, Some(502));
    assert!(drop.source_port.is_some_and(|p| p >= 1024), "{drop:?}");
    // A SYN: IP header, TCP header and its options.
    assert!((40..=80).contains(&drop.length), "{drop:?}");
}

#[test]
fn an_ipv6_connection_between_zones_is_logged_as_a_drop() {
    let (group, plant) = applied_plant();
    let enterprise = plant.zone_ns("enterprise");
    // Enterprise to operations has no conduit at all.
    let src = plant.stranger_v6("enterprise");
    let dst = SocketAddr::new(plant.stranger_v6("operations"), 502);
    let drop = drop_of_connection(&plant, group, &enterprise, src, dst);
    assert_eq!(drop.chain, "forward");
    assert_eq!(drop.in_interface.as_deref(), Some("ent0"));
    assert_eq!(drop.out_interface.as_deref(), Some("ops0"));
    assert_eq!(drop.source, src);
    assert_eq!(drop.destination, dst.ip());
    assert_eq!((drop.transport, drop.iana_number), ("tcp", 6));
    assert_eq!(drop.destination_port, Some(502));
    assert!((60..=100).contains(&drop.length), "{drop:?}");
}

/// nfnetlink_log gives a group to one socket per network namespace: a second reader is refused
/// (EPERM) with a fatal error that says why, and the group is free again once the first is closed.
#[test]
fn a_group_has_one_reader() {
    let (group, plant) = applied_plant();
    in_ns(&plant.gateway, move || {
        let first = DropLog::open(group).unwrap();
        let second = DropLog::open(group).unwrap_err();
        assert!(
            matches!(&second, DropLogError::Bind { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
            "{second:?}"
        );
        assert!(second.is_fatal());
        assert!(second.to_string().contains("another program"), "{second}");
        // Another group is free.
        DropLog::open(group + 1).unwrap();
        std::mem::drop(first);
        DropLog::open(group).unwrap();
    });
}

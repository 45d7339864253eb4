//! The demo plant: the shipped zones.yaml (or another) enforced by `zonegate run` in a gateway
//! namespace, with one namespace per zone. It opens a few connections across the gateway, shows
//! which pass and which are dropped, prints the kernel's counters, and removes everything.
//!
//! Run it through `scripts/demo` (it installs what is needed and runs as root):
//!     scripts/demo            # show, then clean up
//!     scripts/demo --hold     # keep the plant up until Ctrl-C, to explore with `ip netns exec`
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../tests/support/plant.rs"]
mod plant;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use plant::{Plant, Probe, tcp_echo, tcp_probe, udp_echo, udp_probe};

const WAIT: Duration = Duration::from_millis(1500);

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
        what: "office ERP goes straight to an inverter (no conduit)",
        from_zone: "enterprise",
        src: "10.40.0.10",
        dst: "10.21.0.11:502",
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
    Case {
        what: "SCADA Modbus to inverter-1: diverted to the inspection proxy, none running yet, so fail-closed",
        from_zone: "operations",
        src: "10.30.0.10",
        dst: "10.21.0.11:502",
        udp: false,
        expect_pass: false,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hold = args.iter().any(|a| a == "--hold");
    let zones = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/zones.yaml")));
    let zonegate = std::env::var("ZONEGATE_BIN")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/debug/zonegate").into());
    let model = zonegate::config::load(&zones).unwrap_or_else(|e| panic!("{e}"));

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
    plant.spawn_in_gateway(&[&zonegate, "run", zones.to_str().unwrap()]);
    let started = Instant::now();
    while !plant
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

    println!("\n== counters read back from the kernel (zonegate counters)");
    let out = plant.gateway_cmd(&[&zonegate, "counters"]);
    print!("{}", String::from_utf8_lossy(&out.stdout));

    if hold {
        println!("\n== holding the plant; explore it, e.g.:");
        println!(
            "   ip netns exec {} nft list table inet zonegate",
            plant.gateway
        );
        println!(
            "   ip netns exec {} ping -c1 10.21.0.11",
            plant.zone_ns("operations")
        );
        println!("   press Ctrl-C to remove it");
        let _ = Command::new("sleep").arg("infinity").status();
    }
    drop(plant);
    println!("\n== plant removed");
    if wrong > 0 {
        eprintln!("{wrong} connection(s) did not behave as zones.yaml says");
        std::process::exit(1);
    }
}

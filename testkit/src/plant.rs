//! A plant in network namespaces, built from a zones.yaml model: one namespace for the gateway,
//! one per zone (holding every asset's address plus one address no conduit names), and one for
//! the management network. Veth pairs are created with both ends directly in their namespaces, so
//! the root namespace is never touched. Everything is deleted on drop, also when a test panics.
//!
//! Shared by the integration tests and the examples (bench, soak, demo).

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use zonegate::config::Model;

/// Namespace names start with this, then the creating process id, so that a later run can tell
/// leftovers of a killed run from namespaces still in use.
pub const NS_PREFIX: &str = "zgt";

/// Host number (within each zone network) of the address that no asset and no conduit names.
const STRANGER_HOST: usize = 200;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Plant {
    pub prefix: String,
    pub gateway: String,
    zones: Vec<ZoneNs>,
    pub management: Option<(String, IpAddr)>,
    children: Mutex<Vec<Child>>,
}

struct ZoneNs {
    zone: String,
    ns: String,
    stranger: Vec<IpAddr>,
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets made there stay in `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&fd, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("thread in namespace panicked"))
}

pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates a namespace in which IPv6 addresses, link-local ones included, are usable at once:
/// duplicate address detection would hold them back for a second or two after each link comes up.
/// Without `ipv6`, IPv6 is disabled in it, on every interface (loopback too) and on those
/// created later, as on a host configured IPv4-only.
fn add_ns(ns: &str, ipv6: bool) {
    sh(&["ip", "netns", "add", ns]);
    let settings: &[(&str, &str)] = if ipv6 {
        &[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ]
    } else {
        &[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ]
    };
    for (key, value) in settings {
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ]);
    }
}

fn ip_in(ns: &str, args: &[&str]) {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    sh(&full);
}

/// Deletes namespaces left by runs whose process is gone (a killed test cannot clean up).
pub fn remove_stale() {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests build network namespaces and program nftables: run them as root (the README's test command does)"
    );
}

/// Host addresses of a network, numbered from 1 in both families (ipnet's IPv6 `hosts()` starts
/// with the subnet-router anycast address, which no host may use).
fn host(net: &IpNet, n: usize) -> Option<IpAddr> {
    net.hosts()
        .filter(|a| *a != net.network())
        .nth(n.checked_sub(1)?)
}

/// The address a gateway uses in a network: its first host.
fn gateway_addr(net: &IpNet) -> IpAddr {
    host(net, 1).unwrap_or_else(|| net.addr())
}

fn stranger_addr(net: &IpNet) -> Option<IpAddr> {
    host(net, STRANGER_HOST)
}

impl Plant {
    pub fn build(model: &Model) -> Plant {
        Plant::build_with(model, true)
    }

    /// A plant whose namespaces have IPv6 disabled before any interface is made; the zones'
    /// IPv6 networks are left out.
    pub fn build_ipv4_only(model: &Model) -> Plant {
        Plant::build_with(model, false)
    }

    fn build_with(model: &Model, ipv6: bool) -> Plant {
        require_root();
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NS_PREFIX}{}-{n}", std::process::id());
        let gateway = format!("{prefix}-gw");
        let mut plant = Plant {
            prefix: prefix.clone(),
            gateway: gateway.clone(),
            zones: Vec::new(),
            management: None,
            children: Mutex::new(Vec::new()),
        };
        add_ns(&gateway, ipv6);
        ip_in(&gateway, &["link", "set", "lo", "up"]);
        let forwarding: &[(&str, &str)] = if ipv6 {
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
            ]
        } else {
            &[("net.ipv4.ip_forward", "1")]
        };
        for (k, v) in forwarding {
            sh(&[
                "ip",
                "netns",
                "exec",
                &gateway,
                "sysctl",
                "-qw",
                &format!("{k}={v}"),
            ]);
        }
        for (i, zone) in model.zones.iter().enumerate() {
            let ns = format!("{prefix}-z{i}");
            add_ns(&ns, ipv6);
            let networks: Vec<IpNet> = zone
                .networks
                .iter()
                .filter(|n| ipv6 || n.addr().is_ipv4())
                .copied()
                .collect();
            // Record it at once so that drop removes it even if the rest of the set-up fails.
            plant.zones.push(ZoneNs {
                zone: zone.name.clone(),
                ns: ns.clone(),
                stranger: vec![],
            });
            let gw_if = zone
                .interfaces
                .first()
                .cloned()
                .unwrap_or_else(|| format!("zg{i}"));
            sh(&[
                "ip", "link", "add", &gw_if, "netns", &gateway, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ]);
            ip_in(&ns, &["link", "set", "lo", "up"]);
            let mut stranger = Vec::new();
            for net in &networks {
                let gw_addr = gateway_addr(net);
                let plen = net.prefix_len().to_string();
                ip_in(
                    &gateway,
                    &[
                        "addr",
                        "add",
                        &format!("{gw_addr}/{plen}"),
                        "dev",
                        &gw_if,
                        "nodad",
                    ],
                );
                let mut hosts: Vec<IpAddr> = model
                    .assets
                    .iter()
                    .filter(|a| a.zone == zone.name && net.contains(&a.address))
                    .map(|a| a.address)
                    .collect();
                if let Some(s) = stranger_addr(net) {
                    stranger.push(s);
                    hosts.push(s);
                }
                for h in hosts {
                    ip_in(
                        &ns,
                        &[
                            "addr",
                            "add",
                            &format!("{h}/{plen}"),
                            "dev",
                            "eth0",
                            "nodad",
                        ],
                    );
                }
            }
            ip_in(&gateway, &["link", "set", &gw_if, "up"]);
            ip_in(&ns, &["link", "set", "eth0", "up"]);
            for net in &networks {
                let via = gateway_addr(net).to_string();
                let fam = if net.addr().is_ipv4() { "-4" } else { "-6" };
                sh(&[
                    "ip", "-n", &ns, fam, "route", "replace", "default", "via", &via,
                ]);
            }
            if let Some(z) = plant.zones.last_mut() {
                z.stranger = stranger;
            }
        }
        if let Some(m) = &model.gateway.management
            && let (Some(ifname), Some(net)) = (&m.interface, m.allow_from.first())
        {
            let ns = format!("{prefix}-mgmt");
            add_ns(&ns, ipv6);
            let host = host(net, 10).unwrap_or_else(|| net.addr());
            plant.management = Some((ns.clone(), host));
            sh(&[
                "ip", "link", "add", ifname, "netns", &gateway, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ]);
            let plen = net.prefix_len().to_string();
            ip_in(
                &gateway,
                &[
                    "addr",
                    "add",
                    &format!("{}/{plen}", m.address),
                    "dev",
                    ifname,
                    "nodad",
                ],
            );
            ip_in(
                &ns,
                &[
                    "addr",
                    "add",
                    &format!("{host}/{plen}"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
            for (n, i) in [(&gateway, ifname.as_str()), (&ns, "eth0"), (&ns, "lo")] {
                ip_in(n, &["link", "set", i, "up"]);
            }
        }
        plant
    }

    /// The namespace of a zone's hosts.
    pub fn zone_ns(&self, zone: &str) -> String {
        self.zones
            .iter()
            .find(|z| z.zone == zone)
            .map(|z| z.ns.clone())
            .unwrap_or_else(|| panic!("no zone {zone} in the plant"))
    }

    /// An address in `zone` that no asset and no conduit names.
    pub fn stranger(&self, zone: &str) -> IpAddr {
        self.zones
            .iter()
            .find(|z| z.zone == zone)
            .and_then(|z| z.stranger.first().copied())
            .unwrap_or_else(|| panic!("zone {zone} has no stranger address"))
    }

    /// An IPv6 address in `zone` that no asset and no conduit names.
    pub fn stranger_v6(&self, zone: &str) -> IpAddr {
        self.zones
            .iter()
            .find(|z| z.zone == zone)
            .and_then(|z| z.stranger.iter().find(|a| a.is_ipv6()).copied())
            .unwrap_or_else(|| panic!("zone {zone} has no IPv6 stranger address"))
    }

    /// Runs a command in the gateway namespace and returns its output (not checked).
    /// Waits until `zonegate run` has applied its ruleset (its proxies listen before it applies).
    pub fn wait_for_ruleset(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self
            .gateway_cmd(&["nft", "list", "table", "inet", "zonegate"])
            .status
            .success()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "zonegate did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn gateway_cmd(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.gateway];
        full.extend_from_slice(args);
        Command::new(full[0])
            .args(&full[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {full:?}: {e}"))
    }

    /// Starts a long-running process in the gateway namespace; it is killed when the plant drops.
    pub fn spawn_in_gateway(&self, args: &[&str]) -> u32 {
        self.spawn(args, None)
    }

    /// As [`Plant::spawn_in_gateway`], its standard output and error written to `log`.
    pub fn spawn_in_gateway_logged(&self, args: &[&str], log: &std::path::Path) -> u32 {
        self.spawn(args, Some(log))
    }

    fn spawn(&self, args: &[&str], log: Option<&std::path::Path>) -> u32 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.gateway])
            .args(args)
            .stdin(Stdio::null());
        if let Some(log) = log {
            let file = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            let err = file
                .try_clone()
                .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            cmd.stdout(file).stderr(err);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?}: {e}"));
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        pid
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        for mut c in self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut all: Vec<String> = self.zones.iter().map(|z| z.ns.clone()).collect();
        all.push(self.gateway.clone());
        if let Some((ns, _)) = &self.management {
            all.push(ns.clone());
        }
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// A TCP echo server on one address in a namespace; counts the connections it accepted.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

pub fn tcp_echo(ns: &str, addr: SocketAddr) -> EchoServer {
    let listener = in_ns(ns, move || {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    });
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    EchoServer { addr, accepted }
}

/// What a connection attempt across the gateway saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Connected, and the echoed reply came back.
    Passed,
    /// No answer within the timeout: dropped.
    TimedOut,
    /// Something answered with a reset or an ICMP error.
    Refused(String),
}

/// Connects from `src` (an address in namespace `ns`) to `dst`, sends a line, expects it back.
pub fn tcp_probe(ns: &str, src: IpAddr, dst: SocketAddr, timeout: Duration) -> Probe {
    in_ns(ns, move || {
        let domain = if dst.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
            .unwrap_or_else(|e| panic!("socket: {e}"));
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .unwrap_or_else(|e| panic!("bind {src}: {e}"));
        match sock.connect_timeout(&SockAddr::from(dst), timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Probe::TimedOut,
            Err(e) => return Probe::Refused(e.to_string()),
        }
        let stream: TcpStream = sock.into();
        let _ = stream.set_read_timeout(Some(timeout));
        let mut w = &stream;
        if w.write_all(b"zonegate probe\n").is_err() {
            return Probe::Refused("write failed".into());
        }
        let mut line = String::new();
        match BufReader::new(&stream).read_line(&mut line) {
            Ok(_) if line == "zonegate probe\n" => Probe::Passed,
            Ok(_) => Probe::Refused(format!("unexpected reply {line:?}")),
            Err(_) => Probe::TimedOut,
        }
    })
}

/// A UDP echo server; returns the number of datagrams it received.
pub fn udp_echo(ns: &str, addr: SocketAddr) -> Arc<AtomicUsize> {
    let sock = in_ns(ns, move || {
        UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    });
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    received
}

/// Sends one datagram from `src` to `dst` and waits for the echo.
pub fn udp_probe(ns: &str, src: IpAddr, dst: SocketAddr, timeout: Duration) -> Probe {
    in_ns(ns, move || {
        let sock =
            UdpSocket::bind(SocketAddr::new(src, 0)).unwrap_or_else(|e| panic!("bind {src}: {e}"));
        let _ = sock.set_read_timeout(Some(timeout));
        if let Err(e) = sock.send_to(b"zonegate probe", dst) {
            return Probe::Refused(e.to_string());
        }
        let mut buf = [0u8; 64];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == b"zonegate probe" => Probe::Passed,
            Ok(_) => Probe::Refused("unexpected reply".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Probe::TimedOut
            }
            Err(e) => Probe::Refused(e.to_string()),
        }
    })
}

/// Sends one ICMP echo request from `src` (an IPv4 address in namespace `ns`) to `dst` and waits
/// for the reply: whether it came. A request the namespace's own ruleset drops on the way out
/// fails to send, which is no reply either.
pub fn ping(ns: &str, src: IpAddr, dst: IpAddr, timeout: Duration) -> bool {
    let (IpAddr::V4(_), IpAddr::V4(dst4)) = (src, dst) else {
        panic!("ping is IPv4 only: {src} -> {dst}")
    };
    in_ns(ns, move || {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .unwrap_or_else(|e| panic!("raw ICMP socket: {e}"));
        sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .unwrap_or_else(|e| panic!("bind {src}: {e}"));
        let _ = sock.set_read_timeout(Some(timeout));
        // type 8 (echo request), code 0, checksum, identifier 0x5a47 ("ZG"), sequence 1.
        let mut packet = [8u8, 0, 0, 0, 0x5a, 0x47, 0, 1, b'z', b'g'];
        let sum: u32 = packet
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        if sock
            .send_to(&packet, &SockAddr::from(SocketAddr::new(dst, 0)))
            .is_err()
        {
            return false;
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        while std::time::Instant::now() < deadline {
            let Ok(n) = (&sock).read(&mut buf) else {
                return false;
            };
            let bytes = &buf[..n];
            // IPv4 header (source at 12..16), then ICMP: type 0 (echo reply), our identifier.
            let ihl = usize::from(bytes.first().copied().unwrap_or(0) & 0x0f) * 4;
            if bytes.get(12..16) == Some(&dst4.octets()[..])
                && bytes.get(ihl) == Some(&0)
                && bytes.get(ihl + 4..ihl + 6) == Some(&[0x5a, 0x47][..])
            {
                return true;
            }
        }
        false
    })
}

//! A real rsyslogd (Debian's `rsyslog`, `rsyslog-gnutls`, `rsyslog-relp`; mmnormalize ships in
//! `rsyslog`) as the receiver of zonegate's remote audit sinks, on loopback, in a network
//! namespace or not.
//!
//! It listens on
//!
//! - `tcp_port()`: imtcp, plain (RFC 6587 octet counting, or LF-delimited);
//! - `tls_port()`: imtcp with the gtls driver (RFC 5425), server certificate only;
//! - `mtls_port()`: the same, but a client certificate signed by the test CA is required
//!   (`x509/certvalid`);
//! - `udp_port()`: imudp (RFC 5426);
//! - `relp_port()`: imrelp (RELP, librelp), plain;
//! - `relp_tls_port()`: imrelp in TLS (`tls="on"`). librelp with a certificate of its own always
//!   requires the client's (without one it would do anonymous TLS, which rustls does not), so a
//!   client certificate signed by the test CA is required (`certvalid`).
//!
//! The CA, the server certificate (`localhost`, `127.0.0.1`) and a client certificate are made
//! with the `openssl` CLI in `dir`. Everything received is written to `dir/received.jsonl`, one
//! JSON object per message with the parsed RFC 5424 fields: `input` (tcp, tls, mtls, udp, relp,
//! relptls), `timereported`, `hostname`, `appname`, `procid`, `msgid`, `structureddata`,
//! `facility`, `facilitytext`, `severity`, `version`, `msg`, and, for messages whose MSG starts
//! with `CEF:`, `parsed`: what mmnormalize's liblognorm rule `%cef:cef%` made of it
//! (`parsed.cef.DeviceVendor`, ..., `parsed.cef.Extensions.src`); [`Rsyslog::records`] decodes
//! that to JSON.
//!
//! `stop()` sends SIGTERM and waits for the exit, `start_again()` starts it with the same
//! configuration (output appended). Dropping it kills it; `dir` belongs to the caller.

#![allow(clippy::arithmetic_side_effects)]

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::plant::{NS_PREFIX, in_ns, remove_stale, require_root, sh};

/// Ports inside a namespace of our own (nothing else listens there).
const NS_PORTS: [u16; 6] = [10514, 10515, 10516, 10517, 10518, 10519];
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// A network namespace with only loopback, up; deleted on drop. Named like the plant's, so a
/// later run removes it if this one is killed.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(label: &str) -> Netns {
        require_root();
        remove_stale();
        let n = NEXT_NS.fetch_add(1, Ordering::SeqCst);
        let name = format!("{NS_PREFIX}{}-{label}{n}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub struct Rsyslog {
    ns: Option<String>,
    dir: PathBuf,
    conf: PathBuf,
    pidfile: PathBuf,
    out: PathBuf,
    ports: [u16; 6],
    child: Option<Child>,
}

impl Rsyslog {
    /// Writes certificates and configuration into `dir` and starts rsyslogd; returns once all
    /// its listeners accept connections.
    pub fn start(ns: Option<&str>, dir: &Path) -> Rsyslog {
        require_root();
        for tool in ["rsyslogd", "openssl"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "{tool} is missing: run scripts/setup"
            );
        }
        fs::create_dir_all(dir.join("work")).unwrap();
        make_certificates(dir);
        let ports = match ns {
            Some(_) => NS_PORTS,
            None => [
                free_port(),
                free_port(),
                free_port(),
                free_udp_port(),
                free_port(),
                free_port(),
            ],
        };
        let mut rs = Rsyslog {
            ns: ns.map(str::to_owned),
            dir: dir.to_owned(),
            conf: dir.join("rsyslog.conf"),
            pidfile: dir.join("rsyslogd.pid"),
            out: dir.join("received.jsonl"),
            ports,
            child: None,
        };
        fs::write(dir.join("cef.rulebase"), "version=2\nrule=:%cef:cef%\n").unwrap();
        fs::write(&rs.conf, rs.config()).unwrap();
        let check = Command::new("rsyslogd")
            .args(["-N1", "-f"])
            .arg(&rs.conf)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "rsyslogd -N1 refuses the configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        rs.start_again();
        rs
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        let [tcp, tls, mtls, udp, relp, relptls] = self.ports;
        format!(
            r#"# zonegate test receiver (tests/support/rsyslog.rs)
global(workDirectory="{d}/work" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" maxSessions="64")
module(load="imudp")
module(load="imrelp")
module(load="mmnormalize")
input(type="imtcp" address="127.0.0.1" port="{tcp}" name="tcp" ruleset="zonegate")
input(type="imtcp" address="127.0.0.1" port="{tls}" name="tls" ruleset="zonegate"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" name="mtls" ruleset="zonegate"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imudp" address="127.0.0.1" port="{udp}" name="udp" ruleset="zonegate")
input(type="imrelp" address="127.0.0.1" port="{relp}" name="relp" ruleset="zonegate")
input(type="imrelp" address="127.0.0.1" port="{relptls}" name="relptls" ruleset="zonegate"
      tls="on" tls.caCert="{d}/ca.pem" tls.myCert="{d}/server.pem"
      tls.myPrivKey="{d}/server.key" tls.authMode="certvalid")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="timereported" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="appname" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structureddata" name="structured-data" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="facilitytext" name="syslogfacility-text" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="parsed" name="$!" format="jsonf")
}}
ruleset(name="zonegate") {{
  if ($msg startswith "CEF:") then {{
    action(type="mmnormalize" rulebase="{d}/cef.rulebase")
  }}
  action(type="omfile" file="{d}/received.jsonl" template="fields")
}}
"#
        )
    }

    pub fn tcp_port(&self) -> u16 {
        self.ports[0]
    }

    pub fn tls_port(&self) -> u16 {
        self.ports[1]
    }

    /// The TLS listener that requires a client certificate ([`Rsyslog::client_cert`]).
    pub fn mtls_port(&self) -> u16 {
        self.ports[2]
    }

    pub fn udp_port(&self) -> u16 {
        self.ports[3]
    }

    pub fn relp_port(&self) -> u16 {
        self.ports[4]
    }

    /// RELP in TLS; requires [`Rsyslog::client_cert`].
    pub fn relp_tls_port(&self) -> u16 {
        self.ports[5]
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self, port: u16) -> String {
        format!("127.0.0.1:{port}")
    }

    /// The CA that signed the server's and the client's certificates.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// rsyslogd's own stderr (errors, TLS failures).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Starts rsyslogd (again) with the same configuration; returns once it accepts
    /// connections.
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "rsyslogd is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.log"))
            .unwrap();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "rsyslogd"]);
                c
            }
            None => Command::new("rsyslogd"),
        };
        let child = cmd
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&self.pidfile)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rsyslogd: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        for port in [
            self.tcp_port(),
            self.tls_port(),
            self.mtls_port(),
            self.relp_port(),
            self.relp_tls_port(),
        ] {
            loop {
                assert!(
                    self.is_running(),
                    "rsyslogd exited at start: {}",
                    self.log()
                );
                if self.accepts(port) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd does not listen on {port}: {}",
                    self.log()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn accepts(&self, port: u16) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        match &self.ns {
            Some(ns) => in_ns(ns, probe),
            None => probe(),
        }
    }

    /// SIGTERM, and wait until it has exited (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rsyslogd did not stop on SIGTERM: {}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every message received so far, in the order rsyslog wrote them.
    pub fn records(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            // A line being written is complete only with its newline.
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|mut v| {
                // rsyslog writes the $! tree as a string; give it back as JSON.
                let parsed = match v.get("parsed") {
                    Some(Value::String(s)) if !s.is_empty() => {
                        serde_json::from_str(s).unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                };
                v["parsed"] = parsed;
                v
            })
            .collect()
    }

    /// Waits until at least `n` records have arrived; returns them. Panics after `timeout`
    /// with what did arrive.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if records.len() >= n {
                return records;
            }
            if Instant::now() > deadline {
                panic!(
                    "rsyslog received {} of {n} messages within {timeout:?}; last: {:?}\nrsyslogd: {}",
                    records.len(),
                    records.last(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `sequenceId` of a record's `[meta sequenceId="N"]`.
pub fn sequence_id(record: &Value) -> u64 {
    let sd = record["structureddata"].as_str().unwrap_or_default();
    sd.split_once("sequenceId=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequenceId in {record}"))
}

/// A port free on 127.0.0.1 in this namespace now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost and 127.0.0.1, a client certificate; P-256 keys.
pub fn make_certificates(dir: &Path) {
    if dir.join("client.pem").exists() {
        return;
    }
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=zonegate test CA",
    ];
    ca.extend_from_slice(&key);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "zonegate",
            "subjectAltName=DNS:zonegate\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let subj = format!("/CN={cn}");
        let keyout = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut req = vec!["req", "-subj", &subj, "-keyout", &keyout, "-out", &csr];
        req.extend_from_slice(&key);
        openssl(dir, &req);
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
                "ca.pem",
                "-CAkey",
                "ca.key",
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
}

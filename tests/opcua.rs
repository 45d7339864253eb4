//! OPC UA through the gateway with real peers: an asyncua server as cnc-1, an asyncua client as
//! the HMI, `zonegate run` enforcing the shipped zones.yaml and policies/opcua.rego (or a variant
//! of it), and raw sockets for what no real client sends.
#![allow(
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zonegate_testkit as support;

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use opcua_types::{
    BinaryEncodable, ByteString, ContextOwned, MessageSecurityMode, NodeId, ObjectId,
    OpenSecureChannelRequest, RequestHeader, SecurityTokenRequestType,
};
use serde_json::Value;
use support::daemon::{run_args, spawn_run};
use support::plant::{Plant, in_ns};
use support::shipped_zones;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CNC: &str = "10.22.0.11";
const HMI: &str = "10.30.0.11";
const URL: &str = "opc.tcp://10.22.0.11:4840/cnc";
const FEED: &str = "ns=2;s=Machine.FeedOverride";
const SPINDLE: &str = "ns=2;s=Machine.SpindleOverride";
const TOOL: &str = "ns=2;s=Machine.ToolOffset";
const DOOR: &str = "ns=2;s=Machine.DoorUnlock";
const PROGRAM: &str = "ns=2;s=Machine.ProgramNumber";

fn python() -> String {
    let p = format!("{REPO}/.venv/bin/python");
    assert!(
        Path::new(&p).exists(),
        "{p} is missing: run scripts/setup (the README's test command does)"
    );
    p
}

/// A plant with zonegate running on `zones` and the asyncua CNC server on cnc-1.
struct Cell {
    plant: Plant,
    dir: tempfile::TempDir,
    server: Child,
    /// zonegate's process id (`ip netns exec` execs it).
    zonegate: u32,
}

impl Drop for Cell {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        support::audit::check_log(&self.dir.path().join("audit.jsonl"));
    }
}

impl Cell {
    fn start(zones: &Path, dir: tempfile::TempDir) -> Cell {
        let model = zonegate::config::load(zones).unwrap();
        let plant = Plant::build(&model);
        let audit = dir.path().join("audit.jsonl");
        let run = run_args(
            zones,
            &audit,
            &dir.path().join("state"),
            Some(&dir.path().join("control.sock")),
        );
        let zonegate = spawn_run(&plant, &run, None);
        let mut server = Command::new("ip")
            .args(["netns", "exec", &plant.zone_ns("cnc-cell"), &python()])
            .arg(format!("{REPO}/tests/peers/opcua_server.py"))
            .args(["--host", CNC, "--port", "4840", "--journal"])
            .arg(dir.path().join("server.jsonl"))
            .arg("--cert-dir")
            .arg(dir.path().join("server"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("READY"), "server did not start: {line:?}");
        let cell = Cell {
            plant,
            dir,
            server,
            zonegate,
        };
        cell.plant.wait_for_ruleset();
        cell
    }

    /// The asyncua client as the HMI: `steps` in one session; (exit code, one JSON line each).
    fn client(&self, security: &str, cert: Option<&str>, steps: Value) -> (i32, Vec<Value>) {
        self.client_waiting(security, cert, steps, "5")
    }

    /// The asyncua client's command: `steps` from the HMI, `timeout` seconds for each answer.
    fn client_command(&self, security: &str, steps: &Value, timeout: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.plant.zone_ns("operations"),
            &python(),
        ])
        .arg(format!("{REPO}/tests/peers/opcua_client.py"))
        .args(["--url", URL, "--bind", HMI, "--security", security])
        .args(["--timeout", timeout, "--steps", &steps.to_string()]);
        cmd
    }

    /// [`Cell::client`] with the client's own timeout for each answer (seconds).
    fn client_waiting(
        &self,
        security: &str,
        cert: Option<&str>,
        steps: Value,
        timeout: &str,
    ) -> (i32, Vec<Value>) {
        let mut cmd = self.client_command(security, &steps, timeout);
        if let Some(name) = cert {
            let d = self.dir.path().join("certs");
            cmd.arg("--cert")
                .arg(d.join(format!("{name}.der")))
                .arg("--key")
                .arg(d.join(format!("{name}.key")))
                .arg("--server-cert")
                .arg(self.dir.path().join("server/server.der"));
        }
        let out = cmd.output().unwrap();
        if std::env::var_os("OPCUA_TEST_DEBUG").is_some() {
            eprintln!(
                "client stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (out.status.code().unwrap_or(-1), lines)
    }

    /// The results of the steps (without the `connected` line).
    fn steps(&self, security: &str, cert: Option<&str>, steps: Value) -> Vec<Value> {
        let (code, lines) = self.client(security, cert, steps);
        let results: Vec<Value> = lines.into_iter().filter(|l| !l["step"].is_null()).collect();
        assert!(code == 0 || code == 2, "client exit {code}: {results:#?}");
        results
    }

    fn journal(&self) -> Vec<Value> {
        read_lines(&self.dir.path().join("server.jsonl"))
    }

    /// The server's own values, from its state file (not through the gateway).
    fn value(&self, node: &str) -> Value {
        let state: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("server.jsonl.state")).unwrap(),
        )
        .unwrap();
        state["values"][node].clone()
    }

    /// Waits until the audit log holds an event matching `pred` (the writer is asynchronous).
    fn audit_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        support::audit::wait_for_event(&self.dir.path().join("audit.jsonl"), what, pred)
    }

    /// Raw bytes from the HMI's address to cnc-1 through the gateway, on one connection: sends
    /// each part (reading what comes back after each), then reads until the gateway closes.
    /// Returns everything received and whether the connection was closed by the gateway.
    fn raw(&self, parts: Vec<Vec<u8>>) -> (Vec<u8>, bool) {
        in_ns(&self.plant.zone_ns("operations"), move || {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .unwrap();
            socket
                .bind(&SocketAddr::new(HMI.parse().unwrap(), 0).into())
                .unwrap();
            socket
                .connect_timeout(
                    &SocketAddr::new(CNC.parse().unwrap(), 4840).into(),
                    Duration::from_secs(3),
                )
                .unwrap();
            let mut stream: TcpStream = socket.into();
            stream
                .set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            let mut received = Vec::new();
            let mut closed = false;
            let mut buf = [0u8; 65536];
            for part in parts {
                if stream.write_all(&part).is_err() {
                    closed = true;
                    break;
                }
                match stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            while !closed {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => closed = true,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
            (received, closed)
        })
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The shipped zones.yaml with absolute policy and profile paths, and `opcua_policy` pointing at
/// a copy of policies/opcua.rego with `settings` lines replaced (`(old line, new line)`).
fn zones_with_opcua_policy(dir: &Path, settings: &[(&str, String)]) -> PathBuf {
    let mut policy = std::fs::read_to_string(format!("{REPO}/policies/opcua.rego")).unwrap();
    for (old, new) in settings {
        assert!(policy.contains(old), "opcua.rego has no line {old:?}");
        policy = policy.replace(old, new);
    }
    let policy_path = dir.join("opcua.rego");
    std::fs::write(&policy_path, policy).unwrap();
    let text = std::fs::read_to_string(shipped_zones())
        .unwrap()
        .replace(
            "opcua_policy: policies/opcua.rego",
            &format!("opcua_policy: {}", policy_path.display()),
        )
        .replace("policy: policies/", &format!("policy: {REPO}/policies/"))
        .replace(
            "register_map: profiles/",
            &format!("register_map: {REPO}/profiles/"),
        );
    let path = dir.join("zones.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn write(node: &str, value: Value, ty: &str) -> Value {
    serde_json::json!({"op": "write", "node": node, "value": value, "type": ty})
}

fn read(node: &str) -> Value {
    serde_json::json!({"op": "read", "node": node})
}

fn call(method: &str, args: Value) -> Value {
    serde_json::json!({"op": "call", "object": "ns=2;s=Machine", "method": method, "args": args})
}

fn status(step: &Value) -> &str {
    step["status"].as_str().unwrap_or("?")
}

// ---------------------------------------------------------------- SecurityPolicy None

#[test]
fn plaintext_requests_are_judged_and_a_refusal_keeps_the_session() {
    let cell = Cell::start(&shipped_zones(), tempfile::tempdir().unwrap());

    let r = cell.steps(
        "None",
        None,
        serde_json::json!([
            read(FEED),
            write(FEED, 110.0.into(), "Double"),
            // Forbidden node: refused with BadUserAccessDenied as a ServiceFault.
            write(TOOL, 5.0.into(), "Double"),
            // The same session goes on: reads and allowed writes still work.
            read(FEED),
            write(SPINDLE, 90.0.into(), "Double"),
            // A forbidden method is refused the same way; an allowed one works.
            call("ns=2;s=Machine.Unlock", serde_json::json!([])),
            call("ns=2;s=Machine.SelectProgram", serde_json::json!([{"value": 1001, "type": "UInt32"}])),
            // One forbidden node refuses the whole Write.
            {"op": "write_many", "items": [
                {"node": FEED, "value": 100.0, "type": "Double"},
                {"node": DOOR, "value": true, "type": "Boolean"}
            ]},
            // Out of range (0..120 %).
            write(FEED, 130.0.into(), "Double"),
            read(FEED),
        ]),
    );
    assert_eq!(r.len(), 10, "{r:#?}");
    assert_eq!(r[0]["value"], 100.0, "{r:#?}");
    assert_eq!(status(&r[1]), "Good", "{r:#?}");
    assert_eq!(status(&r[2]), "BadUserAccessDenied", "{r:#?}");
    assert_eq!(r[2]["service_fault"], true, "{r:#?}");
    assert_eq!(r[3]["value"], 110.0, "{r:#?}");
    assert_eq!(status(&r[4]), "Good", "{r:#?}");
    assert_eq!(status(&r[5]), "BadUserAccessDenied", "{r:#?}");
    assert_eq!(status(&r[6]), "Good", "{r:#?}");
    assert_eq!(status(&r[7]), "BadUserAccessDenied", "{r:#?}");
    assert_eq!(status(&r[8]), "BadUserAccessDenied", "{r:#?}");
    assert_eq!(r[9]["value"], 110.0, "{r:#?}");

    // The server holds what was allowed, and nothing else reached it.
    assert_eq!(cell.value(FEED), 110.0);
    assert_eq!(cell.value(SPINDLE), 90.0);
    assert_eq!(cell.value(PROGRAM), 1001);
    assert_eq!(cell.value(TOOL), 0.0);
    assert_eq!(cell.value(DOOR), false);
    let journal = cell.journal();
    let writes: Vec<&str> = journal
        .iter()
        .filter(|e| e["event"] == "write")
        .map(|e| e["node"].as_str().unwrap())
        .collect();
    assert_eq!(writes, [FEED, SPINDLE], "{journal:#?}");
    let calls: Vec<&str> = journal
        .iter()
        .filter(|e| e["event"] == "call")
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    assert_eq!(calls, ["ns=2;s=Machine.SelectProgram"], "{journal:#?}");
    // Transparent: the server saw the HMI's own address.
    assert!(
        journal
            .iter()
            .filter(|e| e["event"] == "connection")
            .all(|e| e["peer"].as_str().unwrap().starts_with(&format!("{HMI}:"))),
        "{journal:#?}"
    );

    // Each refusal and each allowed write is an audit event; the channel's opening too.
    let denied = cell.audit_event("refused write to ToolOffset", |e| {
        e["event"]["action"] == "opcua-request"
            && e["zonegate"]["decision"] == "deny"
            && e["opcua"]["nodes"][0] == TOOL
    });
    assert_eq!(
        denied["rule"]["name"], "opcua.write.forbidden_node",
        "{denied}"
    );
    assert_eq!(denied["zonegate"]["source"]["asset"], "hmi");
    assert_eq!(denied["zonegate"]["destination"]["asset"], "cnc-1");
    let unlock = cell.audit_event("refused Unlock", |e| {
        e["event"]["action"] == "opcua-request" && e["opcua"]["nodes"][0] == "ns=2;s=Machine.Unlock"
    });
    assert_eq!(
        unlock["rule"]["name"], "opcua.call.forbidden_method",
        "{unlock}"
    );
    cell.audit_event("allowed write", |e| {
        e["event"]["action"] == "opcua-request"
            && e["zonegate"]["decision"] == "allow"
            && e["opcua"]["service"] == "write"
    });
    let open = cell.audit_event("channel opened", |e| {
        e["event"]["action"] == "opcua-channel"
    });
    assert_eq!(open["rule"]["name"], "opcua.channel.plaintext", "{open}");
    assert_eq!(open["opcua"]["security_policy"], "None", "{open}");
}

// ---------------------------------------------------------------- secured channels

#[test]
fn a_conduit_that_requires_basic256sha256_and_a_known_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // The certificates first: the policy names the allowed one by thumbprint.
    let certs = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let out = Command::new(python())
            .arg(format!("{REPO}/tests/peers/opcua_certs.py"))
            .arg("--out")
            .arg(dir.path().join("certs"))
            .args([
                "--name",
                name,
                "--uri",
                &format!("urn:zonegate:test:{name}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        info["sha1"].as_str().unwrap().to_owned()
    };
    let hmi = make("hmi");
    let rogue = make("rogue");
    let zones = zones_with_opcua_policy(
        certs.path(),
        &[
            (
                "plaintext_assets := {\"hmi\"}",
                "plaintext_assets := set()".into(),
            ),
            (
                "allowed_client_certificates := set()",
                format!("allowed_client_certificates := {{\"{hmi}\"}}"),
            ),
            (
                "allow_uninspected := false",
                "allow_uninspected := true".into(),
            ),
        ],
    );
    let cell = Cell::start(&zones, dir);

    // SecurityPolicy None is refused when the channel opens.
    let (code, lines) = cell.client("None", None, serde_json::json!([read(FEED)]));
    assert_eq!(code, 2, "{lines:#?}");
    assert_eq!(lines[0]["ok"], false, "{lines:#?}");
    let refused = cell.audit_event("None refused", |e| {
        e["event"]["action"] == "opcua-channel" && e["zonegate"]["decision"] == "deny"
    });
    assert_eq!(
        refused["rule"]["name"], "opcua.channel.plaintext",
        "{refused}"
    );

    // SignAndEncrypt with the allowed certificate works end to end, uninspected by policy.
    let r = cell.steps(
        "Basic256Sha256_SignAndEncrypt",
        Some("hmi"),
        serde_json::json!([write(FEED, 111.0.into(), "Double"), read(FEED)]),
    );
    assert_eq!(status(&r[0]), "Good", "{r:#?}");
    assert_eq!(r[1]["value"], 111.0, "{r:#?}");
    assert_eq!(cell.value(FEED), 111.0);
    let uninspected = cell.audit_event("uninspected channel", |e| {
        e["event"]["action"] == "opcua-uninspected"
    });
    assert_eq!(uninspected["opcua"]["inspected"], false, "{uninspected}");
    assert_eq!(
        uninspected["opcua"]["client_certificate"]["thumbprint"],
        hmi.as_str(),
        "{uninspected}"
    );

    // Sign mode is readable: requests are judged; a refusal ends the connection (an ERR), since
    // a fault cannot be forged on a signed channel.
    let r = cell.steps(
        "Basic256Sha256_Sign",
        Some("hmi"),
        serde_json::json!([
            write(FEED, 112.0.into(), "Double"),
            write(TOOL, 3.0.into(), "Double"),
            read(FEED),
        ]),
    );
    assert_eq!(status(&r[0]), "Good", "{r:#?}");
    assert_ne!(status(&r[1]), "Good", "{r:#?}");
    assert_eq!(cell.value(FEED), 112.0);
    assert_eq!(cell.value(TOOL), 0.0);
    cell.audit_event("refused write on a signed channel", |e| {
        e["event"]["action"] == "opcua-request"
            && e["zonegate"]["decision"] == "deny"
            && e["opcua"]["security_mode"] == "Sign"
    });

    // Another certificate is refused when its channel opens: the server never sees it.
    let (code, lines) = cell.client(
        "Basic256Sha256_SignAndEncrypt",
        Some("rogue"),
        serde_json::json!([write(FEED, 1.0.into(), "Double")]),
    );
    assert_eq!(code, 2, "{lines:#?}");
    assert_eq!(cell.value(FEED), 112.0);
    assert!(
        !cell
            .journal()
            .iter()
            .any(|e| e["event"] == "channel" && e["client_cert"] == rogue.as_str()),
        "{:#?}",
        cell.journal()
    );
    let cert = cell.audit_event("rogue refused", |e| {
        e["event"]["action"] == "opcua-channel"
            && e["opcua"]["client_certificate"]["thumbprint"] == rogue.as_str()
    });
    assert_eq!(cert["rule"]["name"], "opcua.channel.certificate", "{cert}");
}

// ---------------------------------------------------------------- malformed input

/// A HEL chunk (Part 6 7.1.2.3) for the cell's endpoint.
fn hello() -> Vec<u8> {
    let url = URL.as_bytes();
    let mut b = Vec::new();
    b.extend_from_slice(b"HELF");
    b.extend_from_slice(&(32 + url.len() as u32).to_le_bytes()); // MessageSize
    b.extend_from_slice(&0u32.to_le_bytes()); // ProtocolVersion
    b.extend_from_slice(&65535u32.to_le_bytes()); // ReceiveBufferSize
    b.extend_from_slice(&65535u32.to_le_bytes()); // SendBufferSize
    b.extend_from_slice(&0u32.to_le_bytes()); // MaxMessageSize: no limit
    b.extend_from_slice(&0u32.to_le_bytes()); // MaxChunkCount: no limit
    b.extend_from_slice(&(url.len() as i32).to_le_bytes()); // EndpointUrl length
    b.extend_from_slice(url);
    b
}

/// An OPN chunk with SecurityPolicy None and a plaintext OpenSecureChannelRequest.
fn open_none() -> Vec<u8> {
    let owned = ContextOwned::default();
    let ctx = owned.context();
    let mut body = Vec::new();
    NodeId::from(ObjectId::OpenSecureChannelRequest_Encoding_DefaultBinary as u32)
        .encode(&mut body, &ctx)
        .unwrap();
    OpenSecureChannelRequest {
        request_header: RequestHeader {
            request_handle: 1,
            timeout_hint: 10_000,
            ..RequestHeader::default()
        },
        client_protocol_version: 0,
        request_type: SecurityTokenRequestType::Issue,
        security_mode: MessageSecurityMode::None,
        client_nonce: ByteString::null(),
        requested_lifetime: 600_000,
    }
    .encode(&mut body, &ctx)
    .unwrap();
    let uri = b"http://opcfoundation.org/UA/SecurityPolicy#None";
    let mut b = Vec::new();
    b.extend_from_slice(b"OPNF");
    let size = 8 + 4 + 4 + uri.len() + 4 + 4 + 8 + body.len();
    b.extend_from_slice(&(size as u32).to_le_bytes()); // MessageSize
    b.extend_from_slice(&0u32.to_le_bytes()); // SecureChannelId: none yet
    b.extend_from_slice(&(uri.len() as i32).to_le_bytes()); // SecurityPolicyUri
    b.extend_from_slice(uri);
    b.extend_from_slice(&(-1i32).to_le_bytes()); // SenderCertificate: null
    b.extend_from_slice(&(-1i32).to_le_bytes()); // ReceiverCertificateThumbprint: null
    b.extend_from_slice(&1u32.to_le_bytes()); // SequenceNumber
    b.extend_from_slice(&1u32.to_le_bytes()); // RequestId
    b.extend_from_slice(&body);
    b
}

/// A MSG chunk of type `chunk_type` ('C' or 'F') carrying `body` for request 2.
fn message_chunk(chunk_type: u8, sequence: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"MSG");
    b.push(chunk_type);
    b.extend_from_slice(&((24 + body.len()) as u32).to_le_bytes()); // MessageSize
    b.extend_from_slice(&1u32.to_le_bytes()); // SecureChannelId
    b.extend_from_slice(&1u32.to_le_bytes()); // TokenId
    b.extend_from_slice(&sequence.to_le_bytes()); // SequenceNumber
    b.extend_from_slice(&2u32.to_le_bytes()); // RequestId
    b.extend_from_slice(body);
    b
}

/// The status code of an ERR message among `received`, if there is one.
fn err_status(received: &[u8]) -> Option<u32> {
    let at = received.windows(4).position(|w| w == b"ERRF")?;
    let code = received.get(at + 8..at + 12)?;
    Some(u32::from_le_bytes(code.try_into().ok()?))
}

#[test]
fn malformed_input_never_reaches_the_server() {
    let cell = Cell::start(&shipped_zones(), tempfile::tempdir().unwrap());
    let connections = || {
        cell.journal()
            .iter()
            .filter(|e| e["event"] == "connection")
            .count()
    };

    // A header claiming 4 GiB: refused as soon as its 8 bytes are in, before any buffering,
    // and the server does not even see a connection.
    let (got, closed) = cell.raw(vec![b"HELF\xff\xff\xff\xff".to_vec()]);
    assert!(closed);
    assert_eq!(err_status(&got), Some(0x8080_0000), "{got:02x?}"); // BadTcpMessageTooLarge
    // An unknown message type.
    let (got, closed) = cell.raw(vec![b"XYZF\x08\x00\x00\x00".to_vec()]);
    assert!(closed);
    assert_eq!(err_status(&got), Some(0x807E_0000), "{got:02x?}"); // BadTcpMessageTypeInvalid
    // A truncated header, then the client leaves.
    let (_, closed) = cell.raw(vec![b"HEL".to_vec()]);
    assert!(closed);
    // A Hello whose size covers less than its own fields.
    let mut short = hello();
    short[4..8].copy_from_slice(&20u32.to_le_bytes());
    let (got, closed) = cell.raw(vec![short]);
    assert!(closed);
    assert!(err_status(&got).is_some(), "{got:02x?}");
    assert_eq!(connections(), 0, "{:#?}", cell.journal());

    // A message before any secure channel: the Hello passes, the MSG does not.
    let (got, closed) = cell.raw(vec![hello(), message_chunk(b'F', 1, &[0u8; 16])]);
    assert!(closed);
    assert_eq!(err_status(&got), Some(0x807E_0000), "{got:02x?}");
    // Too many chunks for one message: the proxy holds them back and refuses the 65th; none
    // reaches the server.
    let chunks: Vec<u8> = (0..65u32)
        .flat_map(|i| message_chunk(b'C', 2 + i, &[0u8; 1000]))
        .collect();
    let (got, closed) = cell.raw(vec![hello(), open_none(), chunks]);
    assert!(closed);
    assert_eq!(err_status(&got), Some(0x8080_0000), "{got:02x?}");

    // The server journals as it gets to its input: wait until both connections are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cell
        .journal()
        .iter()
        .filter(|e| e["event"] == "disconnect")
        .count()
        < 2
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let journal = cell.journal();
    assert_eq!(connections(), 2, "{journal:#?}");
    assert_eq!(
        journal.iter().filter(|e| e["event"] == "channel").count(),
        1,
        "only the valid OPN reached the server: {journal:#?}"
    );
    assert!(
        !journal
            .iter()
            .any(|e| ["session_created", "write", "call", "channel_error"]
                .contains(&e["event"].as_str().unwrap_or(""))),
        "{journal:#?}"
    );
    for kind in ["chunk_too_large", "message_type", "too_many_chunks"] {
        cell.audit_event(kind, |e| {
            e["event"]["action"] == "opcua-malformed" && e["opcua"]["error"] == kind
        });
    }
    cell.audit_event("MSG before OPN", |e| {
        e["event"]["action"] == "opcua-protocol-violation"
    });

    // The proxy is still up, and small: a real client works.
    let r = cell.steps("None", None, serde_json::json!([read(FEED)]));
    assert_eq!(r[0]["value"], 100.0, "{r:#?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", cell.zonegate)).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 64 * 1024, "zonegate peak RSS {rss_kib} KiB");
}

// ---------------------------------------------------------------- limits

/// The shipped plant with the management API (for the metrics) and 1 s request and response
/// timeouts, so that the tests wait seconds, not minutes.
fn zones_with_short_timeouts(dir: &Path) -> PathBuf {
    let path = support::mgmt::zones_with_api(dir);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("\nlimits:"),
        "the shipped zones.yaml sets limits"
    );
    std::fs::write(
        &path,
        format!("{text}\nlimits:\n  request_timeout: 1s\n  response_timeout: 1s\n"),
    )
    .unwrap();
    path
}

/// `zonegate_limit_hits_total{limit="<limit>"}` from the management API.
fn limit_hits(cell: &Cell, limit: &str) -> u64 {
    support::mgmt::limit_hits(&cell.plant, cell.dir.path(), limit)
}

/// A process stopped with SIGSTOP: its kernel still accepts connections and takes bytes, but
/// nothing answers. SIGCONT when dropped, also when an assertion fails.
struct Stopped(Pid);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = Pid::from_raw(i32::try_from(pid).unwrap());
        kill(pid, Signal::SIGSTOP).unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// The asyncua client running: its lines are read one at a time, while the test changes the
/// plant between its steps (`wait_file` steps wait for the test).
struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Running {
    fn start(cell: &Cell, steps: &Value, timeout: &str) -> Running {
        let mut child = cell
            .client_command("None", steps, timeout)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Running { child, lines }
    }

    fn next(&mut self) -> Value {
        let line = self.lines.next().expect("the client ended early").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn wait(mut self) -> i32 {
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_file(path: &Path) -> Value {
    serde_json::json!({"op": "wait_file", "path": path})
}

#[test]
fn a_silent_server_earns_bad_timeout_and_the_session_goes_on_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let zones = zones_with_short_timeouts(dir.path());
    let cell = Cell::start(&zones, dir);
    let stopped_file = cell.dir.path().join("stopped");
    let resumed_file = cell.dir.path().join("resumed");
    // The client waits 10 s for each answer: only the gateway can time out within the test's
    // bounds.
    let mut hmi = Running::start(
        &cell,
        &serde_json::json!([
            read(FEED),
            wait_file(&stopped_file),
            read(FEED),
            wait_file(&resumed_file),
            read(FEED),
        ]),
        "10",
    );
    assert_eq!(hmi.next()["op"], "connected");
    let r = hmi.next();
    assert_eq!(r["value"], 100.0, "{r}");

    // The server stops. The Read gets a ServiceFault Bad_Timeout from the gateway after
    // response_timeout (1 s), and the session stays up.
    let stopped = Stopped::new(cell.server.id());
    std::fs::write(&stopped_file, "").unwrap();
    let started = Instant::now();
    assert_eq!(hmi.next()["op"], "wait_file");
    let r = hmi.next();
    let took = started.elapsed();
    assert_eq!(status(&r), "BadTimeout", "{r}");
    assert_eq!(
        r["service_fault"], true,
        "answered, not the client's own timeout: {r}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "Bad_Timeout after {took:?}, expected about response_timeout (1 s)"
    );

    // Meanwhile a new connection's Hello goes unanswered: an ERR BadTimeout ends it as soon.
    let started = Instant::now();
    let (code, lines) = cell.client_waiting("None", None, serde_json::json!([read(FEED)]), "10");
    let took = started.elapsed();
    assert_eq!(code, 2, "{lines:#?}");
    assert_eq!(lines[0]["op"], "connect", "{lines:#?}");
    assert_eq!(status(&lines[0]), "BadTimeout", "{lines:#?}");
    assert_ne!(
        lines[0]["error"], "timeout",
        "the gateway's ERR, not the client's timeout"
    );
    assert!(took < Duration::from_secs(5), "refused after {took:?}");

    // The server goes on and answers the old Read, late. That answer must not reach the client
    // (asyncua would close the connection over a response to no request); the same session
    // reads again.
    drop(stopped);
    std::fs::write(&resumed_file, "").unwrap();
    assert_eq!(hmi.next()["op"], "wait_file");
    let r = hmi.next();
    assert_eq!(status(&r), "Good", "{r}");
    assert_eq!(r["value"], 100.0, "{r}");
    assert_eq!(hmi.wait(), 0, "the session ended normally");

    let e = cell.audit_event("the Read timed out", |e| {
        e["event"]["action"] == "opcua-server-timeout" && e["opcua"]["service"] == "read"
    });
    assert_eq!(e["event"]["outcome"], "failure", "{e}");
    assert_eq!(e["source"]["ip"], HMI, "{e}");
    assert_eq!(e["opcua"]["answer"], "service_fault", "{e}");
    let id = e["opcua"]["request_id"].as_u64().expect("the request id");
    let reason = e["zonegate"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("request {id} ")) && reason.contains("limits.response_timeout"),
        "{e}"
    );
    let e = cell.audit_event("the Hello timed out", |e| {
        e["event"]["action"] == "opcua-server-timeout" && e["opcua"]["service"] == "hello"
    });
    assert_eq!(e["opcua"]["answer"], "error", "{e}");
    assert_eq!(limit_hits(&cell, "response_timeout"), 2);
}

/// Reads one whole chunk (8-byte header, then the size it gives).
fn read_chunk(stream: &mut TcpStream) -> Vec<u8> {
    let mut chunk = vec![0u8; 8];
    stream.read_exact(&mut chunk).unwrap();
    let size = u32::from_le_bytes(chunk[4..8].try_into().unwrap()) as usize;
    chunk.resize(size, 0);
    stream.read_exact(&mut chunk[8..]).unwrap();
    chunk
}

#[test]
fn a_client_that_stops_half_way_through_a_chunk_header_is_cut_off_after_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let zones = zones_with_short_timeouts(dir.path());
    let cell = Cell::start(&zones, dir);
    let (ack, opened, after, took) = in_ns(&cell.plant.zone_ns("operations"), || {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket
            .bind(&SocketAddr::new(HMI.parse().unwrap(), 0).into())
            .unwrap();
        socket
            .connect_timeout(
                &SocketAddr::new(CNC.parse().unwrap(), 4840).into(),
                Duration::from_secs(3),
            )
            .unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(&hello()).unwrap();
        let ack = read_chunk(&mut stream);
        stream.write_all(&open_none()).unwrap();
        let opened = read_chunk(&mut stream);
        // Half a MSG header, then nothing.
        stream.write_all(b"MSGF").unwrap();
        let started = Instant::now();
        let mut after = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => after.extend_from_slice(&buf[..n]),
            }
        }
        (ack, opened, after, started.elapsed())
    });
    assert_eq!(&ack[..4], b"ACKF", "{ack:02x?}");
    assert_eq!(&opened[..4], b"OPNF", "{opened:02x?}");
    assert_eq!(err_status(&after), Some(0x800A_0000), "{after:02x?}"); // BadTimeout
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut off after {took:?}, expected about request_timeout (1 s)"
    );
    let e = cell.audit_event("opcua-request-timeout", |e| {
        e["event"]["action"] == "opcua-request-timeout"
    });
    assert_eq!(e["source"]["ip"], HMI, "{e}");
    assert!(
        e["zonegate"]["reason"]
            .as_str()
            .unwrap()
            .contains("limits.request_timeout; 4 bytes"),
        "{e}"
    );
    assert_eq!(limit_hits(&cell, "request_timeout"), 1);
    // Other clients are not affected.
    let r = cell.steps("None", None, serde_json::json!([read(FEED)]));
    assert_eq!(r[0]["value"], 100.0, "{r:#?}");
}

#[test]
fn configured_frame_sizes_are_negotiated_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let zones = zones_with_short_timeouts(dir.path());
    let text = std::fs::read_to_string(&zones).unwrap();
    std::fs::write(
        &zones,
        format!("{text}  opcua: {{max_chunk_size: 8192, max_chunks: 4}}\n"),
    )
    .unwrap();
    let cell = Cell::start(&zones, dir);

    // The client asks for 64 KiB buffers and no limits; the Acknowledge it gets back offers
    // what the gateway allows. ACK: "ACKF", MessageSize, ProtocolVersion, ReceiveBufferSize,
    // SendBufferSize, MaxMessageSize, MaxChunkCount (u32 little-endian each).
    let (ack, _) = cell.raw(vec![hello()]);
    assert_eq!(ack.get(..4), Some(&b"ACKF"[..]), "{ack:02x?}");
    let field = |at: usize| u32::from_le_bytes(ack[at..at + 4].try_into().unwrap());
    assert!(field(12) <= 8192, "receive buffer {}", field(12));
    assert!(field(16) <= 8192, "send buffer {}", field(16));
    assert_eq!(field(24), 4, "max chunk count");

    // A chunk over the size and a message of more chunks than that are refused.
    let (got, closed) = cell.raw(vec![
        hello(),
        open_none(),
        message_chunk(b'F', 2, &[0u8; 9000]),
    ]);
    assert!(closed);
    assert_eq!(err_status(&got), Some(0x8080_0000), "{got:02x?}"); // BadTcpMessageTooLarge
    let chunks: Vec<u8> = (0..5u32)
        .flat_map(|i| message_chunk(b'C', 2 + i, &[0u8; 1000]))
        .collect();
    let (got, closed) = cell.raw(vec![hello(), open_none(), chunks]);
    assert!(closed);
    assert_eq!(err_status(&got), Some(0x8080_0000), "{got:02x?}");
    for kind in ["chunk_too_large", "too_many_chunks"] {
        cell.audit_event(kind, |e| {
            e["event"]["action"] == "opcua-malformed" && e["opcua"]["error"] == kind
        });
    }

    // A real client negotiates the smaller buffers and works.
    let r = cell.steps("None", None, serde_json::json!([read(FEED)]));
    assert_eq!(r[0]["value"], 100.0, "{r:#?}");
}

// ---------------------------------------------------------------- differential (issue 13)

/// cnc-2's address: the node-opcua server listens there, next to asyncua on cnc-1.
const CNC2: &str = "10.22.0.12";
const RELEASED_PROGRAMS: [u64; 5] = [1000, 1001, 1002, 2000, 2010];
const NUMERIC_TYPES: [&str; 10] = [
    "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double",
];

/// The node-opcua CNC server (tests/peers/node/server.js) on `host` in the cell's zone; killed
/// when dropped.
struct NodeServer {
    child: Child,
    journal: PathBuf,
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeServer {
    fn start(cell: &Cell, host: &str) -> NodeServer {
        let dir = format!("{REPO}/tests/peers/node");
        assert!(
            Path::new(&format!("{dir}/node_modules/node-opcua-server")).exists(),
            "{dir}/node_modules is missing: run scripts/setup (it runs npm ci there)"
        );
        let journal = cell.dir.path().join("node-server.jsonl");
        let out = cell.dir.path().join("node-server.out");
        let child = Command::new("ip")
            .args(["netns", "exec", &cell.plant.zone_ns("cnc-cell"), "node"])
            .arg(format!("{dir}/server.js"))
            .args(["--host", host, "--port", "4840", "--journal"])
            .arg(&journal)
            .arg("--pki")
            .arg(cell.dir.path().join("node-pki"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(cell.dir.path().join("node-server.err")).unwrap())
            .spawn()
            .unwrap();
        let mut server = NodeServer { child, journal };
        // node-opcua loads the standard address space and makes its certificate: 5 to 20 s.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.lines().any(|l| l.starts_with("READY")) {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!(
                    "node-opcua server exited ({status}): {}",
                    std::fs::read_to_string(cell.dir.path().join("node-server.err"))
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "node-opcua server not ready in 90 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// tests/peers/opcua_craft.py from namespace `ns`, bound to `bind`, against `url`: one result per
/// crafted case.
fn craft(ns: &str, bind: &str, url: &str) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, &python()])
        .arg(format!("{REPO}/tests/peers/opcua_craft.py"))
        .args(["--url", url, "--bind", bind, "--timeout", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "opcua_craft.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn is_number_in(v: &Value, min: f64, max: f64) -> bool {
    v.as_f64().is_some_and(|x| x >= min && x <= max)
}

fn numeric_scalar(value: &Value, ty: &Value) -> bool {
    value.is_number() && NUMERIC_TYPES.contains(&ty.as_str().unwrap_or(""))
}

fn released(v: &Value) -> bool {
    v.as_f64()
        .is_some_and(|x| RELEASED_PROGRAMS.iter().any(|p| *p as f64 == x))
}

/// Whether policies/opcua.rego allows what a server journaled as executed, read from the
/// server's side: the Value of FeedOverride (0..120) or SpindleOverride (50..120) set to a
/// number, of ProgramNumber to a released program (scalars of a numeric type, no index range);
/// SelectProgram(one released program) or ResetAlarm() on Machine. Everything else is refused.
fn policy_allows(e: &Value) -> bool {
    match e["event"].as_str() {
        Some("write") => {
            let scalar = numeric_scalar(&e["value"], &e["type"]) && e.get("array").is_none();
            let whole = e["attribute"] == "Value"
                && e.get("index_range").is_none_or(|r| r.as_str() == Some(""));
            let value = &e["value"];
            whole
                && scalar
                && match e["node"].as_str().unwrap_or("") {
                    FEED => is_number_in(value, 0.0, 120.0),
                    SPINDLE => is_number_in(value, 50.0, 120.0),
                    PROGRAM => released(value),
                    _ => false,
                }
        }
        Some("call") => {
            let args = e["args"].as_array().cloned().unwrap_or_default();
            e["object"] == "ns=2;s=Machine"
                && match e["method"].as_str().unwrap_or("") {
                    "ns=2;s=Machine.SelectProgram" => {
                        args.len() == 1
                            && numeric_scalar(&args[0]["value"], &args[0]["type"])
                            && released(&args[0]["value"])
                    }
                    "ns=2;s=Machine.ResetAlarm" => args.is_empty(),
                    _ => false,
                }
        }
        _ => false,
    }
}

/// The writes and calls a server executed (status Good), by the session it journaled them in
/// (lowercase: node-opcua prints GUIDs in capitals, asyncua in small letters).
fn executed_by_session(journal: &[Value]) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut by_session = std::collections::BTreeMap::<String, Vec<Value>>::new();
    for e in journal {
        if matches!(e["event"].as_str(), Some("write" | "call")) && e["status"] == "Good" {
            let session = e["session"].as_str().unwrap_or("?").to_lowercase();
            by_session.entry(session).or_default().push(e.clone());
        }
    }
    by_session
}

fn item_name(e: &Value) -> String {
    match e["event"].as_str() {
        Some("call") => format!("call {}", e["method"].as_str().unwrap_or("?")),
        _ => format!(
            "write {}.{}={} ({})",
            e["node"].as_str().unwrap_or("?"),
            e["attribute"].as_str().unwrap_or("?"),
            e["value"],
            e["type"].as_str().unwrap_or("?")
        ),
    }
}

/// What one run of the crafted cases left on one server: per case, the items it executed.
struct Run {
    server: &'static str,
    results: Vec<Value>,
    executed: std::collections::BTreeMap<String, Vec<Value>>,
}

impl Run {
    fn new(server: &'static str, results: Vec<Value>, journal: &[Value]) -> Run {
        Run {
            server,
            results,
            executed: executed_by_session(journal),
        }
    }

    /// What the server executed in the sessions of the case `result` (a case may open two).
    fn items(&self, result: &Value) -> Vec<Value> {
        result["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| self.executed.get(&s.as_str()?.to_lowercase()))
            .flatten()
            .cloned()
            .collect()
    }

    /// Every way the run breaks the differential rules, one line each, naming the case.
    fn failures(&self, audit: &[Value]) -> Vec<String> {
        let mut failures = Vec::new();
        let sessions: Vec<String> = self
            .results
            .iter()
            .filter_map(|r| r["sessions"].as_array())
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_lowercase))
            .collect();
        for (session, items) in &self.executed {
            let from_hmi = items.iter().any(|e| {
                e["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("{HMI}:")))
            });
            if from_hmi && !sessions.contains(session) {
                failures.push(format!(
                    "{}: executed [{}] in a session no case made ({session})",
                    self.server,
                    items.iter().map(item_name).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for r in &self.results {
            let name = r["case"].as_str().unwrap_or("?");
            let expect = r["expect"].as_str().unwrap_or("?");
            let want = r["executes"].as_u64().unwrap_or(0) as usize;
            if r["outcome"] == "setup_failed" {
                failures.push(format!(
                    "{}: {name}: no session through the gateway: {}",
                    self.server, r["error"]
                ));
                continue;
            }
            let items = self.items(r);
            for e in items.iter().filter(|e| !policy_allows(e)) {
                failures.push(format!(
                    "{}: {name}: the server executed what the policy refuses: {}",
                    self.server,
                    item_name(e)
                ));
            }
            let ok = match expect {
                "allowed" => items.len() == want,
                "refused" => items.is_empty(),
                _ => items.is_empty() || items.len() == want,
            };
            if !ok {
                failures.push(format!(
                    "{}: {name} ({expect}, {want} to execute): executed {} [{}]; the client got {} {}",
                    self.server,
                    items.len(),
                    items.iter().map(item_name).collect::<Vec<_>>().join(", "),
                    r["outcome"],
                    r["status"].as_str().unwrap_or("")
                ));
            }
            // The gateway says what it judged: an event of this connection beyond the channel's.
            let port = r["local"]
                .as_str()
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.parse::<u64>().ok());
            let judged = audit.iter().any(|e| {
                e["source"]["ip"] == HMI
                    && e["source"]["port"].as_u64() == port
                    && matches!(
                        e["event"]["action"].as_str(),
                        Some("opcua-request" | "opcua-malformed" | "opcua-protocol-violation")
                    )
            });
            if !judged {
                failures.push(format!(
                    "{}: {name}: no audit event says what the gateway judged (source port {port:?})",
                    self.server
                ));
            }
        }
        failures
    }

    /// Direct runs: the cases expected refused of which the server executed something, with
    /// what it executed (`!` marks an item the policy refuses), and whether any item is one the
    /// policy refuses.
    fn attacks(&self) -> Vec<(String, String, bool)> {
        self.results
            .iter()
            .filter(|r| r["expect"] == "refused")
            .filter_map(|r| {
                let items = self.items(r);
                let refused = items.iter().any(|e| !policy_allows(e));
                let list: Vec<String> = items
                    .iter()
                    .map(|e| {
                        let mark = if policy_allows(e) { "" } else { "!" };
                        format!("{mark}{}", item_name(e))
                    })
                    .collect();
                (!list.is_empty()).then(|| {
                    (
                        r["case"].as_str().unwrap_or("?").to_owned(),
                        list.join(", "),
                        refused,
                    )
                })
            })
            .collect()
    }

    fn table(&self, title: &str) -> String {
        let mut out = format!("{title}\n");
        for r in &self.results {
            let items = self.items(r);
            out.push_str(&format!(
                "  {:34} {:8} {:14} {:24} executed [{}]\n",
                r["case"].as_str().unwrap_or("?"),
                r["expect"].as_str().unwrap_or("?"),
                r["outcome"].as_str().unwrap_or("?"),
                r["status"].as_str().unwrap_or(""),
                items.iter().map(item_name).collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }
}

/// Issue 13, acceptance 1: crafted requests (tests/peers/opcua_craft.py: header extensions in
/// each ExtensionObject encoding, nested values, NodeId forms, other attributes, chunk orders with
/// abort and interleaving, RegisterNodes aliases, unknown services) through the gateway to two
/// real servers, asyncua on cnc-1 and node-opcua on cnc-2. Counted on the servers' own journals:
/// nothing the policy refuses executes, every allowed case executes exactly as often as it says,
/// and the audit log has an event for each case. The same cases sent directly to each server
/// show that the refused ones are real attacks: there, the servers execute them.
#[test]
fn crafted_requests_run_on_real_servers_only_as_the_policy_allows() {
    let cell = Cell::start(&shipped_zones(), tempfile::tempdir().unwrap());
    let node = NodeServer::start(&cell, CNC2);
    let ops = cell.plant.zone_ns("operations");
    let cnc_ns = cell.plant.zone_ns("cnc-cell");
    let servers: [(&'static str, &str, PathBuf); 2] = [
        ("asyncua", CNC, cell.dir.path().join("server.jsonl")),
        ("node-opcua", CNC2, node.journal.clone()),
    ];

    let mut failures = Vec::new();
    let mut report = String::new();
    let mut attacks = Vec::new();
    for (name, host, journal) in &servers {
        let url = format!("opc.tcp://{host}:4840/cnc");
        let through = craft(&ops, HMI, &url);
        assert!(through.len() >= 40, "{} cases", through.len());
        // Directly, from the server's own zone: no gateway on the way.
        let direct = craft(&cnc_ns, host, &url);
        let lines = read_lines(journal);
        let gw = Run::new(name, through, &lines);
        let audit = support::audit::events(&cell.dir.path().join("audit.jsonl"));
        failures.extend(gw.failures(&audit));
        report.push_str(&gw.table(&format!("{name} through zonegate:")));
        let dr = Run::new(name, direct, &lines);
        report.push_str(&dr.table(&format!("{name} direct:")));
        // The plain controls run directly: the harness and the server work.
        for r in dr.results.iter().filter(|r| {
            r["case"]
                .as_str()
                .is_some_and(|c| c.starts_with("control-"))
        }) {
            assert_eq!(
                dr.items(r).len() as u64,
                r["executes"].as_u64().unwrap(),
                "{name} direct: {r}\n{report}"
            );
        }
        let found = dr.attacks();
        assert!(
            found.iter().any(|(_, _, refused)| *refused),
            "{name}: no crafted case executes anything the policy refuses, even directly: the harness could not fail\n{report}"
        );
        attacks.extend(
            found
                .into_iter()
                .map(|(case, items, _)| format!("{name}: {case}: {items}")),
        );
    }
    eprintln!(
        "{report}\ncases expected refused that a server executes directly (! the policy refuses the item):\n  {}",
        attacks.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} differential failures:\n  {}\n\n{report}",
        failures.len(),
        failures.join("\n  ")
    );
}

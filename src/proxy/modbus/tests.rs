//! The Modbus session without sockets: byte fixtures in, bytes and audit events out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::proxy::testkit::{Kit, actions, client, device, zones};

/// Reads are allowed; writes below address 100 are allowed; anything else is refused.
const POLICY: &str = r#"
package zonegate.test

import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request", "rule": "test.default"}

decision := {"allow": true, "reason": "", "rule": "test.read"} if {
	input.modbus.access == "read"
} else := {"allow": true, "reason": "", "rule": "test.write"} if {
	input.modbus.access == "write"
	input.modbus.address < 100
}
"#;

/// What a reload brings: nothing is allowed any more.
const POLICY_NOTHING: &str = r#"
package zonegate.test

import rego.v1

decision := {"allow": false, "reason": "the reloaded policy allows nothing", "rule": "test.nothing"}
"#;

const LIMITS: &str =
    "request_timeout: 1s, response_timeout: 2s, idle_timeout: 60s, in_flight_per_connection: 4";

/// Read Holding Registers, transaction 1: 2 registers from address 0.
const READ_1: [u8; 12] = [
    0x00, 0x01, // transaction id 1
    0x00, 0x00, // protocol id 0 (Modbus)
    0x00, 0x06, // length: unit id + 5 PDU bytes
    0x01, // unit id 1
    0x03, // function 0x03 Read Holding Registers
    0x00, 0x00, // starting address 0
    0x00, 0x02, // quantity 2
];

/// The same read as transaction 2.
const READ_2: [u8; 12] = [
    0x00, 0x02, // transaction id 2
    0x00, 0x00, // protocol id 0
    0x00, 0x06, // length 6
    0x01, // unit id 1
    0x03, // function 0x03
    0x00, 0x00, // starting address 0
    0x00, 0x02, // quantity 2
];

/// Write Single Register, transaction 3: 42 to address 200, which the policy refuses.
const WRITE_200: [u8; 12] = [
    0x00, 0x03, // transaction id 3
    0x00, 0x00, // protocol id 0
    0x00, 0x06, // length 6
    0x01, // unit id 1
    0x06, // function 0x06 Write Single Register
    0x00, 0xC8, // register address 200
    0x00, 0x2A, // value 42
];

/// The device's answer to [`READ_1`]: two registers, 10 and 11.
const ANSWER_1: [u8; 13] = [
    0x00, 0x01, // transaction id 1 (echoed)
    0x00, 0x00, // protocol id 0
    0x00, 0x07, // length: unit id + 6 PDU bytes
    0x01, // unit id 1
    0x03, // function 0x03
    0x04, // byte count 4
    0x00, 0x0A, // register 0: 10
    0x00, 0x0B, // register 1: 11
];

/// [`ANSWER_1`] for transaction 2.
const ANSWER_2: [u8; 13] = [
    0x00, 0x02, // transaction id 2
    0x00, 0x00, // protocol id 0
    0x00, 0x07, // length 7
    0x01, // unit id 1
    0x03, // function 0x03
    0x04, // byte count 4
    0x00, 0x0A, // 10
    0x00, 0x0B, // 11
];

/// The exception answer to [`WRITE_200`] with `code`.
fn refused_write(code: u8) -> [u8; 9] {
    [
        0x00, 0x03, // transaction id 3 (echoed)
        0x00, 0x00, // protocol id 0
        0x00, 0x03, // length: unit id + function + code
        0x01, // unit id 1
        0x86, // 0x06 | 0x80: an exception to Write Single Register
        code,
    ]
}

fn session(kit: &Kit, now: Instant) -> ModbusSession {
    let mut s = ModbusSession::new(
        client(),
        device(),
        kit.route(Protocol::Modbus),
        None,
        kit.watch(),
        kit.audit(),
        now,
    );
    s.connected(now);
    s
}

/// Bytes from the client, as the driver hands them over (the session must want them).
fn from_client(s: &mut ModbusSession, bytes: &[u8], now: Instant) -> Flow<End> {
    assert!(s.wants_client(), "the session reads the client");
    let io = s.io();
    io.client[..bytes.len()].copy_from_slice(bytes);
    s.client_read(bytes.len(), now)
}

fn from_device(s: &mut ModbusSession, bytes: &[u8], now: Instant) -> Flow<End> {
    assert!(s.wants_device(), "the session reads the device");
    let io = s.io();
    io.device[..bytes.len()].copy_from_slice(bytes);
    s.device_read(bytes.len(), now)
}

/// What the session queued (to the client, to the device), taken as the driver writes it.
fn written(s: &mut ModbusSession) -> (Vec<u8>, Vec<u8>) {
    let out = s.outgoing();
    (std::mem::take(out.to_client), std::mem::take(out.to_device))
}

fn enforcing(on_deny: &str) -> Kit {
    Kit::new(
        &zones(
            &format!("policy: p.rego, mode: enforce, on_deny: {on_deny}"),
            LIMITS,
        ),
        POLICY,
    )
}

#[test]
fn pipelined_requests_in_one_read_are_judged_each_and_answered_in_order() {
    let mut kit = enforcing("illegal-data-address");
    let t0 = Instant::now();
    let mut s = session(&kit, t0);
    // Three ADUs in one read: a read, a refused write, another read.
    let batch = [&READ_1[..], &WRITE_200, &READ_2].concat();
    assert_eq!(from_client(&mut s, &batch, t0), Flow::Continue);
    let (to_client, to_device) = written(&mut s);
    assert_eq!(to_device, [READ_1, READ_2].concat(), "both reads go on");
    assert_eq!(
        to_client,
        refused_write(0x02),
        "the write is answered at once"
    );
    // Both answers in one read from the device: passed back as they came.
    let answers = [&ANSWER_2[..], &ANSWER_1].concat();
    assert_eq!(from_device(&mut s, &answers, t0), Flow::Continue);
    assert_eq!(written(&mut s), (answers, Vec::new()));
    drop(s);
    let events = kit.events();
    let requests: Vec<_> = actions(&events, "modbus-request").collect();
    assert_eq!(requests.len(), 1, "allowed reads are counted, not logged");
    assert_eq!(requests[0]["zonegate"]["decision"], "deny");
    assert_eq!(requests[0]["modbus"]["transaction_id"], 3);
}

#[test]
fn a_frame_split_at_every_byte_goes_on_whole_once_complete() {
    let kit = enforcing("illegal-function");
    let t0 = Instant::now();
    for cut in 1..READ_1.len() {
        let mut s = session(&kit, t0);
        assert_eq!(from_client(&mut s, &READ_1[..cut], t0), Flow::Continue);
        assert_eq!(written(&mut s), (Vec::new(), Vec::new()), "cut at {cut}");
        assert_eq!(from_client(&mut s, &READ_1[cut..], t0), Flow::Continue);
        assert_eq!(
            written(&mut s),
            (Vec::new(), READ_1.to_vec()),
            "cut at {cut}"
        );
        // The answer, split at the same byte.
        assert_eq!(from_device(&mut s, &ANSWER_1[..cut], t0), Flow::Continue);
        assert_eq!(written(&mut s), (Vec::new(), Vec::new()), "cut at {cut}");
        assert_eq!(from_device(&mut s, &ANSWER_1[cut..], t0), Flow::Continue);
        assert_eq!(
            written(&mut s),
            (ANSWER_1.to_vec(), Vec::new()),
            "cut at {cut}"
        );
    }
    // And one byte per read.
    let mut s = session(&kit, t0);
    for (i, b) in WRITE_200.iter().enumerate() {
        assert_eq!(from_client(&mut s, &[*b], t0), Flow::Continue);
        let expected = if i + 1 == WRITE_200.len() {
            refused_write(0x01).to_vec()
        } else {
            Vec::new()
        };
        assert_eq!(written(&mut s), (expected, Vec::new()), "byte {i}");
    }
}

#[test]
fn a_denial_is_answered_per_on_deny_and_audited() {
    for (on_deny, code) in [("illegal-function", 0x01), ("illegal-data-address", 0x02)] {
        let mut kit = enforcing(on_deny);
        let t0 = Instant::now();
        let mut s = session(&kit, t0);
        assert_eq!(from_client(&mut s, &WRITE_200, t0), Flow::Continue);
        assert_eq!(written(&mut s), (refused_write(code).to_vec(), Vec::new()));
        drop(s);
        let events = kit.events();
        let e = actions(&events, "modbus-request").next().expect("audited");
        assert_eq!(e["zonegate"]["decision"], "deny", "{e}");
        assert_eq!(e["event"]["outcome"], "failure", "{e}");
        assert_eq!(e["rule"]["name"], "test.default", "{e}");
        assert_eq!(e["modbus"]["address"], 200, "{e}");
        assert_eq!(e["modbus"]["values"], serde_json::json!([42]), "{e}");
    }
    // `close`: nothing is answered, nothing reaches the device, the connection ends.
    let kit = enforcing("close");
    let t0 = Instant::now();
    let mut s = session(&kit, t0);
    let batch = [&WRITE_200[..], &READ_1].concat();
    assert_eq!(from_client(&mut s, &batch, t0), Flow::Close(End::Refused));
    assert_eq!(written(&mut s), (Vec::new(), Vec::new()));
    // Monitor mode: the denied write goes on, audited as would_deny.
    let mut kit = Kit::new(
        &zones("policy: p.rego, mode: monitor, on_deny: close", LIMITS),
        POLICY,
    );
    let mut s = session(&kit, t0);
    assert_eq!(from_client(&mut s, &WRITE_200, t0), Flow::Continue);
    assert_eq!(written(&mut s), (Vec::new(), WRITE_200.to_vec()));
    drop(s);
    let events = kit.events();
    let e = actions(&events, "modbus-request").next().expect("audited");
    assert_eq!(e["zonegate"]["decision"], "would_deny", "{e}");
}

#[test]
fn a_request_left_unfinished_ends_the_connection_after_request_timeout() {
    let mut kit = enforcing("illegal-function");
    let t0 = Instant::now();
    let mut s = session(&kit, t0);
    // Half an MBAP header, then nothing.
    assert_eq!(from_client(&mut s, &READ_1[..4], t0), Flow::Continue);
    let due = s.deadline();
    assert_eq!(due, t0 + Duration::from_secs(1), "limits.request_timeout");
    // A timer that fires early changes nothing.
    assert_eq!(
        s.timer_fired(t0 + Duration::from_millis(500)),
        Flow::Continue
    );
    assert_eq!(s.timer_fired(due), Flow::Close(End::RequestTimeout));
    s.closing(End::RequestTimeout);
    drop(s);
    let events = kit.events();
    let e = actions(&events, "modbus-request-timeout")
        .next()
        .expect("audited");
    assert!(
        e["zonegate"]["reason"]
            .as_str()
            .unwrap()
            .contains("4 bytes of it received"),
        "{e}"
    );
}

/// The proxy was blocked writing to a client that does not read its answers: the rest of a
/// request that client began waits unread in the kernel, and is not the client's to finish
/// meanwhile. The stalled write ends such a connection (`modbus-write-timeout`), not this clock.
#[test]
fn time_the_proxy_spends_blocked_writing_does_not_count_against_a_request_begun() {
    let kit = enforcing("illegal-function");
    let t0 = Instant::now();
    let mut s = session(&kit, t0);
    assert_eq!(from_client(&mut s, &READ_1[..4], t0), Flow::Continue);
    let due = s.deadline();
    // 900 ms of it spent in a write that could not go out.
    s.client_unread(Duration::from_millis(900));
    assert_eq!(
        s.timer_fired(due),
        Flow::Continue,
        "not yet the client's fault"
    );
    assert_eq!(s.deadline(), due + Duration::from_millis(900));
    // The rest arrives: a whole request, no timeout.
    assert_eq!(
        from_client(&mut s, &READ_1[4..], due + Duration::from_millis(100)),
        Flow::Continue
    );
    let (_, to_device) = written(&mut s);
    assert_eq!(to_device, READ_1, "forwarded once complete");
}

#[test]
fn a_request_the_device_does_not_answer_in_time_gets_0x0b_and_its_late_answer_is_dropped() {
    let mut kit = enforcing("illegal-function");
    let t0 = Instant::now();
    let mut s = session(&kit, t0);
    assert_eq!(from_client(&mut s, &READ_1, t0), Flow::Continue);
    assert_eq!(written(&mut s), (Vec::new(), READ_1.to_vec()));
    let due = s.deadline();
    assert_eq!(due, t0 + Duration::from_secs(2), "limits.response_timeout");
    assert_eq!(s.timer_fired(due), Flow::Continue);
    let gateway_target_failed = [
        0x00, 0x01, // transaction id 1
        0x00, 0x00, // protocol id 0
        0x00, 0x03, // length 3
        0x01, // unit id 1
        0x83, // 0x03 | 0x80
        0x0B, // Gateway Target Device Failed to Respond
    ];
    assert_eq!(
        written(&mut s),
        (gateway_target_failed.to_vec(), Vec::new())
    );
    // Nothing is due any more: back to the idle timeout.
    assert_eq!(s.deadline(), t0 + Duration::from_secs(60));
    // The answer comes late: the client already has one.
    assert_eq!(from_device(&mut s, &ANSWER_1, due), Flow::Continue);
    assert_eq!(written(&mut s), (Vec::new(), Vec::new()));
    drop(s);
    let events = kit.events();
    assert_eq!(actions(&events, "modbus-device-timeout").count(), 1);
    assert_eq!(actions(&events, "modbus-unsolicited-response").count(), 1);
}

#[test]
fn a_device_that_cannot_be_reached_earns_0x0a_for_every_request() {
    let mut kit = enforcing("illegal-function");
    let t0 = Instant::now();
    let mut s = ModbusSession::new(
        client(),
        device(),
        kit.route(Protocol::Modbus),
        None,
        kit.watch(),
        kit.audit(),
        t0,
    );
    s.device_unreachable("device unreachable: connection refused", t0);
    assert!(!s.wants_device() && !s.follows_reloads());
    assert_eq!(from_client(&mut s, &READ_1, t0), Flow::Continue);
    let path_unavailable = [
        0x00, 0x01, // transaction id 1
        0x00, 0x00, // protocol id 0
        0x00, 0x03, // length 3
        0x01, // unit id 1
        0x83, // 0x03 | 0x80
        0x0A, // Gateway Path Unavailable
    ];
    assert_eq!(written(&mut s), (path_unavailable.to_vec(), Vec::new()));
    // Idle for the idle timeout: closed.
    assert_eq!(s.deadline(), t0 + Duration::from_secs(60));
    assert_eq!(s.timer_fired(s.deadline()), Flow::Drop(End::Idle));
    drop(s);
    let events = kit.events();
    assert_eq!(actions(&events, "modbus-device-unreachable").count(), 1);
}

#[test]
fn after_a_reload_the_new_policy_decides_from_the_next_request() {
    let mut kit = enforcing("illegal-function");
    let t0 = Instant::now();
    let mut s = session(&kit, t0);
    assert_eq!(from_client(&mut s, &READ_1, t0), Flow::Continue);
    assert_eq!(written(&mut s), (Vec::new(), READ_1.to_vec()));
    assert_eq!(from_device(&mut s, &ANSWER_1, t0), Flow::Continue);
    assert_eq!(written(&mut s), (ANSWER_1.to_vec(), Vec::new()));
    kit.reload(
        &zones(
            "policy: p.rego, mode: enforce, on_deny: illegal-function",
            LIMITS,
        ),
        POLICY_NOTHING,
    );
    // The same read, now refused by the new policy (the decision cache went with the old one).
    assert_eq!(from_client(&mut s, &READ_1, t0), Flow::Continue);
    let refused_read = [
        0x00, 0x01, // transaction id 1
        0x00, 0x00, // protocol id 0
        0x00, 0x03, // length 3
        0x01, // unit id 1
        0x83, // 0x03 | 0x80
        0x01, // Illegal Function (on_deny)
    ];
    assert_eq!(written(&mut s), (refused_read.to_vec(), Vec::new()));
    // A reload that removes the conduit closes an idle connection.
    kit.reload(
        &zones("policy: p.rego", LIMITS).replace("services: [modbus, opcua]", "services: [opcua]"),
        POLICY,
    );
    assert_eq!(s.reloaded(t0), Flow::Close(End::ConduitRemoved));
    drop(s);
    let events = kit.events();
    let e = actions(&events, "modbus-request").next().expect("audited");
    assert_eq!(e["rule"]["name"], "test.nothing", "{e}");
    assert_eq!(actions(&events, "modbus-conduit-removed").count(), 1);
}

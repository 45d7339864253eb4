#!/usr/bin/env python3
"""Crafted OPC UA requests for zonegate's differential tests (issue 13).

Opens a SecurityPolicy None secure channel and an anonymous session over a raw socket, then sends
each case's request bytes exactly as built here: encodings a client library would never produce
(ExtensionObjects in the RequestHeader in every encoding and with wrong lengths, nested Variants,
NodeIds with the ExpandedNodeId flags, attributes other than Value, trailing bytes), chunk orders
(C,C,F; C then A; interleaved messages), RegisterNodes aliases and unknown service type ids. Each
case runs on its own TCP connection, channel and session: a request refused as malformed closes
the connection.

    .venv/bin/python tests/peers/opcua_craft.py --url opc.tcp://10.22.0.11:4840/cnc
        [--bind ADDR] [--cases NAME,NAME,...] [--timeout 3] [--list]

One JSON line per case on stdout:

    {"case": "door-plain", "expect": "refused", "executes": 0, "local": "10.30.0.11:40112",
     "outcome": "service_fault", "status": "BadUserAccessDenied", "answers": [...]}

- `expect`: `allowed` (the policy allows it: the server must execute exactly `executes` write
  values or method calls of it), `refused` (nothing of it may execute), `either` (the request is
  one the policy allows but its encoding is odd: a gateway may refuse it as malformed; if it
  executes, exactly `executes` items). Cases that mix (an allowed message next to a forbidden one
  on the same connection) are `allowed` with the count of the allowed items only: the forbidden
  part must not execute, which the test checks against the policy from the server's journal.
- `local`: the connection's own address (the gateway's audit events name it as their source).
- `session`, `sessions`: the SessionId the server gave (all of them, for cases that open a second
  session on the channel) (asyncua's NodeId.to_string() form, e.g. `i=12` or
  `ns=1;g=...`); the servers journal it with every write and call, so that a test can tell which
  case an executed item came from (a transparent proxy keeps the client's address, not its port).
- `outcome`: what the last request of the case got: `response` (then `status` is the first bad
  result, or Good), `service_fault`, `err` (an ERR message, `status` its code), `closed`,
  `timeout`, or `setup_failed` (the channel or session could not be opened; `error` says why).
- `answers`: every answer of the case, in order (type and status).

`--list` prints the cases (name, expect, executes, what) without connecting.
Only the standard library and asyncua's encoders (asyncua.ua.ua_binary) are used.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from asyncua import ua
from asyncua.ua.ua_binary import (
    nodeid_from_binary,
    nodeid_to_binary,
    struct_from_binary,
    struct_to_binary,
    variant_to_binary,
)
from asyncua.common.utils import Buffer

NS = 2
FEED = "Machine.FeedOverride"
SPINDLE = "Machine.SpindleOverride"
PROGRAM = "Machine.ProgramNumber"
TOOL = "Machine.ToolOffset"
DOOR = "Machine.DoorUnlock"
MACHINE = "Machine"

WRITE_TYPE = ua.ObjectIds.WriteRequest_Encoding_DefaultBinary  # 673
CALL_TYPE = ua.ObjectIds.CallRequest_Encoding_DefaultBinary  # 712
REGISTER_TYPE = ua.ObjectIds.RegisterNodesRequest_Encoding_DefaultBinary  # 560

# Response classes by the numeric id of their binary encoding (namespace 0).
RESPONSES = {
    nid.Identifier: cls
    for nid, cls in ua.extension_objects_by_typeid.items()
    if nid.NamespaceIndex == 0 and isinstance(nid.Identifier, int)
}


# ------------------------------------------------------------------ UA Binary building blocks


def u8(n: int) -> bytes:
    return struct.pack("<B", n)


def u16(n: int) -> bytes:
    return struct.pack("<H", n)


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def i32(n: int) -> bytes:
    return struct.pack("<i", n)


def ua_string(s: str | bytes | None) -> bytes:
    if s is None:
        return i32(-1)
    b = s.encode() if isinstance(s, str) else s
    return i32(len(b)) + b


def nid_string(name: str, ns: int = NS) -> bytes:
    """A string NodeId, canonical form (encoding byte 0x03)."""
    return b"\x03" + u16(ns) + ua_string(name)


def nid_numeric(i: int, ns: int = 0) -> bytes:
    """The canonical form of a numeric NodeId: two-byte, four-byte or full numeric."""
    if ns == 0 and i < 256:
        return b"\x00" + u8(i)
    if ns < 256 and i < 65536:
        return b"\x01" + u8(ns) + u16(i)
    return b"\x02" + u16(ns) + u32(i)


def type_id(i: int) -> bytes:
    return nid_numeric(i)


def ext_object(type_nid: bytes, encoding: int, body: bytes = b"", length: int | None = None) -> bytes:
    """An ExtensionObject: TypeId, encoding byte, then (encodings with a body) length and body."""
    out = type_nid + u8(encoding)
    if encoding == 0:
        return out
    return out + i32(len(body) if length is None else length) + body


NULL_EXT = ext_object(b"\x00\x00", 0)


class Session:
    """What the request header needs: the authentication token, as its encoded NodeId."""

    def __init__(self, token: bytes):
        self.token = token
        self.handle = 100


def request_header(s: Session, additional: bytes = NULL_EXT) -> bytes:
    s.handle += 1
    return (
        s.token
        + struct.pack("<q", 0)  # Timestamp
        + u32(s.handle)  # RequestHandle
        + u32(0)  # ReturnDiagnostics
        + ua_string(None)  # AuditEntryId
        + u32(10000)  # TimeoutHint
        + additional
    )


def variant(vt: ua.VariantType, value) -> bytes:
    return variant_to_binary(ua.Variant(value, vt))


def double(v: float) -> bytes:
    return variant(ua.VariantType.Double, v)


def data_value(variant_bytes: bytes | None, status: int | None = None, source_ts: int | None = None,
               server_ts: int | None = None) -> bytes:
    mask = 0
    out = b""
    if variant_bytes is not None:
        mask |= 0x01
        out += variant_bytes
    if status is not None:
        mask |= 0x02
        out += u32(status)
    if source_ts is not None:
        mask |= 0x04
        out += struct.pack("<q", source_ts)
    if server_ts is not None:
        mask |= 0x08
        out += struct.pack("<q", server_ts)
    return u8(mask) + out


def write_value(node: bytes, value_dv: bytes, attribute: int = 13, index_range: str | None = None) -> bytes:
    return node + u32(attribute) + ua_string(index_range) + value_dv


def wv(name: str, variant_bytes: bytes, **kw) -> bytes:
    return write_value(nid_string(name), data_value(variant_bytes), **kw)


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


def write_request(s: Session, values: list[bytes], additional: bytes = NULL_EXT, tid: bytes | None = None) -> bytes:
    return (tid if tid is not None else type_id(WRITE_TYPE)) + request_header(s, additional) + array(values)


def call_request(s: Session, calls: list[tuple[bytes, bytes, list[bytes]]]) -> bytes:
    items = [obj + meth + array(args) for obj, meth, args in calls]
    return type_id(CALL_TYPE) + request_header(s) + array(items)


def register_request(s: Session, nodes: list[bytes]) -> bytes:
    return type_id(REGISTER_TYPE) + request_header(s) + array(nodes)


# ------------------------------------------------------------------ the connection


class Closed(Exception):
    pass


class Conn:
    """One TCP connection with a None secure channel and an activated anonymous session."""

    def __init__(self, url: str, bind: str | None, timeout: float):
        u = urlparse(url)
        self.url = url
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bind:
            self.sock.bind((bind, 0))
        self.sock.settimeout(timeout)
        self.sock.connect((u.hostname, u.port or 4840))
        host, port = self.sock.getsockname()[:2]
        self.local = f"{host}:{port}"
        self.seq = 0
        self.request_id = 0
        self.channel_id = 0
        self.token_id = 0
        self.buf = b""
        self.closed = False
        self.session: Session | None = None
        self.session_ids: list[str] = []
        self.done: dict[int, dict] = {}  # answers that came while another one was awaited

    # -- bytes on the wire

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.closed = True
            raise Closed(str(e)) from e

    def recv_chunk(self, deadline: float) -> tuple[bytes, bytes]:
        """(header 8 bytes, rest) of the next chunk; Closed or TimeoutError."""
        while True:
            if len(self.buf) >= 8:
                size = struct.unpack_from("<I", self.buf, 4)[0]
                if size < 8:
                    raise Closed(f"bad chunk size {size}")
                if len(self.buf) >= size:
                    chunk, self.buf = self.buf[:size], self.buf[size:]
                    return chunk[:8], chunk[8:]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout as e:
                raise TimeoutError from e
            except OSError as e:
                self.closed = True
                raise Closed(str(e)) from e
            if not data:
                self.closed = True
                raise Closed("closed by peer")
            self.buf += data

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def next_request_id(self) -> int:
        self.request_id += 1
        return self.request_id

    def msg_chunk(self, chunk_type: bytes, request_id: int, body: bytes, seq: int | None = None) -> bytes:
        seq = self.next_seq() if seq is None else seq
        rest = u32(self.channel_id) + u32(self.token_id) + u32(seq) + u32(request_id) + body
        return b"MSG" + chunk_type + u32(8 + len(rest)) + rest

    # -- set-up

    def hello(self) -> None:
        url = self.url.encode()
        body = u32(0) + u32(65535) + u32(65535) + u32(0) + u32(0) + i32(len(url)) + url
        self.send(b"HELF" + u32(8 + len(body)) + body)
        hdr, rest = self.recv_chunk(time.monotonic() + self.timeout)
        if hdr[:3] != b"ACK":
            raise Closed(f"no ACK: {hdr[:4]!r} {err_text(hdr, rest)}")

    def open(self) -> None:
        req = ua.OpenSecureChannelRequest()
        req.Parameters.ClientProtocolVersion = 0
        req.Parameters.RequestType = ua.SecurityTokenRequestType.Issue
        req.Parameters.SecurityMode = ua.MessageSecurityMode.None_
        req.Parameters.ClientNonce = b""
        req.Parameters.RequestedLifetime = 600000
        req.RequestHeader.TimeoutHint = 10000
        body = struct_to_binary(req)
        rid = self.next_request_id()
        rest = (
            u32(0)
            + ua_string("http://opcfoundation.org/UA/SecurityPolicy#None")
            + i32(-1)
            + i32(-1)
            + u32(self.next_seq())
            + u32(rid)
            + body
        )
        self.send(b"OPNF" + u32(8 + len(rest)) + rest)
        hdr, rest = self.recv_chunk(time.monotonic() + self.timeout)
        if hdr[:3] != b"OPN":
            raise Closed(f"no OPN answer: {hdr[:4]!r} {err_text(hdr, rest)}")
        b = Buffer(rest)
        b.read(4)  # channel id
        for _ in range(3):  # policy uri, certificate, thumbprint
            n = struct.unpack("<i", b.read(4))[0]
            if n > 0:
                b.read(n)
        b.read(8)  # sequence header
        resp = struct_from_binary(ua.OpenSecureChannelResponse, b)
        self.channel_id = resp.Parameters.SecurityToken.ChannelId
        self.token_id = resp.Parameters.SecurityToken.TokenId

    def service(self, body: bytes) -> object:
        """Sends one single-chunk request and waits for its answer (decoded response)."""
        rid = self.next_request_id()
        self.send(self.msg_chunk(b"F", rid, body))
        return self.answer(rid)

    def answer(self, request_id: int) -> dict:
        """The answer to `request_id`: {"kind": response|service_fault|err|closed|timeout, ...}."""
        if request_id in self.done:
            return self.done.pop(request_id)
        deadline = time.monotonic() + self.timeout
        while True:
            rid, a = self.next_answer(deadline)
            if rid is None or rid == request_id:
                return a
            self.done[rid] = a  # another request's: kept for later

    def answer_any(self, deadline: float) -> dict:
        """The next whole answer, whatever its request id (with `request_id`)."""
        if self.done:
            rid = next(iter(self.done))
            return {**self.done.pop(rid), "request_id": rid}
        rid, a = self.next_answer(deadline)
        return a if rid is None else {**a, "request_id": rid}

    def next_answer(self, deadline: float) -> tuple[int | None, dict]:
        """The next whole message from the server and its request id; (None, ...) for an ERR, a
        closed connection or the deadline. Chunks of messages not yet whole wait in `_parts`;
        an aborted one is dropped."""
        parts: dict[int, bytes] = self.__dict__.setdefault("_parts", {})
        while True:
            try:
                hdr, rest = self.recv_chunk(deadline)
            except TimeoutError:
                return None, {"kind": "timeout"}
            except Closed as e:
                return None, {"kind": "closed", "error": str(e)}
            if hdr[:3] == b"ERR":
                self.closed = True
                return None, {"kind": "err", **err_fields(rest)}
            if hdr[:3] != b"MSG":
                continue
            rid = struct.unpack_from("<I", rest, 12)[0]
            parts[rid] = parts.get(rid, b"") + rest[16:]
            if hdr[3:4] == b"C":
                continue
            body = parts.pop(rid)
            if hdr[3:4] == b"A":
                continue
            return rid, decode_response(body)

    def create_session(self) -> None:
        req = ua.CreateSessionRequest()
        p = req.Parameters
        p.ClientDescription = ua.ApplicationDescription(
            ApplicationUri="urn:zonegate:test:opcua-craft",
            ProductUri="urn:zonegate:test:peers",
            ApplicationName=ua.LocalizedText("zonegate opcua_craft"),
            ApplicationType=ua.ApplicationType.Client,
        )
        p.EndpointUrl = self.url
        p.SessionName = "opcua_craft"
        p.ClientNonce = b"\x00" * 32
        p.RequestedSessionTimeout = 10000
        p.MaxResponseMessageSize = 0
        a = self.service(struct_to_binary(req))
        if a["kind"] != "response" or a["status"] != "Good":
            raise Closed(f"CreateSession: {a}")
        res = a["object"].Parameters
        self.session = Session(nodeid_to_binary(res.AuthenticationToken))
        self.session_ids.append(res.SessionId.to_string())
        policy_id = "anonymous"
        for ep in res.ServerEndpoints or []:
            if ep.SecurityMode == ua.MessageSecurityMode.None_:
                for t in ep.UserIdentityTokens or []:
                    if t.TokenType == ua.UserTokenType.Anonymous:
                        policy_id = t.PolicyId
        act = ua.ActivateSessionRequest()
        act.RequestHeader.AuthenticationToken = res.AuthenticationToken
        act.Parameters.ClientSignature = ua.SignatureData()
        act.Parameters.UserIdentityToken = ua.AnonymousIdentityToken(PolicyId=policy_id)
        act.Parameters.LocaleIds = []
        act.Parameters.ClientSoftwareCertificates = []
        a = self.service(struct_to_binary(act))
        if a["kind"] != "response" or a["status"] != "Good":
            raise Closed(f"ActivateSession: {a}")

    def close(self) -> None:
        if not self.closed and self.session is not None:
            try:
                # CloseSessionRequest: the header, then DeleteSubscriptions = true.
                body = type_id(ua.ObjectIds.CloseSessionRequest_Encoding_DefaultBinary) + request_header(
                    self.session
                ) + b"\x01"
                self.service(body)
                rest = (
                    u32(self.channel_id)
                    + u32(self.token_id)
                    + u32(self.next_seq())
                    + u32(self.next_request_id())
                    + type_id(ua.ObjectIds.CloseSecureChannelRequest_Encoding_DefaultBinary)
                    + request_header(self.session)
                )
                self.send(b"CLOF" + u32(8 + len(rest)) + rest)
            except (Closed, OSError):
                pass
        try:
            self.sock.close()
        except OSError:
            pass


def err_fields(rest: bytes) -> dict:
    try:
        code = struct.unpack_from("<I", rest, 0)[0]
        n = struct.unpack_from("<i", rest, 4)[0]
        reason = rest[8 : 8 + n].decode("utf-8", "replace") if n > 0 else ""
        return {"status": status_name(code), "code": code, "reason": reason}
    except struct.error:
        return {"status": "?", "reason": rest.hex()}


def err_text(hdr: bytes, rest: bytes) -> str:
    return json.dumps(err_fields(rest)) if hdr[:3] == b"ERR" else ""


def status_name(code: int) -> str:
    try:
        return ua.StatusCode(code).name
    except Exception:  # noqa: BLE001
        return f"0x{code:08X}"


def decode_response(body: bytes) -> dict:
    b = Buffer(body)
    tid = nodeid_from_binary(b)
    cls = RESPONSES.get(tid.Identifier) if tid.NamespaceIndex == 0 else None
    if cls is None:
        return {"kind": "response", "type": str(tid), "status": "?"}
    obj = struct_from_binary(cls, Buffer(body))
    service_result = obj.ResponseHeader.ServiceResult.value
    if cls is ua.ServiceFault or service_result != 0:
        return {"kind": "service_fault", "type": cls.__name__, "status": status_name(service_result)}
    out = {"kind": "response", "type": cls.__name__, "status": "Good", "object": obj}
    results = getattr(obj, "Results", None)
    if results is not None:
        codes = []
        for r in results:
            sc = r if isinstance(r, ua.StatusCode) else getattr(r, "StatusCode", None)
            codes.append(status_name(sc.value) if sc is not None else "?")
        out["results"] = codes
        bad = [c for c in codes if c != "Good"]
        if bad:
            out["status"] = bad[0]
    return out


# ------------------------------------------------------------------ the cases


@dataclass
class Case:
    name: str
    expect: str  # allowed | refused | either
    executes: int  # write values or method calls that execute when the case is allowed
    what: str
    run: Callable[[Conn], list[dict]]


CASES: list[Case] = []


def case(name: str, expect: str, executes: int, what: str):
    assert expect in ("allowed", "refused", "either")
    assert expect != "refused" or executes == 0

    def deco(fn):
        CASES.append(Case(name, expect, executes, what, fn))
        return fn

    return deco


def single(build: Callable[[Session], bytes]) -> Callable[[Conn], list[dict]]:
    return lambda c: [c.service(build(c.session))]


def simple(name: str, expect: str, executes: int, what: str, build: Callable[[Session], bytes]) -> None:
    CASES.append(Case(name, expect, executes, what, single(build)))


def write1(name: str, v: bytes, **kw) -> Callable[[Session], bytes]:
    return lambda s: write_request(s, [wv(name, v, **kw)])


U32 = ua.VariantType.UInt32

# --- controls: what the HMI may do, plainly encoded
simple("control-feed", "allowed", 1, "FeedOverride = 110.0 (Double)", write1(FEED, double(110.0)))
simple("control-spindle", "allowed", 1, "SpindleOverride = 90.0", write1(SPINDLE, double(90.0)))
simple("control-program", "allowed", 1, "ProgramNumber = 1001 (UInt32, released)",
       write1(PROGRAM, variant(U32, 1001)))
simple("control-write-two", "allowed", 2, "one Write: FeedOverride 100.0 and SpindleOverride 100.0",
       lambda s: write_request(s, [wv(FEED, double(100.0)), wv(SPINDLE, double(100.0))]))
simple("control-call-select", "allowed", 1, "Call Machine.SelectProgram(UInt32 2000)",
       lambda s: call_request(s, [(nid_string(MACHINE), nid_string("Machine.SelectProgram"),
                                   [variant(U32, 2000)])]))
simple("control-call-reset", "allowed", 1, "Call Machine.ResetAlarm()",
       lambda s: call_request(s, [(nid_string(MACHINE), nid_string("Machine.ResetAlarm"), [])]))

# --- plain forbidden requests: what the policy refuses (and a server executes when asked)
simple("door-plain", "refused", 0, "DoorUnlock = true", write1(DOOR, variant(ua.VariantType.Boolean, True)))
simple("tool-plain", "refused", 0, "ToolOffset = 5.0", write1(TOOL, double(5.0)))
simple("feed-out-of-range", "refused", 0, "FeedOverride = 150.0 (range 0..120)", write1(FEED, double(150.0)))
simple("program-unreleased", "refused", 0, "ProgramNumber = 4242 (not released)",
       write1(PROGRAM, variant(U32, 4242)))

# --- RequestHeader.AdditionalHeader in each ExtensionObject encoding, on an allowed write
ADDITIONAL_PARAMS = nid_numeric(ua.ObjectIds.AdditionalParametersType_Encoding_DefaultBinary)
EMPTY_PARAMS = i32(0)  # AdditionalParametersType: Parameters, an empty array of KeyValuePair
simple("hdr-ext0-typeid", "either", 1, "AdditionalHeader: encoding 0 (no body) with a non-null type id",
       lambda s: write_request(s, [wv(FEED, double(101.0))], ext_object(ADDITIONAL_PARAMS, 0)))
simple("hdr-ext1-known", "either", 1, "AdditionalHeader: AdditionalParametersType, ByteString body, exact length",
       lambda s: write_request(s, [wv(FEED, double(102.0))], ext_object(ADDITIONAL_PARAMS, 1, EMPTY_PARAMS)))
simple("hdr-ext1-unknown", "either", 1, "AdditionalHeader: unknown type ns=1;i=5001, 6-byte body",
       lambda s: write_request(s, [wv(FEED, double(103.0))],
                               ext_object(nid_numeric(5001, 1), 1, b"\x01\x02\x03\x04\x05\x06")))
simple("hdr-ext1-inner-garbage", "either", 1,
       "AdditionalHeader: AdditionalParametersType whose declared length holds 4 bytes after the structure",
       lambda s: write_request(s, [wv(FEED, double(104.0))],
                               ext_object(ADDITIONAL_PARAMS, 1, EMPTY_PARAMS + b"\xde\xad\xbe\xef")))
simple("hdr-ext1-length-short", "either", 1,
       "AdditionalHeader: AdditionalParametersType declaring 2 bytes for a 4-byte structure",
       lambda s: write_request(s, [wv(FEED, double(105.0))], ext_object(ADDITIONAL_PARAMS, 1, EMPTY_PARAMS, 2)))
simple("hdr-ext1-length-long", "either", 1,
       "AdditionalHeader: unknown type whose length swallows the NodesToWrite count",
       lambda s: write_request(s, [wv(FEED, double(106.0))], ext_object(nid_numeric(5001, 1), 1, b"\x01\x02", 6)))
simple("hdr-ext1-length-minus1", "either", 1,
       "AdditionalHeader: AdditionalParametersType with length -1 (asyncua: read by structure)",
       lambda s: write_request(s, [wv(FEED, double(107.0))], ext_object(ADDITIONAL_PARAMS, 1, EMPTY_PARAMS, -1)))
simple("hdr-ext2-xml", "either", 1, "AdditionalHeader: XML body (encoding 2)",
       lambda s: write_request(s, [wv(FEED, double(108.0))],
                               ext_object(nid_numeric(5002, 1), 2, b"<a>1</a>")))
simple("hdr-ext3-encoding", "either", 1, "AdditionalHeader: encoding byte 3 (binary and XML bits)",
       lambda s: write_request(s, [wv(FEED, double(109.0))], ext_object(nid_numeric(5001, 1), 3, b"\x01\x02")))
simple("hdr-ext1-door", "refused", 0, "AdditionalHeader: unknown type with a body, on a DoorUnlock write",
       lambda s: write_request(s, [wv(DOOR, variant(ua.VariantType.Boolean, True))],
                               ext_object(nid_numeric(5001, 1), 1, b"\x01\x02\x03\x04")))


# hdr-ext2-xml: asyncua does not skip an XML body (it reads the body's length as the NodesToWrite
# count), node-opcua skips it by its length like a binary one, zonegate (cb5634a) refuses it.

# --- nested and unusual values, to an allowed node
def vv(inner: bytes) -> bytes:
    """A Variant of type Variant (24) holding `inner` (an encoded Variant)."""
    return b"\x18" + inner


def vdv(inner_dv: bytes) -> bytes:
    """A Variant of type DataValue (23)."""
    return b"\x17" + inner_dv


simple("nest-variant-in-variant", "refused", 0, "FeedOverride = Variant(Variant(110.0))",
       write1(FEED, vv(double(110.0))))
simple("nest-datavalue-in-variant", "refused", 0, "FeedOverride = Variant(DataValue(110.0))",
       write1(FEED, vdv(data_value(double(110.0)))))
simple("nest-variant-door", "refused", 0, "DoorUnlock = Variant(Variant(true))",
       write1(DOOR, vv(variant(ua.VariantType.Boolean, True))))
simple("value-array-dims", "refused", 0, "FeedOverride = [110.0] with ArrayDimensions [1]",
       write1(FEED, b"\xcb" + array([struct.pack("<d", 110.0)]) + array([i32(1)])))
simple("value-array", "refused", 0, "FeedOverride = [110.0, 110.0] (array, no dimensions)",
       write1(FEED, b"\x8b" + array([struct.pack("<d", 110.0)] * 2)))
simple("value-array-of-variant", "refused", 0, "FeedOverride = [Variant(110.0)]",
       write1(FEED, b"\x98" + array([double(110.0)])))
simple("value-string", "refused", 0, 'FeedOverride = "110" (String)', write1(FEED, variant(ua.VariantType.String, "110")))
simple("value-float", "either", 1, "FeedOverride = 110.0 as Float (a number of another type)",
       write1(FEED, variant(ua.VariantType.Float, 110.0)))
simple("dv-status-bad", "either", 1, "FeedOverride = 110.0 with DataValue StatusCode BadOutOfRange",
       lambda s: write_request(s, [write_value(nid_string(FEED), data_value(double(110.0), status=0x803C0000))]))
simple("dv-timestamps", "either", 1, "FeedOverride = 110.0 with SourceTimestamp and ServerTimestamp",
       lambda s: write_request(s, [write_value(nid_string(FEED), data_value(
           double(110.0), source_ts=133_000_000_000_000_000, server_ts=133_000_000_000_000_000))]))
simple("dv-empty", "refused", 0, "FeedOverride written with an empty DataValue (no value)",
       lambda s: write_request(s, [write_value(nid_string(FEED), data_value(None))]))


# --- the forbidden node behind other encodings
def nid_flags(name: str, flags: int, ns: int, uri: str | None = None, server: int | None = None) -> bytes:
    out = u8(0x03 | flags) + u16(ns) + ua_string(name)
    if uri is not None:
        out += ua_string(uri)
    if server is not None:
        out += u32(server)
    return out


def write_node(node: bytes, v: bytes) -> Callable[[Session], bytes]:
    return lambda s: write_request(s, [write_value(node, data_value(v))])


TRUE = variant(ua.VariantType.Boolean, True)
simple("door-nodeid-nsuri-ns2", "refused", 0, "DoorUnlock as NodeId with the NamespaceUri flag (ns 2 + URI)",
       write_node(nid_flags(DOOR, 0x80, 2, "urn:zonegate:cnc"), TRUE))
simple("door-nodeid-nsuri-ns0", "refused", 0, "DoorUnlock as NodeId with the NamespaceUri flag (ns 0, URI urn:zonegate:cnc)",
       write_node(nid_flags(DOOR, 0x80, 0, "urn:zonegate:cnc"), TRUE))
simple("door-nodeid-serverindex", "refused", 0, "DoorUnlock as NodeId with the ServerIndex flag (server 0)",
       write_node(nid_flags(DOOR, 0x40, 2, server=0), TRUE))
simple("feed-nodeid-nsuri-door", "refused", 0,
       "one Write: FeedOverride (allowed), then DoorUnlock as ns 0 + NamespaceUri flag",
       lambda s: write_request(s, [wv(FEED, double(110.0)),
                                   write_value(nid_flags(DOOR, 0x80, 0, "urn:zonegate:cnc"), data_value(TRUE))]))
simple("door-string-nul", "refused", 0, 'DoorUnlock as "Machine.DoorUnlock\\0"',
       write_node(nid_string(DOOR + "\x00"), TRUE))
simple("door-string-space", "refused", 0, 'DoorUnlock as "Machine.DoorUnlock " (trailing space)',
       write_node(nid_string(DOOR + " "), TRUE))
simple("door-string-bytes", "refused", 0, "DoorUnlock as an opaque (ByteString) NodeId with the same bytes",
       write_node(b"\x05" + u16(2) + ua_string(DOOR), TRUE))
simple("write-typeid-numeric-form", "refused", 0, "DoorUnlock write whose type id 673 is in the 7-byte numeric form",
       lambda s: write_request(s, [wv(DOOR, TRUE)], tid=b"\x02" + u16(0) + u32(WRITE_TYPE)))
simple("feed-typeid-numeric-form", "either", 1, "FeedOverride write whose type id 673 is in the 7-byte numeric form",
       lambda s: write_request(s, [wv(FEED, double(111.0))], tid=b"\x02" + u16(0) + u32(WRITE_TYPE)))
simple("write-many-feed-door", "refused", 0, "one Write: FeedOverride (allowed) then DoorUnlock",
       lambda s: write_request(s, [wv(FEED, double(112.0)), wv(DOOR, TRUE)]))
simple("write-many-door-feed", "refused", 0, "one Write: DoorUnlock then FeedOverride (allowed)",
       lambda s: write_request(s, [wv(DOOR, TRUE), wv(FEED, double(112.0))]))
simple("write-same-node-twice", "refused", 0, "one Write: FeedOverride 100.0 then FeedOverride 150.0",
       lambda s: write_request(s, [wv(FEED, double(100.0)), wv(FEED, double(150.0))]))

# --- attributes other than Value
LT = variant(ua.VariantType.LocalizedText, ua.LocalizedText("hacked"))
simple("attr-displayname-door", "refused", 0, "DoorUnlock.DisplayName (attribute 4)",
       lambda s: write_request(s, [wv(DOOR, LT, attribute=ua.AttributeIds.DisplayName)]))
simple("attr-description-feed", "refused", 0, "FeedOverride.Description (attribute 5)",
       lambda s: write_request(s, [wv(FEED, LT, attribute=ua.AttributeIds.Description)]))
simple("attr-useraccesslevel-door", "refused", 0, "DoorUnlock.UserAccessLevel (attribute 18) = 3",
       lambda s: write_request(s, [wv(DOOR, variant(ua.VariantType.Byte, 3), attribute=ua.AttributeIds.UserAccessLevel)]))
simple("attr-accesslevel-feed", "refused", 0, "FeedOverride.AccessLevel (attribute 17) = 3",
       lambda s: write_request(s, [wv(FEED, variant(ua.VariantType.Byte, 3), attribute=ua.AttributeIds.AccessLevel)]))
simple("attr-datatype-feed", "refused", 0, "FeedOverride.DataType (attribute 14) = String",
       lambda s: write_request(s, [wv(FEED, variant(ua.VariantType.NodeId, ua.NodeId(12)), attribute=ua.AttributeIds.DataType)]))
simple("index-range-feed", "refused", 0, 'FeedOverride value with IndexRange "0"',
       write1(FEED, b"\x8b" + array([struct.pack("<d", 110.0)]), index_range="0"))
simple("index-range-empty", "either", 1, 'FeedOverride = 113.0 with IndexRange "" (empty, not null)',
       write1(FEED, double(113.0), index_range=""))

# --- bytes after the request
simple("trailing-bytes", "either", 1, "FeedOverride = 114.0, then 8 bytes after the request",
       lambda s: write_request(s, [wv(FEED, double(114.0))]) + b"\x00" * 8)
simple("trailing-door-writevalue", "either", 1,
       "FeedOverride = 114.0 (count 1), then a whole DoorUnlock WriteValue after it: only a server that "
       "reads to the end of the message would run the second",
       lambda s: write_request(s, [wv(FEED, double(114.0))]) + wv(DOOR, TRUE))
simple("count-too-high", "refused", 0, "NodesToWrite count 2 with only a DoorUnlock WriteValue",
       lambda s: type_id(WRITE_TYPE) + request_header(s) + i32(2) + wv(DOOR, TRUE))

# --- unknown and odd service type ids carrying a write
simple("unknown-typeid", "refused", 0, "a DoorUnlock Write body under type id 9999 (no such service)",
       lambda s: write_request(s, [wv(DOOR, TRUE)], tid=type_id(9999)))
simple("xml-encoding-typeid", "refused", 0, "a DoorUnlock Write body under WriteRequest_Encoding_DefaultXml (672)",
       lambda s: write_request(s, [wv(DOOR, TRUE)], tid=type_id(672)))
simple("expanded-typeid", "refused", 0, "a DoorUnlock Write whose type id carries a namespace URI",
       lambda s: write_request(s, [wv(DOOR, TRUE)], tid=b"\x81" + u8(0) + u16(WRITE_TYPE)
                               + ua_string("http://opcfoundation.org/UA/")))


# --- method calls
def call1(obj: str, method: str, args: list[bytes]) -> Callable[[Session], bytes]:
    return lambda s: call_request(s, [(nid_string(obj), nid_string(method), args)])


simple("call-unlock", "refused", 0, "Call Machine.Unlock()", call1(MACHINE, "Machine.Unlock", []))
simple("call-select-unreleased", "refused", 0, "Call SelectProgram(UInt32 4242)",
       call1(MACHINE, "Machine.SelectProgram", [variant(U32, 4242)]))
simple("call-select-on-objects", "refused", 0, "Call SelectProgram(2000) on the Objects folder, not on Machine",
       lambda s: call_request(s, [(nid_numeric(85), nid_string("Machine.SelectProgram"), [variant(U32, 2000)])]))
simple("call-select-nested", "refused", 0, "Call SelectProgram(Variant(Variant(UInt32 2010)))",
       call1(MACHINE, "Machine.SelectProgram", [vv(variant(U32, 2010))]))
simple("call-select-datavalue", "refused", 0, "Call SelectProgram(Variant(DataValue(UInt32 2010)))",
       call1(MACHINE, "Machine.SelectProgram", [vdv(data_value(variant(U32, 2010)))]))
simple("call-select-array", "refused", 0, "Call SelectProgram([UInt32 1002, UInt32 4242])",
       call1(MACHINE, "Machine.SelectProgram", [b"\x87" + array([u32(1002), u32(4242)])]))
simple("call-reset-then-unlock", "refused", 0, "one Call: ResetAlarm() then Unlock()",
       lambda s: call_request(s, [(nid_string(MACHINE), nid_string("Machine.ResetAlarm"), []),
                                  (nid_string(MACHINE), nid_string("Machine.Unlock"), [])]))
simple("call-unlock-nsuri", "refused", 0, "Call Unlock named with the NamespaceUri flag",
       lambda s: call_request(s, [(nid_string(MACHINE), nid_flags("Machine.Unlock", 0x80, 0, "urn:zonegate:cnc"), [])]))


# --- chunk orders
def split(body: bytes, parts: int) -> list[bytes]:
    step = max(1, len(body) // parts)
    out = [body[i * step:(i + 1) * step] for i in range(parts - 1)]
    out.append(body[(parts - 1) * step:])
    return out


def chunked(build: Callable[[Session], bytes], parts: int = 3) -> Callable[[Conn], list[dict]]:
    def run(c: Conn) -> list[dict]:
        rid = c.next_request_id()
        pieces = split(build(c.session), parts)
        wire = b"".join(c.msg_chunk(b"C" if i < len(pieces) - 1 else b"F", rid, p) for i, p in enumerate(pieces))
        c.send(wire)
        return [c.answer(rid)]

    return run


CASES.append(Case("chunks-feed-ccf", "allowed", 1, "FeedOverride = 115.0 in chunks C, C, F",
                  chunked(write1(FEED, double(115.0)))))
CASES.append(Case("chunks-door-ccf", "refused", 0, "DoorUnlock = true in chunks C, C, F",
                  chunked(write1(DOOR, TRUE))))


def abort_body() -> bytes:
    return u32(ua.StatusCodes.BadRequestCancelledByClient) + ua_string("aborted by the client")


def abort_then(follow: bool, same_id: bool) -> Callable[[Conn], list[dict]]:
    def run(c: Conn) -> list[dict]:
        rid = c.next_request_id()
        first, _rest = split(write_request(c.session, [wv(DOOR, TRUE)]), 2)
        c.send(c.msg_chunk(b"C", rid, first) + c.msg_chunk(b"A", rid, abort_body()))
        answers = []
        # Nothing answers an abort; then the channel must keep working.
        if follow:
            rid2 = rid if same_id else c.next_request_id()
            c.send(c.msg_chunk(b"F", rid2, write_request(c.session, [wv(FEED, double(116.0))])))
            answers.append(c.answer(rid2))
        return answers

    return run


CASES.append(Case("abort-door-then-feed", "allowed", 1,
                  "C (first half of a DoorUnlock write), A (abort); then FeedOverride = 116.0 on the channel",
                  abort_then(True, False)))
CASES.append(Case("abort-door-then-feed-same-id", "allowed", 1,
                  "C of a DoorUnlock write, A, then a whole FeedOverride write under the same request id",
                  abort_then(True, True)))


def abort_door_rest() -> Callable[[Conn], list[dict]]:
    """C (first half of DOOR), A, then F with the second half under the same request id: whoever
    forgets the abort sees the DoorUnlock write whole."""

    def run(c: Conn) -> list[dict]:
        rid = c.next_request_id()
        first, rest = split(write_request(c.session, [wv(DOOR, TRUE)]), 2)
        c.send(c.msg_chunk(b"C", rid, first) + c.msg_chunk(b"A", rid, abort_body()) + c.msg_chunk(b"F", rid, rest))
        return [c.answer(rid)]

    return run


CASES.append(Case("abort-door-then-rest", "refused", 0,
                  "C (first half of DoorUnlock), A, then F with the second half, same request id",
                  abort_door_rest()))


def script(messages: dict[str, tuple[Callable[[Session], bytes], int]], steps: list[tuple[bytes, str, int]],
           awaited: list[str]) -> Callable[[Conn], list[dict]]:
    """Chunks in any order: `messages` maps a key to (request builder, number of parts); each step
    sends chunk type C, F or A for a key (part index; an A carries an abort body instead). All
    chunks go out in one write; then the answers to `awaited` are read, in that order."""

    def run(c: Conn) -> list[dict]:
        ids = {k: c.next_request_id() for k in messages}
        parts = {k: split(build(c.session), n) for k, (build, n) in messages.items()}
        wire = b""
        for chunk_type, key, index in steps:
            body = abort_body() if chunk_type == b"A" else parts[key][index]
            wire += c.msg_chunk(chunk_type, ids[key], body)
        c.send(wire)
        return [c.answer(ids[k]) for k in awaited]

    return run


CASES.append(Case("abort-alone-then-feed", "allowed", 1,
                  "an A chunk for a request never started, then FeedOverride = 100.5",
                  script({"x": (write1(DOOR, TRUE), 1), "feed": (write1(FEED, double(100.5)), 1)},
                         [(b"A", "x", 0), (b"F", "feed", 0)], ["feed"])))
CASES.append(Case("abort-other-id-then-rest", "refused", 0,
                  "C (first half of DoorUnlock) under request 1, A under request 2, F (second half) under request 1",
                  script({"door": (write1(DOOR, TRUE), 2), "other": (write1(FEED, double(100.0)), 1)},
                         [(b"C", "door", 0), (b"A", "other", 0), (b"F", "door", 1)], ["door"])))
CASES.append(Case("interleaved-abort", "allowed", 1,
                  "C of msg 1 (FeedOverride 100.25), C of msg 2 (DoorUnlock), A of msg 2, F of msg 1",
                  script({"feed": (write1(FEED, double(100.25)), 2), "door": (write1(DOOR, TRUE), 2)},
                         [(b"C", "feed", 0), (b"C", "door", 0), (b"A", "door", 0), (b"F", "feed", 1)], ["feed"])))
CASES.append(Case("chunks-feed-twelve", "allowed", 1, "FeedOverride = 100.75 in twelve chunks (C x 11, F)",
                  script({"feed": (write1(FEED, double(100.75)), 12)},
                         [(b"C", "feed", i) for i in range(11)] + [(b"F", "feed", 11)], ["feed"])))
CASES.append(Case("chunks-door-twelve", "refused", 0, "DoorUnlock = true in twelve chunks (C x 11, F)",
                  script({"door": (write1(DOOR, TRUE), 12)},
                         [(b"C", "door", i) for i in range(11)] + [(b"F", "door", 11)], ["door"])))


def interleaved(first: Callable[[Session], bytes], second: Callable[[Session], bytes]) -> Callable[[Conn], list[dict]]:
    def run(c: Conn) -> list[dict]:
        r1, r2 = c.next_request_id(), c.next_request_id()
        a1, b1 = split(first(c.session), 2)
        m2 = second(c.session)
        c.send(c.msg_chunk(b"C", r1, a1) + c.msg_chunk(b"F", r2, m2) + c.msg_chunk(b"F", r1, b1))
        got = {}
        deadline = time.monotonic() + c.timeout
        # Either order of answers.
        for _ in range(2):
            a = c.answer_any(deadline)
            got[a.get("request_id")] = a
            if a["kind"] in ("closed", "err", "timeout"):
                break
        return [got.get(r2, {"kind": "missing"}), got.get(r1, {"kind": "missing"})] + [
            a for k, a in got.items() if k not in (r1, r2)
        ]

    return run


CASES.append(Case("interleaved-feed-spindle", "allowed", 2,
                  "C of msg 1 (FeedOverride 117.0), F of msg 2 (SpindleOverride 95.0), F of msg 1",
                  interleaved(write1(FEED, double(117.0)), write1(SPINDLE, double(95.0)))))
CASES.append(Case("interleaved-door-feed", "allowed", 1,
                  "C of msg 1 (DoorUnlock), F of msg 2 (FeedOverride 118.0), F of msg 1: only msg 2 may run",
                  interleaved(write1(DOOR, TRUE), write1(FEED, double(118.0)))))


def mixed_ids() -> Callable[[Conn], list[dict]]:
    """The halves of one DoorUnlock write under two request ids."""

    def run(c: Conn) -> list[dict]:
        r1, r2 = c.next_request_id(), c.next_request_id()
        a, b = split(write_request(c.session, [wv(DOOR, TRUE)]), 2)
        c.send(c.msg_chunk(b"C", r1, a) + c.msg_chunk(b"F", r2, b))
        return [c.answer(r2)]

    return run


CASES.append(Case("chunks-mixed-request-ids", "refused", 0,
                  "C (first half of DoorUnlock) under request 1, F (second half) under request 2",
                  mixed_ids()))


# --- RegisterNodes aliases
def register_then_write(register: list[str], write_index: int, v: bytes) -> Callable[[Conn], list[dict]]:
    def run(c: Conn) -> list[dict]:
        a = c.service(register_request(c.session, [nid_string(n) for n in register]))
        answers = [strip(a)]
        if a["kind"] != "response":
            return answers
        ids = a["object"].Parameters.RegisteredNodeIds
        alias = nodeid_to_binary(ids[write_index])
        answers[0]["registered"] = [i.to_string() for i in ids]
        answers.append(c.service(write_request(c.session, [write_value(alias, data_value(v))])))
        return answers

    return run


CASES.append(Case("register-feed-write-alias", "allowed", 1,
                  "RegisterNodes(FeedOverride), then FeedOverride = 119.0 through the id the server returned",
                  register_then_write([FEED], 0, double(119.0))))
CASES.append(Case("register-door-write-alias", "refused", 0,
                  "RegisterNodes(DoorUnlock), then a write of true through the id the server returned",
                  register_then_write([DOOR], 0, TRUE)))
CASES.append(Case("register-feed-door-write-second", "refused", 0,
                  "RegisterNodes(FeedOverride, DoorUnlock), then a write through the second returned id",
                  register_then_write([FEED, DOOR], 1, TRUE)))


def alias_guess() -> Callable[[Conn], list[dict]]:
    """A write to node-opcua's first alias id before anything was registered in this session,
    then RegisterNodes(DoorUnlock) and the same guessed id again."""

    def run(c: Conn) -> list[dict]:
        guess = nid_numeric(1, 9999)
        first = c.service(write_request(c.session, [write_value(guess, data_value(TRUE))]))
        reg = c.service(register_request(c.session, [nid_string(DOOR)]))
        if reg["kind"] != "response":
            return [first, strip(reg)]
        second = c.service(write_request(c.session, [write_value(guess, data_value(TRUE))]))
        return [first, strip(reg), second]

    return run


def two_sessions_alias_clash() -> Callable[[Conn], list[dict]]:
    """Session 1 registers FeedOverride, session 2 (same channel) ToolOffset: node-opcua numbers
    aliases per session, so both get ns=9999;i=1. A gateway that keeps aliases per connection (or
    the first one it saw) judges session 2's write to the alias as a FeedOverride write; the server
    writes ToolOffset."""

    def run(c: Conn) -> list[dict]:
        s1 = c.session
        r1 = c.service(register_request(s1, [nid_string(FEED)]))
        answers = [strip(r1)]
        c.create_session()
        s2 = c.session
        r2 = c.service(register_request(s2, [nid_string(TOOL)]))
        answers.append(strip(r2))
        if r2["kind"] != "response":
            return answers
        alias = nodeid_to_binary(r2["object"].Parameters.RegisteredNodeIds[0])
        answers[-1]["registered"] = [i.to_string() for i in r2["object"].Parameters.RegisteredNodeIds]
        answers.append(strip(c.service(write_request(s2, [write_value(alias, data_value(double(5.0)))]))))
        return answers

    return run


CASES.append(Case("register-alias-two-sessions", "refused", 0,
                  "session 1: RegisterNodes(FeedOverride); session 2 on the same channel: "
                  "RegisterNodes(ToolOffset), then 5.0 to the id it got (node-opcua: ns=9999;i=1 in both)",
                  two_sessions_alias_clash()))


def pipelined_alias() -> Callable[[Conn], list[dict]]:
    """RegisterNodes(ToolOffset) and, before its answer, a write of 5.0 to the alias node-opcua
    will give it (ns=9999;i=1): a gateway that learns aliases from responses has not seen it yet."""

    def run(c: Conn) -> list[dict]:
        r1, r2 = c.next_request_id(), c.next_request_id()
        c.send(
            c.msg_chunk(b"F", r1, register_request(c.session, [nid_string(TOOL)]))
            + c.msg_chunk(b"F", r2, write_request(c.session, [write_value(nid_numeric(1, 9999),
                                                                          data_value(double(5.0)))]))
        )
        return [strip(c.answer(r1)), strip(c.answer(r2))]

    return run


CASES.append(Case("register-alias-pipelined", "refused", 0,
                  "RegisterNodes(ToolOffset) and, without waiting, ToolOffset's future alias ns=9999;i=1 = 5.0",
                  pipelined_alias()))
CASES.append(Case("register-alias-guessed", "refused", 0,
                  "write ns=9999;i=1 = true, RegisterNodes(DoorUnlock), write ns=9999;i=1 = true again",
                  alias_guess()))


def strip(a: dict) -> dict:
    return {k: v for k, v in a.items() if k != "object"}


# ------------------------------------------------------------------ running


def run_case(c: Case, url: str, bind: str | None, timeout: float) -> dict:
    out: dict = {"case": c.name, "expect": c.expect, "executes": c.executes}
    try:
        conn = Conn(url, bind, timeout)
    except OSError as e:
        return out | {"outcome": "setup_failed", "error": f"connect: {e}"}
    out["local"] = conn.local
    try:
        conn.hello()
        conn.open()
        conn.create_session()
    except (Closed, OSError, struct.error, TimeoutError) as e:
        conn.close()
        return out | {"outcome": "setup_failed", "error": f"{type(e).__name__}: {e}"}
    out["session"] = conn.session_ids[0]
    try:
        answers = [strip(a) for a in c.run(conn)]
    except Closed as e:
        answers = [{"kind": "closed", "error": str(e)}]
    except Exception as e:  # noqa: BLE001 (a crafted answer that does not decode)
        answers = [{"kind": "client_error", "error": f"{type(e).__name__}: {e}"}]
    last = answers[-1] if answers else {"kind": "none"}
    out["outcome"] = last["kind"]
    if "status" in last:
        out["status"] = last["status"]
    out["answers"] = answers
    out["sessions"] = conn.session_ids
    conn.close()
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Crafted OPC UA requests, one JSON line per case.")
    p.add_argument("--url", help="opc.tcp://HOST:PORT/PATH")
    p.add_argument("--bind", help="local address to connect from")
    p.add_argument("--cases", help="comma list of case names (default: all)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds for each answer")
    p.add_argument("--list", action="store_true", help="print the cases, connect nowhere")
    args = p.parse_args(argv)
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    chosen = CASES
    if args.cases:
        wanted = args.cases.split(",")
        unknown = [n for n in wanted if n not in names]
        if unknown:
            p.error(f"unknown cases {unknown}")
        chosen = [c for c in CASES if c.name in wanted]
    if args.list:
        for c in chosen:
            print(json.dumps({"case": c.name, "expect": c.expect, "executes": c.executes, "what": c.what}))
        return 0
    if not args.url:
        p.error("--url is required")
    for c in chosen:
        print(json.dumps(run_case(c, args.url, args.bind, args.timeout)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

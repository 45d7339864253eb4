#!/usr/bin/env python3
"""The CNC machine's OPC UA server for zonegate's integration tests.

A real asyncua 2.1.0 server (run it with the repo's .venv/bin/python, see scripts/setup) at
opc.tcp://HOST:PORT/cnc, with a small machine model in namespace urn:zonegate:cnc (index 2), all
string node ids: object ns=2;s=Machine, variables ns=2;s=Machine.FeedOverride, SpindleOverride,
ProgramNumber, ToolOffset, DoorUnlock (writable), SpindleSpeed and Mode (read-only), methods
ns=2;s=Machine.SelectProgram, ResetAlarm and Unlock. Besides answering OPC UA it keeps two files
the tests read without going through the gateway:

- the journal (--journal): one JSON line per event that reached the server, written and flushed
  before the response goes out: TCP connections, secure channels (policy, mode, client
  certificate), sessions created/activated/closed (identity type, user name), every node of
  every Write (node, value, type, status) and every method Call (method, arguments, status);
  channel-level errors it answered with an ERR message. Reads, browses and subscriptions are
  not journaled.
  {"event": "write", "peer": "10.30.0.10:40112", "security": "None", "session": "ns=1;i=10",
   "user": null, "node": "ns=2;s=Machine.FeedOverride", "attribute": "Value", "value": 110.0,
   "type": "Double", "status": "Good"}
- the state file (JOURNAL.state): the current value of every Machine variable as JSON,
  rewritten atomically at start, after every Write and Call that reached the server and on
  SIGUSR1.

See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dbm
import fcntl
import json
import logging
import os
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncua
from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server import binary_server_asyncio
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager
from asyncua.ua.ua_binary import struct_from_binary, uatcp_to_binary
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opcua_certs  # noqa: E402 (next to this file)

APPLICATION_URI = "urn:zonegate:test:cnc-server"
NAMESPACE_URI = "urn:zonegate:cnc"
ENDPOINT_PATH = "/cnc"
USERS = {"operator": "operator-pw", "engineer": "engineer-pw"}
DEFAULT_SECURITY = "None,Basic256Sha256_Sign,Basic256Sha256_SignAndEncrypt"

# name, variant type, initial value, writable
VARIABLES = [
    ("FeedOverride", ua.VariantType.Double, 100.0, True),  # percent
    ("SpindleOverride", ua.VariantType.Double, 100.0, True),  # percent
    ("ProgramNumber", ua.VariantType.UInt32, 1000, True),
    ("ToolOffset", ua.VariantType.Double, 0.0, True),  # the gateway policy forbids writes
    ("DoorUnlock", ua.VariantType.Boolean, False, True),  # forbidden too
    ("SpindleSpeed", ua.VariantType.Double, 12000.0, False),  # rpm, read-only
    ("Mode", ua.VariantType.String, "auto", False),  # read-only
]

# The UaProcessor (one per TCP connection) handling the request being processed, so that the
# write callback and the method-call wrapper know which client and channel it came from.
CURRENT: contextvars.ContextVar[JournalingProcessor | None] = contextvars.ContextVar(
    "zonegate_current_processor", default=None
)

log = logging.getLogger("opcua_server")


def node_id(name: str) -> ua.NodeId:
    return ua.NodeId(f"Machine.{name}" if name else "Machine", 2)


def format_peer(peername: Any) -> str:
    if not peername:
        return "?"
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def status_name(code: int | ua.StatusCode | None) -> str:
    if code is None:
        return "Good"
    if isinstance(code, ua.StatusCode):
        return code.name
    return ua.StatusCode(code).name


def exception_status(e: BaseException) -> int:
    """The status code an exception inside asyncua stands for (what the server answers)."""
    code = getattr(e, "code", None)
    if isinstance(code, int):  # ServiceError and UaStatusCodeError (its subclasses too)
        return code
    text = str(e)
    for needle, status in (
        ("No matching policy", ua.StatusCodes.BadSecurityPolicyRejected),
        ("security token id", ua.StatusCodes.BadSecureChannelTokenUnknown),
        ("Wrong channel id", ua.StatusCodes.BadSecureChannelIdInvalid),
        ("wrong sequence", ua.StatusCodes.BadSequenceNumberInvalid),
    ):
        if needle in text:
            return status
    if type(e).__name__ in ("NotEnoughData", "error", "UnicodeDecodeError"):  # struct.error
        return ua.StatusCodes.BadDecodingError
    return ua.StatusCodes.BadSecurityChecksFailed  # InvalidSignature, failed decryption, ...


def jsonable(value: Any) -> Any:
    """A Variant's value (or anything in a request) as plain JSON."""
    if isinstance(value, ua.Variant):
        return jsonable(value.Value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, ua.StatusCode):
        return value.name
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.to_string()
    return str(value)


def variant_json(v: Any) -> dict:
    if isinstance(v, ua.Variant):
        return {"value": jsonable(v.Value), "type": v.VariantType.name}
    return {"value": jsonable(v), "type": None}


def security_name(policy_uri: str | None, mode: ua.MessageSecurityMode | None) -> str:
    """Like --security: None, Basic256Sha256_Sign, Basic256Sha256_SignAndEncrypt, ..."""
    policy = (policy_uri or "#None").rsplit("#", 1)[-1]
    if policy == "None" or mode in (None, ua.MessageSecurityMode.None_):
        return "None" if policy == "None" else f"{policy}_None"
    return f"{policy}_{mode.name}"


def attribute_name(attr: int) -> str | int:
    try:
        return ua.AttributeIds(attr).name
    except ValueError:
        return attr


def identity(token: Any) -> dict:
    """What an ActivateSession's user identity token says, for the journal."""
    out: dict = {"identity": identity_type(token), "user_name": getattr(token, "UserName", None)}
    if isinstance(token, ua.UserNameIdentityToken):
        # The password itself is never journaled; null here means it came in plain text.
        out["password_encryption"] = (token.EncryptionAlgorithm or "").rsplit("#", 1)[-1] or None
    return out


def identity_type(token: Any) -> str:
    if token is None or isinstance(token, ua.AnonymousIdentityToken):
        return "Anonymous"
    if isinstance(token, ua.ExtensionObject):
        return "Anonymous" if token.TypeId == ua.NodeId(ua.ObjectIds.Null) else "Unknown"
    if isinstance(token, ua.UserNameIdentityToken):
        return "UserName"
    if isinstance(token, ua.X509IdentityToken):
        return "Certificate"
    if isinstance(token, ua.IssuedIdentityToken):
        return "IssuedToken"
    return type(token).__name__


class Journal:
    """Appends one JSON line per event and flushes it at once."""

    def __init__(self, path: str | None):
        self.file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, entry: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()


class Users(UserManager):
    """Anonymous, operator/operator-pw and engineer/engineer-pw; all with asyncua's User role.

    (asyncua's Admin role would bypass the access levels, its Anonymous role may do nothing.)
    """

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        if username is None:
            return User(role=UserRole.User, name=None)
        if USERS.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None  # asyncua answers BadUserAccessDenied


class Cnc:
    """What all connections share: the server, the journal, the state file, the trust list."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.journal = Journal(args.journal)
        self.state_path = args.journal + ".state" if args.journal else None
        self.server: Server | None = None
        self.writes = 0
        self.calls = 0
        self.trusted: set[bytes] = set()  # DER client certificates; empty: any is accepted

    def dump_state(self) -> None:
        """Writes JOURNAL.state; a rename, so readers never see half a file."""
        if not self.state_path or self.server is None:
            return
        values = {}
        for name, _vt, _init, _w in VARIABLES:
            nid = node_id(name)
            dv = self.server.read_attribute_value(nid)
            values[nid.to_string()] = jsonable(dv.Value.Value if dv.Value is not None else None)
        state = {"writes": self.writes, "calls": self.calls, "values": values}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_path)

    def offers(self, policy) -> bool:
        """Whether the channel's policy and mode are one of the endpoints (--security)."""
        for t in self.args.security_types:
            cls, mode, _level = security_policies.SECURITY_POLICY_TYPE_MAP[t]
            if cls.URI == policy.URI and mode == policy.Mode:
                return True
        return False

    # -- what the journal sees --------------------------------------------------------------

    async def after_write(self, event, _dispatcher) -> None:
        """asyncua's PostWrite callback: the Write request reached the write service."""
        proc = CURRENT.get()
        if not event.is_external or proc is None:
            return
        for wv, status in zip(event.request_params.NodesToWrite, event.response_params, strict=False):
            proc.journal_write(wv, status_name(status))
        self.writes += 1
        self.dump_state()

    def wrap_method_service(self, method_service) -> None:
        """Journals every method call a client makes (asyncua has no callback for Call)."""
        original = method_service.call

        async def call(methods: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
            results = await original(methods)
            proc = CURRENT.get()
            if proc is not None:
                for req, res in zip(methods, results, strict=False):
                    proc.journal_call(req, status_name(res.StatusCode), res.OutputArguments)
                self.calls += 1
                self.dump_state()
            return results

        method_service.call = call

    # -- the methods ------------------------------------------------------------------------

    async def set_value(self, name: str, value: Any, vt: ua.VariantType) -> None:
        assert self.server is not None
        await self.server.write_attribute_value(
            node_id(name), ua.DataValue(ua.Variant(value, vt), StatusCode=None)
        )

    async def select_program(self, _parent, *args):
        if len(args) < 1:
            return ua.StatusCode(ua.StatusCodes.BadArgumentsMissing)
        if len(args) > 1:
            return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
        arg = args[0]
        if not isinstance(arg, ua.Variant) or arg.VariantType != ua.VariantType.UInt32:
            res = ua.CallMethodResult()
            res.StatusCode = ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
            res.InputArgumentResults = [ua.StatusCode(ua.StatusCodes.BadTypeMismatch)]
            return res
        await self.set_value("ProgramNumber", arg.Value, ua.VariantType.UInt32)
        return [ua.Variant(True, ua.VariantType.Boolean)]

    async def reset_alarm(self, _parent, *args):
        if args:
            return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
        return []

    async def unlock(self, _parent, *args):
        if args:
            return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
        await self.set_value("DoorUnlock", True, ua.VariantType.Boolean)
        return []


SESSION_REQUESTS = (
    ua.NodeId(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary),
    ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary),
)

CNC: Cnc  # set in main(); JournalingProcessor is built by asyncua, it finds it here


class JournalingProcessor(UaProcessor):
    """asyncua's per-connection protocol handler, plus the journal, the trust list and ERR.

    Plain asyncua 2.1.0 ignores a message that breaks the secure channel (unknown policy, bad
    signature, wrong token): it logs it and leaves the client waiting. Here the server answers
    such a message with an ERR message carrying the status and closes the connection, as the
    specification (Part 6) asks.
    """

    def __init__(self, internal_server, transport, limits):
        super().__init__(internal_server, transport, limits)
        self.peer = format_peer(self.name)
        self.security = "None"
        CNC.journal.write({"event": "connection", "peer": self.peer})

    # -- journal helpers --------------------------------------------------------------------

    def base(self, event: str) -> dict:
        entry: dict = {"event": event, "peer": self.peer, "security": self.security}
        if self.session is not None:
            entry["session"] = self.session.session_id.to_string()
            entry["user"] = self.session.user.name if self.session.user else None
        return entry

    def journal_write(self, wv: ua.WriteValue, status: str, **extra) -> None:
        dv = wv.Value
        variant = dv.Value if dv is not None else None
        entry = self.base("write") | {
            "node": wv.NodeId.to_string(),
            "attribute": attribute_name(wv.AttributeId),
        }
        entry |= variant_json(variant) if variant is not None else {"value": None, "type": None}
        entry["status"] = status
        CNC.journal.write(entry | extra)

    def journal_call(self, req: ua.CallMethodRequest, status: str, outputs=None, **extra) -> None:
        entry = self.base("call") | {
            "object": req.ObjectId.to_string(),
            "method": req.MethodId.to_string(),
            "args": [variant_json(v) for v in (req.InputArguments or [])],
            "status": status,
        }
        if outputs:
            entry["outputs"] = [variant_json(v) for v in outputs]
        CNC.journal.write(entry | extra)

    def refuse(self, code: int, reason: str, event: str, **extra) -> bool:
        """Sends an ERR message and asks asyncua to close the connection."""
        CNC.journal.write(
            {"event": event, "peer": self.peer, "status": status_name(code), "error": reason} | extra
        )
        err = ua.ErrorMessage(ua.StatusCode(code), reason)
        with contextlib.suppress(Exception):
            self._transport.write(uatcp_to_binary(ua.MessageType.Error, err))
        return False  # OPCUAProtocol closes the transport

    # -- asyncua hooks ----------------------------------------------------------------------

    async def process(self, header, body):
        first_open = header.MessageType == ua.MessageType.SecureOpen and not self._connection.is_open()
        if first_open and CNC.trusted:
            try:
                hdr = struct_from_binary(ua.AsymmetricAlgorithmHeader, body.copy(header.body_size))
                cert = hdr.SenderCertificate
            except Exception:  # noqa: BLE001 (asyncua itself will refuse it below)
                cert = None
            if cert:
                cert = cert[: int.from_bytes(cert[2:4], "big") + 4]  # the first of a chain
                if cert not in CNC.trusted:
                    return self.refuse(
                        ua.StatusCodes.BadCertificateUntrusted,
                        "client certificate not in the trust list",
                        "channel",
                        policy=hdr.SecurityPolicyURI.rsplit("#", 1)[-1],
                        client_cert=opcua_certs.thumbprint(cert),
                    )
        try:
            return await super().process(header, body)
        except Exception as e:  # noqa: BLE001 (everything that breaks the channel)
            code = exception_status(e)
            log.warning("%s: %s: %s (answered with ERR %s)", self.peer, type(e).__name__, e,
                        status_name(code))
            return self.refuse(
                code,
                f"{type(e).__name__}: {e}"[:400],
                "channel" if first_open else "channel_error",
                message=header.MessageType.decode() if isinstance(header.MessageType, bytes)
                else str(header.MessageType),
            )

    def open_secure_channel(self, algohdr, seqhdr, body):
        request = struct_from_binary(ua.OpenSecureChannelRequest, body.copy())
        super().open_secure_channel(algohdr, seqhdr, body)
        policy = self._connection.security_policy
        self.security = security_name(policy.URI, policy.Mode)
        cert = algohdr.SenderCertificate
        entry = {
            "event": "channel",
            "peer": self.peer,
            "security": self.security,
            "request": request.Parameters.RequestType.name,
            "channel_id": self._connection.security_token.ChannelId,
            "client_cert": opcua_certs.thumbprint(cert) if cert else None,
            "client_uri": (opcua_certs.certificate_uris(cert) or [None])[0] if cert else None,
            "status": "Good",
        }
        CNC.journal.write(entry)

    async def _process_message(self, typeid, requesthdr, seqhdr, body):
        token = CURRENT.set(self)
        peek = body.copy()  # a second view: asyncua consumes `body`
        try:
            if typeid in SESSION_REQUESTS and not CNC.offers(self._connection.security_policy):
                # asyncua accepts a None channel even without a None endpoint (GetEndpoints
                # needs one) and would create a session on it; a real server refuses that.
                raise ServiceError(ua.StatusCodes.BadSecurityPolicyRejected)
            result = await super()._process_message(typeid, requesthdr, seqhdr, body)
        except Exception as e:
            self.journal_refused(typeid, peek, status_name(exception_status(e)))
            raise
        finally:
            CURRENT.reset(token)
        self.journal_session(typeid, peek)
        return result

    def journal_session(self, typeid, peek) -> None:
        """Session events that asyncua answered normally."""
        if typeid == ua.NodeId(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary):
            params = struct_from_binary(ua.CreateSessionParameters, peek)
            CNC.journal.write(
                self.base("session_created")
                | {
                    "name": params.SessionName,
                    "client_uri": params.ClientDescription.ApplicationUri,
                    "status": "Good",
                }
            )
        elif typeid == ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary):
            params = struct_from_binary(ua.ActivateSessionParameters, peek)
            CNC.journal.write(
                self.base("session_activated") | identity(params.UserIdentityToken) | {"status": "Good"}
            )
        elif typeid == ua.NodeId(ua.ObjectIds.CloseSessionRequest_Encoding_DefaultBinary):
            CNC.journal.write(self.base("session_closed") | {"status": "Good"})
        elif typeid == ua.NodeId(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary):
            CNC.journal.write(self.base("get_endpoints") | {"status": "Good"})

    def journal_refused(self, typeid, peek, status: str) -> None:
        """Requests asyncua answered with a ServiceFault (the whole request refused)."""
        try:
            if typeid == ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary):
                params = struct_from_binary(ua.WriteParameters, peek)
                for wv in params.NodesToWrite:
                    self.journal_write(wv, status, service_fault=True)
            elif typeid == ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary):
                params = struct_from_binary(ua.CallParameters, peek)
                for req in params.MethodsToCall:
                    self.journal_call(req, status, service_fault=True)
            elif typeid == ua.NodeId(ua.ObjectIds.CreateSessionRequest_Encoding_DefaultBinary):
                params = struct_from_binary(ua.CreateSessionParameters, peek)
                CNC.journal.write(
                    {"event": "session_created", "peer": self.peer, "security": self.security,
                     "name": params.SessionName,
                     "client_uri": params.ClientDescription.ApplicationUri, "status": status}
                )
            elif typeid == ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary):
                params = struct_from_binary(ua.ActivateSessionParameters, peek)
                entry = self.base("session_activated")
                entry.pop("user", None)  # not activated: no user
                CNC.journal.write(entry | identity(params.UserIdentityToken) | {"status": status})
        except Exception:  # noqa: BLE001 (undecodable: asyncua has refused it anyway)
            log.debug("could not journal a refused request", exc_info=True)

    async def close(self):
        CNC.journal.write({"event": "disconnect", "peer": self.peer})
        await super().close()


# asyncua builds one UaProcessor per connection (binary_server_asyncio.OPCUAProtocol).
binary_server_asyncio.UaProcessor = JournalingProcessor


def aspace_cache_default() -> str:
    """Next to the installed asyncua, so that a new venv (or version) starts a new cache."""
    return str(Path(sys.prefix) / "cache" / f"asyncua-{asyncua.__version__}" / "aspace")


async def init_server(server: Server, cache: str) -> None:
    """asyncua builds its standard address space (about 3 s); a shelf of it loads in 0.1 s.

    The first server builds the shelf under a lock (others wait, then load it), in a temporary
    name renamed into place, so that a reader never opens half a shelf.
    """
    if not cache:
        await server.init()
        return
    path = Path(cache)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(str(path) + ".lock", "a")  # noqa: SIM115
    except OSError as e:
        log.warning("address space cache %s unusable (%s); building it in memory", cache, e)
        await server.init()
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if dbm.whichdb(str(path)):
            try:
                await server.init(path)
                return
            except Exception as e:  # noqa: BLE001
                log.warning("address space cache %s unreadable (%s); rebuilding it", cache, e)
                for f in path.parent.glob(path.name + ".*"):
                    if not f.name.endswith(".lock"):
                        f.unlink(missing_ok=True)
                raise RetryWithoutCache from e
        tmp = path.with_name(f"{path.name}-tmp{os.getpid()}")
        await server.init(tmp)
        for f in path.parent.glob(tmp.name + "*"):
            os.replace(f, path.parent / (path.name + f.name[len(tmp.name) :]))


class RetryWithoutCache(Exception):
    pass


async def build(cnc: Cnc, args: argparse.Namespace) -> Server:
    server = Server(user_manager=Users())
    server.name = "zonegate test CNC"
    server.product_uri = "urn:zonegate:test:peers"
    server.manufacturer_name = "zonegate test peers"
    server.application_type = ua.ApplicationType.Server
    try:
        await init_server(server, args.aspace_cache)
    except RetryWithoutCache:
        server = Server(user_manager=Users())
        await server.init()
    await server.set_application_uri(APPLICATION_URI)
    idx = await server.register_namespace(NAMESPACE_URI)
    if idx != 2:
        raise SystemExit(f"opcua_server: namespace {NAMESPACE_URI} got index {idx}, not 2")

    host = args.host
    url_host = f"[{host}]" if ":" in host else host
    server.set_endpoint(f"opc.tcp://{url_host}:{args.port}{ENDPOINT_PATH}")
    server.set_security_policy(args.security_types)
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    if any(t != ua.SecurityPolicyType.NoSecurity for t in args.security_types) or args.cert_dir:
        der, key = server_certificate(args)
        await server.load_certificate(der, format="der")
        await server.load_private_key(key, format="der")

    machine = await server.nodes.objects.add_object(node_id(""), ua.QualifiedName("Machine", idx))
    for name, vt, init, writable in VARIABLES:
        var = await machine.add_variable(
            node_id(name), ua.QualifiedName(name, idx), ua.Variant(init, vt)
        )
        if writable:
            await var.set_writable()
    await machine.add_method(
        node_id("SelectProgram"),
        ua.QualifiedName("SelectProgram", idx),
        cnc.select_program,
        [argument("program", ua.ObjectIds.UInt32, "the program number to select")],
        [argument("ok", ua.ObjectIds.Boolean, "true when selected")],
    )
    await machine.add_method(node_id("ResetAlarm"), ua.QualifiedName("ResetAlarm", idx),
                             cnc.reset_alarm, [], [])
    await machine.add_method(node_id("Unlock"), ua.QualifiedName("Unlock", idx), cnc.unlock, [], [])

    server.subscribe_server_callback(CallbackType.PostWrite, cnc.after_write)
    cnc.wrap_method_service(server.iserver.method_service)
    return server


def argument(name: str, datatype: int, description: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = ua.NodeId(datatype)
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(description)
    return arg


def server_certificate(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """CERT_DIR/server.der + server.key, made if missing; in memory without --cert-dir."""
    ips = [args.host]
    dns = sorted({socket.gethostname(), "localhost"})
    if not args.cert_dir:
        der, key_pem = opcua_certs.make_certificate("cnc-server", APPLICATION_URI, dns, ips)
        return der, serialization.load_pem_private_key(key_pem, None).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
    d = Path(args.cert_dir)
    der_path, key_path = d / "server.der", d / "server.key"
    if der_path.exists() and key_path.exists():
        return opcua_certs.load_certificate_der(der_path), opcua_certs.load_private_key_der(key_path)
    der, key = opcua_certs.make_certificate("cnc-server", APPLICATION_URI, dns, ips)
    opcua_certs.write_files(d, "server", der, key)
    return der, opcua_certs.load_private_key_der(key_path)


def load_trust_list(args: argparse.Namespace) -> set[bytes]:
    files = [Path(p) for p in args.trusted_client]
    if args.cert_dir and (Path(args.cert_dir) / "trusted").is_dir():
        files += sorted(
            p for p in (Path(args.cert_dir) / "trusted").iterdir() if p.suffix in (".der", ".pem")
        )
    return {opcua_certs.load_certificate_der(p) for p in files}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The CNC machine's asyncua OPC UA server for zonegate's tests.")
    p.add_argument("--host", required=True,
                   help="address to listen on (no default: never 0.0.0.0)")
    p.add_argument("--port", type=int, default=4840)
    p.add_argument("--journal", help="file to append one JSON line per event to; "
                   "JOURNAL.state gets the variables")
    p.add_argument(
        "--security",
        default=DEFAULT_SECURITY,
        help="comma list of the endpoints offered: None, Basic256Sha256_Sign, "
        "Basic256Sha256_SignAndEncrypt (also Aes128Sha256RsaOaep_*, Aes256Sha256RsaPss_*); "
        f"default {DEFAULT_SECURITY}",
    )
    p.add_argument("--cert-dir", help="server certificate CERT_DIR/server.der + server.key "
                   "(made if missing); CERT_DIR/trusted/*.der|*.pem join the trust list")
    p.add_argument("--trusted-client", action="append", default=[], metavar="CERT",
                   help="accept only these client certificates (repeatable; default: any)")
    p.add_argument("--aspace-cache", default=aspace_cache_default(),
                   help="shelf caching asyncua's standard address space ('' = none); "
                   "default %(default)s")
    p.add_argument("--debug", action="store_true", help="asyncua debug log on stderr")
    args = p.parse_args(argv)
    if args.host in ("0.0.0.0", "::", ""):
        p.error("--host must be one address, not a wildcard")
    types = []
    for name in (s.strip() for s in args.security.split(",")):
        member = "NoSecurity" if name == "None" else name
        if not name or member not in ua.SecurityPolicyType.__members__:
            p.error(f"unknown security {name!r}")
        types.append(ua.SecurityPolicyType[member])
    args.security_types = types
    return args


async def main(argv: list[str]) -> int:
    global CNC
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:
        # Every refused request is an ERROR in asyncua's log ("sending service fault response"),
        # and a None endpoint next to username tokens a warning; the journal says what matters.
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    cnc = CNC = Cnc(args)
    try:
        cnc.trusted = load_trust_list(args)
    except (OSError, ValueError) as e:
        print(f"opcua_server: trust list: {e}", file=sys.stderr)
        return 2
    server = await build(cnc, args)
    cnc.server = server
    cnc.dump_state()
    try:
        await server.start()
    except OSError as e:
        print(f"opcua_server: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, cnc.dump_state)
    print(f"READY {server.endpoint.geturl()} ns=2", flush=True)
    await stop.wait()
    # asyncua's clock task sleeps a second between updates and stop() waits for it.
    task = server.iserver.time_task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.iserver.time_task = None
    await server.stop()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1:]))
    # Everything is written and flushed by now. Python's own exit would then spend a second or
    # two freeing asyncua's address space; skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

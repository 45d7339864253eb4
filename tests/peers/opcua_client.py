#!/usr/bin/env python3
"""A one-shot OPC UA client (the HMI) for zonegate's integration tests.

A real asyncua 2.1.0 client (run it with the repo's .venv/bin/python). It connects once, opens
one secure channel and one session, runs a JSON list of steps in that session, closes it and
prints one JSON line per event on stdout:

  {"step": null, "op": "connected", "security": "None", "session": true, "user": null,
   "local": "10.30.0.10:40112"}
  {"step": 0, "op": "read", "node": "ns=2;s=Machine.FeedOverride", "ok": true, "status": "Good",
   "value": 100.0, "type": "Double"}
  {"step": 1, "op": "write", "node": "ns=2;s=Machine.ToolOffset", "ok": false,
   "status": "BadUserAccessDenied", "value": 1.5, "type": "Double"}

A failing step does not end the session; the next step runs. Exit status: 0 when the session was
established and every step ran, whatever their results; 2 when the connection failed (then the
only line is {"step": null, "op": "connect", "ok": false, "status": ..., "error": ...}) or was
lost in the middle (the steps not run say so); 64 on usage errors. See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
from datetime import datetime
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState, UASocketState
from asyncua.crypto import security_policies

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import opcua_certs  # noqa: E402 (next to this file)

SECURITY = ["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]
DEFAULT_URI = "urn:zonegate:test:hmi"
EX_USAGE = 64

STEPS_HELP = """steps (--steps JSON|FILE, a JSON list run in order in one session):
  {"op": "read", "node": "ns=2;s=Machine.FeedOverride"}
  {"op": "write", "node": "ns=2;s=Machine.FeedOverride", "value": 110.0, "type": "Double"}
  {"op": "write_many", "items": [{"node": ..., "value": ..., "type": ...}, ...]}
  {"op": "call", "object": "ns=2;s=Machine", "method": "ns=2;s=Machine.SelectProgram",
   "args": [{"value": 1001, "type": "UInt32"}]}
  {"op": "browse", "node": "ns=2;s=Machine"}
  {"op": "subscribe", "node": "ns=2;s=Machine.FeedOverride", "seconds": 1, "interval": 100}
  {"op": "sleep", "seconds": 0.5}
  {"op": "wait_file", "path": "/tmp/go"}   (until the file exists, at most 60 s: the test says
                                           when to go on, after changing the plant meanwhile)
"type" is an OPC UA built-in type name (Boolean, SByte, Byte, Int16, UInt16, Int32, UInt32,
Int64, UInt64, Float, Double, String, DateTime, ByteString, ...); without it: JSON true/false
is Boolean, an integer Int32, a fraction Double, a string String."""


class Usage(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# values


def variant_type(name: str) -> ua.VariantType:
    try:
        return ua.VariantType[name]
    except KeyError:
        raise Usage(f"unknown type {name!r}") from None


INTEGER_TYPES = {"SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64"}


def make_variant(value: Any, type_name: str | None) -> ua.Variant:
    """A JSON value as a Variant of the given built-in type (or one guessed from JSON)."""
    if type_name is None:
        if isinstance(value, bool):
            type_name = "Boolean"
        elif isinstance(value, int):
            type_name = "Int32"
        elif isinstance(value, float):
            type_name = "Double"
        elif isinstance(value, str):
            type_name = "String"
        elif value is None:
            return ua.Variant(None, ua.VariantType.Null)
        else:
            raise Usage(f"give a type for {value!r}")
    vt = variant_type(type_name)
    if isinstance(value, list):
        return ua.Variant([convert(v, type_name) for v in value], vt, is_array=True)
    return ua.Variant(convert(value, type_name), vt)


def convert(value: Any, type_name: str) -> Any:
    try:
        if type_name in INTEGER_TYPES:
            if isinstance(value, bool) or not float(value).is_integer():
                raise ValueError
            return int(value)
        if type_name in ("Double", "Float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if type_name == "Boolean":
            if value not in (True, False, 0, 1):
                raise ValueError
            return bool(value)
        if type_name in ("String", "XmlElement"):
            return str(value)
        if type_name == "ByteString":
            return bytes.fromhex(str(value))
        if type_name == "DateTime":
            return datetime.fromisoformat(str(value))
        if type_name == "NodeId":
            return ua.NodeId.from_string(str(value))
        if type_name == "LocalizedText":
            return ua.LocalizedText(str(value))
        if type_name == "QualifiedName":
            return ua.QualifiedName.from_string(str(value))
        if type_name == "Null":
            return None
    except (ValueError, TypeError, ua.UaStringParsingError):
        raise Usage(f"{value!r} is not a {type_name}") from None
    raise Usage(f"type {type_name} is not supported here")


def jsonable(value: Any) -> Any:
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
    if isinstance(value, ua.ExtensionObject):
        return {"type_id": value.TypeId.to_string(), "body": base64.b64encode(value.Body or b"").decode()}
    return str(value)


def status_name(code: ua.StatusCode | None) -> str:
    return "Good" if code is None else code.name


def node(text: Any) -> ua.NodeId:
    try:
        return ua.NodeId.from_string(str(text))
    except (ValueError, ua.UaStringParsingError) as e:
        raise Usage(f"bad node id {text!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# failures


class ConnectionLost(Exception):
    """The connection went away; the remaining steps cannot run."""


def failure(e: BaseException) -> dict:
    """status (an OPC UA status name when there is one) and error for a failed operation."""
    if isinstance(e, ua.UaStatusCodeError):
        code = ua.StatusCode(e.code)
        return {"status": code.name, "error": code.doc or str(e)}
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return {"status": "BadTimeout", "error": "timeout"}
    if isinstance(e, OSError) and e.errno:
        return {"status": type(e).__name__, "error": os.strerror(e.errno).lower()}
    if isinstance(e, ConnectionError):
        return {"status": "BadConnectionClosed", "error": "connection closed"}
    return {"status": type(e).__name__, "error": str(e) or type(e).__name__}


# ---------------------------------------------------------------------------------------------
# steps


def check_steps(items: Any) -> list[dict]:
    """Validates the steps before connecting; returns them with values already converted."""
    if not isinstance(items, list):
        raise Usage("--steps must be a JSON list")
    steps = []
    for i, s in enumerate(items):
        if not isinstance(s, dict) or "op" not in s:
            raise Usage(f"step {i}: not an object with an op: {s!r}")
        op = s["op"]
        if op in ("read", "browse"):
            node(s.get("node"))
        elif op == "write":
            node(s.get("node"))
            if "value" not in s:
                raise Usage(f"step {i}: write needs a value")
            make_variant(s["value"], s.get("type"))
        elif op == "write_many":
            if not isinstance(s.get("items"), list) or not s["items"]:
                raise Usage(f"step {i}: write_many needs items")
            for item in s["items"]:
                node(item.get("node"))
                make_variant(item.get("value"), item.get("type"))
        elif op == "call":
            node(s.get("object"))
            node(s.get("method"))
            for a in s.get("args", []):
                if not isinstance(a, dict) or "value" not in a:
                    raise Usage(f"step {i}: call args are objects with a value (and type)")
                make_variant(a["value"], a.get("type"))
        elif op == "subscribe":
            node(s.get("node"))
            float(s.get("seconds", 1))
            float(s.get("interval", 100))
        elif op == "sleep":
            float(s.get("seconds", 0))
        elif op == "wait_file":
            if not isinstance(s.get("path"), str) or not s["path"]:
                raise Usage(f"step {i}: wait_file needs a path")
        else:
            raise Usage(f"step {i}: unknown op {op!r}")
        steps.append(s)
    return steps


class Session:
    def __init__(self, client: Client, timeout: float):
        self.client = client
        self.uac = client.uaclient
        self.timeout = timeout

    def alive(self) -> bool:
        proto = self.uac.protocol
        return (
            proto is not None
            and proto.state is UASocketState.OPEN
            and self.uac.state is UaClientState.CONNECTED
        )

    async def run(self, step: dict) -> dict:
        op = step["op"]
        return await getattr(self, "op_" + op)(step)

    async def op_read(self, s: dict) -> dict:
        rv = ua.ReadValueId()
        rv.NodeId = node(s["node"])
        rv.AttributeId = ua.AttributeIds.Value
        params = ua.ReadParameters()
        params.NodesToRead = [rv]
        try:
            dv = (await self.uac.read(params))[0]
        except ua.UaStatusCodeError as e:
            return {"ok": False} | failure(e) | {"service_fault": True}
        status = status_name(dv.StatusCode)
        out = {"ok": status == "Good", "status": status, "value": jsonable(dv.Value)}
        if dv.Value is not None and dv.Value.VariantType != ua.VariantType.Null:
            out["type"] = dv.Value.VariantType.name
        return out

    @staticmethod
    def write_value(item: dict) -> ua.WriteValue:
        wv = ua.WriteValue()
        wv.NodeId = node(item["node"])
        wv.AttributeId = ua.AttributeIds.Value
        # No SourceTimestamp (asyncua's write_value adds one that some servers refuse), no
        # StatusCode: only the value.
        wv.Value = ua.DataValue(make_variant(item["value"], item.get("type")), StatusCode=None)
        return wv

    async def write(self, items: list[dict]) -> list[str]:
        params = ua.WriteParameters()
        params.NodesToWrite = [self.write_value(i) for i in items]
        results = await self.uac.write(params)
        return [status_name(r) for r in results]

    async def op_write(self, s: dict) -> dict:
        variant = make_variant(s["value"], s.get("type"))
        shown = {"value": jsonable(variant), "type": variant.VariantType.name}
        try:
            statuses = await self.write([s])
        except ua.UaStatusCodeError as e:
            return {"ok": False} | failure(e) | shown | {"service_fault": True}
        status = statuses[0] if statuses else "BadUnexpectedError"
        return {"ok": status == "Good", "status": status} | shown

    async def op_write_many(self, s: dict) -> dict:
        items = s["items"]
        shown = []
        for item in items:
            v = make_variant(item["value"], item.get("type"))
            shown.append({"node": item["node"], "value": jsonable(v), "type": v.VariantType.name})
        try:
            statuses = await self.write(items)
        except ua.UaStatusCodeError as e:
            f = failure(e)
            return {"ok": False} | f | {
                "service_fault": True,
                "results": [x | {"status": f["status"]} for x in shown],
            }
        results = [x | {"status": st} for x, st in zip(shown, statuses, strict=False)]
        bad = [st for st in statuses if st != "Good"]
        if len(statuses) != len(items):
            bad.append("BadUnexpectedError")
        return {"ok": not bad, "status": bad[0] if bad else "Good", "results": results}

    async def op_call(self, s: dict) -> dict:
        req = ua.CallMethodRequest()
        req.ObjectId = node(s["object"])
        req.MethodId = node(s["method"])
        req.InputArguments = [make_variant(a["value"], a.get("type")) for a in s.get("args", [])]
        try:
            res = (await self.uac.call([req]))[0]
        except ua.UaStatusCodeError as e:
            return {"ok": False} | failure(e) | {"service_fault": True}
        status = status_name(res.StatusCode)
        out = {"ok": status == "Good", "status": status, "value": jsonable(res.OutputArguments or [])}
        if any(r.is_bad() for r in res.InputArgumentResults or []):
            out["input_results"] = [r.name for r in res.InputArgumentResults]
        return out

    async def op_browse(self, s: dict) -> dict:
        desc = ua.BrowseDescription()
        desc.NodeId = node(s["node"])
        desc.BrowseDirection = ua.BrowseDirection.Forward
        desc.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        desc.IncludeSubtypes = True
        desc.NodeClassMask = 0
        desc.ResultMask = ua.BrowseResultMask.All
        params = ua.BrowseParameters()
        params.NodesToBrowse = [desc]
        params.RequestedMaxReferencesPerNode = 0
        res = (await self.uac.browse(params))[0]
        status = status_name(res.StatusCode)
        refs = [
            {
                "node": r.NodeId.to_string(),
                "name": r.BrowseName.to_string(),
                "class": r.NodeClass.name,
            }
            for r in res.References or []
        ]
        return {"ok": status == "Good", "status": status, "value": refs}

    async def op_subscribe(self, s: dict) -> dict:
        values: list[Any] = []

        class Handler:
            def datachange_notification(self, _node, val, _data) -> None:
                values.append(jsonable(val))

        sub = await self.client.create_subscription(float(s.get("interval", 100)), Handler())
        try:
            await sub.subscribe_data_change(self.client.get_node(node(s["node"])))
        except ua.UaStatusCodeError as e:
            await self.quietly(sub.delete())
            return {"ok": False} | failure(e) | {"value": values}
        await asyncio.sleep(float(s.get("seconds", 1)))
        await sub.delete()
        return {"ok": True, "status": "Good", "value": values}

    async def op_sleep(self, s: dict) -> dict:
        await asyncio.sleep(float(s.get("seconds", 0)))
        return {"ok": True, "status": "Good"}

    async def op_wait_file(self, s: dict) -> dict:
        for _ in range(600):
            if os.path.exists(s["path"]):
                return {"ok": True, "status": "Good"}
            await asyncio.sleep(0.1)
        return {"ok": False, "status": "WaitTimeout", "error": f"{s['path']} did not appear within 60 s"}

    async def quietly(self, coro) -> None:
        try:
            await asyncio.wait_for(coro, self.timeout)
        except Exception:  # noqa: BLE001
            pass


def step_head(i: int, s: dict) -> dict:
    head: dict = {"step": i, "op": s["op"]}
    for key in ("node", "object", "method"):
        if key in s:
            head[key] = s[key]
    return head


# ---------------------------------------------------------------------------------------------
# connecting


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def bind_socket(client: Client, address: str) -> None:
    """asyncua connects without a source address; this is its connect_socket with one."""
    uac = client.uaclient

    async def connect_socket(host: str, port: int) -> None:
        uac._set_state(UaClientState.CONNECTING)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    uac._make_protocol, host, port, local_addr=(address, 0)
                ),
                uac._timeout,
            )
        except BaseException:
            uac._set_state(UaClientState.DISCONNECTED)
            raise
        uac._set_state(UaClientState.SOCKET_OPEN)

    uac.connect_socket = connect_socket


def local_address(client: Client) -> str | None:
    proto = client.uaclient.protocol
    sock = proto.transport.get_extra_info("sockname") if proto and proto.transport else None
    if not sock:
        return None
    return f"[{sock[0]}]:{sock[1]}" if ":" in sock[0] else f"{sock[0]}:{sock[1]}"


async def run(args: argparse.Namespace, steps: list[dict]) -> int:
    # watchdog_intervall: asyncua reads ServerStatus.State every interval to check the
    # connection; those reads would go through the gateway between the steps. Once an hour is
    # never, for a test.
    client = Client(args.url, timeout=args.timeout, watchdog_intervall=3600)
    client.name = client.description = "zonegate test HMI"
    client.application_uri = args.application_uri
    if args.bind:
        bind_socket(client, args.bind)
    if args.user is not None:
        client.set_user(args.user)
        client.set_password(args.password or "")

    try:
        if args.security != "None":
            policy, mode = args.security.split("_")
            await client.set_security(
                getattr(security_policies, f"SecurityPolicy{policy}"),
                args.cert_der,
                args.key_der,
                server_certificate=args.server_cert_der,
                mode=getattr(ua.MessageSecurityMode, mode),
            )
        await client.connect()
    except Exception as e:  # noqa: BLE001 (everything is a connect failure here)
        emit({"step": None, "op": "connect", "ok": False} | failure(e))
        client.disconnect_socket()
        return 2
    emit(
        {
            "step": None,
            "op": "connected",
            "security": args.security,
            "session": True,
            "user": args.user,
            "local": local_address(client),
        }
    )

    session = Session(client, args.timeout)
    lost: dict | None = None
    for i, s in enumerate(steps):
        line = step_head(i, s)
        if lost is not None:
            emit(line | {"ok": False} | lost | {"sent": False})
            continue
        try:
            line |= await session.run(s)
        except Exception as e:  # noqa: BLE001 (reported, and the next step runs)
            line |= {"ok": False} | failure(e)
        emit(line)
        if not session.alive():
            lost = {"status": "BadConnectionClosed", "error": "connection closed"}
    if lost is None:
        # CloseSession, CloseSecureChannel, close the socket.
        await session.quietly(client.disconnect())
    client.disconnect_socket()
    return 0 if lost is None else 2


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[dict]]:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # exit 64: 2 means a connection failure here
            self.print_usage(sys.stderr)
            self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")

    p = Parser(
        description="A one-shot asyncua OPC UA client (the HMI) for zonegate's tests.",
        epilog=STEPS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", required=True, help="opc.tcp://HOST:PORT/PATH")
    p.add_argument("--security", choices=SECURITY, default="None")
    p.add_argument("--cert", help="client certificate (DER or PEM), for a secured channel")
    p.add_argument("--key", help="its private key (PEM or DER, unencrypted)")
    p.add_argument(
        "--server-cert",
        help="the server's certificate; without it, a secured connect first asks the server "
        "for its endpoints over a separate None connection",
    )
    p.add_argument(
        "--application-uri",
        help="the client's application URI (default: the URI in --cert, else " + DEFAULT_URI + ")",
    )
    p.add_argument("--user", help="user name (anonymous without it)")
    p.add_argument("--password")
    p.add_argument("--bind", metavar="ADDR", help="connect from this local address")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds, for connecting and for each response")
    p.add_argument("--steps", default="[]", metavar="JSON|FILE",
                   help="the steps; a value starting with [ is the list itself")
    p.add_argument("--debug", action="store_true", help="asyncua debug log on stderr")
    args = p.parse_args(argv)
    if args.password is not None and args.user is None:
        p.error("--password needs --user")
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    if args.security != "None" and args.cert is None:
        p.error(f"--security {args.security} needs --cert and --key")
    try:
        args.cert_der = opcua_certs.load_certificate_der(args.cert) if args.cert else None
        args.key_der = opcua_certs.load_private_key_der(args.key) if args.key else None
        args.server_cert_der = (
            opcua_certs.load_certificate_der(args.server_cert) if args.server_cert else None
        )
        if args.application_uri is None:
            uris = opcua_certs.certificate_uris(args.cert_der) if args.cert_der else []
            args.application_uri = uris[0] if uris else DEFAULT_URI
        text = args.steps
        if not text.lstrip().startswith("["):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        steps = check_steps(json.loads(text))
    except (Usage, OSError, ValueError) as e:
        p.error(str(e))
    return args, steps


def main() -> int:
    args, steps = parse(sys.argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.debug:
        # asyncua logs every ServiceFault and every refused connection; the JSON lines say it.
        logging.getLogger("asyncua").setLevel(logging.CRITICAL + 1)
    return asyncio.run(run(args, steps))


if __name__ == "__main__":
    code = main()
    # Every line is printed and flushed; skip Python's slow teardown of asyncua's modules.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

#!/usr/bin/env python3
"""A one-shot Modbus/TCP client (SCADA/HMI) for zonegate's integration tests.

A real pymodbus 3.16.1 client (run it with the repo's .venv/bin/python). It connects once, from
--source if given, runs one operation (or a `sequence` of them on that one connection) and prints
one JSON line per operation on stdout:

  {"op": "read-holding", "args": [0, 2], "unit": 1, "local": "10.30.0.10:40112", "ok": true,
   "registers": [0, 0]}
  {"op": "write-register", "args": [2000, 1], ..., "ok": false, "exception": 2, "function": 134}
  {"op": "read-holding", "args": [0, 1], ..., "ok": false, "error": "timeout"}

Exit status: 0 when the operations ran, whatever their results; 1 when the connection could not
be made (one line with "op": "connect" says why); 2 on usage errors. See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import struct
import sys

from pymodbus import pymodbus_apply_logging_config
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import diag_message

USAGE = """operations:
  read-holding ADDR COUNT         FC 03
  read-input ADDR COUNT           FC 04
  read-coils ADDR COUNT           FC 01
  read-discrete ADDR COUNT        FC 02
  write-register ADDR VALUE       FC 06
  write-registers ADDR V1 [V2..]  FC 10
  write-coil ADDR 0|1             FC 05
  write-coils ADDR B1 [B2..]      FC 0F
  diagnostics SUB [DATA_HEX]      FC 08 with that sub-function; data field default 0000
  read-device-id [CODE [OBJECT]]  FC 2B/0E; read code default 1 (basic), object default 0
  sleep SECONDS                   (in a sequence) wait, keeping the connection open
  wait-file PATH                  (in a sequence) wait until PATH exists (at most 60 s), keeping
                                  the connection open: the test decides when the sequence goes on
  sequence FILE|JSON              run a JSON list of operations on one connection, e.g.
                                  [["write-register", 40, 1], ["read-holding", 40, 1],
                                   {"op": "read-holding", "args": [0, 1], "unit": 7}]
                                  (--sequence FILE|JSON does the same; a value starting
                                  with [ is the list itself)
values are decimal or 0x-hex."""

# name: (number of fixed arguments, takes further values)
OPS = {
    "read-holding": (2, False),
    "read-input": (2, False),
    "read-coils": (2, False),
    "read-discrete": (2, False),
    "write-register": (2, False),
    "write-registers": (2, True),
    "write-coil": (2, False),
    "write-coils": (2, True),
    "diagnostics": (1, True),
    "read-device-id": (0, True),
    "sleep": (1, False),
    "wait-file": (1, False),
}

# Operations that send nothing, with arguments that are not numbers.
LOCAL_OPS = ("sleep", "wait-file")


class Usage(Exception):
    pass


def number(text) -> int:
    if isinstance(text, int):
        return text
    try:
        return int(str(text), 0)
    except ValueError:
        raise Usage(f"not a number: {text!r}") from None


def check_op(op: str, args: list) -> None:
    if op not in OPS:
        raise Usage(f"unknown operation {op!r}")
    fixed, more = OPS[op]
    if len(args) < fixed or (not more and len(args) > fixed):
        raise Usage(f"{op}: wrong number of arguments {args!r}")
    if op == "diagnostics" and len(args) > 2:
        raise Usage("diagnostics SUB [DATA_HEX]")
    if op == "read-device-id" and len(args) > 2:
        raise Usage("read-device-id [CODE [OBJECT]]")
    if op in ("write-registers", "write-coils") and len(args) < 2:
        raise Usage(f"{op} ADDR V1 [V2..]")


def diag_request(sub: int, data: bytes, unit: int):
    """A FC 08 request with any sub-function: pymodbus's own class when it has one."""
    for cls in vars(diag_message).values():
        if (
            isinstance(cls, type)
            and issubclass(cls, diag_message.DiagnosticBase)
            and cls.__name__.endswith("Request")
            and cls.sub_function_code == sub
        ):
            break
    else:
        cls = type(
            "AnyDiagnosticRequest", (diag_message.DiagnosticBase,), {"sub_function_code": sub}
        )
    req = cls(dev_id=unit)
    req.message = data  # the data field exactly as given
    return req


def jsonable(value):
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


async def run_op(client: AsyncModbusTcpClient, op: str, args: list, unit: int) -> dict:
    """Runs one operation; returns the fields of its result line."""
    a = [number(x) for x in args] if op not in ("diagnostics", *LOCAL_OPS) else args
    if op == "sleep":
        await asyncio.sleep(float(args[0]))
        return {"ok": True}
    if op == "wait-file":
        for _ in range(600):
            if os.path.exists(args[0]):
                return {"ok": True}
            await asyncio.sleep(0.1)
        return {"ok": False, "error": "timeout"}
    if op == "read-holding":
        rr = await client.read_holding_registers(a[0], count=a[1], device_id=unit)
    elif op == "read-input":
        rr = await client.read_input_registers(a[0], count=a[1], device_id=unit)
    elif op == "read-coils":
        rr = await client.read_coils(a[0], count=a[1], device_id=unit)
    elif op == "read-discrete":
        rr = await client.read_discrete_inputs(a[0], count=a[1], device_id=unit)
    elif op == "write-register":
        rr = await client.write_register(a[0], a[1], device_id=unit)
    elif op == "write-registers":
        rr = await client.write_registers(a[0], a[1:], device_id=unit)
    elif op == "write-coil":
        rr = await client.write_coil(a[0], bool(a[1]), device_id=unit)
    elif op == "write-coils":
        rr = await client.write_coils(a[0], [bool(v) for v in a[1:]], device_id=unit)
    elif op == "diagnostics":
        sub = number(args[0])
        data = bytes.fromhex(str(args[1])) if len(args) > 1 else b"\x00\x00"
        rr = await client.execute(False, diag_request(sub, data, unit))
    elif op == "read-device-id":
        code = a[0] if a else 1
        obj = a[1] if len(a) > 1 else 0
        rr = await client.read_device_information(read_code=code, object_id=obj, device_id=unit)
    else:  # checked before
        raise Usage(op)

    if rr.isError():
        return {"ok": False, "exception": rr.exception_code, "function": rr.function_code}
    out: dict = {"ok": True}
    if op in ("read-holding", "read-input"):
        out["registers"] = list(rr.registers)
    elif op in ("read-coils", "read-discrete"):
        out["bits"] = [int(b) for b in rr.bits[: a[1]]]  # the response is padded to whole bytes
    elif op == "write-register":
        out["address"] = rr.address
        out["registers"] = list(rr.registers)
    elif op == "write-registers":
        out["address"] = rr.address
        out["count"] = rr.count
    elif op == "write-coil":
        out["address"] = rr.address
        out["bits"] = [int(b) for b in rr.bits]
    elif op == "write-coils":
        out["address"] = rr.address
        out["count"] = rr.count
    elif op == "diagnostics":
        out["sub"] = rr.sub_function_code
        out["data"] = jsonable(rr.message)
    elif op == "read-device-id":
        out["conformity"] = rr.conformity
        out["information"] = {
            str(k): (v.decode(errors="replace") if isinstance(v, bytes) else jsonable(v))
            for k, v in rr.information.items()
        }
    return out


async def run(args: argparse.Namespace, ops: list[tuple[str, list, int]]) -> int:
    client = AsyncModbusTcpClient(
        args.host,
        port=args.port,
        source_address=(args.source, 0) if args.source else None,
        timeout=args.timeout,
        retries=0,  # one try: the tests judge what the gateway did to exactly this request
        reconnect_delay=0,  # never reconnect behind the test's back
    )
    # pymodbus closes the connection itself after retries+3 unanswered requests; the tests want
    # to see what the gateway does, so it never gives up on its own.
    client.set_max_no_responses(1_000_000)
    ctx = client.ctx

    def on_connect(up: bool) -> None:
        # pymodbus waits out the full timeout when the peer closes; fail the request at once.
        if not up and not ctx.response_future.done():
            ctx.response_future.set_exception(ConnectionException("connection closed"))

    ctx.trace_connect = on_connect
    try:
        # What ctx.connect() does (transport/transport.py), without swallowing the reason.
        ctx.transport, _ = await asyncio.wait_for(ctx.call_create(), timeout=args.timeout)
    except TimeoutError:
        return emit({"op": "connect", "ok": False, "error": "timeout"}, 1)
    except OSError as e:
        # asyncio puts its own text in strerror ("Connect call failed ..."); the errno says it.
        reason = os.strerror(e.errno) if e.errno else str(e)
        return emit({"op": "connect", "ok": False, "error": reason.lower()}, 1)
    sock = ctx.transport.get_extra_info("sockname")
    local = (
        (f"[{sock[0]}]:{sock[1]}" if ":" in sock[0] else f"{sock[0]}:{sock[1]}") if sock else "?"
    )

    for op, op_args, unit in ops:
        line: dict = {"op": op, "args": shown_args(op, op_args), "unit": unit, "local": local}
        if op not in LOCAL_OPS and not client.connected:
            line.update(ok=False, error="connection closed")
        else:
            try:
                line.update(await run_op(client, op, op_args, unit))
            except ConnectionException:
                line.update(ok=False, error="connection closed")
            except ModbusIOException as e:
                text = str(e)
                if "No response received" in text:
                    line.update(ok=False, error="timeout")
                elif not client.connected:
                    line.update(ok=False, error="connection closed")
                else:
                    line.update(ok=False, error=f"bad response: {text}")
            except (ValueError, TypeError, struct.error) as e:
                # pymodbus checks counts and values before sending (e.g. count > 125).
                line.update(ok=False, error=f"client refused: {e}")
        print(json.dumps(line), flush=True)
    client.close()
    return 0


def shown_args(op: str, args: list) -> list:
    """The arguments as numbers, except a diagnostics data field (hex) and a sleep time."""
    if op == "sleep":
        return [float(args[0])]
    if op == "wait-file":
        return [str(args[0])]
    if op == "diagnostics":
        return [number(args[0])] + [str(a) for a in args[1:]]
    return [number(a) for a in args]


def emit(line: dict, code: int) -> int:
    print(json.dumps(line), flush=True)
    return code


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[tuple[str, list, int]]]:
    p = argparse.ArgumentParser(
        description="A one-shot pymodbus Modbus/TCP client for zonegate's tests.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=502)
    p.add_argument("--source", help="bind the connection to this local address")
    p.add_argument("--unit", type=int, default=1)
    p.add_argument(
        "--timeout", type=float, default=3.0, help="seconds, for connecting and for each response"
    )
    p.add_argument(
        "--debug", action="store_true", help="pymodbus debug log (every frame) on stderr"
    )
    p.add_argument(
        "--sequence",
        metavar="JSON|FILE",
        help="the same as the sequence operation; a value starting with [ is the list itself",
    )
    p.add_argument("operation", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.sequence is not None:
        if args.operation:
            p.error("--sequence and an operation: give one of them")
        args.operation = ["sequence", args.sequence]
    if not args.operation:
        p.error("an operation is required")
    op, rest = args.operation[0], args.operation[1:]
    try:
        if op == "sequence":
            if len(rest) != 1:
                raise Usage("sequence FILE|JSON")
            if rest[0].lstrip().startswith("["):
                items = json.loads(rest[0])
            else:
                with open(rest[0], encoding="utf-8") as f:
                    items = json.load(f)
            if not isinstance(items, list):
                raise Usage("the sequence file must hold a JSON list")
            ops = []
            for item in items:
                if isinstance(item, list) and item:
                    name, op_args, unit = str(item[0]), list(item[1:]), args.unit
                elif isinstance(item, dict) and "op" in item:
                    name, op_args = str(item["op"]), list(item.get("args", []))
                    unit = number(item.get("unit", args.unit))
                else:
                    raise Usage(f"bad sequence entry {item!r}")
                check_op(name, op_args)
                ops.append((name, op_args, unit))
        else:
            check_op(op, rest)
            ops = [(op, rest, args.unit)]
        for name, op_args, unit in ops:
            if not 0 <= unit <= 255:
                raise Usage(f"unit {unit} is not 0..255")
            if name not in ("diagnostics", *LOCAL_OPS):
                [number(x) for x in op_args]
            elif name == "sleep":
                float(op_args[0])
            elif name == "wait-file":
                str(op_args[0])
            else:
                number(op_args[0])
                if len(op_args) > 1:
                    bytes.fromhex(str(op_args[1]))
    except (Usage, OSError, ValueError) as e:
        p.error(str(e))
    return args, ops


def main() -> int:
    args, ops = parse(sys.argv[1:])
    # Every outcome is in the JSON lines; pymodbus's own complaints only with --debug.
    if args.debug:
        pymodbus_apply_logging_config(logging.DEBUG)
    else:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    return asyncio.run(run(args, ops))


if __name__ == "__main__":
    sys.exit(main())

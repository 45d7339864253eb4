#!/usr/bin/env python3
"""Sends raw bytes over one TCP connection, for zonegate's malformed-frame tests.

Standard library only (no pymodbus: its client refuses to build bad frames). Connects once, from
--source if given, sends each --hex string as one write (waiting --gap seconds between them),
then reads whatever comes back until --timeout passes without data or the peer closes, and
prints one JSON line:

  {"sent": 2, "sent_bytes": 24, "received_hex": "...", "frames": ["..."], "closed": false,
   "reset": false, "local": "10.30.0.10:40114"}

"frames" splits received_hex at Modbus/TCP (MBAP) boundaries; a tail that is not a whole frame
is left out of it; "sent" < the number of --hex means the peer closed before all went out.
Exit status: 0 when it connected, 1 when it could not (the line has "error": "timeout",
"connection refused", ...), 2 on usage errors. See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time


def reason(e: OSError) -> str:
    return (os.strerror(e.errno) if e.errno else str(e)).lower()


def split_frames(data: bytes) -> list[str]:
    frames = []
    while len(data) >= 6:
        total = 6 + int.from_bytes(data[4:6], "big")
        if len(data) < total:
            break
        frames.append(data[:total].hex())
        data = data[total:]
    return frames


def main() -> int:
    p = argparse.ArgumentParser(
        description="Send raw bytes to a Modbus/TCP peer on one connection."
    )
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=502)
    p.add_argument("--source", help="bind the connection to this local address")
    p.add_argument(
        "--hex",
        action="append",
        required=True,
        help="bytes to send, as hex (spaces allowed); repeatable",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        help="seconds: to connect, and of silence that ends reading",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds to wait between sends (default 0: they may share a TCP segment)",
    )
    args = p.parse_args()
    try:
        chunks = [bytes.fromhex(h) for h in args.hex]
    except ValueError as e:
        p.error(f"--hex: {e}")

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    result: dict = {"sent": 0, "sent_bytes": 0}
    try:
        if args.source:
            sock.bind((args.source, 0))
        sock.settimeout(args.timeout)
        sock.connect((args.host, args.port))
    except OSError as e:
        result["error"] = "timeout" if isinstance(e, TimeoutError) else reason(e)
        print(json.dumps(result), flush=True)
        return 1
    local = sock.getsockname()
    result["local"] = (
        f"[{local[0]}]:{local[1]}" if family == socket.AF_INET6 else f"{local[0]}:{local[1]}"
    )

    received = b""
    closed = reset = False
    try:
        for i, chunk in enumerate(chunks):
            if i and args.gap:
                time.sleep(args.gap)
            sock.sendall(chunk)
            result["sent"] += 1
            result["sent_bytes"] += len(chunk)
    except OSError as e:
        result["error"] = f"send: {reason(e)}"
        reset = isinstance(e, (ConnectionResetError, BrokenPipeError))
        closed = True

    # Read until the peer closes or stays silent for --timeout.
    while not closed:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = reset = True
            break
        except OSError as e:
            result["error"] = f"recv: {reason(e)}"
            closed = True
            break
        if not data:
            closed = True
            break
        received += data
    sock.close()
    result.update(
        received_hex=received.hex(),
        frames=split_frames(received),
        closed=closed,
        reset=reset,
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

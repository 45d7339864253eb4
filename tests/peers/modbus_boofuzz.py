#!/usr/bin/env python3
"""A boofuzz campaign against a Modbus/TCP server, for zonegate's hostile-traffic test.

boofuzz 0.4.2 (scripts/setup pins it). One request definition per kind of traffic the gateway
must judge: FC 03 reads, FC 06 and FC 10 writes, FC 08 diagnostics, FC 2B device identification,
an unknown function code, and a frame whose PDU is random bytes. Every definition fuzzes the MBAP
header too (transaction id, protocol id, the length field, the unit id). Each test case is one
TCP connection from --source: the fuzzed frame is sent and whatever comes back within
--recv-timeout is read. Every definition gets an equal share of --max-cases test cases and of
--seconds (about 970 cases in all when neither cuts it short).

No web UI (boofuzz would listen on port 26000), no console log; boofuzz's sqlite results go to a
temporary directory that is removed. One JSON line on stdout at the end:

  {"cases": 972, "seconds": 41.2, "sent_bytes": ..., "responses": {"exception": {"1": 312},
   "normal": 130, "none": 530}, "errors": 0, "by_request": {"fc03_read": 128, ...}}

"responses" counts per test case what the first reply was: a Modbus exception (by code), a normal
response, or nothing (the connection was closed, or no answer within --recv-timeout). "errors"
counts test cases boofuzz itself logged as errors or failures (e.g. a connection that could not
be made). Exit status 0 when the campaign ran, 1 when not even a connection could be made.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shutil
import socket
import sys
import tempfile
import time

from boofuzz import (
    BIG_ENDIAN,
    BitField,
    Session,
    Target,
    TCPSocketConnection,
    s_block,
    s_byte,
    s_get,
    s_initialize,
    s_random,
    s_size,
    s_word,
)
from boofuzz.ifuzz_logger_backend import IFuzzLoggerBackend


class SourceBoundConnection(TCPSocketConnection):
    """TCPSocketConnection from a given local address (boofuzz has no option for it): the gateway's
    conduit admits SCADA's address only."""

    def __init__(self, host: str, port: int, source: str | None, **kwargs):
        super().__init__(host, port, **kwargs)
        self.source = source

    def _open_socket(self):
        super()._open_socket()
        if self.source:
            self._sock.bind((self.source, 0))


class Tally(IFuzzLoggerBackend):
    """Counts what the campaign sent and got back, instead of printing each test case."""

    def __init__(self):
        self.cases = 0
        self.sent_bytes = 0
        self.by_request: collections.Counter[str] = collections.Counter()
        self.exceptions: collections.Counter[str] = collections.Counter()
        self.normal = 0
        self.none = 0
        self.errors = 0
        self._answered = False
        self._open = False

    def _close_case(self):
        if self._open and not self._answered:
            self.none += 1
        self._open = False
        self._answered = False

    def open_test_case(self, test_case_id, name, index, *args, **kwargs):
        self._close_case()
        self._open = True
        self.cases += 1
        self.by_request[str(name).split(":")[0]] += 1

    def log_send(self, data):
        self.sent_bytes += len(data)

    def log_recv(self, data):
        if self._answered or not data:
            return
        self._answered = True
        # A Modbus exception response has the request's function code with the high bit set.
        if len(data) >= 9 and data[7] & 0x80:
            self.exceptions[str(data[8])] += 1
        else:
            self.normal += 1

    def log_error(self, description):
        self.errors += 1

    def log_fail(self, description=""):
        self.errors += 1

    def open_test_step(self, description):
        pass

    def log_check(self, description):
        pass

    def log_pass(self, description=""):
        pass

    def log_info(self, description):
        pass

    def close_test_case(self):
        pass

    def close_test(self):
        self._close_case()


def mbap(name: str, unit: int, function: int, body) -> None:
    """One request definition: MBAP (tid, protocol id, length over the rest) and the PDU `body`
    writes. boofuzz fuzzes one primitive at a time, so a fuzzed length comes with a sane PDU."""
    s_initialize(name)
    s_word(0x0001, endian=BIG_ENDIAN, name="tid")
    s_word(0x0000, endian=BIG_ENDIAN, name="protocol")
    s_size("adu", length=2, endian=BIG_ENDIAN, fuzzable=True, name="length")
    with s_block("adu"):
        s_byte(unit, name="unit")
        s_byte(function, name="function")
        body()


def thin(request, stride_word: int, stride_byte: int) -> None:
    """Keeps every n-th of boofuzz's boundary values for each integer field (still 0, 1, the
    maximum region, ...): its full lists (140 per 16-bit field) would make one request
    definition thousands of cases, and the campaign is meant to cover all of them in a minute."""
    for prim in request.names.values():
        field = getattr(prim, "bit_field", prim)
        if not isinstance(field, BitField):
            continue
        stride = stride_word if field.width > 8 else stride_byte
        original = field.mutations

        def sampled(default_value, original=original, stride=stride):
            return itertools.islice(original(default_value), 0, None, stride)

        field.mutations = sampled
        field.num_mutations = lambda default_value, sampled=sampled: sum(1 for _ in sampled(default_value))


def define() -> list[str]:
    mbap(
        "fc03_read",
        1,
        0x03,
        lambda: (
            s_word(300, endian=BIG_ENDIAN, name="address"),
            s_word(10, endian=BIG_ENDIAN, name="quantity"),
        ),
    )
    # The heartbeat register (40), which the BESS policy lets SCADA write with any value.
    mbap(
        "fc06_write",
        1,
        0x06,
        lambda: (
            s_word(40, endian=BIG_ENDIAN, name="address"),
            s_word(7, endian=BIG_ENDIAN, name="value"),
        ),
    )

    def fc10():
        s_word(40, endian=BIG_ENDIAN, name="address")
        s_word(1, endian=BIG_ENDIAN, name="quantity")
        s_size("values", length=1, fuzzable=True, name="byte_count")
        with s_block("values"):
            s_word(8, endian=BIG_ENDIAN, name="value")

    mbap("fc10_write", 1, 0x10, fc10)
    mbap(
        "fc08_diagnostics",
        1,
        0x08,
        lambda: (
            s_word(0x0000, endian=BIG_ENDIAN, name="subfunction"),
            s_word(0xA537, endian=BIG_ENDIAN, name="data"),
        ),
    )
    mbap(
        "fc2b_device_id",
        1,
        0x2B,
        lambda: (
            s_byte(0x0E, name="mei_type"),
            s_byte(0x01, name="read_code"),
            s_byte(0x00, name="object_id"),
        ),
    )
    mbap(
        "unknown_function",
        1,
        0x41,
        lambda: s_random(b"\x00\x01", min_length=0, max_length=40, num_mutations=30, name="data"),
    )
    mbap(
        "random_pdu",
        1,
        0x03,
        lambda: s_random(b"\x01\x2c\x00\x0a", min_length=0, max_length=260, num_mutations=60, name="data"),
    )
    names = [
        "fc03_read",
        "fc06_write",
        "fc10_write",
        "fc08_diagnostics",
        "fc2b_device_id",
        "unknown_function",
        "random_pdu",
    ]
    for name in names:
        thin(s_get(name), stride_word=8, stride_byte=6)
    return names


def main() -> int:
    p = argparse.ArgumentParser(description="boofuzz campaign against a Modbus/TCP server")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=502)
    p.add_argument("--source", help="bind every connection to this local address")
    p.add_argument("--max-cases", type=int, default=3000, help="test cases at most")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    p.add_argument(
        "--recv-timeout", type=float, default=0.1, help="seconds to wait for a reply to each case"
    )
    args = p.parse_args()

    # A refused or unreachable target is not a campaign: say so instead of letting boofuzz retry.
    try:
        probe = socket.socket()
        if args.source:
            probe.bind((args.source, 0))
        probe.settimeout(3)
        probe.connect((args.host, args.port))
        probe.close()
    except OSError as e:
        print(json.dumps({"cases": 0, "error": f"connect: {e}"}))
        return 1

    tally = Tally()
    # boofuzz creates its tables only in a database file that does not exist yet.
    db_dir = tempfile.mkdtemp(prefix="boofuzz-")
    names = define()
    start = time.monotonic()
    try:
        # One session per request definition, each with an equal share of the cases and of the
        # time: boofuzz walks its test cases in order, so one shared budget would spend it all
        # on the first definitions.
        for i, name in enumerate(names):
            left = len(names) - i
            budget_cases = max(1, (args.max_cases - tally.cases) // left)
            deadline = time.monotonic() + max(0.0, start + args.seconds - time.monotonic()) / left

            def stop_at_deadline(target, fuzz_data_logger, session, *_, deadline=deadline, **__):
                # boofuzz has no time limit: ending the index range at this case stops the loop.
                if time.monotonic() >= deadline:
                    session._index_end = session.total_mutant_index

            session = Session(
                target=Target(
                    connection=SourceBoundConnection(
                        args.host,
                        args.port,
                        args.source,
                        send_timeout=2.0,
                        recv_timeout=args.recv_timeout,
                    )
                ),
                web_port=None,
                keep_web_open=False,
                fuzz_loggers=[tally],
                db_filename=os.path.join(db_dir, f"{name}.db"),
                index_end=budget_cases,
                receive_data_after_fuzz=True,
                # The gateway closes the connection on a malformed frame: an answer, not a fault.
                ignore_connection_reset=True,
                ignore_connection_aborted=True,
                restart_sleep_time=0,
                post_test_case_callbacks=[stop_at_deadline],
            )
            session.connect(s_get(name))
            # Depth 1: one field fuzzed at a time.
            session.fuzz(max_depth=1)
    finally:
        tally.close_test()
        shutil.rmtree(db_dir, ignore_errors=True)

    out = {
        "cases": tally.cases,
        "seconds": round(time.monotonic() - start, 1),
        "sent_bytes": tally.sent_bytes,
        "responses": {
            "exception": dict(sorted(tally.exceptions.items())),
            "normal": tally.normal,
            "none": tally.none,
        },
        "errors": tally.errors,
        "by_request": dict(tally.by_request),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

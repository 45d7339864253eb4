#!/usr/bin/env python3
"""One Modbus/TCP device (a BESS inverter or a CNC machine) for zonegate's integration tests.

A real pymodbus 3.16.1 server (run it with the repo's .venv/bin/python, see scripts/setup). Besides
answering Modbus it keeps two files the tests read without going through the gateway:

- the journal (--journal): one JSON line per request frame that reached the device, written and
  flushed as the bytes arrive, before pymodbus looks at them:
  {"peer": "10.30.0.10:40112", "unit": 1, "function": 3, "tid": 1, "protocol": 0,
   "raw": "000100000006010300000001"}
  Frames are delimited by the MBAP length field. A frame whose length field is below 2 gets an
  "error"; a length above 254 (no Modbus ADU is that long) makes everything buffered one line
  with an "error", and every later read on that connection one more; so do bytes left over when
  the peer closes. unit/function/tid/protocol are then whatever those bytes hold (null when too
  short).
- the state file (JOURNAL.state): the whole datastore as JSON, rewritten atomically at start,
  after every write request (FC 05, 06, 0F, 10, 16, 17) and on SIGUSR1.

See tests/peers/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import signal
import sys

from pymodbus import pymodbus_apply_logging_config
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

HOLDING = 1000  # holding registers 0..999
INPUT = 1000  # input registers 0..999
COILS = 100  # coils 0..99
DISCRETE = 100  # discrete inputs 0..99
WRITE_FUNCTIONS = {5, 6, 15, 16, 22, 23}
BIT_FUNCTIONS = {1, 2, 5, 15}
MAX_MBAP_LENGTH = 254  # unit id + PDU of at most 253 bytes (a 260-byte ADU)


def i32(value: int) -> list[int]:
    """A signed 32-bit value as two registers, high word first (big-endian)."""
    value &= 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


def profile_bess() -> tuple[dict[int, int], dict[int, int], dict[int, bool], str]:
    """A battery inverter: setpoints the SCADA writes, measurements it reads."""
    holding = {
        40: 0,  # watchdog_heartbeat, incremented by the SCADA
        104: 0,  # grid_disconnect (1 opens the AC breaker; profiles/bess-inverter.yaml)
        # measurements, scaled by 10
        300: 4810,  # ac_voltage_l1 481.0 V
        301: 4805,  # ac_voltage_l2 480.5 V
        302: 4812,  # ac_voltage_l3 481.2 V
        303: 500,  # frequency 50.0 Hz
        304: 8750,  # state_of_charge 87.50 %
        305: 251,  # battery_temperature 25.1 C
        310: 1,  # operating_state 1 = running
    }
    for reg, value in zip((100, 101), i32(0), strict=True):  # active_power_setpoint i32 BE, kW
        holding[reg] = value
    for reg, value in zip((102, 103), i32(0), strict=True):  # reactive_power_setpoint i32 BE, kvar
        holding[reg] = value
    inputs = {0: 4810, 1: 4805, 2: 4812, 3: 500, 4: 8750, 5: 251, 10: 1234, 11: 5678}
    coils = {0: True, 1: False}  # 0 = contactor closed, 1 = fault latched
    return holding, inputs, coils, "ZG-BESS-500"


def profile_cnc() -> tuple[dict[int, int], dict[int, int], dict[int, bool], str]:
    """A CNC machine: overrides and program selection the HMI writes."""
    holding = {
        10: 100,  # feed_override %
        11: 100,  # spindle_override %
        20: 1000,  # program_number
        30: 0,  # cycle_start (1 starts the selected program)
        31: 0,  # cycle_stop
        40: 0,  # watchdog_heartbeat
        300: 12000,  # spindle_speed rpm
        301: 2,  # mode 2 = automatic
    }
    inputs = {0: 12000, 1: 350, 2: 1000, 3: 2}
    coils = {0: False, 1: True}  # 0 = door open, 1 = e-stop chain healthy
    return holding, inputs, coils, "ZG-CNC-5AX"


PROFILES = {"bess": profile_bess, "cnc": profile_cnc}


def build_device(unit: int, profile: str) -> tuple[SimDevice, ModbusDeviceIdentification]:
    holding, inputs, coils, model = PROFILES[profile]()
    regs = [holding.get(i, 0) for i in range(HOLDING)]
    iregs = [inputs.get(i, 0) for i in range(INPUT)]
    bits = [coils.get(i, False) for i in range(COILS)]
    device = SimDevice(
        id=unit,
        # Four separate blocks (coils, discrete inputs, holding, input registers), so that each
        # function code addresses its own table as on a real device; bit tables are then
        # addressed per bit.
        simdata=(
            [SimData(0, values=bits, datatype=DataType.BITS)],
            [SimData(0, values=[i % 2 == 0 for i in range(DISCRETE)], datatype=DataType.BITS)],
            [SimData(0, values=regs, datatype=DataType.REGISTERS)],
            [SimData(0, values=iregs, datatype=DataType.REGISTERS)],
        ),
    )
    identity = ModbusDeviceIdentification(
        info_name={
            "VendorName": "zonegate test peers",
            "ProductCode": model,
            "MajorMinorRevision": "3.16.1",
            "ProductName": f"{profile} device",
            "ModelName": model,
        }
    )
    return device, identity


class Journal:
    """Appends one JSON line per frame and flushes it at once."""

    def __init__(self, path: str):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)

    def frame(self, peer: str, raw: bytes, error: str | None = None) -> None:
        entry = {
            "peer": peer,
            "unit": raw[6] if len(raw) > 6 else None,
            "function": raw[7] if len(raw) > 7 else None,
            "tid": int.from_bytes(raw[0:2], "big") if len(raw) >= 2 else None,
            "protocol": int.from_bytes(raw[2:4], "big") if len(raw) >= 4 else None,
            "raw": raw.hex(),
        }
        if error:
            entry["error"] = error
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()


class Device:
    """What all connections share: the configuration, the server, the journal and the state file."""

    def __init__(self, args: argparse.Namespace):
        self.unit = args.unit
        self.unknown_unit = args.unknown_unit
        self.journal = Journal(args.journal)
        self.state_path = args.journal + ".state"
        self.writes = 0
        self.server: ModbusTcpServer | None = None

    async def dump_state(self) -> None:
        """Writes the datastore to JOURNAL.state; a rename, so readers never see half a file."""
        assert self.server is not None
        ctx = self.server.context
        holding = await ctx.async_getValues(self.unit, 3, 0, HOLDING)
        inputs = await ctx.async_getValues(self.unit, 4, 0, INPUT)
        coils = await ctx.async_getValues(self.unit, 1, 0, COILS)
        discrete = await ctx.async_getValues(self.unit, 2, 0, DISCRETE)
        state = {
            "unit": self.unit,
            "writes": self.writes,
            "holding_registers": list(holding),
            "input_registers": list(inputs),
            "coils": [int(b) for b in coils],
            "discrete_inputs": [int(b) for b in discrete],
        }
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_path)


def format_peer(peername) -> str:
    if not peername:
        return "?"
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DeviceConnection(ServerRequestHandler):
    """pymodbus's per-connection handler, plus the journal, one-at-a-time requests and unit checks.

    pymodbus 3.16.1 decodes at most one frame per TCP read, keeps one decoded request (last_pdu)
    per connection, and clears the receive buffer when it sends a response: of two requests in
    one segment only the first is answered. So frames are fed to pymodbus one at a time, the next
    only after the previous one's response went out. Everything else (what it answers, what it
    ignores, how it frames bad bytes) is pymodbus's own.
    """

    def __init__(self, owner: ModbusTcpServer, device: Device):
        super().__init__(owner, None, None, None)
        self.device = device
        self.peer = "?"
        self.jbuf = b""  # bytes not yet journaled (an incomplete frame)
        self.unframed = False  # an impossible length field was seen: journal reads as they come
        self.pending: collections.deque[bytes] = collections.deque()
        self.busy = False  # a decoded request is waiting for its response
        self.held: list | None = None  # responses kept back until the state file is written

    def connection_made(self, transport) -> None:
        self.peer = format_peer(transport.get_extra_info("peername"))
        super().connection_made(transport)

    def connection_lost(self, exc) -> None:
        if self.jbuf:
            self.device.journal.frame(self.peer, self.jbuf, "incomplete frame at close")
            self.jbuf = b""
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.unframed:
            self.device.journal.frame(self.peer, data, "after a lost frame boundary")
            self.pending.append(data)
            self.pump()
            return
        self.jbuf += data
        while len(self.jbuf) >= 6:
            length = int.from_bytes(self.jbuf[4:6], "big")
            if length > MAX_MBAP_LENGTH:
                # Longer than any Modbus ADU: no later frame boundary can be trusted. Journal the
                # rest as it is and let pymodbus make of it what it does (it waits for the length).
                self.device.journal.frame(
                    self.peer, self.jbuf, f"MBAP length {length} above {MAX_MBAP_LENGTH}"
                )
                self.pending.append(self.jbuf)
                self.jbuf = b""
                self.unframed = True
                break
            if len(self.jbuf) < 6 + length:
                break
            frame, self.jbuf = self.jbuf[: 6 + length], self.jbuf[6 + length :]
            # Length 0 or 1 still delimits a frame, but it holds no function code.
            error = f"MBAP length {length} below 2" if length < 2 else None
            self.device.journal.frame(self.peer, frame, error)
            self.pending.append(frame)
        self.pump()

    def pump(self) -> None:
        """Lets pymodbus decode the next frame, while no request is waiting for its response."""
        while not self.busy and self.transport:
            # pymodbus (transport.ModbusProtocol.datagram_received) decodes at most one frame per
            # read and keeps the rest in recv_buffer; go on with what it kept while that helps.
            if self.recv_buffer:
                before = len(self.recv_buffer)
                super().data_received(b"")
                if self.busy or len(self.recv_buffer) < before:
                    continue
            if not self.pending:
                break
            super().data_received(self.pending.popleft())

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        used = super().callback_data(data, addr)
        if self.last_pdu:
            self.busy = True  # ServerRequestHandler scheduled handle_request for it
        return used

    async def handle_request(self) -> None:
        pdu = self.last_pdu
        try:
            if pdu is None:
                return
            if pdu.dev_id != self.device.unit:
                if self.device.unknown_unit == "exception":
                    self.refuse(pdu, ExcCodes.GATEWAY_NO_RESPONSE)
                return
            # A write's response waits until the state file shows the write, so that a test can
            # read the file as soon as its client has the answer.
            self.held = [] if pdu.function_code in WRITE_FUNCTIONS else None
            if pdu.function_code in BIT_FUNCTIONS and not self.bits_in_range(pdu):
                # pymodbus pads bit tables to multiples of 16; the device has exactly COILS.
                self.refuse(pdu, ExcCodes.ILLEGAL_ADDRESS)
            else:
                await super().handle_request()
            if self.held is not None:
                held, self.held = self.held, None
                self.device.writes += 1
                await self.device.dump_state()
                for response, addr in held:
                    super().server_send(response, addr)
        finally:
            self.held = None
            self.busy = False
            self.pump()

    def server_send(self, pdu, addr) -> None:
        """pymodbus sends every response through here (server/requesthandler.py)."""
        if self.held is not None:
            self.held.append((pdu, addr))
        else:
            super().server_send(pdu, addr)

    def refuse(self, pdu, code: ExcCodes) -> None:
        self.server_send(
            ExceptionResponse(
                pdu.function_code,
                exception_code=code,
                device_id=pdu.dev_id,
                transaction=pdu.transaction_id,
            ),
            self.last_addr,
        )

    @staticmethod
    def bits_in_range(pdu) -> bool:
        size = COILS if pdu.function_code != 2 else DISCRETE
        count = 1 if pdu.function_code == 5 else pdu.count
        return pdu.address + count <= size


class DeviceServer(ModbusTcpServer):
    def __init__(self, device: Device, **kwargs):
        self.device = device
        super().__init__(**kwargs)

    def callback_new_connection(self):
        return DeviceConnection(self, self.device)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="A pymodbus Modbus/TCP device for zonegate's tests.")
    p.add_argument(
        "--host",
        required=True,
        help="address to listen on (no default: pymodbus would take 0.0.0.0)",
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--profile", choices=sorted(PROFILES), required=True)
    p.add_argument(
        "--journal", required=True, help="file to append one JSON line per received frame to"
    )
    p.add_argument("--unit", type=int, default=1, help="the unit id served (default 1)")
    p.add_argument(
        "--unknown-unit",
        choices=["exception", "ignore"],
        default="exception",
        help="a request for another unit id gets exception 0x0B (default) or no answer at all",
    )
    p.add_argument(
        "--debug", action="store_true", help="pymodbus debug log (every frame) on stderr"
    )
    args = p.parse_args(argv)
    if not 0 <= args.unit <= 255:
        p.error("--unit must be 0..255")
    return args


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # pymodbus's own warnings and errors (e.g. "Invalid Modbus protocol id") on stderr, with time.
    pymodbus_apply_logging_config(logging.DEBUG if args.debug else logging.WARNING)
    device = Device(args)
    sim, identity = build_device(args.unit, args.profile)
    server = DeviceServer(device, context=sim, address=(args.host, args.port), identity=identity)
    device.server = server
    await device.dump_state()
    await server.serve_forever(background=True)
    print(f"READY {format_peer((args.host, args.port))}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(device.dump_state()))
    await stop.wait()
    await server.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[1:])))
    except RuntimeError as e:  # serve_forever: "Could not start listen, please check address."
        print(f"modbus_device: {e}", file=sys.stderr)
        sys.exit(1)

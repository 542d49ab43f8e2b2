"""OSDP (SIA Open Supervised Device Protocol) over RS-485 through `libosdp`.

Two roles, one per door (`[[door]] osdp`):
- `"pd"` — the daemon is a Peripheral Device: to the access panel it looks like a card reader,
  and a granted face is reported as a card read (the same 26/34-bit Wiegand frame the Wiegand
  output sends, raw Wiegand format). The panel keeps the final say and drives the strike.
- `"cp"` — the daemon is the Control Panel: it polls a PD (an I/O board or a reader) and a
  grant sets the PD's output `osdp_output` on for the door's open time (temporary-on command,
  timer in 100 ms units) and its LED green.

Secure channel: with `osdp_scbk_file` (16-byte key, hex) both sides require it; without one the
link runs in install mode. libosdp runs its own refresh thread (every 20 ms); our calls only
queue commands and events.
"""

from __future__ import annotations

import os
import termios
import tty
from pathlib import Path
from typing import Any

import osdp

from edge.config import DoorConfig
from edge.errors import OutputError

_BAUD = {9600: termios.B9600, 19200: termios.B19200, 38400: termios.B38400, 57600: termios.B57600, 115200: termios.B115200}
OUTPUT_TEMPORARY_ON = 5  # OSDP osdp_OUT control code: temporary on, then back to the permanent state
OUTPUT_PERMANENT_OFF = 1


class FdChannel(osdp.Channel):
    """A serial line (or one end of a pty) as libosdp's byte channel, non-blocking."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, InterruptedError):
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, InterruptedError):
            return 0

    def flush(self) -> None:
        """Nothing buffered on our side: os.write hands bytes straight to the tty."""


def open_serial(port: str, baud: int) -> int:
    """Opens `port` raw at `baud` (8N1) and returns the file descriptor."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise OutputError(f"{port}: cannot open the OSDP serial port ({exc.strerror})") from exc
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = _BAUD[baud]
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def read_scbk(path: str) -> bytes | None:
    if not path:
        return None
    try:
        key = bytes.fromhex(Path(path).read_text(encoding="ascii").strip())
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: cannot read the OSDP secure-channel key (32 hex characters)") from exc
    if len(key) != 16:
        raise OutputError(f"{path}: the OSDP secure-channel key must be 16 bytes (got {len(key)})")
    return key


def pack_bits(bits: list[int]) -> bytes:
    """Wiegand bits, first bit as the most significant bit of the first byte (OSDP raw format)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        out[i // 8] |= bit << (7 - i % 8)
    return bytes(out)


def unpack_bits(data: bytes, length: int) -> list[int]:
    return [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(length)]


def _flags(scbk: bytes | None) -> list[int]:
    return [osdp.LibFlag.EnforceSecure] if scbk else [osdp.LibFlag.InstallMode]


class OsdpReader:
    """The daemon as a PD: a granted face goes to the panel as a card read."""

    def __init__(self, fd: int, address: int, scbk: bytes | None) -> None:
        caps = osdp.PDCapabilities([(osdp.Capability.CardDataFormat, 1, 1), (osdp.Capability.LEDControl, 1, 1)])
        info = osdp.PDInfo(address, FdChannel(fd), scbk=scbk, flags=_flags(scbk))
        self.pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Warning)
        self.fd = fd
        self.pd.start()

    def card(self, bits: list[int]) -> None:
        event = {"event": osdp.Event.CardRead, "reader_no": 0, "format": osdp.CardFormat.Wiegand,
                 "direction": 0, "length": len(bits), "data": pack_bits(bits)}
        if self.pd.submit_event(event) is False:
            raise OutputError("osdp: the card-read event could not be queued")

    def drain(self) -> list[dict[str, Any]]:
        """Commands the panel sent (LED, buzzer, output...) since the last call. libosdp queues
        every one of them; unread, that queue would grow for as long as the daemon runs."""
        out = []
        while (command := self.pd.get_command(-1)) is not None:
            out.append(command)
        return out

    @property
    def online(self) -> bool:
        return bool(self.pd.is_online())

    def close(self) -> None:
        self.pd.stop()


class OsdpPanel:
    """The daemon as the CP of one PD: a grant switches the PD's output on for the open time."""

    def __init__(self, fd: int, address: int, scbk: bytes | None, output: int) -> None:
        info = osdp.PDInfo(address, FdChannel(fd), scbk=scbk, flags=_flags(scbk))
        self.cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Warning)
        self.address, self.output, self.fd = address, output, fd
        self.cp.start()

    def unlock(self, seconds: float) -> None:
        ticks = max(1, min(65535, round(seconds * 10)))  # the timer counts 100 ms units
        self._submit({"command": osdp.Command.Output, "output_no": self.output,
                      "control_code": OUTPUT_TEMPORARY_ON, "timer_count": ticks})
        self._submit({"command": osdp.Command.LED, "reader": 0, "led_number": 0,
                      "control_code": 2, "on_count": 10, "off_count": 0,
                      "on_color": osdp.CommandLEDColor.Green, "off_color": osdp.CommandLEDColor.Black,
                      "timer_count": ticks, "temporary": True})

    def lock(self) -> None:
        self._submit({"command": osdp.Command.Output, "output_no": self.output,
                      "control_code": OUTPUT_PERMANENT_OFF, "timer_count": 0})

    def drain(self) -> list[dict[str, Any]]:
        """Events the PD reported (card reads at a combined reader, status...) since the last call."""
        out = []
        while (event := self.cp.get_event(self.address, -1)) is not None:
            out.append(event)
        return out

    @property
    def online(self) -> bool:
        return bool(self.cp.is_online(self.address))

    def _submit(self, command: dict[str, Any]) -> None:
        if self.cp.submit_command(self.address, command) is False:
            raise OutputError(f"osdp: PD {self.address} did not take command {command['command']}")

    def close(self) -> None:
        self.cp.stop()


def open_osdp(door: DoorConfig) -> OsdpReader | OsdpPanel:
    fd = open_serial(door.osdp_port, door.osdp_baud)
    scbk = read_scbk(door.osdp_scbk_file)
    if door.osdp == "pd":
        return OsdpReader(fd, door.osdp_address, scbk)
    return OsdpPanel(fd, door.osdp_address, scbk, door.osdp_output)

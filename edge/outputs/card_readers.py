"""Card readers and keypads at a door: what feeds `[[door]] mode` card / PIN credentials.

- A Wiegand reader wired to two GPIO inputs (`wiegand_in_d0`, `wiegand_in_d1` on
  `wiegand_in_chip`): each bit is a ~50 us low pulse on D0 (a 0) or D1 (a 1), ~2 ms apart; a frame
  ends after FRAME_GAP_S without a pulse. libgpiod timestamps each falling edge in the kernel, so
  Python's scheduling does not lose pulses; one thread per reader decodes the frames.
- An OSDP reader polled by the daemon as Control Panel (`osdp = "cp"`, edge/outputs/osdp.py): its
  card reads (raw Wiegand format) and key presses arrive as libosdp events, drained on the
  outputs thread (edge/outputs/doors.py) and handed here.

A frame that is not a card (a bit count other than 26 or 34, a parity error: noise on the wires, a
reader of another format) raises `WiegandError`; the reader logs and counts it and keeps reading.
Card numbers are credentials: they go to the door's `DoorCredentials` and are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import osdp

from edge.access.credentials import DoorCredentials, card_id
from edge.errors import OutputError
from edge.outputs.gpio import CONSUMER
from edge.outputs.osdp import unpack_bits
from edge.outputs.wiegand import decode

log = logging.getLogger(__name__)

FRAME_GAP_S = 0.025  # no pulse for this long ends a frame (bits are <= 2 ms apart, frames >= 100 ms)
_BITS = (26, 34)


class WiegandError(OutputError):
    """A Wiegand frame that is not a card; `kind` is "bit_count" or "parity"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def card_of(bits: list[int]) -> int:
    """The card id (edge.access.credentials.card_id) of a 26- or 34-bit frame; WiegandError otherwise."""
    if len(bits) not in _BITS:
        raise WiegandError("bit_count", f"wiegand: a {len(bits)}-bit frame is neither 26 nor 34 bits")
    try:
        return card_id(*decode(bits))
    except OutputError as exc:
        raise WiegandError("parity", str(exc)) from exc


class WiegandDecoder:
    """Pulse times on D0 / D1 → frames of bits, split where FRAME_GAP_S passes without a pulse."""

    def __init__(self, d0: int, d1: int, gap_s: float = FRAME_GAP_S) -> None:
        self.d0, self.d1, self.gap_ns = d0, d1, int(gap_s * 1e9)
        self.bits: list[int] = []
        self.last_ns = 0

    def pulse(self, t_ns: int, line: int) -> list[list[int]]:
        done = self.flush(t_ns)
        if line in (self.d0, self.d1):
            self.bits.append(1 if line == self.d1 else 0)
            self.last_ns = t_ns
        return done

    def flush(self, now_ns: int) -> list[list[int]]:
        if not self.bits or now_ns - self.last_ns < self.gap_ns:
            return []
        frame, self.bits = self.bits, []
        return [frame]


class EdgeLines(Protocol):
    def wait_edges(self, timeout_s: float) -> list[tuple[int, int]]:
        """(monotonic ns, line) of each pulse that started, waiting up to `timeout_s` for one."""
        ...

    def close(self) -> None: ...


# (chip path, {input line: active_low}) -> EdgeLines
EdgeOpener = Callable[[str, Mapping[int, bool]], EdgeLines]


class GpiodEdges:
    """Input lines with kernel-timestamped edge events (libgpiod v2): a pulse start is the
    line going active, i.e. pulled low with active_low."""

    def __init__(self, chip: str, lines: Mapping[int, bool]) -> None:
        import gpiod
        from gpiod.line import Bias, Direction, Edge

        settings = {line: gpiod.LineSettings(direction=Direction.INPUT, active_low=low, bias=Bias.PULL_UP, edge_detection=Edge.RISING)
                    for line, low in lines.items()}
        try:
            self._request = gpiod.request_lines(chip, consumer=CONSUMER, config=settings)
        except (OSError, ValueError) as exc:
            raise OutputError(f"{chip}: cannot request Wiegand input lines {sorted(lines)} ({exc})") from exc

    def wait_edges(self, timeout_s: float) -> list[tuple[int, int]]:
        if not self._request.wait_edge_events(timeout_s):
            return []
        return [(e.timestamp_ns, e.line_offset) for e in self._request.read_edge_events()]

    def close(self) -> None:
        self._request.release()


def open_gpiod_edges(chip: str, lines: Mapping[int, bool]) -> EdgeLines:
    return GpiodEdges(chip, lines)


class WiegandReader:
    """One reader's thread: pulses → frames → card ids for the door's credentials."""

    def __init__(self, name: str, lines: EdgeLines, d0: int, d1: int, credentials: DoorCredentials) -> None:
        self.name = name
        self.lines = lines
        self.decoder = WiegandDecoder(d0, d1)
        self.credentials = credentials
        self.cards = 0
        self.errors: Counter[str] = Counter()  # by WiegandError.kind, and "read" for line failures
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"wiegand-{name}", daemon=True)

    def start(self) -> WiegandReader:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                pulses = self.lines.wait_edges(self.decoder.gap_ns / 1e9)
            except Exception:  # noqa: BLE001 - a failing line must not end the reader; retried
                self.errors["read"] += 1
                log.exception("door %s: reading the Wiegand lines failed", self.name)
                self.stop_event.wait(1.0)
                continue
            frames = [f for t_ns, line in pulses for f in self.decoder.pulse(t_ns, line)]
            for bits in frames + self.decoder.flush(time.monotonic_ns()):
                self.frame(bits)

    def frame(self, bits: list[int]) -> None:
        try:
            card = card_of(bits)
        except WiegandError as exc:
            self.errors[exc.kind] += 1
            log.warning("door %s: Wiegand frame refused (%s; %d refused so far)", self.name, exc, sum(self.errors.values()))
            return
        self.cards += 1
        self.credentials.card(card, time.monotonic())

    def close(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(2.0)
        self.lines.close()


def osdp_credential(message: dict[str, Any], credentials: DoorCredentials, errors: Counter[str]) -> bool:
    """Hands an OSDP PD's card read or key presses to the door's credentials; False for any
    other event (status, ...), which the caller logs. Never logs a card number or a key."""
    event = message.get("event")
    if event == osdp.Event.KeyPress:
        credentials.keys(bytes(message.get("data", b"")), time.monotonic())
        return True
    if event != osdp.Event.CardRead:
        return False
    try:
        if message.get("format") != osdp.CardFormat.Wiegand:
            raise WiegandError("format", "osdp: a card read in a format other than raw Wiegand")
        card = card_of(unpack_bits(bytes(message["data"]), int(message["length"])))
    except (WiegandError, KeyError, IndexError, TypeError, ValueError) as exc:
        errors[getattr(exc, "kind", "malformed")] += 1
        log.warning("OSDP card read refused (%s)", exc)
        return True
    credentials.card(card, time.monotonic())
    return True

"""An in-memory GPIO chip with the `edge.outputs.gpio.Lines` interface, for tests and bench/door.py.

Used because this build machine (and CI's container) has no GPIO character device and no
gpio-sim in its kernel (no configfs): with gpio-sim, `edge.outputs.gpio.open_gpiod` on the
simulated chip would be the better test. Every `set` is recorded with its monotonic time, so
tests can decode Wiegand pulses and the bench can time the relay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping


class FakeLines:
    def __init__(self, chip: str, outputs: Mapping[int, bool], inputs: Mapping[int, bool]) -> None:
        self.chip = chip
        self.outputs, self.inputs = dict(outputs), dict(inputs)
        self.values = {line: False for line in [*outputs, *inputs]}
        self.log: list[tuple[float, int, bool]] = []  # (monotonic, line, active) per set()
        self.closed = False
        self.changed = threading.Condition()
        self.edges: list[tuple[int, int]] = []  # (monotonic ns, line) of inputs going active, until read

    def set(self, line: int, active: bool) -> None:
        assert line in self.outputs and not self.closed, f"line {line} is not a requested output"
        with self.changed:
            self.values[line] = active
            self.log.append((time.monotonic(), line, active))
            self.changed.notify_all()

    def get(self, line: int) -> bool:
        assert line in self.inputs, f"line {line} is not a requested input"
        return self.values[line]

    def drive_input(self, line: int, active: bool) -> None:
        """What the door contact (or a card reader's data line) does: the test drives the input."""
        with self.changed:
            if active and not self.values[line]:
                self.edges.append((time.monotonic_ns(), line))
            self.values[line] = active
            self.changed.notify_all()

    def wait_edges(self, timeout_s: float) -> list[tuple[int, int]]:
        """`edge.outputs.card_readers.EdgeLines`: the inputs' activations, timestamped when driven
        (as the kernel timestamps GPIO edge events), waiting up to `timeout_s` for one."""
        with self.changed:
            if not self.edges:
                self.changed.wait(timeout_s)
            out, self.edges = self.edges, []
        return out

    def close(self) -> None:
        self.closed = True

    def wait_for(self, line: int, active: bool, timeout: float) -> float | None:
        """Monotonic time the line was first set to `active`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                hits = [t for t, n, v in self.log if n == line and v == active]
                if hits:
                    return hits[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)


class FakeChip:
    """The `LineOpener`: remembers the lines each door requested."""

    def __init__(self) -> None:
        self.opened: list[FakeLines] = []

    def __call__(self, chip: str, outputs: Mapping[int, bool], inputs: Mapping[int, bool]) -> FakeLines:
        lines = FakeLines(chip, outputs, inputs)
        self.opened.append(lines)
        return lines

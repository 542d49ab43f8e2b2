"""GPIO lines through libgpiod v2 (python `gpiod`), behind a three-method interface.

Relays, door contacts and Wiegand data lines all go through `Lines`: `set(line, active)`,
`get(line)`, `close()`. "Active" is the logical level — a relay energised, a door open, a
Wiegand line pulled low — and `active_low` per line maps it to the electrical one, so wiring
polarity is configuration, not code. Tests pass an in-memory chip with the same interface
(this build machine has no GPIO character device and no gpio-sim in its kernel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from edge.errors import OutputError

CONSUMER = "facegate"


class Lines(Protocol):
    def set(self, line: int, active: bool) -> None: ...

    def get(self, line: int) -> bool: ...

    def close(self) -> None: ...


# (chip path, {output line: active_low}, {input line: active_low}) -> Lines
LineOpener = Callable[[str, Mapping[int, bool], Mapping[int, bool]], Lines]


class GpiodLines:
    """Lines requested from one chip in a single request (outputs start inactive)."""

    def __init__(self, chip: str, outputs: Mapping[int, bool], inputs: Mapping[int, bool]) -> None:
        import gpiod
        from gpiod.line import Bias, Direction, Value

        self._active, self._inactive = Value.ACTIVE, Value.INACTIVE
        config: dict[int | tuple[int, ...], gpiod.LineSettings] = {}
        for line, low in outputs.items():
            config[line] = gpiod.LineSettings(direction=Direction.OUTPUT, active_low=low, output_value=Value.INACTIVE)
        for line, low in inputs.items():
            # Door contacts are dry contacts to ground: pull up, and "open door" is the active level.
            config[line] = gpiod.LineSettings(direction=Direction.INPUT, active_low=low, bias=Bias.PULL_UP)
        try:
            self._request = gpiod.request_lines(chip, consumer=CONSUMER, config=config)
        except (OSError, ValueError) as exc:
            raise OutputError(f"{chip}: cannot request GPIO lines {sorted(config)} ({exc})") from exc

    def set(self, line: int, active: bool) -> None:
        self._request.set_value(line, self._active if active else self._inactive)

    def get(self, line: int) -> bool:
        return self._request.get_value(line) == self._active

    def close(self) -> None:
        self._request.release()


def open_gpiod(chip: str, outputs: Mapping[int, bool], inputs: Mapping[int, bool]) -> Lines:
    return GpiodLines(chip, outputs, inputs)

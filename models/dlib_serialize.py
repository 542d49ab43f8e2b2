"""Reader for dlib's portable binary serialization format (dlib/serialize.h).

Only the primitives needed to read a dlib DNN file are implemented: integers,
floats, bools, strings, tensors and alias_tensors.  The encodings are
re-implemented from the format description in dlib's source; no dlib code is
used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np


class DlibFormatError(ValueError):
    """The byte stream does not match what dlib would have written."""


@dataclass(frozen=True)
class AliasTensor:
    """Shape-only view descriptor; dlib stores layer weights as views into one
    flat ``params`` tensor, so only the shape (not the data) is serialized."""

    shape: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class DlibReader:
    """Sequential reader over an in-memory dlib serialization stream."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def pos(self) -> int:
        return self._pos

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def _take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise DlibFormatError(f"unexpected end of stream at offset {self._pos}")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def read_int(self) -> int:
        # Control byte: low nibble = number of little-endian magnitude bytes that
        # follow (1..8, never 0 -- even zero is written as one 0x00 byte), bit 7 =
        # sign.  Bits 4..6 are always zero, which is also how dlib tells this
        # format apart from its legacy ASCII floats.
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or not 1 <= size <= 8:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at {self._pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def expect_int(self, expected: int, what: str) -> None:
        value = self.read_int()
        if value != expected:
            raise DlibFormatError(f"{what}: expected version {expected}, found {value}")

    def read_float(self) -> float:
        # float_details: value = mantissa * 2**exponent, written as two dlib
        # integers.  NB: the code writes the mantissa FIRST, although the prose
        # in serialize.h says "first the exponent and then the mantissa".
        mantissa = self.read_int()
        exponent = self.read_int()
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in specials:
            return specials[exponent]
        return float(np.ldexp(float(mantissa), exponent))

    def read_bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {ch!r} at {self._pos - 1}")
        return ch == b"1"

    def read_str(self) -> str:
        length = self.read_int()
        return self._take(length).decode("latin-1")

    def expect_str(self, *allowed: str) -> str:
        value = self.read_str()
        if value not in allowed:
            raise DlibFormatError(f"expected one of {allowed}, found {value!r}")
        return value

    def read_tensor(self) -> np.ndarray:
        # resizable_tensor: int version (2), four int64 dims (n, k, nr, nc), then
        # raw little-endian IEEE float32 -- NOT float_details, for compactness.
        self.expect_int(2, "tensor")
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias_tensor(self) -> AliasTensor:
        self.expect_int(1, "alias_tensor")
        n, k, nr, nc = (self.read_int() for _ in range(4))
        return AliasTensor((n, k, nr, nc))


def float32(value: float) -> float:
    """Round a Python float to float32, as dlib stores its scalar members."""
    return struct.unpack("<f", struct.pack("<f", value))[0]

"""Bit-level helpers shared by the H.264 and H.265 parameter-set parsers (sans-IO).

NAL unit payloads on the wire are "escaped": the encoder inserts an emulation prevention
byte 0x03 after every ``00 00`` that would otherwise be followed by a byte <= 0x03, so no
start code can appear inside a NAL unit (H.264 7.4.1 / H.265 7.4.2). The syntax parsers
work on the unescaped RBSP.
"""

from __future__ import annotations


def remove_emulation_prevention(data: bytes) -> bytes:
    """Return the RBSP of an escaped NAL unit (every ``00 00 03`` becomes ``00 00``)."""
    if b"\x00\x00\x03" not in data:
        return bytes(data)
    out = bytearray()
    zeros = 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            # The 0x03 is dropped; the byte after it starts a fresh zero count.
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def add_emulation_prevention(rbsp: bytes) -> bytes:
    """Escape an RBSP so that it can be carried as a NAL unit payload."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """Reads an RBSP most significant bit first, with the Exp-Golomb codes of H.264/H.265.

    Every read past the end raises ``ValueError("bitstream ended early ...")`` so that a
    truncated parameter set is reported, never silently read as zeros.
    """

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._end = len(self._data) * 8

    @property
    def bits_left(self) -> int:
        return self._end - self._pos

    @property
    def position(self) -> int:
        """Bits consumed so far."""
        return self._pos

    def _need(self, n: int, what: str) -> None:
        if n < 0:
            raise ValueError(f"cannot read a negative number of bits ({n})")
        if n > self._end - self._pos:
            raise ValueError(
                f"bitstream ended early: {what} needs {n} bits, {self._end - self._pos} left"
            )

    def u(self, n: int, what: str = "u(n)") -> int:
        """Read ``n`` bits as an unsigned integer (``u(n)`` in the specs)."""
        self._need(n, what)
        value = 0
        pos = self._pos
        data = self._data
        for _ in range(n):
            value = (value << 1) | ((data[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
        self._pos = pos
        return value

    def flag(self, what: str = "flag") -> bool:
        return self.u(1, what) == 1

    def skip(self, n: int, what: str = "skip") -> None:
        self._need(n, what)
        self._pos += n

    def ue(self, what: str = "ue(v)") -> int:
        """Read an unsigned Exp-Golomb code (``ue(v)``); at most 32 leading zeros."""
        zeros = 0
        while self.u(1, what) == 0:
            zeros += 1
            if zeros > 32:
                raise ValueError(f"invalid Exp-Golomb code: {what} has more than 32 leading zeros")
        return (1 << zeros) - 1 + self.u(zeros, what)

    def se(self, what: str = "se(v)") -> int:
        """Read a signed Exp-Golomb code (``se(v)``): 1, -1, 2, -2, ..."""
        k = self.ue(what)
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def more_rbsp_data(self) -> bool:
        """True while something other than the rbsp_stop_one_bit and its padding is left."""
        if self.bits_left <= 0:
            return False
        # Find the last 1 bit of the buffer: the stop bit.
        data = self._data
        last = len(data) - 1
        while last >= 0 and data[last] == 0:
            last -= 1
        if last < 0:
            return False
        byte = data[last]
        trailing = (byte & -byte).bit_length() - 1
        stop_pos = last * 8 + (7 - trailing)
        return self._pos < stop_pos

"""The PostgreSQL log sequence number as a value type ("16/B374D848" <-> int)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Lsn:
    """A WAL position. Ordered, hashable, and printed the way PostgreSQL prints it."""

    value: int

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse "X/Y" (both hexadecimal), as PostgreSQL and wal2json write LSNs."""
        high, sep, low = text.strip().partition("/")
        if not sep or not high or not low:
            raise ValueError(f"not an LSN: {text!r} (expected the form 16/B374D848)")
        try:
            value = (int(high, 16) << 32) | int(low, 16)
        except ValueError:
            raise ValueError(f"not an LSN: {text!r} (expected hexadecimal X/Y)") from None
        if value < 0 or value >= 1 << 64:
            raise ValueError(f"LSN out of range: {text!r}")
        return cls(value)

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __int__(self) -> int:
        return self.value


ZERO = Lsn(0)

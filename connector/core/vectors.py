"""Vectors in an index's data type (pure).

Embedders produce FLOAT32 (little-endian, as RediSearch reads them); an index may store
FLOAT16, BFLOAT16, INT8 or UINT8 instead (`[tables.vector] type`). `encode` converts once,
where a vector is written to the index or sent with a query; the vector cache keeps FLOAT32,
so indexes of different types share it.
"""

from __future__ import annotations

import struct
import sys
from array import array

from connector.config import VectorType

_WIDTH = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}
_FLOAT16_MAX = 65504.0


def width(kind: VectorType) -> int:
    """Bytes per dimension."""
    return _WIDTH[kind]


def encode(vector: bytes, kind: VectorType) -> bytes:
    """A FLOAT32 vector in `kind`. Embedding vectors are (near) unit length: INT8 maps
    [-1, 1] to [-127, 127] and UINT8 maps it to [0, 255]; values outside are clamped."""
    if kind == "float32":
        return vector
    if kind == "bfloat16":
        return _bfloat16(vector)
    values = array("f")
    values.frombytes(vector)
    if sys.byteorder == "big":
        values.byteswap()
    if kind == "float16":
        clamped = [min(_FLOAT16_MAX, max(-_FLOAT16_MAX, v)) for v in values]
        return struct.pack(f"<{len(clamped)}e", *clamped)
    if kind == "int8":
        return array("b", [max(-127, min(127, round(v * 127))) for v in values]).tobytes()
    return bytes(max(0, min(255, round((v + 1.0) * 127.5))) for v in values)


def _bfloat16(vector: bytes) -> bytes:
    """The upper half of each FLOAT32, rounded to nearest even."""
    words = array("I")
    words.frombytes(vector)
    if sys.byteorder == "big":
        words.byteswap()
    halves = array("H", [((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF for w in words])
    if sys.byteorder == "big":
        halves.byteswap()
    return halves.tobytes()


def decode(vector: bytes, kind: VectorType) -> list[float]:
    """The values of a vector stored in `kind` (the inverse of `encode`, within its precision)."""
    if kind == "float32":
        values = array("f")
        values.frombytes(vector)
        if sys.byteorder == "big":
            values.byteswap()
        return list(values)
    if kind == "float16":
        return list(struct.unpack(f"<{len(vector) // 2}e", vector))
    if kind == "bfloat16":
        halves = struct.unpack(f"<{len(vector) // 2}H", vector)
        return list(
            struct.unpack(
                f"<{len(halves)}f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))
            )
        )
    if kind == "int8":
        return [v / 127 for v in array("b", vector)]
    return [v / 127.5 - 1.0 for v in vector]


def convert(vector: bytes, source: VectorType, target: VectorType) -> bytes:
    """A vector stored in `source` as `target` (a rebuild that changes only the vector type
    takes the old index's vectors: no embedding)."""
    if source == target:
        return vector
    values = decode(vector, source)
    return encode(struct.pack(f"<{len(values)}f", *values), target)

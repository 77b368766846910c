"""Vectors in an index's data type (connector.core.vectors): pure, no servers."""

from __future__ import annotations

import math
from array import array

import pytest

from connector.config import VectorType
from connector.core.vectors import decode, encode, width
from connector.embed import HashingEmbedder

KINDS: list[VectorType] = ["float32", "float16", "bfloat16", "int8", "uint8"]


def unit_vector() -> tuple[bytes, list[float]]:
    vector = HashingEmbedder(64).embed(["a few words to embed, for a unit vector"])[0]
    values = array("f")
    values.frombytes(vector)
    return vector, list(values)


@pytest.mark.parametrize(
    ("kind", "tolerance"),
    [("float32", 0.0), ("float16", 1e-3), ("bfloat16", 4e-3), ("int8", 4e-3), ("uint8", 4e-3)],
)
def test_each_type_keeps_a_unit_vector_within_its_precision(
    kind: VectorType, tolerance: float
) -> None:
    vector, values = unit_vector()
    stored = encode(vector, kind)
    assert len(stored) == len(values) * width(kind)
    back = decode(stored, kind)
    assert max(abs(a - b) for a, b in zip(back, values, strict=True)) <= tolerance
    cosine = sum(a * b for a, b in zip(back, values, strict=True)) / math.sqrt(
        sum(b * b for b in back)
    )
    assert cosine > 0.999


def test_bfloat16_rounds_to_nearest_and_integers_clamp() -> None:
    one_and_a_bit = array("f", [1.0 + 2**-8 + 2**-10]).tobytes()  # above the halfway point
    assert decode(encode(one_and_a_bit, "bfloat16"), "bfloat16") == [1.0 + 2**-7]
    out_of_range = array("f", [3.0, -3.0]).tobytes()
    assert decode(encode(out_of_range, "int8"), "int8") == [1.0, -1.0]
    assert list(encode(out_of_range, "uint8")) == [255, 0]
    assert decode(encode(array("f", [1e6]).tobytes(), "float16"), "float16") == [65504.0]

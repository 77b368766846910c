"""sink.checkpoint against Redis: the visible LSN's reads and writes, and the flip."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from connector.core.lsn import Lsn
from connector.sink.checkpoint import (
    Flip,
    checkpoint_fields,
    mark_replaced,
    parse_visible,
    queue_visible,
    raise_visible,
    read_checkpoint,
    read_progress,
    read_visible,
)

SLOT = "ckpt_slot"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(redis_url)
    yield found
    found.close()


def test_visible_is_zero_before_the_first_flip(client: redis.Redis) -> None:
    assert read_visible(client, SLOT) == Lsn(0)
    assert read_progress(client, SLOT) == (Lsn(0), "")


def test_raise_visible_never_lowers_it(client: redis.Redis) -> None:
    raise_visible(client, SLOT, Lsn(0x500))
    raise_visible(client, SLOT, Lsn(0x300))
    assert read_visible(client, SLOT) == Lsn(0x500)
    pipe = client.pipeline(transaction=False)
    queue_visible(pipe, SLOT)
    (raw,) = pipe.execute()
    assert parse_visible(raw) == Lsn(0x500)


def test_the_flip_writes_the_checkpoint_and_the_visible_lsn(client: redis.Redis) -> None:
    flip = Flip(client, SLOT)
    assert flip(checkpoint_fields(Lsn(0x900), "sys", 12.5), Lsn(0x800), expect_existing=False)
    found = read_checkpoint(client, SLOT)
    assert found is not None
    assert (found.lsn, found.visible, found.system_id, found.commit_time) == (
        Lsn(0x900), Lsn(0x800), "sys", 12.5,
    )  # fmt: skip
    mark_replaced(client, SLOT, "a restore")
    assert read_progress(client, SLOT) == (Lsn(0x800), "a restore")


def test_the_flip_does_not_recreate_a_lost_checkpoint(client: redis.Redis) -> None:
    flip = Flip(client, SLOT)
    assert not flip(checkpoint_fields(Lsn(0x900), "sys"), Lsn(0x900), expect_existing=True)
    assert read_checkpoint(client, SLOT) is None
    assert client.exists(f"connector:{SLOT}:checkpoint") == 0

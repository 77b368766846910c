"""The checkpoint: where the stream resumes, and what readers see.

One hash per slot (`connector:<slot>:checkpoint`): `lsn`, the position through which Redis
holds every change of the slot's tables (the stream resumes after it); `visible`, the visible
LSN (readers see row versions up to it; it never moves back, so a replay that moves `lsn` back
does not take the index back in time); the source cluster's system id (a checkpoint of another
cluster is never resumed) and the newest commit time it covers.

It also records which history of the source it follows (core.history): the timeline and the
consistent point of the slot (`slot_lsn`). While the daemon rebuilds the indexes for another
history, `replaced` says why: readers keep the old indexes at the old visible LSN, and a search
waiting for an LSN waits for the switch (the new history's LSNs are not comparable with it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from redis.client import Pipeline

from connector.core.keys import checkpoint_key
from connector.core.lsn import Lsn
from connector.sink.redis_client import Fields, text

# Sets the checkpoint only where it still exists (or may be created): a FLUSHALL or an eviction
# between staging and the flip must not leave a fresh checkpoint over an index that lost data.
_FLIP = """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    lsn: Lsn
    system_id: str
    updated_at: float
    commit_time: float | None = None
    visible: Lsn | None = None
    timeline: int | None = None
    slot_lsn: Lsn | None = None  # where the slot it follows was created
    replaced: str = ""  # why the indexes are being rebuilt for another history ("": they are not)

    @property
    def position(self) -> Lsn:
        """The furthest the index has gone in its history (a replay moves `lsn` back)."""
        return max(self.lsn, self.visible or self.lsn)


def read_checkpoint(client: redis.Redis, slot: str) -> Checkpoint | None:
    raw = client.hgetall(checkpoint_key(slot))
    if not raw:
        return None
    data = {text(k): text(v) for k, v in raw.items()}
    commit_time = float(data["commit_time"]) if data.get("commit_time") else None
    if "lsn" not in data:
        return None  # only a visible LSN (set by a resync before any start): nothing to resume
    visible = Lsn.parse(data["visible"]) if data.get("visible") else None
    return Checkpoint(
        Lsn.parse(data["lsn"]),
        data.get("system_id", ""),
        float(data.get("updated_at", 0)),
        commit_time,
        visible,
        int(data["timeline"]) if data.get("timeline") else None,
        Lsn.parse(data["slot_lsn"]) if data.get("slot_lsn") else None,
        data.get("replaced", ""),
    )


def checkpoint_fields(lsn: Lsn, system_id: str, commit_time: float | None = None) -> Fields:
    """The hash fields of a checkpoint at `lsn` (the flip writes them with the visible LSN,
    after its batch was staged: sink.writer)."""
    fields: Fields = {"lsn": str(lsn), "system_id": system_id, "updated_at": f"{time.time():.6f}"}
    if commit_time is not None:
        fields["commit_time"] = f"{commit_time:.6f}"
    return fields


def read_visible(client: redis.Redis, slot: str) -> Lsn:
    """The visible LSN of `slot` (0/0 before the first flip)."""
    return parse_visible(client.hget(checkpoint_key(slot), "visible"))


def queue_visible(pipe: Pipeline, slot: str) -> None:
    """Queue the read of the visible LSN on `pipe` (its reply: `parse_visible`)."""
    pipe.hget(checkpoint_key(slot), "visible")


def parse_visible(raw: bytes | str | None) -> Lsn:
    """The visible LSN from the reply of `queue_visible` (0/0 when unset)."""
    return Lsn.parse(text(raw)) if raw else Lsn(0)


def read_progress(client: redis.Redis, slot: str) -> tuple[Lsn, str]:
    """The visible LSN and why the indexes are being rebuilt for another history ("": they are
    not), read together (a search waiting for an LSN)."""
    raw, replaced = client.hmget(checkpoint_key(slot), ["visible", "replaced"])
    return parse_visible(raw), text(replaced)


def raise_visible(client: redis.Redis, slot: str, lsn: Lsn) -> None:
    """Raise the visible LSN alone (never lowers it)."""
    if lsn > read_visible(client, slot):
        client.hset(checkpoint_key(slot), "visible", str(lsn))


class Flip:
    """The flip: one write of the checkpoint (where the stream resumes, what readers see), by
    a script that refuses to recreate a checkpoint Redis lost."""

    def __init__(self, client: redis.Redis, slot: str) -> None:
        self._key = checkpoint_key(slot)
        self._script = client.register_script(_FLIP)

    def __call__(self, fields: Fields, visible: Lsn, expect_existing: bool) -> bool:
        """Write `fields` (checkpoint_fields) and `visible`; False (nothing written) when
        `expect_existing` and the checkpoint is gone."""
        args = ["1" if expect_existing else "0"]
        for name, value in {**fields, "visible": str(visible)}.items():
            args += [str(name), str(value)]
        return bool(self._script(keys=[self._key], args=args))


def record_source(
    client: redis.Redis, slot: str, timeline: int, slot_lsn: Lsn | None = None
) -> None:
    """Record the timeline the checkpoint follows (and the consistent point of a slot just
    created): written before the first flip, and again when a failover moved the source to a
    timeline that descends from the recorded one."""
    fields: Fields = {"timeline": str(timeline)}
    if slot_lsn is not None:
        fields["slot_lsn"] = str(slot_lsn)
    client.hset(checkpoint_key(slot), mapping=fields)


def mark_replaced(client: redis.Redis, slot: str, why: str) -> None:
    """The indexes are being rebuilt for another history (kept until the switch: a restart
    in between rebuilds again, and searches waiting for an LSN wait for the new indexes)."""
    client.hset(checkpoint_key(slot), "replaced", why)


def new_history_commands(slot: str, lsn: Lsn, system_id: str, timeline: int) -> list[list[str]]:
    """The commands that replace the checkpoint with the first one of another history: a copy
    as of `lsn`, the consistent point of the slot created for it. They run in the step that
    switches the indexes (sink.layout.switch_together): the visible LSN starts again there."""
    key = checkpoint_key(slot)
    fields = checkpoint_fields(lsn, system_id)
    fields.update({"visible": str(lsn), "timeline": str(timeline), "slot_lsn": str(lsn)})
    return [["DEL", key], ["HSET", key, *[str(part) for pair in fields.items() for part in pair]]]


def move_checkpoint(client: redis.Redis, slot: str, lsn: Lsn) -> None:
    """Set the checkpoint's LSN (a replay: the next start re-applies what follows)."""
    client.hset(checkpoint_key(slot), "lsn", str(lsn))


def forget_checkpoint(client: redis.Redis, slot: str) -> None:
    client.delete(checkpoint_key(slot))

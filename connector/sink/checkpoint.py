"""The checkpoint: where the stream resumes, and what readers see.

One hash per slot (`connector:<slot>:checkpoint`): `lsn`, the position through which Redis
holds every change of the slot's tables (the stream resumes after it); `visible`, the visible
LSN (readers see row versions up to it; it never moves back, so a replay that moves `lsn` back
does not take the index back in time); the source cluster's system id (a checkpoint of another
cluster is never resumed) and the newest commit time it covers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from connector.core.keys import checkpoint_key
from connector.core.lsn import Lsn
from connector.sink.redis_client import Fields, text


@dataclass(frozen=True, slots=True)
class Checkpoint:
    lsn: Lsn
    system_id: str
    updated_at: float
    commit_time: float | None = None
    visible: Lsn | None = None


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
    )


def checkpoint_fields(lsn: Lsn, system_id: str, commit_time: float | None = None) -> Fields:
    """The hash fields of a checkpoint at `lsn` (written in the same MULTI as its batch)."""
    fields: Fields = {"lsn": str(lsn), "system_id": system_id, "updated_at": f"{time.time():.6f}"}
    if commit_time is not None:
        fields["commit_time"] = f"{commit_time:.6f}"
    return fields


def move_checkpoint(client: redis.Redis, slot: str, lsn: Lsn) -> None:
    """Set the checkpoint's LSN (a replay: the next start re-applies what follows)."""
    client.hset(checkpoint_key(slot), "lsn", str(lsn))


def forget_checkpoint(client: redis.Redis, slot: str) -> None:
    client.delete(checkpoint_key(slot))

"""The record of the tables whose changes are being dead-lettered: written by the daemon
(flow.health) when such an episode starts and ends, read by `connector status`. One hash per
slot (`connector:<slot>:failing`), a JSON value per table."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from connector.core.keys import failing_key
from connector.sink.redis_client import text


@dataclass(frozen=True, slots=True)
class Failing:
    """One table's episode: since when, why, and how to get its rows back."""

    table: str
    index: str
    physical: str  # the physical index it failed on: a rebuild (a switch) starts over
    since: float  # epoch seconds
    cause: str  # the newest dead letter's error
    fix: str
    dead_letters: int  # in this episode
    stream: str  # the dead-letter stream that holds them

    def describe(self) -> str:
        return (
            f"table {self.table} is failing: {self.dead_letters} of its changes were "
            f"dead-lettered (to {self.stream}) since {_when(self.since)}. Cause: {self.cause}. "
            f"Fix: {self.fix}"
        )


def record_failing(client: redis.Redis, slot: str, failing: Failing) -> None:
    client.hset(failing_key(slot), failing.table, json.dumps(asdict(failing)))


def clear_failing(client: redis.Redis, slot: str, table: str) -> None:
    client.hdel(failing_key(slot), table)


def read_failing(client: redis.Redis, slot: str) -> dict[str, Failing]:
    """The recorded episodes by table (a value this version cannot read is left out)."""
    found = {}
    for table, raw in client.hgetall(failing_key(slot)).items():
        try:
            found[text(table)] = Failing(**json.loads(text(raw)))
        except (TypeError, ValueError):
            continue
    return found


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))

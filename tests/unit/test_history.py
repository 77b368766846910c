"""Which history of the source an index describes (connector.core.history): pure, no servers.
The restores themselves, against real servers: tests/shapes/test_history.py."""

from __future__ import annotations

import pytest

from connector.core.history import Recorded, Source, other_history, parse_timeline_history
from connector.core.lsn import Lsn


def _recorded(
    position: int = 0x5000, timeline: int | None = 1, slot_lsn: int | None = 0x1000
) -> Recorded:
    return Recorded("42", timeline, Lsn(position), Lsn(slot_lsn) if slot_lsn is not None else None)


def _source(system_id: str = "42", timeline: int = 1, wal: int = 0x9000) -> Source:
    return Source(system_id, timeline, Lsn(wal))


HISTORY = "1\t0/4000\tno recovery target specified\n\n2\t0/8000\tat restore point\n"


def test_a_timeline_history_file_is_read() -> None:
    assert parse_timeline_history(HISTORY) == {1: Lsn(0x4000), 2: Lsn(0x8000)}


CASES = {
    "the same history": (_recorded(), _source(), Lsn(0x2000), None, None),
    "an older checkpoint": (_recorded(timeline=None, slot_lsn=None), _source(), Lsn(0), None, None),
    "a failover that kept every commit": (
        _recorded(), _source(timeline=3), None, {1: Lsn(0x6000), 2: Lsn(0x7000)}, None
    ),
    "another cluster": (_recorded(), _source(system_id="7"), None, None, "system id changed"),
    "a restore to before the index": (
        _recorded(), _source(timeline=2), None, {1: Lsn(0x4000)}, "branched off timeline 1 at"
    ),
    "a timeline of another branch": (
        _recorded(timeline=2), _source(timeline=3), None, {1: Lsn(0x4000)}, "does not descend"
    ),
    "an older timeline": (_recorded(timeline=2), _source(), None, None, "does not descend"),
    "no history file": (_recorded(), _source(timeline=2), None, None, "does not descend"),
    "a slot made again": (_recorded(), _source(), Lsn(0x800), None, "0/800 is below 0/1000"),
    "a snapshot put back": (
        _recorded(), _source(wal=0x4000), Lsn(0x2000), None, "ahead of the server's WAL at 0/4000"
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("recorded", "source", "slot", "ancestors", "said"), list(CASES.values()), ids=list(CASES)
)
def test_what_says_the_index_describes_another_history(
    recorded: Recorded,
    source: Source,
    slot: Lsn | None,
    ancestors: dict[int, Lsn] | None,
    said: str | None,
) -> None:
    reason = other_history(recorded, source, slot, ancestors)
    assert reason == said if said is None else said in (reason or "")

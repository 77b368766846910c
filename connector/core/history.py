"""Which history of a Postgres source an index describes (pure).

A Postgres history is (database system identifier, timeline, LSN). The checkpoint records the
first two beside its LSNs, and the consistent point of the slot it follows; the server tells the
daemon where it is now (`IDENTIFY_SYSTEM`) and, for a timeline that is not the recorded one,
where each of its ancestors ended (`TIMELINE_HISTORY`). When they cannot be the same history,
the index describes another one: a point-in-time restore, a restore into a new cluster, a
failover to a replica that lacked commits, a `pg_upgrade`, a filesystem snapshot put back, or a
slot made again below the index. Nothing streamed from the source then can be compared with what
the index holds by LSN, so the daemon rebuilds the index from a fresh snapshot (flow.start).
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.core.lsn import Lsn


@dataclass(frozen=True, slots=True)
class Source:
    """Where the server is now: its system id, its timeline and its WAL flush position."""

    system_id: str
    timeline: int
    wal: Lsn


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the checkpoint says of the history it follows ("" / None where an older connector
    did not record it)."""

    system_id: str
    timeline: int | None
    position: Lsn  # the furthest the index has gone: the resume position or the visible LSN
    slot_lsn: Lsn | None  # the consistent point the slot was created at


def parse_timeline_history(content: str) -> dict[int, Lsn]:
    """A timeline history file (`TIMELINE_HISTORY`): each ancestor timeline and the LSN where
    the next one branched off it. Comment and blank lines are skipped."""
    ancestors: dict[int, Lsn] = {}
    for line in content.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit():
            continue
        ancestors[int(fields[0])] = Lsn.parse(fields[1])
    return ancestors


def other_history(
    recorded: Recorded,
    source: Source,
    slot_position: Lsn | None,
    ancestors: dict[int, Lsn] | None,
) -> str | None:
    """Why the index cannot describe the source's history (None when it can). `slot_position`
    is the slot's confirmed position (None: no slot); `ancestors` the source timeline's history
    (needed only when the timelines differ; None: the server has none for it)."""
    if recorded.system_id and source.system_id != recorded.system_id:
        return (
            f"the database system id changed from {recorded.system_id} to {source.system_id} "
            "(a restore into a new cluster, pg_upgrade or a logical upgrade)"
        )
    diverged = _diverged(recorded, source, ancestors)
    if diverged is not None:
        return diverged
    if (
        slot_position is not None
        and recorded.slot_lsn is not None
        and slot_position < recorded.slot_lsn
    ):
        return (
            f"the slot's position {slot_position} is below {recorded.slot_lsn}, where the slot "
            "the index follows was created: the slot was made again on another history (a "
            "restore, then a slot made by hand)"
        )
    if recorded.position > source.wal:
        return (
            f"the index is at {recorded.position}, ahead of the server's WAL at {source.wal} "
            f"on timeline {source.timeline} (a backup or filesystem snapshot put back)"
        )
    return None


def _diverged(recorded: Recorded, source: Source, ancestors: dict[int, Lsn] | None) -> str | None:
    """Why the source's timeline does not hold the recorded position (None when it does)."""
    if recorded.timeline is None or recorded.timeline == source.timeline:
        return None
    where = f"timeline {recorded.timeline} at {recorded.position}"
    if source.timeline < recorded.timeline or ancestors is None:
        return (
            f"the server is on timeline {source.timeline}, which does not descend from {where} "
            "(a restore from an older backup, or a server of the old history)"
        )
    ended = ancestors.get(recorded.timeline)
    if ended is None:
        return (
            f"timeline {source.timeline} does not descend from timeline {recorded.timeline} "
            f"(its history: {_describe(ancestors)}); the index was at {recorded.position}"
        )
    if recorded.position > ended:
        return (
            f"timeline {source.timeline} branched off timeline {recorded.timeline} at {ended}, "
            f"before the index's position {recorded.position}: the commits after {ended} are "
            "not in the server's history (a point-in-time restore, or a failover to a replica "
            "that lacked them)"
        )
    return None


def _describe(ancestors: dict[int, Lsn]) -> str:
    return ", ".join(f"timeline {t} until {lsn}" for t, lsn in sorted(ancestors.items())) or "none"

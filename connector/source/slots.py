"""Replication slots: the one home of slot SQL, and of waiting for a walsender to let go.

A slot is held by one walsender at a time. A connector that stops (or dies) lets go of its slot
only when its walsender ends, which takes a moment after its connection closes, and much longer
when the connection died without closing (until `wal_sender_timeout`). Every command that needs
the slot free (the daemon's start, replay, slot drop, the test harness) goes through here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg

from connector.core.lsn import Lsn
from connector.errors import ReplicationError

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    plugin: str | None
    database: str | None
    active: bool
    confirmed_flush_lsn: Lsn | None
    restart_lsn: Lsn | None
    wal_status: str | None


def slot_info(conn: Conn, slot: str) -> SlotInfo | None:
    row = conn.execute(
        "SELECT slot_name, plugin, database, active, confirmed_flush_lsn::text, "
        "restart_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = %s",
        [slot],
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        name=str(row[0]),
        plugin=str(row[1]) if row[1] else None,
        database=str(row[2]) if row[2] else None,
        active=bool(row[3]),
        confirmed_flush_lsn=Lsn.parse(str(row[4])) if row[4] else None,
        restart_lsn=Lsn.parse(str(row[5])) if row[5] else None,
        wal_status=str(row[6]) if row[6] else None,
    )


def retained_wal(conn: Conn, slot: str) -> tuple[Lsn, int] | None:
    """The server's current WAL position and the bytes of WAL `slot` keeps from recycling."""
    row = conn.execute(
        "SELECT pg_current_wal_lsn()::text, restart_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = %s",
        [slot],
    ).fetchone()
    if row is None:
        return None
    current = Lsn.parse(str(row[0]))
    return current, current.value - Lsn.parse(str(row[1])).value if row[1] else 0


def wait_released(conn: Conn, slot: str, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for no walsender to hold `slot`; True once none does (or the
    slot is gone)."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
        ).fetchone()
        if row is None or not row[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def end_walsender(conn: Conn, slot: str, timeout_s: float = 5.0) -> bool:
    """End the walsender holding `slot`, if any, and wait until it let go; True once free."""
    conn.execute(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = %s AND active_pid IS NOT NULL",
        [slot],
    )
    return wait_released(conn, slot, timeout_s)


def drop_slot(conn: Conn, slot: str) -> bool:
    """End whoever holds `slot` and drop it; True when there was a slot to drop."""
    if slot_info(conn, slot) is None:
        return False
    end_walsender(conn, slot)
    conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    return True


def slots_of_database(conn: Conn, database: str) -> list[str]:
    rows = conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE database = %s", [database]
    ).fetchall()
    return [str(name) for (name,) in rows]


def release_stale_slot(conn: Conn, slot: str, silent_for_s: float) -> bool:
    """End the walsender still holding `slot` for a connection that died without closing (its
    client has sent no status for `silent_for_s`; a live connector sends one every second).
    Raises ReplicationError when a live client holds it. True when one was ended."""
    row = conn.execute(
        "SELECT s.active_pid, extract(epoch FROM now() - coalesce(r.reply_time, r.backend_start)) "
        "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
        "WHERE s.slot_name = %s AND s.active",
        [slot],
    ).fetchone()
    if row is None:
        return False
    pid, silent = row[0], float(str(row[1])) if row[1] is not None else None
    if silent is not None and silent < silent_for_s:
        raise ReplicationError(
            f"slot {slot} is in use by another live connection (walsender pid {pid}): one "
            "connector per slot; stop the other one or choose another postgres.slot"
        )
    log.warning("slot %s is held by a dead connection (walsender pid %s, silent %.0fs): ending it",
                slot, pid, silent or 0.0)  # fmt: skip
    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_released(conn, slot, 5.0)
    return True

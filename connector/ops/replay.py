"""`connector replay --from-lsn`: move the checkpoint back so the next start re-applies every
change after it, while the slot still holds them."""

from __future__ import annotations

import logging

import psycopg

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.errors import ReplicationError, SlotLostError
from connector.sink.checkpoint import move_checkpoint, read_checkpoint
from connector.sink.redis_client import client_for
from connector.source.connection import connect
from connector.source.slots import slot_info, wait_released

log = logging.getLogger(__name__)


def _slot_idle_or_fail(conn: psycopg.Connection[tuple[object, ...]], settings: Settings) -> Lsn:
    """The slot's confirmed position; it must exist and no connector may be streaming it."""
    wait_released(conn, settings.postgres.slot, 5.0)  # a connector that just stopped lets go
    info = slot_info(conn, settings.postgres.slot)
    if info is None:
        raise SlotLostError(
            f"slot {settings.postgres.slot} does not exist, so it holds no changes to replay: "
            "run `connector resync` (or `connector run`, which copies the tables again)"
        )
    if info.active:
        raise ReplicationError(
            f"slot {settings.postgres.slot} is in use by a running connector: stop it first "
            "(SIGTERM), then replay, then start it again"
        )
    if info.wal_status == "lost" or info.confirmed_flush_lsn is None:
        raise SlotLostError(
            f"slot {settings.postgres.slot} was invalidated (wal_status {info.wal_status}): "
            "run `connector resync`"
        )
    return info.confirmed_flush_lsn


def rewind(settings: Settings, lsn: Lsn) -> Lsn:
    """Move the checkpoint back to `lsn`, so the next start re-applies every change after it.

    Only possible while the slot still holds those changes: `lsn` must not be older than the
    slot's confirmed position (keep a `pipeline.replay_window_s` to leave room)."""
    with connect(settings.postgres, "replay") as conn:
        confirmed = _slot_idle_or_fail(conn, settings)
    if lsn < confirmed:
        raise SlotLostError(
            f"slot {settings.postgres.slot} no longer holds changes before {confirmed}, so it "
            f"cannot replay from {lsn}: run `connector resync` to rebuild from a snapshot "
            "(set pipeline.replay_window_s to keep a window for replays)"
        )
    with client_for(settings.redis) as client:
        previous = read_checkpoint(client, settings.postgres.slot)
        move_checkpoint(client, settings.postgres.slot, lsn)
    was = previous.lsn if previous else None
    log.info("checkpoint moved from %s to %s: the next start replays from there", was, lsn)
    return confirmed

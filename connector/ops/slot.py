"""`connector slot drop`: decommission the connector's slot and forget its checkpoint."""

from __future__ import annotations

import psycopg

from connector.config import Settings
from connector.errors import ReplicationError
from connector.sink.checkpoint import forget_checkpoint
from connector.sink.redis_client import client_for
from connector.source import slots
from connector.source.replication import conninfo
from connector.source.slots import slot_info


def drop_slot(settings: Settings, force: bool = False) -> bool:
    """Drop the slot (decommission) and forget the checkpoint; True when a slot was dropped."""
    slot = settings.postgres.slot
    with psycopg.connect(conninfo(settings.postgres), autocommit=True) as conn:
        info = slot_info(conn, slot)
        if info is None:
            return False
        if info.active and not force:
            raise ReplicationError(
                f"slot {slot} is in use by a running connector: stop it first, or pass --force"
            )
        slots.drop_slot(conn, slot)
    with client_for(settings.redis) as client:
        forget_checkpoint(client, slot)
    return True

"""`connector slot drop`: decommission the connector's slot and forget its checkpoint.
`connector slot take-over`: make this configuration's slot the owner of indexes another slot
wrote (a connector moved to a new slot; sink.layout records each index's owner)."""

from __future__ import annotations

import redis

from connector.config import Settings
from connector.errors import ConfigError, ReplicationError
from connector.sink.checkpoint import forget_checkpoint, read_checkpoint
from connector.sink.layout import Owner, read_owner, read_record, set_owner
from connector.sink.redis_client import client_for
from connector.source import slots
from connector.source.connection import connect
from connector.source.server import system_identifier
from connector.source.slots import slot_info


def drop_slot(settings: Settings, force: bool = False) -> bool:
    """Drop the slot (decommission) and forget the checkpoint; True when a slot was dropped."""
    slot = settings.postgres.slot
    with connect(settings.postgres, "slot") as conn:
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


def take_over(settings: Settings, only: list[str] | None = None, force: bool = False) -> list[str]:
    """Record this configuration's slot as the owner of its indexes (or those of `only`) that
    another slot owns; what was done, one line per index. Refused while the other slot is
    streaming (unless `force`): two connectors would write one index."""
    slot = settings.postgres.slot
    names = sorted({t.index_name for t in settings.tables})
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"index {', '.join(unknown)} is not configured (configured: "
                          f"{', '.join(names)})")  # fmt: skip
    done = []
    with (
        connect(settings.postgres, "slot") as conn,
        client_for(settings.redis) as client,
    ):
        owner = Owner(slot, system_identifier(conn))
        for alias in only or names:
            record = read_record(client, alias)
            physicals = record.written if record is not None else ()
            before = {o.slot for p in physicals if (o := read_owner(client, p)) is not None}
            if not before - {slot}:  # `connector run` records itself where no owner is
                done.append(f"index {alias}: no other slot owns it")
                continue
            _refuse_a_resumed_slot(client, slot)
            for other in sorted(before - {slot}):
                info = slot_info(conn, other)
                if info is not None and info.active and not force:
                    raise ReplicationError(
                        f"index {alias}: slot {other} is in use by a running connector: stop "
                        "it first, or pass --force"
                    )
            for physical in physicals:
                set_owner(client, physical, owner)
            done.append(f"index {alias}: owned by slot {slot} (was {', '.join(sorted(before))})")
    return done


def _refuse_a_resumed_slot(client: redis.Redis, slot: str) -> None:
    """A slot that would resume from its own checkpoint never copies the index it takes over:
    the changes between the old slot's last write and that checkpoint would be missing."""
    checkpoint = read_checkpoint(client, slot)
    if checkpoint is not None:
        raise ConfigError(
            f"slot {slot} already streams from checkpoint {checkpoint.lsn} (its connector "
            "writes other indexes): an index it took over would miss the changes between the "
            "old slot's last write and that point. Hand it over to a connector with a new slot "
            f"(it copies the tables from a snapshot first), or stop the connector of slot {slot} "
            "and run `connector slot drop` with this configuration first (it then copies all "
            "its tables again)"
        )

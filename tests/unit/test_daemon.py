"""The daemon's start decision (connector.flow.start.resync_reason): resume from the checkpoint,
or copy the tables again, and why. Pure: no servers."""

from __future__ import annotations

import pytest

from connector.core.lsn import Lsn
from connector.errors import ConfigError
from connector.flow.start import resync_reason
from connector.sink.checkpoint import Checkpoint
from connector.source.slots import SlotInfo


def slot(
    confirmed: int | None = 100, plugin: str = "wal2json", wal_status: str = "reserved"
) -> SlotInfo:
    lsn = Lsn(confirmed) if confirmed is not None else None
    return SlotInfo("s", plugin, "db", False, lsn, lsn, wal_status)


def checkpoint(lsn: int = 100, system_id: str = "42") -> Checkpoint:
    return Checkpoint(Lsn(lsn), system_id, 0.0)


def test_a_checkpoint_at_or_after_the_slot_resumes() -> None:
    assert resync_reason(slot(100), checkpoint(100), "42") is None
    assert resync_reason(slot(100), checkpoint(150), "42") is None
    assert resync_reason(slot(100), checkpoint(150, system_id=""), "42") is None


@pytest.mark.parametrize(
    ("info", "saved", "reason"),
    [
        (None, None, "first start: no slot and no checkpoint"),
        (None, checkpoint(), "slot is gone (dropped?) though Redis holds checkpoint 0/64"),
        (slot(), None, "Redis holds no checkpoint for this slot (new or emptied Redis)"),
        (slot(wal_status="lost"), checkpoint(), "the slot was invalidated (wal_status = lost)"),
        (slot(), checkpoint(system_id="7"), "the checkpoint belongs to another database cluster"),
        (
            slot(200),
            checkpoint(100),
            "Redis checkpoint 0/64 is behind the slot's confirmed position 0/C8: Redis lost "
            "writes the slot no longer holds",
        ),
    ],
)
def test_what_cannot_be_reconciled_is_resynchronised_with_the_reason(
    info: SlotInfo | None, saved: Checkpoint | None, reason: str
) -> None:
    assert resync_reason(info, saved, "42") == reason


def test_a_slot_of_another_plugin_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="plugin pgoutput, not wal2json: choose another"):
        resync_reason(slot(plugin="pgoutput"), checkpoint(), "42")

"""The daemon's start decision (connector.flow.start.resync_reason): resume from the checkpoint,
or copy the tables again, and why; its readiness (Connector.is_ready, read from the state its
threads share: connector.flow.state). Pure: no servers."""

from __future__ import annotations

import pytest

from connector.config import Settings
from connector.core.lsn import Lsn
from connector.embed.hashing import HashingEmbedder
from connector.errors import ConfigError
from connector.flow.daemon import Connector
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


def streaming_daemon(ready_max_lag_bytes: int = 1000) -> Connector:
    """A daemon whose state says an attempt streams, caught up, the slot's lag unknown (no
    attempt ran: nothing connects)."""
    settings = Settings(
        tables=[{"name": "documents", "content": ["body"]}],
        observability={"ready_max_lag_bytes": ready_max_lag_bytes},
    )
    daemon = Connector(settings, HashingEmbedder(16))
    daemon.state.ready.set()
    daemon.state.catch_up_to = daemon.state.checkpoint = Lsn(500)
    return daemon


def test_ready_while_streaming_caught_up_and_close_behind() -> None:
    daemon = streaming_daemon()
    assert daemon.is_ready()
    daemon.state.lag_bytes = 1000  # the monitor's last check: at the bound
    assert daemon.is_ready()


def test_not_ready_before_streaming_behind_the_start_or_far_behind() -> None:
    daemon = streaming_daemon()
    daemon.state.ready.clear()  # no attempt streams
    assert not daemon.is_ready()
    daemon = streaming_daemon()
    daemon.state.catch_up_to = Lsn(501)  # the server had more when streaming began
    assert not daemon.is_ready()
    daemon = streaming_daemon()
    daemon.state.lag_bytes = 1001  # the monitor found the slot too far behind
    assert not daemon.is_ready()


def test_not_ready_while_redis_refuses_writes() -> None:
    daemon = streaming_daemon()
    daemon.state.redis_pause.full_since = 1.0  # an episode at maxmemory
    assert not daemon.is_ready()

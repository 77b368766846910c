"""What the daemon's threads share, each field with the one thread that writes it.

The threads (flow.daemon's docstring draws them): the applier thread (the one running
`Connector.run`: it opens each attempt and plans the batches), the stager (stages and flips),
the monitor, and whatever thread serves the probes (`Connector.is_ready`). A field here has one
writer; its readers see either the old or the new value (a single attribute assignment), never a
half-written one, so no lock is needed. Objects with their own lock (the events, `WritePause`,
`TableHealth`, the queue, `Durability`) are shared as they are.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from connector.core.lsn import ZERO, Lsn
from connector.flow.health import TableHealth
from connector.sink.memory import WritePause


@dataclass(slots=True)
class DaemonState:
    """What lives across the daemon's connection attempts: owned by flow.daemon's `Connector`,
    handed to each attempt (flow.stream's `Stream`)."""

    # Rows per batch: the setting, halved after a batch write timed out (and grown back).
    # Writer: the stager; reader: the applier thread (the next batch's size).
    batch_rows: int
    # The maxmemory pause: one episode (one ERROR) across attempts. Its own state.
    redis_pause: WritePause
    # Tables whose changes are being dead-lettered: said once per episode, across attempts.
    health: TableHealth
    # Set by `Connector.stop()` (a signal handler, a test's thread); read by every loop.
    stop: threading.Event = field(default_factory=threading.Event)
    # Set by the applier thread once an attempt streams, cleared when it ends; read by the
    # probes and by tests waiting for the daemon.
    ready: threading.Event = field(default_factory=threading.Event)
    # The newest LSN made visible (flipped). Writer: the stager at each flip, and the applier
    # thread at an attempt's start (before the stager runs); readers: the monitor (its
    # samples), the probes, the retry loop's log.
    checkpoint: Lsn = ZERO
    # The server's WAL position when the attempt began streaming: ready once the checkpoint
    # reaches it. Writer: the applier thread; reader: the probes.
    catch_up_to: Lsn = ZERO
    # The slot's lag at the monitor's last check. Writer: the monitor; reader: the probes.
    lag_bytes: int | None = None
    # The settings were held against the indexes (the first start only). Applier thread only.
    reconciled: bool = False
    # The attempt reached streaming: its failure is a new outage (the backoff starts again).
    # Applier thread only.
    streamed: bool = False


@dataclass(slots=True)
class InHand:
    """The commit times of what one attempt holds but has not made visible: the monitor's
    oldest pending change (with the queue's oldest)."""

    # The oldest of the batch being planned. Writer: the applier thread; reader: the monitor.
    planning_commit: float | None = None
    # The oldest of the batch the slice being staged belongs to. Writer: the stager; reader:
    # the monitor.
    staging_commit: float | None = None

"""What every fault scenario shares: the sizes of the default and the soak mode, the report row
each scenario fills, and the checks run after it. The connector runs as a real daemon process
(`connector.testing.daemon.DaemonProcess`, started by the `spawn_connector` fixture)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connector.config import Settings
from connector.core.keys import deadletter_key
from connector.core.lsn import Lsn
from connector.ops.verify import verify
from connector.query import searcher
from connector.sink.checkpoint import read_checkpoint
from connector.source.slots import slot_info
from tests.support import wal_lsn


@dataclass(frozen=True)
class Profile:
    """How long and how hard: by default the suite takes about two minutes on a 2-core
    machine; CONNECTOR_SOAK=1 runs a longer writer with more faults (about fifteen minutes)."""

    soak: bool
    rate: float  # writer transactions per second
    writer_s: float  # writer duration for the timed scenarios
    kills: int  # SIGKILLs of the connector in one run
    restarts: int  # Redis / Postgres restarts in one run
    cuts: int  # proxy cuts in one run (plus one more, during which the daemon gets SIGTERM)
    cut_s: float  # how long each cut lasts
    outage_rounds: int  # 500s-then-hangs rounds of the embedding server
    catch_up_s: float  # how long the index may take to catch up afterwards
    test_timeout_s: float

    @classmethod
    def from_environment(cls) -> Profile:
        if os.environ.get("CONNECTOR_SOAK") == "1":
            return cls(True, 15.0, 60.0, 40, 8, 8, 3.0, 5, 300.0, 1500.0)
        return cls(False, 15.0, 5.0, 10, 2, 1, 2.0, 1, 60.0, 240.0)


@dataclass
class ScenarioReport:
    """One row of the table printed at the end of the session."""

    scenario: str
    changes: int = 0
    faults: int = 0
    fault_kind: str = ""
    missing: int | None = None
    stale: int | None = None
    orphaned: int | None = None
    dead_letters: int | None = None
    reconnects: int | None = None  # "reconnecting" lines the daemon logged
    catch_up_s: float | None = None  # from the writer's end until the index had it all
    seconds: float = 0.0
    outcome: str = "?"
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> str:
        if self.missing is None:
            return "not checked"
        return f"{self.missing}/{self.stale}/{self.orphaned}"


class ConfirmedWatch(threading.Thread):
    """Samples, all along a scenario, the slot's confirmed_flush_lsn and then the checkpoint in
    Redis: what Postgres may release must never be ahead of what Redis holds."""

    def __init__(self, dsn: str, url: str, slot: str, interval_s: float = 0.1) -> None:
        super().__init__(name="confirmed-watch", daemon=True)
        self.dsn, self.url, self.slot, self.interval_s = dsn, url, slot, interval_s
        self.samples = 0
        self.violations: list[tuple[Lsn, Lsn]] = []
        self._halt = threading.Event()

    def __enter__(self) -> ConfirmedWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(30)

    def run(self) -> None:
        client = redis.Redis.from_url(
            self.url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while not self._halt.wait(self.interval_s):
                try:
                    if conn is None:
                        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                    self._sample(conn, client)
                except (psycopg.Error, redis.RedisError, OSError):
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()
            client.close()

    def _sample(self, conn: psycopg.Connection[tuple[object, ...]], client: redis.Redis) -> None:
        info = slot_info(conn, self.slot)
        checkpoint = read_checkpoint(client, self.slot)
        if info is None or info.confirmed_flush_lsn is None or checkpoint is None:
            return
        confirmed = info.confirmed_flush_lsn
        self.samples += 1
        if confirmed > checkpoint.lsn:
            self.violations.append((confirmed, checkpoint.lsn))

    def check(self) -> None:
        assert self.samples > 0, "never saw a confirmed LSN and a checkpoint together"
        assert not self.violations, (
            f"Postgres was told {len(self.violations)} times that an LSN was safe before Redis "
            f"held it (confirmed > checkpoint), e.g. {self.violations[:3]}"
        )


def wait_for_redis(url: str, timeout_s: float = 60.0) -> None:
    """Until Redis answers commands (after a restart it listens before it has loaded its AOF)."""
    client = redis.Redis.from_url(url, retry=None)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:  # BusyLoadingError is one
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def compact_aof(url: str, timeout_s: float = 30.0) -> None:
    """Rewrite the (just emptied) AOF, so a restart loads this scenario's data, not the whole
    session's history of writes and FLUSHALLs."""
    client = redis.Redis.from_url(url)
    try:
        client.bgrewriteaof()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            time.sleep(0.05)
    finally:
        client.close()


def check_converged(
    settings: Settings,
    dsn: str,
    last_commit_lsn: str | None,
    report: ScenarioReport,
    timeout_s: float,
) -> None:
    """The index caught up, equals the tables, holds a sane checkpoint and no dead letters.

    `settings` must reach the servers directly (not through a proxy a test may still hold cut);
    `dsn` is the database, for the server's WAL position."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        target = wal_lsn(conn)
    waited = time.monotonic()
    searcher(settings).wait_for(target, timeout_s)
    report.catch_up_s = time.monotonic() - waited
    drifts = verify(settings)
    report.missing = sum(len(d.missing) for d in drifts)
    report.stale = sum(len(d.stale) for d in drifts)
    report.orphaned = sum(len(d.orphaned) for d in drifts)
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    try:
        checkpoint = read_checkpoint(client, settings.postgres.slot)
        letters = {
            table.index_name: int(client.xlen(deadletter_key(table.index_name)))
            for table in settings.tables
        }
        samples = {
            name: client.xrange(deadletter_key(name), count=2)
            for name, count in letters.items()
            if count
        }
    finally:
        client.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        server = Lsn.parse(wal_lsn(conn))
    report.dead_letters = sum(letters.values())
    assert all(d.clean for d in drifts), "\n".join(d.summary() for d in drifts if not d.clean)
    assert len(drifts) == len(settings.tables)
    assert checkpoint is not None, "no checkpoint in Redis"
    if last_commit_lsn is not None:
        assert checkpoint.lsn >= Lsn.parse(last_commit_lsn), (
            f"checkpoint {checkpoint.lsn} is behind the writer's last commit {last_commit_lsn}"
        )
    assert checkpoint.lsn <= server, f"checkpoint {checkpoint.lsn} is ahead of the server {server}"
    assert report.dead_letters == 0, f"dead letters for rows that were fine: {letters} {samples}"

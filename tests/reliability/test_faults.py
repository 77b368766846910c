"""Fault injection: a bounded writer keeps changing two tables while the connector daemon is
killed, its servers restart or crash, its embedding provider fails, and its connections are
cut or go silent. Afterwards the index must have caught up and equal the tables exactly
(`verify`), with a checkpoint between the writer's last commit and the server's WAL position,
no dead letters, no resynchronisation, and the daemon must stop cleanly on SIGTERM. All along,
the LSN confirmed to Postgres must never be ahead of the checkpoint in Redis.

Sizes and durations come from `Profile` (CONNECTOR_SOAK=1 for the long run); every scenario
starts from a fresh database and an emptied Redis and fills one row of the table printed at the
end of the session.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from connector.config import Settings
from connector.core.keys import checkpoint_key, staged_key
from connector.core.lsn import Lsn
from connector.query import searcher
from connector.sink.checkpoint import read_visible
from connector.sink.redis_client import connect
from connector.source.server import current_wal_lsn
from connector.testing.daemon import DaemonProcess
from connector.testing.openai_server import FakeOpenAI, Fault
from connector.testing.services import Services
from tests.reliability.harness import (
    ConfirmedWatch,
    Profile,
    ScenarioReport,
    check_converged,
    compact_aof,
    wait_for_redis,
)
from tests.reliability.proxy import TcpProxy
from tests.reliability.workload import TABLES, Writer, create_tables
from tests.support import make_settings, openai_settings, wal_lsn

Spawn = Callable[..., DaemonProcess]

_PROFILE = Profile.from_environment()
pytestmark = pytest.mark.timeout(_PROFILE.test_timeout_s)


def _settings(
    dsn: str,
    url: str,
    redis: dict[str, object] | None = None,
    piece_rows: int = 20,
    **embedding: object,
) -> Settings:
    # Transactions of more than 20 changes are staged in pieces, and garbage collection runs
    # half a second behind the flips: every scenario's faults also land mid-piece and mid-GC.
    pipeline = {"batch_max_rows": 200, "transaction_piece_rows": piece_rows, "gc_grace_s": 0.5}
    sections: dict[str, dict[str, object]] = {"pipeline": pipeline}
    if embedding:
        sections["embedding"] = embedding
    if redis:
        sections["redis"] = redis
    return make_settings(dsn, url, tables=TABLES, **sections)


def _writer(
    dsn: str, seed: int, profile: Profile, duration_s: float, rows: tuple[int, int] = (200, 120)
) -> Writer:
    create_tables(dsn)
    writer = Writer(dsn, seed, rate=profile.rate, duration_s=duration_s)
    writer.seed_rows(*rows)
    return writer


def _finish(writer: Writer, scenario: ScenarioReport) -> str | None:
    stats = writer.finish(writer.duration_s + 60)
    scenario.changes = stats.changes
    ops = ", ".join(f"{op} {count}" for op, count in sorted(stats.ops.items()))
    scenario.notes.append(
        f"{stats.transactions} transactions ({ops}); {stats.failed_transactions} lost to faults"
    )
    assert stats.transactions > 0 and stats.changes > 0
    return stats.last_commit_lsn


@contextmanager
def _under_faults(
    dsn: str,
    direct: Settings,
    writer: Writer,
    connector: DaemonProcess,
    scenario: ScenarioReport,
    profile: Profile,
    resync_allowed_when: str | None = None,
) -> Iterator[None]:
    """The writer writes (to its bound) and the confirmed-LSN watch samples while the block
    injects faults; then every check runs. `direct` reaches the servers without any proxy.

    A fault must never make the daemon give up its checkpoint and copy the tables again, except
    for the reason `resync_allowed_when` names (a kill before the first checkpoint)."""
    url = direct.redis.url.get_secret_value()
    with ConfirmedWatch(dsn, url, direct.postgres.slot) as watch:
        writer.start()
        try:
            yield
        except BaseException:
            writer.stop()
            writer.join(30)
            raise
        last = _finish(writer, scenario)
        try:
            connector.assert_alive("after the faults")
            check_converged(direct, dsn, last, scenario, profile.catch_up_s)
        finally:
            scenario.reconnects = connector.reconnects
        scenario.notes.append(
            f"{watch.samples} samples of the slot's confirmed LSN, none ahead of the checkpoint"
            if not watch.violations
            else f"{len(watch.violations)} confirmed LSNs ahead of the checkpoint"
        )
        watch.check()
    resyncs = connector.resyncs()
    unexpected = [r for r in resyncs if not resync_allowed_when or resync_allowed_when not in r]
    if resyncs:
        scenario.notes.append(f"{len(resyncs)} resynchronisations ({len(unexpected)} unexpected)")
    assert not unexpected, "the daemon resynchronised after a fault:\n" + "\n".join(unexpected)
    log = connector.tail()
    assert connector.stop() == 0, f"SIGTERM did not stop the connector cleanly:\n{log}"


def _at(started: float, offset_s: float) -> None:
    time.sleep(max(0.0, started + offset_s - time.monotonic()))


# --------------------------------------------------------------------------- 1. SIGKILL


def test_sigkill_connector_repeatedly(
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    """SIGKILL the daemon at random moments, restarting it each time: mostly 0.2-1.5 s after a
    new process took the slot (copying or streaming), every fourth 0.2-1.5 s after its spawn."""
    rng = random.Random(seed)
    settings = _settings(pg_dsn, redis_url)
    # Enough rows that the initial copy takes a second or two: the first kills land in it.
    writer = _writer(pg_dsn, seed, profile, profile.test_timeout_s, rows=(700, 400))
    scenario.fault_kind = "SIGKILL"
    connector = spawn_connector(settings)  # the first kills may land in the initial copy
    seen: set[int] = set()
    with (
        psycopg.connect(pg_dsn, autocommit=True) as conn,
        _under_faults(
            pg_dsn,
            settings,
            writer,
            connector,
            scenario,
            profile,
            resync_allowed_when="Redis holds no checkpoint for this slot",
        ),
    ):

        def slot_pid() -> int | None:
            row = conn.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                [settings.postgres.slot],
            ).fetchone()
            return int(str(row[0])) if row and row[0] is not None else None

        def new_process_holds_the_slot() -> bool:
            pid = slot_pid()
            return pid is not None and pid not in seen

        for i in range(profile.kills):
            if i % 4 != 3:
                connector.wait_until(new_process_holds_the_slot, 30, "a new process holds the slot")
            time.sleep(rng.uniform(0.2, 1.5))
            connector.assert_alive(f"before kill {i + 1}")
            seen.update(pid for pid in [slot_pid()] if pid is not None)
            connector.kill()
            scenario.faults += 1
            connector.start()
        time.sleep(1.0)  # the writer goes on while the last process catches up
        writer.stop()


class _PhaseWatch:
    """Sees, through Redis keyspace notifications, the first command of a phase of the
    daemon's write path for a transaction committed between two LSNs: staging it begins (SET
    of the staged marker), the flip that makes it visible (HSET of the checkpoint), or a
    garbage collection step deletes a chunk hash (UNLINK)."""

    def __init__(self, url: str, slot: str, phase: str) -> None:
        self.client = connect(url)
        self.client.config_set("notify-keyspace-events", "K$hg")
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe("__keyspace@0__:*")
        self.phase = phase
        self.staged = staged_key(slot)
        self.slot = slot
        self.checkpoint = checkpoint_key(slot)
        self.wanted = {
            "staging": (self.staged.encode(), b"set"),
            "flip": (self.checkpoint.encode(), b"hset"),
            "gc": (b":chunk:", b"del"),
        }[phase]

    def wait(self, after: Lsn, until: Lsn, timeout_s: float) -> bool:
        """Until the phase's command is seen for a transaction committed in (after, until]
        (True), or `timeout_s` passes (False). Garbage of any transaction counts."""
        key, event = self.wanted
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.05)
            if message is None or message["data"] != event or key not in message["channel"]:
                continue
            lsn = Lsn(0) if self.phase == "gc" else self._lsn()
            # A flip may move the visible LSN past `until` (to the stream's position).
            if self.phase == "gc" or (after < lsn and (self.phase == "flip" or lsn <= until)):
                return True
        return False

    def _lsn(self) -> Lsn:
        if self.phase == "staging":
            return Lsn(int(self.client.get(self.staged) or 0))
        return read_visible(self.client, self.slot)

    def close(self) -> None:
        self.pubsub.close()
        self.client.config_set("notify-keyspace-events", "")
        self.client.close()


def _bulk(conn: psycopg.Connection[tuple[object, ...]], n: int) -> None:
    """One transaction of 1,500 new rows of rel_a (ids of their own, never written again, so
    a row lost to a kill stays lost), and one updating half of the previous bulk's rows (their
    old versions become garbage to collect)."""
    first = 10_000_000 + n * 10_000
    conn.execute(
        "INSERT INTO rel_a (id, title, body, source, n) SELECT g, 'bulk ' || g, "
        "'bulk body ' || md5(g::text), 'docs', g %% 7 FROM generate_series(%s, %s) g",
        [first, first + 1499],
    )
    if n:
        conn.execute(
            "UPDATE rel_a SET body = 'bulk body again ' || md5(id::text) "
            "WHERE id BETWEEN %s AND %s AND id %% 2 = 0",
            [first - 10_000, first - 10_000 + 1499],
        )


@pytest.mark.parametrize("phase", ["staging", "flip", "gc"])
def test_sigkill_in_each_phase_of_the_write_path(
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
    phase: str,
) -> None:
    """SIGKILL the daemon the moment Redis sees it start a phase: staging a batch (its versions
    half written), flipping the visible LSN (before WAITAOF and the confirmation to Postgres),
    or collecting garbage (superseded chunks half removed); restart it each time."""
    # Pieces of 500 changes in slices of 200 rows: staging one takes tens of milliseconds, so
    # the kill (a millisecond after the phase's first command) lands inside it.
    settings = _settings(pg_dsn, redis_url, piece_rows=500)
    writer = _writer(pg_dsn, seed, profile, duration_s=profile.writer_s)
    scenario.fault_kind = f"SIGKILL at {phase}"
    connector = spawn_connector(settings)
    connector.wait_for_checkpoint(settings, profile.catch_up_s)
    watch = _PhaseWatch(redis_url, settings.postgres.slot, phase)
    missed = 0
    try:
        with (
            psycopg.connect(pg_dsn, autocommit=True) as conn,
            _under_faults(pg_dsn, settings, writer, connector, scenario, profile),
        ):
            for n in range(max(3, profile.kills // 3)):
                time.sleep(0.3)  # the restarted daemon resumes first
                before = current_wal_lsn(conn)
                _bulk(conn, n)  # a large transaction for the phase to work on, next to the writer
                if not watch.wait(before, current_wal_lsn(conn), 10):
                    missed += 1
                    continue
                connector.kill()
                scenario.faults += 1
                connector.start()
            time.sleep(1.0)
            writer.stop()
    finally:
        watch.close()
    assert scenario.faults >= 3, f"the {phase} phase was seen only {scenario.faults} times"
    scenario.notes.append(f"{scenario.faults} kills at {phase} ({missed} waits timed out)")


# --------------------------------------------------------------------------- 2, 3. restarts


def _restart_while_streaming(
    restarts: dict[str, Callable[[], None]],
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    """`profile.restarts` restarts spread over the writer's run, taking turns between the
    ways to restart the server that `restarts` names."""
    settings = _settings(pg_dsn, redis_url)
    writer = _writer(pg_dsn, seed, profile, duration_s=profile.writer_s)
    connector = spawn_connector(settings)
    connector.wait_for_checkpoint(settings, profile.catch_up_s)
    done: Counter[str] = Counter()
    ways = list(restarts)
    started = time.monotonic()
    with _under_faults(pg_dsn, settings, writer, connector, scenario, profile):
        for k in range(profile.restarts):
            _at(started, (k + 0.6) * profile.writer_s / (profile.restarts + 0.4))
            way = ways[k % len(ways)]
            restarts[way]()
            done[way] += 1
            scenario.faults += 1
        scenario.notes.append(", ".join(f"{n} {way}" for way, n in done.items()))


def test_redis_restarts_while_streaming(
    services: Services,
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    """In turns: a regular restart (SIGTERM: Redis writes its AOF out), and SIGKILL, after which
    Redis may have lost its last second of writes (appendfsync everysec): WAITAOF must have
    kept the connector from confirming those to Postgres."""
    server = services.redis
    if server is None:
        pytest.skip("Redis is external (CONNECTOR_TEST_REDIS_URL): the tests cannot restart it")
    scenario.fault_kind = "Redis restart"
    compact_aof(redis_url)

    def restart() -> None:
        server.restart()
        wait_for_redis(redis_url)

    def crash() -> None:
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        server.process = None
        server.start()
        wait_for_redis(redis_url)

    _restart_while_streaming(
        {"SIGTERM restarts": restart, "SIGKILL restarts": crash},
        pg_dsn,
        redis_url,
        spawn_connector,
        scenario,
        seed,
        profile,
    )


def test_postgres_restarts_while_streaming(
    services: Services,
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    """In turns: a fast shutdown and an immediate one (no checkpoint: crash recovery on start,
    and the slot may come back behind the position it had confirmed)."""
    server = services.postgres
    if server is None:
        pytest.skip(
            "Postgres is external (CONNECTOR_TEST_POSTGRES_DSN): the tests cannot restart it"
        )
    scenario.fault_kind = "Postgres restart"

    def restart(mode: str) -> Callable[[], None]:
        def run() -> None:
            server.stop(mode)
            server.start()

        return run

    _restart_while_streaming(
        {"fast restarts": restart("fast"), "immediate (crash) restarts": restart("immediate")},
        pg_dsn,
        redis_url,
        spawn_connector,
        scenario,
        seed,
        profile,
    )


# --------------------------------------------------------------------------- 4. embeddings

_ERRORS_S = 3.0  # at least this long every request is answered 500
_HANGS_S = 3.0  # then at least this long answered after 2 s, past the client's 1 s timeout
_HEALTHY_S = 2.0  # then healthy, while the writer goes on
_MET = 2  # a phase lasts until this many requests met its fault (bounded by _PHASE_MAX_S)
_PHASE_MAX_S = 30.0


def _hold(min_s: float, done: Callable[[], bool]) -> None:
    """At least `min_s`, then until `done()` (at most _PHASE_MAX_S): the connector backs off
    between retries, and a fault that met no request tested nothing."""
    began = time.monotonic()
    time.sleep(min_s)
    while not done() and time.monotonic() - began < _PHASE_MAX_S:
        time.sleep(0.05)


def test_embedding_server_errors_then_hangs(
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    fake_openai: FakeOpenAI,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    """Per round: 500s, then hangs longer than the client's timeout, then healthy. The
    provider's own retries give up after 3 s (retry_max_s), so the pipeline also restarts from
    its checkpoint, again and again, while the writer goes on."""
    embedding = openai_settings(fake_openai, timeout_s=1.0, retry_max_s=3.0)
    settings = _settings(pg_dsn, redis_url, **embedding)
    api_key = str(embedding["api_key"])
    writer = _writer(pg_dsn, seed, profile, duration_s=profile.test_timeout_s)
    connector = spawn_connector(settings, {"CONNECTOR_EMBEDDING__API_KEY": api_key})
    connector.wait_for_checkpoint(settings, profile.catch_up_s)
    scenario.fault_kind = "HTTP 500 / hung request"
    queued = 1_000_000
    errors = hung = 0

    def served() -> int:
        return queued - len(fake_openai.faults)

    with _under_faults(pg_dsn, settings, writer, connector, scenario, profile):
        time.sleep(0.5)
        for _round in range(profile.outage_rounds):
            fake_openai.faults = [Fault(500)] * queued
            _hold(_ERRORS_S, lambda: served() >= _MET)
            with fake_openai._lock:
                errors += served()
                fake_openai.faults = []
            fake_openai.hang_s = 2.0
            since = time.monotonic()

            def hanging(since: float = since) -> int:
                return sum(1 for r in list(fake_openai.requests) if r.at >= since)

            _hold(_HANGS_S, lambda: hanging() >= _MET)
            fake_openai.hang_s = 0.0
            hung += hanging()
            time.sleep(_HEALTHY_S)
        writer.stop()
        scenario.faults = errors + hung
        scenario.notes.append(f"{errors} requests answered 500, {hung} hung past the timeout")
        assert errors >= _MET and hung >= _MET, "the faults met too few requests"


# --------------------------------------------------------------------------- 5. network cuts

_GAP_S = 1.5  # at least this long connected between two cuts


def _cut_repeatedly(
    proxy: TcpProxy,
    connector: DaemonProcess,
    writer: Writer,
    scenario: ScenarioReport,
    profile: Profile,
    direct: Settings,
    dsn: str,
) -> None:
    """`profile.cuts` cuts, each once the daemon streams again and has caught up with what was
    written up to the previous restore (so the backlog stays bounded however long the daemon's
    backoff grows); during one more cut, SIGTERM: the daemon must exit 0 within
    pipeline.shutdown_timeout_s though it cannot reach the server, and a new one takes over."""
    streams = 0  # "streaming slot" lines logged before the last cut
    restored_at: str | None = None  # the server's WAL position when the proxy was restored
    for k in range(profile.cuts + 1):

        def streaming_again(streams: int = streams) -> bool:
            return connector.count("streaming slot") > streams

        time.sleep(_GAP_S)
        connector.wait_until(streaming_again, profile.catch_up_s, "the connector streams again")
        if restored_at is not None:
            searcher(direct).wait_for(restored_at, profile.catch_up_s)
        streams = connector.count("streaming slot")
        proxy.cut()
        scenario.faults += 1
        time.sleep(profile.cut_s / 2)
        if k == profile.cuts:
            _stop_during_outage(connector, scenario)
        time.sleep(profile.cut_s / 2)
        proxy.restore()
        with psycopg.connect(dsn, autocommit=True) as conn:
            restored_at = wal_lsn(conn)
        if k == profile.cuts:
            connector.start()
    time.sleep(_GAP_S)
    writer.stop()
    scenario.notes.append(
        f"{proxy.dropped} open connections dropped, {proxy.accepted} connections made"
    )


def _stop_during_outage(connector: DaemonProcess, scenario: ScenarioReport) -> None:
    limit = connector.settings.pipeline.shutdown_timeout_s
    began = time.monotonic()
    code = connector.stop(timeout_s=limit + 20)
    took = time.monotonic() - began
    scenario.notes.append(f"SIGTERM during a cut: exit status {code} after {took:.1f}s")
    assert code == 0, f"SIGTERM during an outage: exit status {code}:\n{connector.tail()}"
    assert took <= limit + 3, f"SIGTERM during an outage took {took:.1f}s (limit {limit}s)"


def test_redis_connection_cut(
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    parts = urlsplit(redis_url)
    if parts.scheme != "redis" or not parts.hostname:
        pytest.skip(f"the proxy forwards plain TCP: {parts.scheme}:// is not proxied")
    with TcpProxy((parts.hostname, parts.port or 6379)) as proxy:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
        proxied = _settings(pg_dsn, urlunsplit(parts._replace(netloc=netloc)))
        direct = _settings(pg_dsn, redis_url)
        writer = _writer(pg_dsn, seed, profile, duration_s=profile.test_timeout_s)
        connector = spawn_connector(proxied)
        connector.wait_for_checkpoint(direct, profile.catch_up_s)
        scenario.fault_kind = "Redis cut"
        with _under_faults(pg_dsn, direct, writer, connector, scenario, profile):
            _cut_repeatedly(proxy, connector, writer, scenario, profile, direct, pg_dsn)


def test_postgres_connection_cut(
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
) -> None:
    """Both the replication connection and the plain ones go through the proxy."""
    info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    host = str(info.get("hostaddr") or info.get("host") or "")
    if not host or host.startswith("/") or "," in host:
        pytest.skip(f"the proxy forwards one TCP address: Postgres host {host!r} is not proxied")
    with TcpProxy((host, int(str(info.get("port") or 5432)))) as proxy:
        proxied_dsn = psycopg.conninfo.make_conninfo(
            pg_dsn, host="127.0.0.1", hostaddr="127.0.0.1", port=str(proxy.port)
        )
        proxied = _settings(proxied_dsn, redis_url)
        direct = _settings(pg_dsn, redis_url)
        writer = _writer(pg_dsn, seed, profile, duration_s=profile.test_timeout_s)
        connector = spawn_connector(proxied)
        connector.wait_for_checkpoint(direct, profile.catch_up_s)
        scenario.fault_kind = "Postgres cut"
        with _under_faults(pg_dsn, direct, writer, connector, scenario, profile):
            _cut_repeatedly(proxy, connector, writer, scenario, profile, direct, pg_dsn)


# --------------------------------------------------------------------------- 6. silent partitions

_DEAD_CONNECTION_S = 30.0  # a daemon must notice a connection that carries nothing by then


@pytest.mark.parametrize("server", ["redis", "postgres"])
def test_connection_blackholed(
    pg_dsn: str,
    redis_url: str,
    spawn_connector: Spawn,
    scenario: ScenarioReport,
    seed: int,
    profile: Profile,
    server: str,
) -> None:
    """The open connections to one server stop carrying bytes for good (no FIN, no RST: a
    partition, a dead host, a NAT that forgot them), while new connections work: the daemon
    must notice within _DEAD_CONNECTION_S and reconnect, and no query of its may hang."""
    if server == "redis":
        parts = urlsplit(redis_url)
        target = (parts.hostname or "", parts.port or 6379)
    else:
        info = psycopg.conninfo.conninfo_to_dict(pg_dsn)
        target = (str(info.get("hostaddr") or info.get("host") or ""), int(str(info["port"])))
    if not target[0] or target[0].startswith("/") or urlsplit(redis_url).scheme != "redis":
        pytest.skip("the proxy forwards plain TCP to one address")
    with TcpProxy(target) as proxy:
        if server == "redis":
            address = f"127.0.0.1:{proxy.port}"
            url = urlunsplit(urlsplit(redis_url)._replace(netloc=address))
            # A connection that dies in the middle of staging is noticed after
            # redis.socket_timeout_s (10 s by default); within the budget.
            proxied = _settings(pg_dsn, url)
        else:
            dsn = psycopg.conninfo.make_conninfo(
                pg_dsn, host="127.0.0.1", hostaddr="127.0.0.1", port=str(proxy.port)
            )
            proxied = _settings(dsn, redis_url)
        direct = _settings(pg_dsn, redis_url)
        writer = _writer(pg_dsn, seed, profile, duration_s=3.0)
        connector = spawn_connector(proxied)
        connector.wait_for_checkpoint(direct, profile.catch_up_s)
        scenario.fault_kind = f"{server} blackhole"
        deadline = replace(profile, catch_up_s=_DEAD_CONNECTION_S)
        try:
            with _under_faults(pg_dsn, direct, writer, connector, scenario, deadline):
                time.sleep(1.0)
                scenario.faults = proxy.blackhole()
                assert scenario.faults > 0, "no connection was open to stall"
        except BaseException:
            if connector.alive:
                connector.kill()  # a stalled daemon may not answer SIGTERM
            raise

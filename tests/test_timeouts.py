"""Redis timeouts the connector sets itself: a short one for ordinary commands, a long one for
the atomic batch write, and a reconnect backoff that starts over once streaming resumed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis

from connector.sink.redis_client import client_for
from connector.testing.daemon import DaemonThread
from tests.reliability.proxy import TcpProxy
from tests.support import assert_index_equals_table, make_settings, synced

Start = Callable[..., DaemonThread]


def test_clients_use_the_configured_timeouts_and_no_hidden_retries(
    pg_dsn: str, redis_url: str
) -> None:
    settings = make_settings(
        pg_dsn, redis_url, redis={"connect_timeout_s": 1.5, "socket_timeout_s": 7.0}
    )
    client = client_for(settings.redis)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (1.5, 7.0)
    assert kwargs["retry"].get_retries() == 0  # a failed write is the connector's to retry
    client.close()


def test_a_batch_that_takes_redis_seconds_never_holds_it_and_lands_once(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """One batch (500 rows of 6 chunks at 1536 dimensions) takes Redis seconds to index, far
    beyond socket_timeout_s (0.3 s); it is staged in small pipelines, so no command of another
    client waits behind it that long, and it lands once, without a restart."""
    settings = make_settings(
        migrated_dsn,
        redis_url,
        redis={"socket_timeout_s": 0.3, "wait_aof_timeout_ms": 200},
        embedding={"provider": "hashing", "dimensions": 1536},
        pipeline={"batch_max_rows": 500},
    )
    body = " ".join(f"word{i} sentence number {i} of a long body." for i in range(80))
    with psycopg.connect(migrated_dsn, autocommit=True) as conn, conn.transaction():
        for i in range(500):
            conn.execute(
                "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)", [i, f"t{i}", body]
            )
    held = Held(redis_url).start()  # how long Redis stays busy with one command
    running = run_connector(settings, probes=True)
    synced(settings, migrated_dsn, timeout_s=120)
    held.stop()
    assert held.longest_s < 0.3, f"a probe waited {held.longest_s:.2f}s behind the batch"
    restarts = running.metric("connector_stream_restarts_total", reason="TimeoutError")
    assert not restarts, "a long batch write was abandoned and sent again"
    assert_index_equals_table(settings, migrated_dsn)


class Held(threading.Thread):
    """PINGs Redis from another connection: the longest wait is the longest single command."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=60)
        self.halt = threading.Event()
        self.longest_s = 0.0

    def start(self) -> Held:
        super().start()
        return self

    def run(self) -> None:
        while not self.halt.wait(0.02):
            started = time.monotonic()
            self.client.ping()
            self.longest_s = max(self.longest_s, time.monotonic() - started)

    def stop(self) -> None:
        self.halt.set()
        self.join(60)
        self.client.close()


def test_the_reconnect_backoff_starts_over_once_streaming_resumed(
    migrated_dsn: str, redis_url: str, run_connector: Start
) -> None:
    """Five short Redis outages in a row: each one is recovered from within seconds (the
    backoff does not keep doubling across outages the daemon recovered from)."""
    parts = urlsplit(redis_url)
    with TcpProxy((parts.hostname or "", parts.port or 6379)) as proxy:
        url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
        settings = make_settings(migrated_dsn, url)
        running = run_connector(settings)
        recoveries = []
        for i in range(5):
            proxy.cut()
            deadline = time.monotonic() + 10
            while running.connector.ready.is_set():  # the daemon notices the outage
                assert time.monotonic() < deadline, "the outage was not noticed"
                with psycopg.connect(migrated_dsn, autocommit=True) as conn:
                    conn.execute(
                        "INSERT INTO documents (id, title, body) VALUES (%s, 'x', 'y') "
                        "ON CONFLICT (id) DO UPDATE SET body = documents.body || 'y'",
                        [i],
                    )
                time.sleep(0.05)
            proxy.restore()
            restored = time.monotonic()
            assert running.connector.ready.wait(30), "did not recover"
            recoveries.append(time.monotonic() - restored)
        synced(settings, migrated_dsn)
        assert_index_equals_table(settings, migrated_dsn)
    assert max(recoveries) < 3.0, f"recovery times grew: {recoveries}"

"""`connector check` against the real servers: a good setup passes; each broken setting (on
Postgres, a table, Redis, the embedding model) is an ERROR naming the setting and the fix, and
exit 1; a bad configuration file is exit 2. `connector run` refuses to start on what `check`
calls an ERROR that the daemon could never get past (wal_level). And the memory estimate
`check` compares with maxmemory is the same on the same data, across Redis restarts."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis

from connector.cli import main
from connector.config import Settings
from connector.sink.layout import read_record
from connector.sink.memory import estimate_rebuild
from connector.source.migrate import apply_migrations
from connector.testing.config import write_config
from connector.testing.daemon import DaemonProcess, DaemonThread
from connector.testing.openai_server import FakeOpenAI
from connector.testing.services import PostgresServer, RedisStackServer
from tests.support import cli, keys_of, make_settings, openai_settings, synced

ROWS = 300


def fill(dsn: str, rows: int = ROWS) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
            [(n, f"title {n}", f"row {n} says " + "words of a body " * 60) for n in range(rows)],
        )


def check(settings: Settings, folder: Path, *args: str) -> tuple[int, str]:
    """`connector check ARGS` in this process (the command line's own `main`)."""
    config = write_config(folder / "connector.toml", settings)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", "--config", str(config), *args])
    assert code in (0, 1), out.getvalue()
    return code, out.getvalue()


def findings(settings: Settings, folder: Path) -> tuple[int, list[dict[str, str]]]:
    code, out = check(settings, folder, "--json", "--offline")
    return code, json.loads(out)["findings"]


def the_error(found: list[dict[str, str]], setting: str) -> dict[str, str]:
    errors = [f for f in found if f["level"] == "ERROR"]
    named = [f for f in errors if setting in f["setting"]]
    assert named, f"no ERROR for {setting}: {errors}"
    return named[0]


def test_a_good_setup_passes_and_says_what_each_setting_means(
    migrated_dsn: str, redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fill(migrated_dsn)
    chat = {"base_url": fake_openai.url, "api_key": "sk-test-not-a-real-key", "model": "gpt-x"}
    settings = make_settings(
        migrated_dsn, redis_url, embedding=openai_settings(fake_openai), chat=chat
    )
    code, out = check(settings, tmp_path)
    assert code == 0, out
    assert "ERROR" not in out
    for words in ("wal_level = logical", "wal2json = installed", "maxmemory-policy = noeviction",
                  "embedding.model (openai) = text-embedding-3-small, 64 dimensions",
                  "chat.model = gpt-x", "ready for `connector run`"):  # fmt: skip
        assert words in out, out
    assert [r.path for r in fake_openai.requests] == ["/v1/embeddings", "/v1/chat/completions"]

    code, out = check(settings, tmp_path, "--json", "--offline")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["errors"] == 0
    assert report["warnings"] == sum(f["level"] == "WARNING" for f in report["findings"])
    for found in report["findings"]:
        assert set(found) == {"level", "area", "setting", "value", "meaning", "fix"}
        assert found["level"] in ("OK", "WARNING", "SKIPPED"), found
    assert {f["setting"] for f in report["findings"] if f["level"] == "SKIPPED"} == {
        "embedding.model",
        "chat.model",
    }
    assert len(fake_openai.requests) == 2  # --offline asked no provider


def test_a_wrong_model_dimension_is_an_error_naming_the_setting(
    migrated_dsn: str, redis_url: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # Not a text-embedding-3 model: the dimensions are not sent, the server answers with 64.
    embedding = openai_settings(fake_openai, model="my-embedder", dimensions=128)
    code, out = check(make_settings(migrated_dsn, redis_url, embedding=embedding), tmp_path)
    assert code == 1
    line = next(line for line in out.splitlines() if line.strip().startswith("ERROR"))
    assert "embedding.model" in line and "64 dimensions" in line, out
    assert "fix: set it to the model's size" in out, out


def test_postgres_with_wal_level_replica_is_an_error_and_run_refuses_to_start(
    redis_url: str, tmp_path: Path
) -> None:
    root = Path(tempfile.mkdtemp(prefix="connector-check-"))
    root.chmod(0o755)  # reachable by the user Postgres runs as
    server = PostgresServer(root / "replica")
    try:
        server.init()
        server.configure(wal_level="replica")
        server.start()
        apply_migrations(server.dsn())
        settings = make_settings(server.dsn(), redis_url)
        code, found = findings(settings, tmp_path)
        assert code == 1
        wal = the_error(found, "wal_level")
        assert wal["value"] == "replica" and "wal_level = logical" in wal["fix"]
        assert next(f for f in found if f["setting"] == "wal2json")["level"] == "SKIPPED"
        started = cli(tmp_path / "connector.toml", "run")  # it used to retry forever
        assert started.returncode == 2, started.stderr
        assert "wal_level = replica" in started.stderr and "wal_level = logical" in started.stderr
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_a_role_without_replication_is_an_error(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    role = f"norepl_{tmp_path.name[-8:].lower().replace('-', '_')}"
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOREPLICATION")
        conn.execute(f"GRANT SELECT ON documents TO {role}")
    try:
        dsn = psycopg.conninfo.make_conninfo(migrated_dsn, user=role)
        code, found = findings(make_settings(dsn, redis_url), tmp_path)
        assert code == 1
        assert the_error(found, "role REPLICATION")["fix"].startswith(
            f"ALTER ROLE {role} REPLICATION"
        )
    finally:
        with psycopg.connect(migrated_dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_a_table_without_a_primary_key_under_the_default_identity_is_an_error(
    migrated_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int, body text)")
    table: dict[str, Any] = {"name": "public.notes", "content": ["body"]}
    code, found = findings(make_settings(migrated_dsn, redis_url, [table]), tmp_path)
    assert code == 1
    refused = the_error(found, "tables[public.notes]")
    assert "has no primary key" in refused["meaning"]
    assert "REPLICA IDENTITY FULL" in refused["fix"] and "key = [...]" in refused["fix"]


def test_an_evicting_redis_is_an_error(
    migrated_dsn: str, redis_url: str, admin: redis.Redis, tmp_path: Path
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    code, found = findings(make_settings(migrated_dsn, redis_url), tmp_path)
    assert code == 1
    policy = the_error(found, "maxmemory-policy")
    assert policy["value"].startswith("allkeys-lru") and "evict" in policy["meaning"]
    assert "CONFIG SET maxmemory-policy noeviction" in policy["fix"]


def test_maxmemory_below_the_estimated_index_is_an_error(
    migrated_dsn: str, redis_url: str, admin: redis.Redis, tmp_path: Path
) -> None:
    fill(migrated_dsn)
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", str(used + (256 << 10)))  # the index needs about 2 MB
    code, found = findings(make_settings(migrated_dsn, redis_url), tmp_path)
    assert code == 1
    memory = the_error(found, "maxmemory")
    assert "the indexes need about" in memory["meaning"]
    assert memory["fix"].startswith("raise maxmemory to at least")


def test_a_bad_configuration_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\nno_such_setting = 1\n')
    done = cli(bad, "check")  # the real command line, to its exit status
    assert done.returncode == 2
    assert "no_such_setting" in done.stderr


def test_the_memory_estimate_is_the_same_on_the_same_data(
    migrated_dsn: str, run_connector: Callable[..., DaemonThread], tmp_path: Path
) -> None:
    """The same index, measured after three restarts of its Redis (each with a new hash seed,
    which chose the fields Redis's sampled MEMORY USAGE measured): within 2%."""
    server = RedisStackServer(tmp_path / "redis")
    server.start()
    try:
        settings = make_settings(migrated_dsn, server.url)
        fill(migrated_dsn, 200)
        running = run_connector(settings)
        synced(settings, migrated_dsn)
        running.finish()
        estimates = []
        for restart in range(4):
            if restart:
                server.restart()
            with redis.Redis.from_url(server.url, protocol=3) as client:
                _wait_loaded(client)
                record = read_record(client, "documents")
                assert record is not None
                _wait_indexed(client, record.current.name)
                estimates.append(estimate_rebuild(client, record.current, 1.0).needed)
        assert max(estimates) <= min(estimates) * 1.02, estimates
    finally:
        server.stop()


def _wait_loaded(client: redis.Redis) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return
        except redis.BusyLoadingError:  # reading its AOF
            assert time.monotonic() < deadline, "Redis did not load its AOF"
            time.sleep(0.05)


def _wait_indexed(client: redis.Redis, index: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            info = client.execute_command("FT.INFO", index)  # type: ignore[no-untyped-call]
            if float(info.get(b"percent_indexed", 0)) >= 1:
                return
        except redis.ResponseError:  # still loading
            pass
        assert time.monotonic() < deadline, f"{index} not indexed again"
        time.sleep(0.05)


def test_a_warning_at_start_is_logged_once_and_the_daemon_runs(
    migrated_dsn: str, tmp_path: Path
) -> None:
    """What `check` calls a WARNING does not stop `connector run`: it is logged once."""
    server = RedisStackServer(tmp_path / "redis")
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.config_set("appendonly", "no")  # redis.wait_aof has nothing to wait for
        settings = make_settings(migrated_dsn, server.url)
        with DaemonProcess.for_settings(settings, tmp_path) as daemon:
            fill(migrated_dsn, 20)
            assert keys_of(synced(settings, migrated_dsn, 60), "row 7 says", k=1) == [("7",)]
        assert daemon.count("no append-only file") == 1, daemon.tail()
        assert daemon.count("Fix: CONFIG SET appendonly yes") == 1, daemon.tail()
    finally:
        server.stop()

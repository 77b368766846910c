"""Bad input on the command line: one line that names the problem and the fix, exit status 2,
never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from connector.testing.config import write_config
from connector.testing.services import free_port
from tests.support import make_settings

FIELDS = "source (tag), tags (tag), updated_at (numeric)"

BAD = [
    (["search", "x", "--filter", "nosuch=1"], f"unknown field 'nosuch' (fields: {FIELDS})"),
    (["search", "x", "--filter", "updated_at=soon"], "takes a number N or a range LOW..HIGH"),
    (["search", "x", "--filter", "updated_at=1..x"], "takes a number N or a range LOW..HIGH"),
    (["search", "x", "--filter", "source"], f"use FIELD=VALUE (fields: {FIELDS})"),
    (["search", "x", "--filter", "source="], "tag values must not be empty"),
    (["search", "x", "--k", "0"], "argument --k: 0 is not positive"),
    (["search", "x", "--k", "many"], "argument --k: 'many' is not a whole number"),
    (["search", "x", "--timeout", "-1"], "argument --timeout: -1 is not positive"),
    (["search", "x", "--min-lsn", "yesterday"], "argument --min-lsn: not an LSN"),
    (["search", "x", "--index", "nope"], "unknown index 'nope' (configured: documents)"),
    (["ask", "q", "--filter", "nosuch=1"], "unknown field 'nosuch'"),
    (["ask", "q", "--k", "-3"], "argument --k: -3 is not positive"),
    (["replay", "--from-lsn", "12"], "argument --from-lsn: not an LSN"),
    (["resync", "--table", "nosuch"], "table nosuch is not configured (configured: "),
    (["verify", "--table", "nosuch"], "table nosuch is not configured (configured: "),
    (["demo", "--limit", "0"], "argument --limit: 0 is not positive"),
    (["status", "--unknown-flag"], "unrecognized arguments: --unknown-flag"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
]


@pytest.fixture
def config(pg_dsn: str, redis_url: str, tmp_path: Path) -> Path:
    return write_config(tmp_path / "connector.toml", make_settings(pg_dsn, redis_url))


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _m in BAD])
def test_bad_arguments_get_one_line_and_exit_2(config: Path, args: list[str], message: str) -> None:
    with_config = (
        [*args, "--config", str(config)] if args[0] not in ("demo", "nosuchcommand") else args
    )
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", *with_config],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert message in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(("error:", "connector")), done.stderr


def test_a_config_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", "run", "--config", str(missing)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == f"error: config file {missing} does not exist (--config / CONNECTOR_CONFIG)"
    )


def test_an_unreachable_server_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", "migrate", "--dsn",
         "postgresql://nobody:secret-pw@127.0.0.1:1/app?connect_timeout=2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: Postgres: ") and len(done.stderr.splitlines()) == 1
    assert "secret-pw" not in done.stderr


def test_a_busy_port_is_one_line_naming_the_setting(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    probes = {"metrics_port": port, "metrics_host": "127.0.0.1"}
    settings = make_settings(pg_dsn, redis_url, observability=probes)
    config = write_config(tmp_path / "connector.toml", settings)
    command = [sys.executable, "-m", "connector.cli"]
    log = tmp_path / "serve.log"
    with log.open("w") as output:  # the API on the port: it serves there
        first = subprocess.Popen(
            [*command, "serve", "--port", str(port), "--config", str(config)],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert first.poll() is None and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        for args, setting in (
            (["serve", "--port", str(port)], "set --port or serve.port (CONNECTOR_SERVE__PORT)"),
            (["run"], "set observability.metrics_port (CONNECTOR_OBSERVABILITY__METRICS_PORT)"),
        ):
            done = subprocess.run([*command, *args, "--config", str(config)],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: cannot listen on"), lines
            assert f"127.0.0.1:{port}: the port is in use" in lines[0] and setting in lines[0]
    finally:
        first.send_signal(signal.SIGTERM)  # uvicorn ends by raising the signal it caught
        assert first.wait(30) in (0, -signal.SIGTERM), log.read_text()
    assert f"serving on http://127.0.0.1:{port}" in log.read_text()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

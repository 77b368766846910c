"""The connector daemon, started by tests and benchmarks, in one of two ways:

- `DaemonThread`: the `Connector` in a thread of this process, so the caller can reach into it
  (its embedder's stats, its applier), optionally with real metrics served with /healthz and
  /readyz on a loopback port (`probes`), as `connector run` serves them;
- `DaemonProcess`: `python -m connector.cli run --config FILE` as a child process, its output
  in a log file: the real daemon, which can be killed (SIGKILL) or stopped (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psycopg
import redis

from connector.config import ENV_PREFIX, Settings
from connector.embed import make_embedder
from connector.embed.base import Embedder
from connector.flow.daemon import Connector
from connector.metrics import HealthServer, Metrics
from connector.sink.checkpoint import read_checkpoint
from connector.sink.redis_client import client_for
from connector.source.slots import slot_info
from connector.testing.config import write_config

# --------------------------------------------------------------------------- in a thread


class DaemonThread:
    """A Connector running in a thread of this process. With no `embedder` it makes (and
    closes) the one the settings name; with `probes`, it has real metrics and a HealthServer
    (`probe_url`, `probe`, `metric`)."""

    def __init__(
        self, settings: Settings, embedder: Embedder | None = None, probes: bool = False
    ) -> None:
        self.settings = settings
        self._owns_embedder = embedder is None
        self.embedder = embedder or make_embedder(settings.embedding, client_for(settings.redis))
        self.metrics = Metrics() if probes else None
        self.connector = Connector(settings, self.embedder, self.metrics)
        self.server: HealthServer | None = None
        if self.metrics is not None:
            made = self.embedder
            self.metrics.track_embedder(lambda: made.stats, made.provider, made.model)
            self.server = HealthServer(self.metrics, self.connector.is_ready, "127.0.0.1", 0)
            self.server.start()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="connector", daemon=True)
        self._started = self._closed = False

    def _run(self) -> None:
        try:
            self.connector.run()
        except BaseException as exc:
            self.errors.append(exc)

    def start(self, timeout_s: float = 60) -> DaemonThread:
        """Start the thread and wait until the connector is ready (streaming); raises what the
        connector raised if it failed first."""
        self._started = True
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.connector.ready.wait(0.05):
            if self.errors:
                raise self.errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError("connector did not become ready")
        return self

    def stop(self) -> None:
        """Stop the connector and wait for its thread; raises what the connector raised."""
        self.connector.stop()
        self.thread.join(30)
        self.close()
        if self.thread.is_alive():
            raise TimeoutError("connector did not stop")
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        """Release what it holds besides the thread: its own embedder and the probe server."""
        if self._closed:
            return
        self._closed = True
        if self._owns_embedder:
            self.embedder.close()
        if self.server is not None:
            self.server.stop()

    def finish(self) -> None:
        """At the end of a test: stop it if it still runs, else just release what it holds."""
        if self.thread.is_alive():
            self.stop()
        else:
            self.close()

    def __enter__(self) -> DaemonThread:
        return self if self._started else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()

    @property
    def probe_url(self) -> str:
        if self.server is None:
            raise RuntimeError("started without probes")
        return f"http://127.0.0.1:{self.server.port}"

    def probe(self, path: str) -> tuple[int, str]:
        """GET a probe path: (status, body)."""
        try:
            with urllib.request.urlopen(self.probe_url + path, timeout=5) as response:  # noqa: S310
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
            exc.close()
            return exc.code, body

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the scraped /metrics, or None when absent."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.probe("/metrics")[1]):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None


# --------------------------------------------------------------------------- as a process


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without CONNECTOR_* settings (they would override the config file),
    plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra or {})
    return env


class DaemonProcess:
    """`python -m connector.cli run --config FILE` as a child process, its output appended to
    `log`. It can be started again after it was killed or stopped (`starts`, `kills` count)."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.config, self.log, self.cwd, self.settings = config, log, cwd, settings
        self.env = child_environment(env)
        self.process: subprocess.Popen[bytes] | None = None
        # Wraps the command line (memcap.MemoryCap.wrap: run it inside a memory cgroup).
        self.wrap: Callable[[list[str]], list[str]] | None = None
        self.starts = 0
        self.kills = 0
        self.started_at = 0.0  # time.perf_counter() of the last start

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        folder: Path,
        name: str = "connector",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> DaemonProcess:
        """One with its config (`name`.toml) and its log (`name`.log) in `folder`."""
        config = write_config(folder / f"{name}.toml", settings)
        return cls(config, folder / f"{name}.log", env, cwd, settings)

    def start(self) -> DaemonProcess:
        if self.alive:
            raise RuntimeError("the connector is already running")
        with self.log.open("ab") as out:
            self.started_at = time.perf_counter()
            argv = [sys.executable, "-m", "connector.cli", "run", "--config", str(self.config)]
            self.process = subprocess.Popen(
                self.wrap(argv) if self.wrap is not None else argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        self.starts += 1
        return self

    @property
    def running(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("the connector process is not started")
        return self.process

    @property
    def pid(self) -> int:
        return self.running.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # Popen's own calls, for a caller that handles the process itself.
    def poll(self) -> int | None:
        return self.running.poll()

    def wait(self, timeout_s: float | None = None) -> int:
        return self.running.wait(timeout_s)

    def send_signal(self, sig: int) -> None:
        self.running.send_signal(sig)

    def terminate(self) -> None:
        self.running.terminate()

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        process = self.running
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.process = None
        self.kills += 1

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit status (None when it had to be killed, or was not
        started)."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None

    def __enter__(self) -> DaemonProcess:
        return self if self.alive else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ its log

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 6000) -> str:
        return self.text()[-chars:]

    def count(self, text: str) -> int:
        return self.text().count(text)

    def lines(self, *needles: str) -> list[str]:
        """The log lines holding any of `needles`."""
        return [line for line in self.text().splitlines() if any(n in line for n in needles)]

    @property
    def reconnects(self) -> int:
        """How often the daemon tore its stream down and reconnected."""
        return self.count("; reconnecting in ")

    def resyncs(self) -> list[str]:
        """The log lines where the daemon gave up on its checkpoint and copied the tables again."""
        return self.lines("dropping slot", "resynchronising")

    # ------------------------------------------------------------------ waiting for it

    def assert_alive(self, when: str = "") -> None:
        """Raise AssertionError, with the log's tail, if the process was started and exited."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the connector exited ({self.process.returncode}) {when}:\n{self.tail()}"
            )

    def wait_until(
        self, predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
    ) -> None:
        """Poll `predicate` until it holds; fails early if the daemon exits meanwhile."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self.assert_alive(f"while waiting until {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout_s}s waiting until {what}:\n{self.tail()}"
                )
            time.sleep(poll_s)

    def wait_for_checkpoint(
        self,
        settings: Settings | None = None,
        timeout_s: float = 60.0,
        streaming: bool = False,
        poll_s: float = 0.05,
    ) -> float:
        """Until the initial copy is done (the checkpoint exists) and, with `streaming`, the
        slot is held by a walsender; returns when (time.perf_counter) the checkpoint was first
        seen. `settings` must reach the servers directly (default: the daemon's own)."""
        settings = settings or self.settings
        if settings is None:
            raise ValueError("no settings to find the checkpoint with")
        slot = settings.postgres.slot
        client = redis.Redis.from_url(settings.redis.url.get_secret_value())
        dsn = settings.postgres.dsn.get_secret_value()
        conn = psycopg.connect(dsn, autocommit=True) if streaming else None
        seen = 0.0

        def ready() -> bool:
            nonlocal seen
            if not seen and read_checkpoint(client, slot) is not None:
                seen = time.perf_counter()
            if not seen or conn is None:
                return bool(seen)
            info = slot_info(conn, slot)
            return info is not None and info.active

        try:
            what = "the connector streams" if streaming else "the initial copy is done"
            self.wait_until(ready, timeout_s, what, poll_s)
        finally:
            client.close()
            if conn is not None:
                conn.close()
        return seen


def spawn(config: Path, log: Path, env: dict[str, str] | None = None) -> DaemonProcess:
    """The daemon for `config`, started, its output appended to `log`."""
    return DaemonProcess(config, log, env).start()

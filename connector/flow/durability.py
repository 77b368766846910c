"""The durability thread: it lets the reader confirm an applied LSN to Postgres only once Redis
has it on disk (WAITAOF), and holds confirmations back by the replay window."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import redis

from connector.core.lsn import Lsn
from connector.sink.redis_client import wait_aof

log = logging.getLogger(__name__)


class Durability(threading.Thread):
    """Confirms an applied LSN only once Redis has it on disk (WAITAOF), or at once without AOF."""

    def __init__(
        self,
        client: redis.Redis,
        wait_aof: bool,
        timeout_ms: int,
        stop: threading.Event,
        window_s: float = 0.0,
        window_bytes: int = 0,
        marker: str = "connector:durable",
    ) -> None:
        super().__init__(name="connector-durability", daemon=True)
        self.client = client
        self.marker = marker
        self.window_s = window_s
        self.window_bytes = window_bytes
        self._history: deque[tuple[float, Lsn]] = deque()
        self._confirmable = Lsn(0)
        self.wait_aof = wait_aof
        self.timeout_ms = timeout_ms
        self.stop = stop
        self.error: BaseException | None = None
        self._applied = Lsn(0)
        self.durable = Lsn(0)
        self._cond = threading.Condition()

    def applied(self, lsn: Lsn) -> None:
        with self._cond:
            if lsn > self._applied:
                self._applied = lsn
                self._cond.notify()

    def wake(self) -> None:
        """Let the thread see its stop event now, not at its next wait's end."""
        with self._cond:
            self._cond.notify()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                with self._cond:
                    if self._applied <= self.durable:
                        self._cond.wait(0.25)
                    target = self._applied
                if target > self.durable and self._wait(target):
                    self.durable = target
                    with self._cond:
                        self._history.append((time.monotonic(), target))
        except BaseException as exc:
            self.error = exc
            self.stop.set()

    def _wait(self, target: Lsn) -> bool:
        if not self.wait_aof:
            return True
        if not wait_aof(self.client, self.marker, self.timeout_ms):
            log.warning(
                "Redis did not fsync its AOF within %d ms; holding LSN %s", self.timeout_ms, target
            )
            return False
        return True

    def confirmable(self) -> Lsn:
        """The newest durable LSN that is also outside the replay window (what Postgres may
        release): durable at least `window_s` ago and `window_bytes` behind the newest."""
        now = time.monotonic()
        with self._cond:
            while self._history:
                at, lsn = self._history[0]
                if now - at < self.window_s or self.durable.value - lsn.value < self.window_bytes:
                    break
                self._confirmable = max(self._confirmable, lsn)
                self._history.popleft()
        return self._confirmable

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything applied is durable (for a clean shutdown)."""
        deadline = time.monotonic() + timeout_s
        while self.durable < self._applied and time.monotonic() < deadline:
            if self.error is not None:
                return False
            time.sleep(0.01)
        return self.durable >= self._applied

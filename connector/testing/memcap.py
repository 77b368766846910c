"""A memory cap on the daemon subprocess, to prove its memory bounds (tests/bounds/, bench/).

Where the machine allows one (root, a writable memory cgroup) the process runs in a child
memory cgroup of this process's own, with the cap as its limit: the kernel OOM-kills it past the
cap, as Kubernetes does to a pod. cgroup v1 (`memory.limit_in_bytes`) and v2 (`memory.max`) are
both handled. Elsewhere the cap is enforced by sampling: the process's RSS is read every 20 ms
and the process is killed (SIGKILL) when it passes the cap, which a test then sees as a death.

Either way `peak_mb()` is the process's own peak RSS (`VmHWM`), which `reset_peak()` sets back
to the current RSS (`/proc/PID/clear_refs`, as root), so a test can measure one phase at a time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from types import TracebackType

from connector.testing.daemon import DaemonProcess

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_SAMPLE_S = 0.02
MB = 1 << 20


def process_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in kB (empty when it is gone)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(rest.split()[0])
    return found


class MemoryCap:
    """Caps one process (and its children) at `limit_mb`; `wrap` its command line, then
    `watch` its pid. `how` says which mechanism enforces the cap."""

    def __init__(self, limit_mb: int, name: str = "connector-memcap") -> None:
        self.limit_mb = limit_mb
        self.group: Path | None = None
        self.version = 0  # 1 or 2: a cgroup; 0: sampled RSS
        self.pid: int | None = None
        self.sampled_peak_kb = 0
        self.killed_by_sampler = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with contextlib.suppress(OSError):
            self._make_group(f"{name}-{os.getpid()}-{time.monotonic_ns()}")

    @property
    def how(self) -> str:
        if self.version:
            return f"memory cgroup v{self.version} {self.group}"
        return "RSS sampled every 20 ms, SIGKILL past the cap (no writable memory cgroup)"

    # ------------------------------------------------------------------ the cgroup

    def _make_group(self, name: str) -> None:
        limit = str(self.limit_mb * MB)
        v1 = _own_group_v1()
        if v1 is not None and (v1 / "memory.limit_in_bytes").exists():
            group = v1 / name
            group.mkdir()
            try:
                (group / "memory.limit_in_bytes").write_text(limit)
                with contextlib.suppress(OSError):  # no swap to fall back on (if accounted)
                    (group / "memory.memsw.limit_in_bytes").write_text(limit)
            except OSError:
                group.rmdir()
                raise
            self.group, self.version = group, 1
            return
        v2 = _own_group_v2()
        if v2 is not None and "memory" in (v2 / "cgroup.controllers").read_text().split():
            group = v2 / name
            group.mkdir()
            try:
                (group / "memory.max").write_text(limit)
                with contextlib.suppress(OSError):
                    (group / "memory.swap.max").write_text("0")
            except OSError:
                group.rmdir()
                raise
            self.group, self.version = group, 2

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run inside the cgroup: a shell moves itself in, then execs it (same pid)."""
        if self.group is None:
            return argv
        procs = str(self.group / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def oom_kills(self) -> int:
        """How many processes the kernel killed in the cgroup for passing the cap."""
        if self.group is None:
            return int(self.killed_by_sampler)
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError):
            for line in (self.group / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    # ------------------------------------------------------------------ the process

    def watch(self, pid: int) -> MemoryCap:
        """Follow `pid` (sampling its RSS; killing it past the cap when no cgroup does)."""
        self.pid = pid
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="memcap", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        pid = self.pid
        assert pid is not None
        while not self._stop.wait(_SAMPLE_S):
            memory = process_memory_kb(pid)
            if not memory:
                return
            rss = memory.get("VmRSS", 0)
            self.sampled_peak_kb = max(self.sampled_peak_kb, rss)
            if self.group is None and rss > self.limit_mb * 1024:
                self.killed_by_sampler = True
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                return

    def rss_mb(self) -> float:
        return process_memory_kb(self._pid()).get("VmRSS", 0) / 1024

    def peak_mb(self) -> float:
        """The process's peak RSS since it started or since `reset_peak`, in MB."""
        memory = process_memory_kb(self._pid())
        return max(memory.get("VmHWM", 0), memory.get("VmRSS", 0)) / 1024

    def reset_peak(self) -> None:
        """Set the peak RSS back to the current RSS (needs root; else sampling's peak)."""
        self.sampled_peak_kb = 0
        with contextlib.suppress(OSError):
            Path(f"/proc/{self._pid()}/clear_refs").write_text("5")

    def _pid(self) -> int:
        if self.pid is None:
            raise RuntimeError("MemoryCap.watch(pid) was not called")
        return self.pid

    def close(self) -> None:
        """Stop sampling and remove the cgroup (once the process in it is gone)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self.group is None:
            return
        deadline = time.monotonic() + 10
        while self.group.exists():
            try:
                self.group.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> MemoryCap:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _own_group(controller: str) -> str | None:
    """This process's cgroup path in the hierarchy of `controller` ("" for v2)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, controllers, path = line.split(":", 2)
            if controllers.split(",") == [controller] or controller in controllers.split(","):
                return path
    return None


def _own_group_v1() -> Path | None:
    path = _own_group("memory")
    root = _CGROUP_ROOT / "memory"
    if path is None or not root.is_dir():
        return None
    return root / path.lstrip("/")


def _own_group_v2() -> Path | None:
    path = _own_group("")
    if path is None:
        return None
    for mount in (_CGROUP_ROOT, _CGROUP_ROOT / "unified"):
        if (mount / "cgroup.controllers").exists():
            return mount / path.lstrip("/")
    return None


class CappedDaemon:
    """The real daemon (`connector run`, a subprocess) under a MemoryCap, for a `with` block:
    started, watched, and at the end stopped and its cgroup removed."""

    def __init__(self, daemon: DaemonProcess, limit_mb: int) -> None:
        self.daemon = daemon
        self.cap = MemoryCap(limit_mb)
        daemon.wrap = self.cap.wrap

    def __enter__(self) -> CappedDaemon:
        self.daemon.start()
        self.pid = self.daemon.pid
        self.cap.watch(self.pid)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.daemon.stop()
        finally:
            self.cap.close()

    def assert_healthy(self, when: str) -> None:
        """Alive, the same process as at the start (never OOM-killed nor restarted), under
        the cap."""
        self.daemon.assert_alive(when)
        assert self.daemon.pid == self.pid and self.daemon.starts == 1, f"restarted {when}"
        assert self.cap.oom_kills() == 0, f"OOM-killed {when} ({self.cap.how})"
        peak = self.cap.peak_mb()
        assert peak <= self.cap.limit_mb, f"peak RSS {peak:.0f} MB over the cap {when}"

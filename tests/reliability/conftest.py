"""Fixtures of the fault-injection suite, and the table of scenarios printed at the end."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from connector.config import Settings
from connector.testing.daemon import DaemonProcess
from tests.reliability.harness import Profile, ScenarioReport

_REPORTS = pytest.StashKey[list[ScenarioReport]]()
_SEED = pytest.StashKey[int]()
_OUTCOME = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(scope="session")
def profile() -> Profile:
    return Profile.from_environment()


@pytest.fixture(scope="session")
def suite_seed(pytestconfig: pytest.Config) -> int:
    """Random per session, printed with the table; CONNECTOR_RELIABILITY_SEED replays one."""
    if _SEED not in pytestconfig.stash:
        chosen = os.environ.get("CONNECTOR_RELIABILITY_SEED")
        pytestconfig.stash[_SEED] = int(chosen) if chosen else random.randrange(1 << 30)
    return pytestconfig.stash[_SEED]


@pytest.fixture
def seed(suite_seed: int, request: pytest.FixtureRequest) -> int:
    """One seed per scenario, derived from the session's."""
    return random.Random(f"{suite_seed}:{request.node.name}").randrange(1 << 30)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_OUTCOME, {})[report.when] = report
    return report


def _outcome(item: pytest.Item) -> str:
    reports = item.stash.get(_OUTCOME, {})
    call = reports.get("call")
    setup = reports.get("setup")
    if setup is not None and setup.skipped:
        return "skipped"
    if call is None:
        return "error"
    if hasattr(call, "wasxfail"):
        return "xfail" if call.skipped else "XPASS"
    return call.outcome


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[ScenarioReport]:
    """The scenario's row in the final table, filled by the test (also when it fails)."""
    report = ScenarioReport(request.node.name.removeprefix("test_"))
    started = time.monotonic()
    yield report
    report.seconds = time.monotonic() - started
    report.outcome = _outcome(request.node)
    request.config.stash.setdefault(_REPORTS, []).append(report)


@pytest.fixture
def spawn_connector(pg_dsn: str, tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Starts connector daemons as child processes, each with its config and log in a folder of
    its own; any still running at the end is stopped (before `pg_dsn` drops the database, which
    first waits for their walsenders to let go of the slots)."""
    made: list[DaemonProcess] = []

    def spawn(settings: Settings, env: dict[str, str] | None = None) -> DaemonProcess:
        folder = tmp_path / f"connector-{len(made)}"
        folder.mkdir()
        process = DaemonProcess.for_settings(settings, folder, env=env)
        made.append(process)
        return process.start()

    yield spawn
    for process in made:
        process.stop(timeout_s=20)  # SIGKILL when SIGTERM was not enough


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    reports = config.stash.get(_REPORTS, [])
    if not reports:
        return
    mode = "soak (CONNECTOR_SOAK=1)" if Profile.from_environment().soak else "default"
    seed = config.stash.get(_SEED, None)
    terminalreporter.section("reliability scenarios")
    terminalreporter.write_line(
        f"mode: {mode}; seed: {seed} (replay with CONNECTOR_RELIABILITY_SEED={seed})"
    )
    header = (
        "scenario",
        "changes written",
        "faults injected",
        "drift found (missing/stale/orphaned)",
        "dead letters",
        "reconnects",
        "catch-up s",
        "seconds",
        "result",
    )
    rows = [
        (
            r.scenario,
            str(r.changes),
            f"{r.faults} {r.fault_kind}".strip(),
            r.drift,
            "-" if r.dead_letters is None else str(r.dead_letters),
            "-" if r.reconnects is None else str(r.reconnects),
            "-" if r.catch_up_s is None else f"{r.catch_up_s:.1f}",
            f"{r.seconds:.1f}",
            r.outcome,
        )
        for r in reports
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(
            v.ljust(w) if i in (0, 2, 3, 8) else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    terminalreporter.write_line(line(header))
    terminalreporter.write_line("  ".join("-" * w for w in widths))
    for row in rows:
        terminalreporter.write_line(line(row))
    for r in reports:
        for note in r.notes:
            terminalreporter.write_line(f"  {r.scenario}: {note}")

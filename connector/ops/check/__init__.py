"""`connector check`: a preflight of both ends. It connects as the daemon would and reports each
setting it looked at, OK / WARNING / ERROR, with what was found, what it means and the fix.

- `postgres`: the server's settings (version, wal_level, slots and WAL senders free, how much
  WAL a slot may hold and for how long), the role, wal2json, the encoding, the session timeouts
  a copy meets, and each configured table (source.catalog's own checks first);
- `redis`: the connection, the versions (sink.engine), cluster mode, the eviction policy
  (sink.memory's verdict), AOF against `redis.wait_aof`, and each index: already there, built
  with other settings, its owner, its size against maxmemory (sink.memory's estimates);
- `providers`: the embedding and chat models answer one tiny request (not with `--offline`);
- `rules` and `report`: what each value means, and how it is said (pure).

It changes nothing (a temporary slot for wal2json is dropped at once). `connector run` runs the
offline part at start (`start_checks`): an ERROR refuses the start unless the daemon ran with it
before (then it is a warning), and each WARNING is logged once.
"""

from __future__ import annotations

import logging

import psycopg
import redis

from connector.config import Settings
from connector.errors import ConfigError
from connector.ops.check.postgres import check_postgres
from connector.ops.check.providers import check_providers
from connector.ops.check.redis import check_redis
from connector.ops.check.report import Finding, Report

__all__ = ["Finding", "Report", "check", "start_checks"]

log = logging.getLogger(__name__)


def check(settings: Settings, offline: bool = False, at_start: bool = False) -> Report:
    """Every finding about both ends and the providers (not the providers when `offline`).
    At start the wal2json test slot is left out: the daemon's own slot says it."""
    report = Report()
    samples = check_postgres(settings, report, probe_plugin=not at_start)
    check_redis(settings, report, samples)
    check_providers(settings, report, offline or at_start)
    return report


def start_checks(settings: Settings) -> Report:
    """`connector run`'s checks at start: raise ConfigError naming every ERROR that refuses
    the start (with its fix); log each warning once, and each ERROR the daemon ran with
    before. What the daemon says itself (a server it cannot reach yet, which it retries; an
    eviction policy) is left to it."""
    try:
        report = check(settings, offline=True, at_start=True)
    except (psycopg.Error, redis.RedisError, OSError) as exc:  # the daemon retries these
        log.warning("the start checks could not finish (%s): starting anyway", exc)
        return Report()
    refused = []
    for found in report.findings:
        if found.at_start == "daemon" or found.level in ("OK", "SKIPPED"):
            continue
        if found.level == "ERROR" and found.at_start == "refuse":
            refused.append(found)
        else:
            fix = f" Fix: {found.fix}" if found.fix else ""
            log.warning("%s = %s: %s.%s", found.setting, found.value, found.meaning, fix)
    if refused:
        said = "; ".join(f"{f.setting} = {f.value}: {f.meaning}. Fix: {f.fix}" for f in refused)
        raise ConfigError(
            f"the connector cannot start ({len(refused)} problem(s), `connector check` shows "
            f"them all): {said}"
        )
    return report

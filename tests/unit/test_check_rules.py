"""`connector check`'s rules and report without servers: what each value means, its level, and
the fix; how a refusal's message splits into meaning and fix; the exit status and the JSON."""

from __future__ import annotations

from connector.ops.check import rules
from connector.ops.check.report import Report, error, ok, split_fix, warning

MB = 1 << 20


def test_wal_level_other_than_logical_is_an_error_with_the_fix() -> None:
    assert rules.wal_level("logical").level == "OK"
    found = rules.wal_level("replica")
    assert found.level == "ERROR" and found.fix.startswith("ALTER SYSTEM SET wal_level = logical")
    assert found.at_start == "refuse"


def test_slots_and_senders_are_errors_only_when_none_is_free_for_the_connector() -> None:
    assert rules.replication_slots(10, 10, True, "s").level == "OK"  # its own slot exists
    full = rules.replication_slots(10, 10, False, "s")
    assert full.level == "ERROR" and full.at_start == "warn"
    assert rules.replication_slots(10, 9, False, "s").level == "OK"
    assert rules.wal_senders(5, 5, True).level == "OK"
    assert rules.wal_senders(5, 5, False).level == "ERROR"


def test_a_wal_keep_limit_below_the_connectors_own_warning_is_a_warning() -> None:
    assert rules.wal_keep_size(-1, 1 << 30).level == "OK"
    assert rules.wal_keep_size(512 * MB, 1 << 30).level == "WARNING"
    kept = rules.wal_keep_size(4 << 30, 1 << 30)
    assert kept.level == "OK" and "invalidated" in kept.meaning
    assert rules.in_base_unit("1024", "MB") == 1 << 30
    assert rules.in_base_unit("-1", "MB") == -1


def test_an_idle_slot_timeout_is_a_warning() -> None:
    assert rules.idle_slot_timeout(0).level == "OK"
    found = rules.idle_slot_timeout(3_600_000)
    assert (
        found.level == "WARNING" and "3600s" in found.value and "copies the tables" in found.meaning
    )


def test_aof_against_wait_aof() -> None:
    assert rules.aof(True, True, "everysec").level == "OK"
    assert rules.aof(True, False, "everysec").level == "WARNING"
    assert rules.aof(True, True, "no").level == "WARNING"
    assert rules.aof(False, False, "everysec").level == "OK"  # said to accept it
    assert rules.aof(True, None, None).level == "WARNING"  # CONFIG refused


def test_cluster_mode_must_match_the_setting() -> None:
    assert rules.cluster(False, False).level == "OK"
    assert rules.cluster(True, False).fix == "set redis.cluster = true"
    assert rules.cluster(False, True).fix == "set redis.cluster = false"


def test_maxmemory_against_what_the_indexes_add_and_a_rebuild_needs() -> None:
    assert rules.memory(0, 50 * MB, 10 * MB, 0).level == "OK"  # no limit
    assert rules.memory(100 * MB, 50 * MB, 10 * MB, 20 * MB).level == "OK"
    assert rules.memory(100 * MB, 50 * MB, 10 * MB, 45 * MB).level == "WARNING"
    short = rules.memory(100 * MB, 95 * MB, 10 * MB, 0)
    assert short.level == "ERROR" and short.at_start == "warn"
    assert short.fix.startswith("raise maxmemory to at least 105.0 MB")


def test_timeouts_the_sessions_set_are_a_warning() -> None:
    off = {"statement_timeout": 0, "lock_timeout": 0, "idle_in_transaction_session_timeout": 0}
    said = rules.session_timeouts(off, ["database statement_timeout=200ms"])
    assert said.level == "OK" and "statement_timeout=200ms" in said.meaning
    assert rules.session_timeouts({**off, "statement_timeout": 1000}, []).level == "WARNING"


def test_a_refusal_splits_into_meaning_and_fix_keeping_the_verb() -> None:
    meaning, fix = split_fix("table t has no primary key: add one, or set key = [...]")
    assert (meaning, fix) == ("table t has no primary key", "add one, or set key = [...]")
    meaning, fix = split_fix("t has REPLICA IDENTITY NOTHING: lost. Run: ALTER TABLE t ...")
    assert fix == "ALTER TABLE t ..."
    assert split_fix("no marker here") == ("no marker here", "see the message")


def test_the_report_exit_status_text_and_json() -> None:
    report = Report()
    report.add(ok("postgres", "wal_level", "logical", "fine"))
    report.add(warning("redis", "appendfsync", "no", "late", "everysec"))
    assert report.exit_code == 0
    report.add(error("redis", "maxmemory-policy", "allkeys-lru", "evicts", "noeviction"))
    assert report.exit_code == 1
    text = report.render()
    assert text.index("postgres") < text.index("redis")
    assert "ERROR    maxmemory-policy = allkeys-lru: evicts\n           fix: noeviction" in text
    assert text.endswith("1 error(s), 1 warning(s): `connector run` would refuse to start, "
                         "or fail later")  # fmt: skip
    shown = report.as_dict()
    assert (shown["ok"], shown["errors"], shown["warnings"]) == (False, 1, 1)
    assert shown["findings"][2] == {
        "level": "ERROR", "area": "redis", "setting": "maxmemory-policy", "value": "allkeys-lru",
        "meaning": "evicts", "fix": "noeviction",
    }  # fmt: skip

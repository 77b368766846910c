"""`connector check`'s probes of Redis: the connection with the configured credentials, the
versions, cluster mode, the memory policy (sink.memory's verdict), AOF, and each configured
index: already there and built with other settings (sink.layout's comparison, nothing changed),
its owner slot, and its size (sink.memory's estimates) against maxmemory."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis

from connector.config import Settings
from connector.core.chunking import Chunker
from connector.core.engine import TEXT_SCORER, integer_vectors
from connector.core.vectors import width
from connector.embed.tokenizer import get_encoding
from connector.errors import ConfigError
from connector.ops.check import rules
from connector.ops.check.postgres import TableSample
from connector.ops.check.report import Finding, Report, error, ok, refusal, warning
from connector.sink.engine import read_profile
from connector.sink.layout import (
    Built,
    Physical,
    built_from_settings,
    check_owner,
    compare,
    read_built,
    read_owner,
    read_record,
)
from connector.sink.layout.owners import refuse_claimed, refuse_foreign
from connector.sink.layout.records import index_info
from connector.sink.memory import estimate_rebuild, eviction_policy, judge_policy, new_index_bytes
from connector.sink.redis_client import aof_enabled, client_for, connect, text
from connector.sink.schema import check_server_supports

R = "redis"


def describe_url(url: str) -> str:
    """host:port/db of a Redis URL (never the password)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


def check_redis(settings: Settings, report: Report, samples: list[TableSample] | None) -> None:
    """Every Redis finding into `report` (`samples`: the tables, for the size of an index not
    built yet; None when Postgres could not be read)."""
    url = settings.redis.url.get_secret_value()
    plain = connect(url, settings.redis.model_copy(update={"cluster": False}))
    try:
        plain.ping()
    except redis.RedisError as exc:
        report.add(error(
            R, "redis.url", describe_url(url), f"cannot connect: {exc}",
            "check the host, port, user and password in redis.url (CONNECTOR_REDIS__URL) "
            "and that Redis accepts this client", at_start="daemon",
        ))  # fmt: skip
        plain.close()
        return
    with plain:
        report.add(_versions(plain))
        enabled = int(_info(plain, "cluster").get("cluster_enabled", 0) or 0) == 1
        report.add(rules.cluster(enabled, settings.redis.cluster))
        report.add(_policy(plain, settings))
        report.add(rules.aof(settings.redis.wait_aof, *_aof(plain)))
        if enabled != settings.redis.cluster:
            return
    with client_for(settings.redis) as client:
        adding, rebuild = _indexes(client, settings, report, samples)
        memory = _info(client, "memory")
        if not memory:
            report.add(warning(R, "maxmemory", "?", "INFO memory is refused on this server: "
                               "the indexes' size was not compared with maxmemory",
                               "give the connector's user INFO, or compare by hand"))  # fmt: skip
            return
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        report.add(rules.memory(limit, used, adding, rebuild))


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    """An INFO section ({} when the server or the user's ACL refuses it)."""
    try:
        return dict(client.info(section))
    except redis.ResponseError:
        return {}


def _versions(client: redis.Redis) -> Finding:
    """The engine profile (sink.engine) and what it changes for the connector (core.engine)."""
    profile = read_profile(client)
    value = f"Redis {profile.redis or '?'}, search {profile.search or '?'}"
    if profile.search is None:
        return error(
            R,
            "search module",
            f"Redis {profile.redis or '?'}, none",
            "no search module: the connector cannot make its vector index",
            "use Redis Stack (7.2+) or Redis 8 (its Query Engine is built in)",
        )
    vectors = (
        "INT8/UINT8 vectors available"
        if integer_vectors(profile.search)
        else "vector.type float32, float16 or bfloat16 (int8/uint8 need Redis 8)"
    )
    scorer = profile.default_scorer or "unknown"
    return ok(
        R,
        "search module",
        value,
        f"{vectors}; the engine's default text scorer is {scorer}, and the connector's "
        f"full-text queries name {TEXT_SCORER} so they rank alike on every version",
    )


def _policy(client: redis.Redis, settings: Settings) -> Finding:
    policy = eviction_policy(client)
    verdict = judge_policy(policy, settings.redis.allow_eviction)
    value = f"{policy or '?'} (redis.allow_eviction = {str(settings.redis.allow_eviction).lower()})"
    if verdict.level == "ok":
        return ok(
            R,
            "maxmemory-policy",
            value,
            "at maxmemory Redis refuses writes (the connector pauses), never evicts",
        )
    meaning, _, fix = verdict.message.partition("Fix: ")
    fix = fix or "CONFIG SET maxmemory-policy noeviction (and in redis.conf)"
    if verdict.level == "refuse":
        return Finding("ERROR", R, "maxmemory-policy", value, meaning.strip(), fix, "daemon")
    return Finding("WARNING", R, "maxmemory-policy", value, meaning.strip(), fix, "daemon")


def _aof(client: redis.Redis) -> tuple[bool | None, str | None]:
    try:
        fsync = {text(k): text(v) for k, v in client.config_get("appendfsync").items()}
    except redis.ResponseError:
        return None, None
    return aof_enabled(client), fsync.get("appendfsync")


def _indexes(
    client: redis.Redis, settings: Settings, report: Report, samples: list[TableSample] | None
) -> tuple[int, int]:
    """Each index's findings; the bytes the start adds (indexes not built, rebuilds it makes)
    and the largest rebuild a `connector reindex` would need."""
    adding, rebuild = 0, 0
    for alias, want in built_from_settings(settings, settings.embedding).items():
        record = read_record(client, alias)
        setting = f"index {alias}"
        try:
            check_server_supports(client, want.spec(alias, Physical(alias, alias)))
            if record is None:
                refuse_claimed(client, alias)
                refuse_foreign(client, alias)
            else:
                check_owner(client, record, settings.postgres.slot)
        except ConfigError as exc:
            report.add(refusal("index", setting, alias, str(exc), "refuse"))
            continue
        if record is None or index_info(client, record.current.name) is None:
            size = _new_size(want, samples)
            adding += size
            report.add(ok("index", setting, "not built yet",
                          "`connector run` creates it and copies its tables ("
                          + (f"about {rules.describe_bytes(size)})" if size else "empty now)")
                          ))  # fmt: skip
            continue
        owner = read_owner(client, record.current)
        report.add(ok("index", f"{setting} owner", owner.describe() if owner else "none recorded",
                      f"the first start of slot {settings.postgres.slot} records itself"
                      if owner is None else "this connector's slot writes it"))  # fmt: skip
        built = read_built(client, record.current, want.tables) or want
        ratio = (want.dimensions * width(want.vector.type)) / (
            built.dimensions * width(built.vector.type)
        )
        try:
            size = estimate_rebuild(client, record.current, ratio).needed
        except redis.ResponseError as exc:  # MEMORY USAGE or FT.INFO refused (managed Redis)
            report.add(warning("index", f"{setting} size", "?", f"not estimated: {exc}",
                               "compare the index's size with maxmemory by hand"))  # fmt: skip
            size = 0
        rebuild = max(rebuild, size)
        finding = _settings_change(settings, alias, built, want, size)
        adding += size if finding.level == "WARNING" else 0  # reindex.auto rebuilds at start
        report.add(finding)
    return adding, rebuild


def _settings_change(
    settings: Settings, alias: str, built: Built, want: Built, size: int
) -> Finding:
    change = compare(built, want)
    setting = f"index {alias} settings"
    if change.rebuild:
        why = "; ".join(change.rebuild)
        if settings.reindex.auto:
            return warning(
                "index",
                setting,
                why,
                f"`connector run` rebuilds it behind its alias at start (reindex.auto"
                f", about {rules.describe_bytes(size)} more while both exist); "
                "searches answer from the current index until the switch",
                "nothing, if that is what you want; else set the settings back",
            )
        return error("index", setting, why,
                     "built with other settings than these: `connector run` refuses to start",
                     f"`connector reindex --table {want.tables[0].qualified_name}` (rebuilds it "
                     "behind its alias while the connector runs), or [reindex] auto = true, "
                     "or set the settings back", at_start="daemon")  # fmt: skip
    if change.rewrite:
        return ok("index", setting, "metadata columns changed",
                  "`connector run` changes the index in place (FT.ALTER) and back-fills the "
                  "rows' new metadata from Postgres: no rebuild")  # fmt: skip
    return ok("index", setting, want.describe_model(), "built with these settings")


def _new_size(want: Built, samples: list[TableSample] | None) -> int:
    """About what an index not built yet takes: each table's rows x chunks per row (chunked as
    configured, from a sample of rows) x the bytes of a chunk."""
    vector_bytes = want.dimensions * width(want.vector.type)
    total = 0
    names = {t.qualified_name for t in want.tables}
    for sample in samples or []:
        if sample.settings.qualified_name not in names or sample.rows <= 0:
            continue
        table = sample.settings
        chunker = Chunker(get_encoding(want.model), table.chunk_tokens, table.chunk_overlap)
        chunks = [chunker.chunk(t) for t in sample.texts] or [["x" * 1024]]
        count = sum(len(c) for c in chunks) or 1
        text_bytes = sum(len(p.encode()) for c in chunks for p in c) / count
        total += new_index_bytes(sample.rows * count / len(chunks), text_bytes, vector_bytes)
    return total

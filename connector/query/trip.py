"""A search's reads in one round trip: a read-only Lua script runs the view's reads, the count
of a filtered KNN (which picks its policy), the queries, and the manifests of every row they
hit, in that order and at once.

Redis runs a script whole: the queries see the index exactly as of the view they read, and a
writer's pipeline waits for the search instead of the search waiting for a writer's pipeline
between its round trips (under ingest each round trip waited for one). On a Redis Cluster the
keys live on other nodes than the index: the same steps run as pipelines there (`pipelined`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.commands.core import Script

from connector.core.versions import Manifest
from connector.query.commands import Command
from connector.query.visibility import Docs, rows_of
from connector.sink.redis_client import command, search_docs, search_total

# ARGV: the reads, the count (none or one), the queries when the count is at most `limit` (or
# there is no count), the queries when it is more; each a list of commands (`_encoded`); then
# `limit` and the manifest key prefix of each table. Replies: the reads' (nil as false), the
# count's (false: none), the chosen queries', and (table, key, manifest) of each row hit.
_SCRIPT = """#!lua flags=no-writes
redis.setresp(3)
local at = 1
local function commands()
  local list = {}
  local count = tonumber(ARGV[at])
  at = at + 1
  for i = 1, count do
    local n = tonumber(ARGV[at])
    list[i] = {unpack(ARGV, at + 1, at + n)}
    at = at + 1 + n
  end
  return list
end
local function field(reply, name)  -- a map's value (its keys may be status replies)
  for k, v in pairs(reply['map']) do
    if k == name or (type(k) == 'table' and k['ok'] == name) then return v end
  end
end
local reads, count, few, many = commands(), commands(), commands(), commands()
local limit = tonumber(ARGV[at])
local prefixes = {}
for i = at + 1, #ARGV, 2 do prefixes[ARGV[i]] = ARGV[i + 1] end
local read = {}
for i, args in ipairs(reads) do
  local reply = redis.call(unpack(args))
  if reply == nil then reply = false end
  read[i] = reply
end
local counted, queries = false, few
if #count > 0 then
  counted = redis.call(unpack(count[1]))
  if field(counted, 'total_results') > limit then queries = many end
end
local answers, rows, seen = {}, {}, {}
for i, args in ipairs(queries) do
  local answer = redis.call(unpack(args))
  answers[i] = answer
  for _, result in ipairs(field(answer, 'results')) do
    local fields = field(result, 'extra_attributes')
    local table_name, key = field(fields, 'table'), field(fields, 'pk')
    local prefix = table_name and key and prefixes[table_name]
    if prefix and not seen[prefix .. key] then
      seen[prefix .. key] = true
      rows[#rows + 1] = {table_name, key, redis.call('HGETALL', prefix .. key)}
    end
  end
end
return {read, counted, answers, rows}
"""


@dataclass(frozen=True, slots=True)
class Ask:
    """What one round trip asks: `reads` (replies handed back as they are), an optional `count`
    of a filtered KNN, the queries to run when it counts at most `limit` documents (or there
    is no count: `few`) and when it counts more (`many`), and the manifest key prefix of each
    table (`Keyspace.row(table, "")`) for the rows the queries hit."""

    reads: Sequence[Command]
    few: Sequence[Command]
    prefixes: Mapping[str, str]
    count: Command | None = None
    many: Sequence[Command] = ()
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """The replies of an `Ask`: the reads', the count's (None: no count), each query's
    documents, and the manifest of every row they hit."""

    reads: list[Any]
    counted: Any
    found: list[Docs]
    manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)


class Trip:
    """Runs an `Ask` in one round trip (the script), or, on a Redis Cluster, in pipelines."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script: Script | None = None  # registered at the first run

    def run(self, ask: Ask) -> Answer:
        if isinstance(self.client, redis.RedisCluster):
            return pipelined(self.client, ask)
        if self._script is None:
            self._script = self.client.register_script(_SCRIPT)
        args = [
            *_encoded(ask.reads), *_encoded([ask.count] if ask.count else []),
            *_encoded(ask.few), *_encoded(ask.many), ask.limit,
            *(part for table, prefix in ask.prefixes.items() for part in (table, prefix)),
        ]  # fmt: skip
        reads, counted, answers, rows = self._script(args=args)
        manifests = {
            (_text(table), _text(key)): Manifest.parse(raw or {}) for table, key, raw in rows
        }
        return Answer(
            [None if read is False else read for read in reads],
            counted or None,
            [search_docs(answer) for answer in answers],
            manifests,
        )


def pipelined(client: redis.Redis, ask: Ask) -> Answer:
    """An `Ask` in up to three pipelines (the reads with the count or the queries; the queries
    after a count; the manifests): where one script cannot reach every key."""
    pipe = client.pipeline(transaction=False)
    for args in [*ask.reads, *([ask.count] if ask.count else ask.few)]:
        command(pipe, *args)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    reads, answers = replies[: len(ask.reads)], replies[len(ask.reads) :]
    counted = None
    if ask.count:
        counted = answers[0]
        pipe = client.pipeline(transaction=False)
        for args in ask.few if search_total(counted) <= ask.limit else ask.many:
            command(pipe, *args)
        answers = pipe.execute()
    found = [search_docs(answer) for answer in answers]
    rows = [row for docs in found for row in rows_of(docs) if row[0] in ask.prefixes]
    rows = list(dict.fromkeys(rows))
    pipe = client.pipeline(transaction=False)
    for table, key in rows:
        pipe.hgetall(ask.prefixes[table] + key)
    raws = pipe.execute() if rows else []
    return Answer(reads, counted, found, dict(zip(rows, map(Manifest.parse, raws), strict=True)))


class Recorded:
    """Stands in for a pipeline to record the commands queued on it (each method named as the
    command, its arguments as they are: GET, HGET, HGETALL and the like)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.commands.append([name.upper(), *args])


def _encoded(commands: Sequence[Command]) -> list[Any]:
    """Commands as the script reads them: how many, then each one's length and arguments."""
    out: list[Any] = [len(commands)]
    for args in commands:
        out += [len(args), *args]
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The connector's exceptions: one tree, each carrying what a user needs to act.

ConnectorError
 ├── ConfigError          a setting is missing or wrong (names the setting and the fix)
 ├── ServiceError         a throwaway dev service could not start (names the missing piece)
 ├── ResyncNeeded         Redis lost data: the tables are copied again from a snapshot
 ├── ReplicationError     the replication stream or slot failed (names slot and LSN)
 │    └── SlotLostError   the slot cannot serve the checkpoint: resync needed
 ├── EmbeddingUnavailable the provider kept failing transiently (retried from the checkpoint)
 ├── EmbeddingRejected    the provider refused some texts (their rows are dead-lettered)
 ├── RedisIndexError      Redis index problem (names the index)
 │    ├── ModelMismatchError  the query's model differs from the index's
 │    └── IncompleteAnswer    Redis answered a search with a warning (partial results)
 ├── RedisFull            Redis refused a write at maxmemory (the daemon pauses and retries)
 ├── QueryError           a search request is malformed (also a ValueError)
 ├── NotCaughtUpError     the index did not reach a search's `min_lsn` in time
 └── RowError             one row could not be processed (goes to the dead-letter stream)
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """A setting is missing or invalid; the message names it and the fix."""


class ServiceError(ConnectorError):
    """A throwaway development service (Postgres, Redis Stack) could not be started."""


class ReplicationError(ConnectorError):
    """The replication connection or slot failed."""


class ResyncNeeded(ConnectorError):
    """Redis lost data the checkpoint relied on: the tables are copied again from a snapshot."""


class SlotLostError(ReplicationError):
    """The slot no longer holds the changes after the checkpoint: a resync is needed."""


class EmbeddingUnavailable(ConnectorError):
    """The embedding provider is down or rate-limiting beyond the retry window (transient)."""


class EmbeddingRejected(ConnectorError):
    """The provider refused some texts permanently; the others have their vectors."""

    def __init__(self, vectors: list[bytes | None], errors: dict[int, str]) -> None:
        super().__init__(f"{len(errors)} text(s) refused by the embedding provider")
        self.vectors = vectors
        self.errors = errors


class RedisIndexError(ConnectorError):
    """The Redis index is missing, incompatible or unreachable."""


class ModelMismatchError(RedisIndexError):
    """A query tried to use another embedding model than the index was built with."""


class IncompleteAnswer(RedisIndexError):
    """Redis answered a search with results and a warning (a query timeout, memory): the
    answer may be missing hits, so it is refused; the message names the setting and the fix."""


class RedisFull(ConnectorError):
    """Redis refused a write because it reached `maxmemory`; the message names the fix."""


class QueryError(ConnectorError, ValueError):
    """A search request is malformed: unknown filter field, a value of the wrong type, k out
    of range. The message names the field and what it accepts."""


class NotCaughtUpError(ConnectorError):
    """The index did not reach the requested LSN in time (a search's `min_lsn`); the message
    names the LSN reached and suggests `connector status`."""


class RowError(ConnectorError):
    """One source row could not be turned into index entries (permanent; dead-lettered)."""

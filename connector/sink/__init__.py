"""Everything that writes Redis: the connection helpers, the index schema and its model record,
the checkpoint, the batch writer (finished writes in, one MULTI/EXEC out) and the memory policy.

It may import `core`; never `source` (Postgres) or the daemon (`flow`). `query` reads through its
schema, checkpoint and connection helpers.
"""

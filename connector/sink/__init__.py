"""Everything that writes Redis: the connection helpers, the index schema and its model record,
the checkpoint, the batch writer (a batch's versions staged in bounded pipelines, invisible
until one write of the visible LSN, the flip: DESIGN.md, "Versioned visibility") and the memory
policy.

It may import `core`; never `source` (Postgres) or the daemon (`flow`). `query` reads through its
schema, checkpoint and connection helpers.
"""

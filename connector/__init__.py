"""Real-time retrieval for AI applications, kept in sync with PostgreSQL.

The connector follows PostgreSQL logical replication (wal2json), turns committed changes of the
configured content tables into chunked, embedded Redis vector-search keys, and ships `search()`
to query the synced index.
"""

__version__ = "0.1.0"

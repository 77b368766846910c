"""Everything that speaks to PostgreSQL.

The replication protocol (slot creation, the wal2json stream, status updates), replication slots
(their SQL and the wait for a walsender to let go), the catalog (what a configured table is),
snapshots (exported by a slot, read with COPY), reading back left-out TOAST columns, and the
migrations that create the connector's role and publication. It may import `core`; never the
Redis side (`sink`, `embed`, `query`) or the daemon.
"""

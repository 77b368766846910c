-- A least-privilege role for the connector: it may log in, open a replication connection
-- (create its logical slot, stream wal2json), and read the content tables for the initial
-- snapshot. Nothing else. Set its password yourself:
--   ALTER ROLE connector PASSWORD '...';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'connector') THEN
        CREATE ROLE connector LOGIN REPLICATION;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO connector;
GRANT SELECT ON documents TO connector;
-- Heartbeats (pg_logical_emit_message) keep the slot moving when the content tables are idle.
GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO connector;

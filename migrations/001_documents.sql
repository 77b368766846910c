-- The example content table the connector indexes (see config.example.toml).
CREATE TABLE IF NOT EXISTS documents (
    id          bigserial PRIMARY KEY,
    title       text        NOT NULL DEFAULT '',
    body        text        NOT NULL DEFAULT '',
    source      text        NOT NULL DEFAULT 'unknown',
    tags        text[]      NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- wal2json leaves unchanged TOASTed columns out of an UPDATE. With REPLICA IDENTITY FULL the old
-- row (TOASTed values included) travels with every UPDATE and DELETE, so the connector always has
-- the exact text of every content column without reading the table again.
ALTER TABLE documents REPLICA IDENTITY FULL;

"""Apply the SQL files of `migrations/` in order, each once (recorded in `connector_migrations`).

The files ship inside the package (`connector/migrations` is a link to the top-level
`migrations/` folder, so there is one copy of each), found with importlib.resources: an
installed wheel finds them as the source tree does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from connector.errors import ConfigError
from connector.source.connection import connect_dsn

MIGRATIONS_DIR: Traversable = files("connector") / "migrations"

_LEDGER = """
CREATE TABLE IF NOT EXISTS connector_migrations (
    name       text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class MigrationResult:
    applied: list[str]
    skipped: list[str]


def migration_files(folder: Traversable = MIGRATIONS_DIR) -> list[Traversable]:
    if not folder.is_dir():
        raise ConfigError(f"migrations folder {folder} does not exist (pass --dir)")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)


def apply_migrations(dsn: str, folder: Traversable = MIGRATIONS_DIR) -> MigrationResult:
    """Apply every not-yet-applied migration, each in its own transaction."""
    applied: list[str] = []
    skipped: list[str] = []
    with connect_dsn(dsn) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('connector_migrations'))")
        conn.execute(_LEDGER)
        for path in migration_files(folder):
            sql = path.read_text()
            digest = hashlib.sha256(sql.encode()).hexdigest()
            row = conn.execute(
                "SELECT sha256 FROM connector_migrations WHERE name = %s", [path.name]
            ).fetchone()
            if row:
                skipped.append(path.name)
                continue
            with conn.transaction():
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO connector_migrations (name, sha256) VALUES (%s, %s)",
                    [path.name, digest],
                )
            applied.append(path.name)
        conn.execute("SELECT pg_advisory_unlock(hashtext('connector_migrations'))")
    return MigrationResult(applied, skipped)

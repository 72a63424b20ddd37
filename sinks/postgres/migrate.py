"""Versioned SQL migrations, applied in order and recorded in `schema_migrations`.

Safe to run twice and from two workers at once, also through PgBouncer in transaction mode:
each file is applied in its own transaction with its record, under a transaction-level
advisory lock that serializes the runners.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every runner.
ADVISORY_LOCK_ID = 0x5C21BE_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed, was edited after being applied, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number in {directory}")
    return migrations


async def migrate(
    database_url: str,
    report: Callable[[str], None] = lambda _: None,
    directory: Path = MIGRATIONS_DIR,
    connect_options: Mapping[str, Any] | None = None,
) -> list[Migration]:
    """Apply the migrations not yet recorded; return those applied by this call.
    `connect_options`: asyncpg's connect options (`ResolvedSettings.database_options`)."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(database_url, **(connect_options or {}))
    try:
        async with conn.transaction():
            applied = await _lock_and_read(conn)
        for migration in migrations:
            if applied.get(migration.version, migration.checksum) != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} was changed "
                    "after it was applied; add a new migration instead"
                )
        done = []
        for migration in (m for m in migrations if m.version not in applied):
            try:
                async with conn.transaction():
                    # Another runner may have applied it since the first read.
                    if migration.version in await _lock_and_read(conn):
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            report(f"applied migration {migration.version:04d}_{migration.name}")
            done.append(migration)
        return done
    finally:
        await conn.close()


async def _lock_and_read(conn: asyncpg.Connection) -> dict[int, str]:
    """In the caller's transaction: wait for the other runners, then the applied versions and
    their checksums. The lock is the transaction's, released at its end, so it never outlives
    it on a server connection a pooler hands to someone else (PgBouncer's transaction mode)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_ID)
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}

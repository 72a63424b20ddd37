"""Migrations: in order, recorded, safe twice and from two runners at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from sinks.postgres.migrate import MigrationError, load_migrations, migrate

pytestmark = pytest.mark.integration


@pytest.fixture
async def scratch_db(database_url: str) -> AsyncIterator[str]:
    """A database of its own, so these tests never touch the pipeline's schema."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_the_project_migrations_apply_once_even_from_two_runners(scratch_db: str) -> None:
    first, second = await asyncio.gather(migrate(scratch_db), migrate(scratch_db))
    assert len(first) + len(second) == len(load_migrations())
    assert await migrate(scratch_db) == []
    conn = await asyncpg.connect(scratch_db)
    try:
        versions = [
            r["version"]
            for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
        assert versions == [m.version for m in load_migrations()]
    finally:
        await conn.close()


async def test_migrations_apply_in_version_order(scratch_db: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0002_add_column.sql": "ALTER TABLE t ADD COLUMN b int;",
            "0001_create.sql": "CREATE TABLE t (a int);",
        },
    )
    applied = await migrate(scratch_db, directory=directory)
    assert [m.version for m in applied] == [1, 2]


async def test_an_edited_applied_migration_is_refused(scratch_db: str, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"0001_create.sql": "CREATE TABLE t (a int);"})
    await migrate(scratch_db, directory=directory)
    _write(directory, {"0001_create.sql": "CREATE TABLE t (a bigint);"})
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        await migrate(scratch_db, directory=directory)


async def test_a_failing_migration_rolls_back_and_says_which(
    scratch_db: str, tmp_path: Path
) -> None:
    directory = _write(
        tmp_path / "m",
        {"0001_ok.sql": "CREATE TABLE t (a int);", "0002_bad.sql": "CREATE TABLE t (a int);"},
    )
    with pytest.raises(MigrationError, match="0002_bad failed"):
        await migrate(scratch_db, directory=directory)
    conn = await asyncpg.connect(scratch_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 1
    finally:
        await conn.close()


def test_badly_named_files_are_refused(tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"1_x.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="NNNN_snake_name"):
        load_migrations(directory)

"""SQL only with parameters: no Python code builds SQL text from values, and the migrations'
dynamic SQL quotes what it formats.

Python: a query passed to asyncpg (`execute`, `fetch`, ...) must not be an f-string with
placeholders, a `%`/`+` expression or a `.format()` call, and no SQL-looking string literal may
be an f-string with placeholders. Values travel as `$1`, `$2`. SQL assembled from identifiers
(a rollup's table name, a column list) is listed in IDENTIFIERS_ONLY after review.

SQL: PL/pgSQL cannot bind identifiers (a monthly partition's name), so it formats them, which is
legitimate when done with `format()` and `%I` (quote_ident) / `%L` (quote_literal). An EXECUTE
must therefore use `format(...)` without `%s` and without `||` concatenation.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scribe", "sinks", "agents", "topics", "schemas", "bench")
QUERY_METHODS = {
    "execute",
    "executemany",
    "fetch",
    "fetchrow",
    "fetchval",
    "prepare",
    "cursor",
    "copy_from_query",
}
SQL_START = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|COPY)\b", re.I
)


def _is_built(node: ast.expr) -> bool:
    """Text assembled at run time rather than written as a constant."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def _literal_text(node: ast.JoinedStr) -> str:
    return "".join(str(p.value) for p in node.values if isinstance(p, ast.Constant))


# SQL text assembled from identifiers (table and column names written in the code), never from
# values: reviewed, and named here by file and the function or constant that builds it. One bench
# function is the exception, said so beside it.
IDENTIFIERS_ONLY = {
    ("sinks/postgres/usage.py", "rollup_upsert"),  # table and key column names, from literals
    ("bench/ledger_fill.py", "_ROLLUP_MONTH"),  # the flow's rollup statements, composed
    ("bench/ledger_fill.py", "fill_ledger"),  # VACUUM of the filled months' partition names
    # PREPARE of the reads' own statements; EXPLAIN EXECUTE binds no parameters, so the bench's
    # generated user id and month go in as quoted literals (`_literal`), never outside input.
    ("bench/reads_at_scale.py", "explain_all"),
    ("sinks/postgres/usage.py", "_WRITE_FROM_STAGE"),  # the staging table's column list
    ("bench/cases/usage.py", "empty_ledger"),  # TRUNCATE of the ledger's table names
    ("bench/ledger_write.py", "explain"),  # EXPLAIN of the ledger's own statement
}


def _contexts(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """Each top-level function or assignment with its name, so findings can say where."""
    found: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append((node.name, node))
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found.append((node.targets[0].id, node))
        else:
            found.append(("<module>", node))
    return found


def violations(source: str, name: str = "<source>") -> list[str]:
    found = []
    for context, top in _contexts(ast.parse(source)):
        if (name, context) in IDENTIFIERS_ONLY:
            continue
        for node in ast.walk(top):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in QUERY_METHODS
                and node.args
                and _is_built(node.args[0])
            ):
                method = node.func.attr
                found.append(f"{name}:{node.lineno}: query built at run time for .{method}()")
            if (
                isinstance(node, ast.JoinedStr)
                and _is_built(node)
                and SQL_START.match(_literal_text(node))
            ):
                found.append(f"{name}:{node.lineno}: SQL written as an f-string")
    return sorted(set(found))


def sql_violations(text: str, name: str = "<sql>") -> list[str]:
    found = []
    for match in re.finditer(r"EXECUTE\s+(.{0,400}?);", text, re.I | re.S):
        statement = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        if not statement.lower().startswith("format("):
            found.append(f"{name}:{line}: EXECUTE without format()")
        elif "%s" in statement or "||" in statement:
            found.append(f"{name}:{line}: EXECUTE format() with %s or ||; use %I and %L")
    return found


def _python_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_no_python_code_builds_sql_from_values() -> None:
    found = [
        v
        for path in _python_files()
        for v in violations(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_migrations_quote_what_their_dynamic_sql_formats() -> None:
    files = sorted((ROOT / "sinks" / "postgres" / "migrations").glob("*.sql"))
    assert files
    found = [v for path in files for v in sql_violations(path.read_text(), path.name)]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "await conn.execute(f'DELETE FROM t WHERE id = {event_id}')",
        "await conn.fetch('SELECT * FROM t WHERE id = %s' % event_id)",
        "await conn.fetchval('SELECT * FROM t WHERE id = ' + event_id)",
        "await conn.fetchrow('SELECT * FROM t WHERE id = {}'.format(event_id))",
        "QUERY = f'SELECT * FROM usage WHERE user_id = {user}'",
    ],
)
def test_the_checker_catches_sql_built_from_values(source: str) -> None:
    assert violations(source)


def test_the_identifier_allowlist_names_code_that_exists() -> None:
    for path, context in IDENTIFIERS_ONLY:
        names = {n for n, _ in _contexts(ast.parse((ROOT / path).read_text()))}
        assert context in names, f"{path}: {context} is gone; drop it from IDENTIFIERS_ONLY"


def test_the_checker_accepts_parameters() -> None:
    assert not violations("await conn.execute('DELETE FROM t WHERE id = $1', event_id)")
    assert not violations("log.info(f'{n} rows written')")


def test_the_sql_checker_catches_unquoted_dynamic_sql() -> None:
    assert sql_violations("EXECUTE 'DROP TABLE ' || name;")
    assert sql_violations("EXECUTE format('DROP TABLE %s', name);")
    assert not sql_violations("EXECUTE format('DROP TABLE %I', name);")

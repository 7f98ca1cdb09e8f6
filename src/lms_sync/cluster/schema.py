"""The job queue's schema: procrastinate's, created and upgraded with procrastinate's own
SQL (``lms-sync cluster init``).

procrastinate ships its whole schema (``schema.sql``) and, for every release that
changed it, migration scripts (``sql/migrations/XX.YY.ZZ_NN_*.sql``, applied in name
order). It keeps no record of which scripts a database has had: "it's your
responsibility". Instead of a record of our own (which a queue made by an older
lms-sync, or by ``procrastinate schema --apply``, would not have), ``init`` reads what
the queue's schema *is*:

* no procrastinate tables: ``schema.sql`` is applied (one transaction);
* the same tables, columns, indexes, constraints, functions (with their bodies),
  triggers and enum values as ``schema.sql`` makes: up to date, nothing is done;
* the same as the migrations up to some script make (found by replaying them all in a
  scratch schema, dropped afterwards): the scripts after it are applied, each in a
  transaction of its own (a script may add an enum value a later one uses, which
  PostgreSQL allows only once committed);
* anything else (a newer procrastinate's schema, or one changed by hand): nothing is
  done, and the one-line error says what to do.

Two ``init`` at once (several containers starting) take turns on an advisory lock.
Workers running the old code should be stopped first: procrastinate's ``post``
scripts assume no old worker is left.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lms_sync.errors import UserError
from lms_sync.logs import one_line

# what a schema is made of, each as a set of rows read from the catalog ("= _NS": in the
# schema on the search_path, by its exact name)
_NS = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
_CATALOG: dict[str, str] = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = _NS AND c.relkind IN ('r', 'v', 'p')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": """
        SELECT indexname, regexp_replace(indexdef, ' ON \\S+\\.', ' ON ')
        FROM pg_indexes WHERE schemaname = current_schema()""",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        WHERE c.relnamespace = _NS""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
               p.prokind, p.prosrc
        FROM pg_proc p WHERE p.pronamespace = _NS""",
    "triggers": """
        SELECT t.tgname, c.relname, regexp_replace(pg_get_triggerdef(t.oid), ' ON \\S+\\.', ' ON ')
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = _NS AND NOT t.tgisinternal""",
    "enums": """
        SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typnamespace = _NS""",
}


_CATALOG = {part: query.replace("= _NS", "= " + _NS) for part, query in _CATALOG.items()}


def _body(source: str) -> str:
    """A function body without comments and with single spaces: the same code whether
    it came from ``schema.sql`` or a migration script."""
    return re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", source)).strip()


def fingerprint(conn: Any) -> dict[str, frozenset[tuple[Any, ...]]]:
    """What the schema on ``conn``'s ``search_path`` is made of (order-free)."""
    out = {}
    for part, query in _CATALOG.items():
        rows = [tuple(r) for r in conn.execute(query).fetchall()]
        if part == "functions":
            rows = [(*r[:-1], _body(r[-1] or "")) for r in rows]
        out[part] = frozenset(rows)
    return out


def migrations() -> list[Path]:
    """procrastinate's migration scripts, in the order they apply."""
    from procrastinate.schema import SchemaManager

    return sorted(Path(SchemaManager.get_migrations_path()).glob("*.sql"))


def schema_functions() -> set[str]:
    """The names of the functions procrastinate's ``schema.sql`` creates."""
    from procrastinate.schema import SchemaManager

    return set(re.findall(r"CREATE (?:OR REPLACE )?FUNCTION\s+(?:public\.)?(\w+)\s*\(",
                          SchemaManager.get_schema(), flags=re.IGNORECASE))


def procrastinate_version() -> str:
    from importlib.metadata import version

    return version("procrastinate")


@dataclass
class Outcome:
    state: str  # created | current | migrated
    applied: list[str] = field(default_factory=list)


def _has_tables(conn: Any) -> bool:
    return conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is not None


def _in_schema(conn: Any, schema: str) -> None:
    conn.execute(f'SET search_path = "{schema}"')


def _replay(conn: Any, scripts: list[Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fingerprints of ``schema.sql`` and of the migrations after each script, built
    in a scratch schema of their own (dropped afterwards)."""
    from procrastinate.schema import SchemaManager

    scratch = f"lms_sync_scratch_{uuid.uuid4().hex[:12]}"
    try:
        conn.execute(f'CREATE SCHEMA "{scratch}"')
        _in_schema(conn, scratch)
        with conn.transaction():
            conn.execute(SchemaManager.get_schema())
        fresh = fingerprint(conn)
        conn.execute(f'DROP SCHEMA "{scratch}" CASCADE; CREATE SCHEMA "{scratch}"')
        steps = []
        for script in scripts:
            with conn.transaction():
                conn.execute(script.read_text(encoding="utf-8"))
            steps.append(fingerprint(conn))
        return fresh, steps
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{scratch}" CASCADE')


def init(conn: Any, schema: str, lock_key: int, shown: str) -> Outcome:
    """Create or upgrade procrastinate's schema in ``schema`` (``conn``: autocommit)."""
    import psycopg
    from procrastinate.schema import SchemaManager

    conn.execute("SELECT pg_advisory_lock(%s)", [lock_key])
    try:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        _in_schema(conn, schema)
        if not _has_tables(conn):
            with conn.transaction():
                conn.execute(SchemaManager.get_schema())  # the library's schema, as it ships it
            return Outcome("created")
        have = fingerprint(conn)
        scripts = migrations()
        fresh, steps = _replay(conn, scripts)
        _in_schema(conn, schema)
        if have == fresh:
            return Outcome("current")
        matched = [i for i, step in enumerate(steps) if step == have]
        if not matched:
            raise UserError(
                f"the job queue at {shown} has procrastinate tables that neither procrastinate "
                f"{procrastinate_version()}'s schema nor any of its migrations make (a newer "
                "procrastinate's, or changed by hand), so what it lacks is unknown; if a newer "
                "lms-sync made it, upgrade lms-sync here, else apply the missing scripts of "
                f"{SchemaManager.get_migrations_path()} yourself (procrastinate's docs: "
                "'Migrate the Procrastinate schema')")
        pending = scripts[matched[-1] + 1:]
        if not pending:  # the last script's schema, which schema.sql words differently
            return Outcome("current")
        for i, script in enumerate(pending):
            try:
                with conn.transaction():
                    conn.execute(script.read_text(encoding="utf-8"))
            except psycopg.Error as exc:
                raise UserError(
                    f"procrastinate's migration {script.name} failed on the job queue at {shown} "
                    f"({one_line(exc)}), after {i} of {len(pending)} applied; fix the cause and run "
                    "`lms-sync cluster init` again: it takes up from there") from None
        return Outcome("migrated", [p.stem for p in pending])
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [lock_key])

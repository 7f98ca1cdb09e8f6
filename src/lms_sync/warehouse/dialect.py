"""Everything that differs between PostgreSQL, SQLite and MySQL/MariaDB.

The rest of the warehouse package speaks SQLAlchemy Core and calls in here for
the three things that cannot be written portably: the upsert statement, the
per-source run lock, and connection set-up (schema, pragmas, sql_mode).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, event, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert

from lms_sync.errors import LmsSyncError

_SAFE_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def name(bind: Engine | Connection) -> str:
    """'postgresql', 'sqlite' or 'mysql' (MariaDB reports as mysql)."""
    return "mysql" if bind.dialect.name in {"mysql", "mariadb"} else bind.dialect.name


def upsert_statement(table: Table, key: Sequence[str], update: Sequence[str], dialect: str) -> Insert:
    """INSERT that updates ``update`` columns when ``key`` already exists."""
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        return pg.on_conflict_do_update(
            index_elements=list(key), set_={c: pg.excluded[c] for c in update}
        )
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(
            index_elements=list(key), set_={c: lite.excluded[c] for c in update}
        )
    if dialect == "mysql":
        my = mysql.insert(table)
        return my.on_duplicate_key_update({c: my.inserted[c] for c in update})
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


def insert_ignore_statement(table: Table, key: Sequence[str], dialect: str) -> Insert:
    """INSERT that silently keeps an existing row with the same ``key``."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(key))
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(key))
    if dialect == "mysql":
        return mysql.insert(table).prefix_with("IGNORE")
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


_TRANSIENT_MYSQL = {1205, 1213}  # lock wait timeout, deadlock
_TRANSIENT_PG = {"40001", "40P01"}  # serialization failure, deadlock


def is_transient(exc: BaseException) -> bool:
    """True for a write conflict that the same transaction may pass when retried."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _TRANSIENT_PG:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _TRANSIENT_MYSQL:
        return True
    return "database is locked" in str(orig)  # SQLite past its busy timeout


def prepare_engine(engine: Engine, schema: str | None) -> None:
    """Per-connection settings: search_path, SQLite pragmas, MySQL time zone."""
    dialect = name(engine)
    if schema and dialect != "postgresql":
        raise ValueError("warehouse.schema is only supported on PostgreSQL")
    if schema and not _SAFE_SCHEMA.match(schema):
        raise ValueError(f"warehouse.schema {schema!r} must be a plain identifier")

    _NAMESPACES[id(engine)] = f"{engine.url.database}/{schema or ''}"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if dialect == "sqlite":
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
        elif dialect == "mysql":
            cur.execute("SET time_zone = '+00:00'")
        elif dialect == "postgresql":
            cur.execute("SET TIME ZONE 'UTC'")
            if schema:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                cur.execute(f'SET search_path TO "{schema}"')
        cur.close()
        if dialect == "postgresql" and schema:
            dbapi_conn.commit()


_NAMESPACES: dict[int, str] = {}


def _namespace(engine: Engine) -> str:
    """The warehouse a lock belongs to: two schemas on one server never block each other."""
    return _NAMESPACES.get(id(engine), str(engine.url.database))


def lock_key(source_id: str, namespace: str = "") -> int:
    """A stable signed 64-bit number for a source id (PostgreSQL advisory lock key)."""
    digest = hashlib.blake2b(f"{namespace}|{source_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _mysql_lock_name(source_id: str, namespace: str) -> str:
    digest = hashlib.blake2b(f"{namespace}|{source_id}".encode(), digest_size=16).hexdigest()
    return f"lms_sync:{digest}"


class LockBusy(Exception):
    """Another process is already running this source."""


class LockLost(LmsSyncError):
    """The run's lock ended with its connection, and another process took it meanwhile."""


class SourceLock:
    """The per-source run lock held by a run (see :func:`source_lock`).

    PostgreSQL's advisory lock and MySQL's ``GET_LOCK`` belong to the session that took
    them and end with it: a failover, a server restart or a cut network releases them,
    and another process may then take the source. So before each write the run calls
    :meth:`keep`: if the lock's connection no longer answers, the lock is taken again on
    a new connection (``lock.reacquired``), or, when another process holds it by then,
    :class:`LockLost` stops the run's writes (``lock.lost``). SQLite's lock is an flock
    on a file in the folder ``<database>.locks/``: no connection holds it, so no
    connection loss ends it; it ends with the process, and :meth:`keep` has nothing to do.
    """

    def __init__(self, engine: Engine, source_id: str) -> None:
        self.engine, self.source_id = engine, source_id
        self.dialect = name(engine)
        ns = _namespace(engine)
        self._key, self._name = lock_key(source_id, ns), _mysql_lock_name(source_id, ns)
        self._conn: Connection | None = None

    def take(self) -> bool:
        """One try on a new connection; True if this process now holds the lock."""
        conn = self.engine.connect()
        try:
            if self.dialect == "postgresql":
                got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            else:
                got = conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self._name}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        """Whether the session that took the lock still answers (so still holds it)."""
        from lms_sync.warehouse.retry import is_connection_lost

        conn = self._conn
        # a Connection that failed once reconnects silently on its next use, to a new
        # session without the lock: never ping through one that is not intact
        if conn is not None and not conn.invalidated and not conn.closed:
            try:
                conn.execute(text("SELECT 1"))
                conn.commit()
                return True
            except DBAPIError as exc:
                if not is_connection_lost(exc):
                    raise
        self._drop()
        return False

    def keep(self, window: float) -> None:
        """Before a write: the lock is still held, or taken again on a new connection
        (waiting for the warehouse up to ``window`` seconds); LockLost if another process
        took it meanwhile."""
        if self.dialect == "sqlite" or self.held():
            return
        from lms_sync.logs import get_logger
        from lms_sync.warehouse import retry

        log = get_logger("lms_sync.warehouse")
        if retry.call(self.take, engine=self.engine, window=window, op="lock"):
            log.warning("lock.reacquired", lock=self.dialect,
                        reason="the connection holding the source lock was lost")
            return
        log.error("lock.lost", lock=self.dialect,
                  reason="another process took the source lock while its connection was down")
        raise LockLost(f"interrupted: lock lost: source {self.source_id!r} is being synced by "
                       "another process, which took the source lock while this run's warehouse "
                       "connection was down; this run stopped writing and leaves it the source")

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            else:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self._name})
            conn.commit()
        except DBAPIError:
            pass  # the session is gone, and the lock with it
        finally:
            conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):  # it is dead already; closing only returns it
                conn.invalidate()
                conn.close()


@contextmanager
def source_lock(engine: Engine, source_id: str, window: float | None = None) -> Iterator[SourceLock]:
    """Hold the per-source run lock for the duration of the block, or raise LockBusy.

    PostgreSQL: a session advisory lock; MySQL: GET_LOCK; SQLite: an flock'd file in
    the folder ``<database>.locks/`` beside the database. The lock lives on its own
    connection so that batches may commit freely while it is held. Taking it waits for an
    unreachable warehouse up to ``window`` seconds (``warehouse.reconnect_seconds``); see
    :class:`SourceLock` for what happens when its connection is lost.
    """
    lock = SourceLock(engine, source_id)
    if lock.dialect == "sqlite":
        with _file_lock(engine, source_id):
            yield lock
        return
    from lms_sync.warehouse import retry

    window = retry.DEFAULT_WINDOW if window is None else window
    if not retry.call(lock.take, engine=engine, window=window, op="lock"):
        raise LockBusy(f"source {source_id!r} is already being synced by another process")
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def _file_lock(engine: Engine, source_id: str) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    busy = f"source {source_id!r} is already being synced by another process"
    with _flock(_lock_file(database, source_id), blocking=False, busy=busy):
        yield


def lock_folder(database: str) -> Path:
    """Where an SQLite warehouse keeps its lock files: one folder beside the database."""
    return Path(f"{database}.locks")


def _lock_file(database: str, what: str) -> Path:
    folder = lock_folder(database)
    folder.mkdir(exist_ok=True)
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', what)}.lock"


@contextmanager
def _flock(path: Path, *, blocking: bool, busy: str) -> Iterator[None]:
    """An exclusive flock on ``path``; LockBusy(busy) if not blocking and it is taken."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def locked_transaction(engine: Engine, what: str, timeout: int = 600) -> Iterator[Connection]:
    """A transaction that holds the warehouse-wide lock ``what``, waiting up to ``timeout`` s.

    PostgreSQL: a transaction-level advisory lock; MySQL: GET_LOCK around the
    transaction; SQLite: a blocking flock in ``<database>.locks/``. LockBusy if
    MySQL's wait runs out.
    """
    dialect = name(engine)
    namespace = _namespace(engine)
    database = engine.url.database
    guard: AbstractContextManager[None]
    if dialect == "sqlite" and database and database != ":memory:":
        guard = _flock(_lock_file(database, what.strip(":")), blocking=True, busy="")
    else:
        guard = nullcontext()
    with guard, engine.connect() as conn:
        lock_name = _mysql_lock_name(what, namespace)
        if dialect == "mysql":
            got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": lock_name, "t": timeout}).scalar()
            conn.commit()
            if not got:
                raise LockBusy(f"{what.strip(':')} is busy in another process")
        try:
            with conn.begin():
                if dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                                 {"k": lock_key(what, namespace)})
                yield conn
        finally:
            if dialect == "mysql":
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name})
                conn.commit()

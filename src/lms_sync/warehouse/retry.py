"""The one retry policy of every database call that a warehouse blip may break.

A managed PostgreSQL restarts for maintenance or fails over to a standby; MariaDB
restarts; a network path flaps. For a few seconds to a minute every connection drops
and new ones are refused. Such a *lost connection* (PostgreSQL SQLSTATE class 08 and
57P01-57P03, MySQL 2003/2006/2013, "connection refused", psycopg's "the connection is
lost", or whatever SQLAlchemy itself recognises as a disconnect) and a *write
conflict* (:func:`lms_sync.warehouse.dialect.is_transient`: a deadlock, a lock wait
timeout) are retried, whole, with exponential backoff and jitter, until
``warehouse.reconnect_seconds`` have passed since the first failure. Anything else (bad
SQL, a constraint violation) is raised at once: retrying cannot fix it.

A call is one transaction (or one idempotent operation): a retry redoes it from the
start on a new connection. The pool discards a dead connection when it is handed out
(``pool_pre_ping``) or when SQLAlchemy sees it fail, so the retry does not meet it again.
Once the window has passed on a lost connection, :class:`WarehouseUnreachable` says
which warehouse and which setting, in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from lms_sync.errors import LmsSyncError
from lms_sync.logs import get_logger, one_line
from lms_sync.warehouse.dialect import is_transient

T = TypeVar("T")

DEFAULT_WINDOW = 120.0
"""``warehouse.reconnect_seconds`` when nothing else is given."""

MAX_WAIT = 5.0
"""The longest pause between two tries: a blip of a few seconds is ridden over within
seconds of its end, not after a long back-off."""

_LOST_PG = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now
_LOST_MYSQL = {2003, 2006, 2013}  # can't connect, server has gone away, lost during query
# what libpq/psycopg and PyMySQL say when the network path or the server went away
_LOST_TEXT = ("connection refused", "the connection is lost", "connection reset",
              "server closed the connection unexpectedly", "broken pipe", "timed out",
              "timeout expired", "no route to host", "network is unreachable",
              "could not translate host name", "temporary failure in name resolution",
              "ssl connection has been closed unexpectedly", "ssl syscall error",
              "the database system is", "accepting tcp/ip connections", "lost connection",
              "server has gone away")


class WarehouseUnreachable(LmsSyncError):
    """The warehouse did not come back within ``warehouse.reconnect_seconds``."""

    def __init__(self, warehouse: str, window: float, cause: BaseException) -> None:
        super().__init__(
            f"the warehouse {warehouse} was unreachable for warehouse.reconnect_seconds "
            f"({window:g} s): {one_line(cause)}; check that the database is up and reachable, "
            "or raise warehouse.reconnect_seconds to ride out longer failovers; the next run "
            "resumes from the saved cursor")


def is_connection_lost(exc: BaseException) -> bool:
    """True for an error that says the connection to the database is gone or refused."""
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy's dialect said so
        return True
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate.startswith("08") or sqlstate in _LOST_PG:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _LOST_MYSQL:
        return True
    text = str(orig).lower()
    return any(part in text for part in _LOST_TEXT)


def is_retriable(exc: BaseException) -> bool:
    """A lost connection or a write conflict: the same work may pass when redone."""
    return is_connection_lost(exc) or (isinstance(exc, DBAPIError) and is_transient(exc))


def describe(engine: Engine) -> str:
    """The warehouse as an operator names it, without user or password."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()} at {url.host}{port}/{url.database}"


def retrying(window: float, event: str, **fields: Any) -> Retrying:
    """The policy: tenacity, retrying :func:`is_retriable` errors for ``window`` seconds;
    each retry is logged as ``event`` with ``fields``, the attempt, the wait and the error."""
    log = get_logger("lms_sync.warehouse")

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(event, **fields, attempt=state.attempt_number,
                    wait=round(state.upcoming_sleep, 3), error=one_line(exc) if exc else None,
                    connection_lost=exc is not None and is_connection_lost(exc))

    return Retrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_before_delay(window),
        # a short window still gets several tries
        wait=wait_exponential_jitter(multiplier=0.1, max=min(MAX_WAIT, max(0.2, window / 8)),
                                     jitter=0.2),
        before_sleep=before_sleep,
        reraise=True,
    )


def call(fn: Callable[[], T], *, engine: Engine, window: float, event: str = "warehouse.retry",
         **fields: Any) -> T:
    """``fn()`` under the policy; a connection still lost at the end of the window is
    :class:`WarehouseUnreachable`, any other error is raised as it is."""
    try:
        return retrying(window, event, **fields)(fn)
    except Exception as exc:
        if is_connection_lost(exc):
            raise WarehouseUnreachable(describe(engine), window, exc) from exc
        raise


def transaction(engine: Engine, work: Callable[[Connection], T], *, window: float,
                op: str, event: str = "warehouse.retry", **fields: Any) -> T:
    """``work(conn)`` in one transaction, redone whole on a new connection under the policy."""

    def attempt() -> T:
        with engine.begin() as conn:
            return work(conn)

    return call(attempt, engine=engine, window=window, event=event, op=op, **fields)

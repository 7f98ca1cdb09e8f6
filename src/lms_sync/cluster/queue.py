"""Where the job queue lives, the procrastinate app on it, and how a run is queued.

The queue is procrastinate's tables in a schema of their own (``cluster.queue_schema``)
of the PostgreSQL database ``cluster.queue_url`` names: it may be the warehouse's
server. Every connection sets ``search_path`` to that schema, so several queues (or
test runs) share one database without seeing each other's jobs.

A sync job's ``lock`` is ``tenant:source``: procrastinate never runs two jobs of one
source at once. Its ``queueing_lock`` keeps at most one *of the same request* waiting:
``tenant:source`` for a plain run (the ticker's, a retry's), with ``#full-refresh`` or
``#since=...`` appended for those requests, so a full refresh or a backfill never
melts into a waiting plain run that would not do it (a second identical defer raises
``AlreadyEnqueued``, logged ``sync.coalesced``: the waiting run does exactly what was
asked). A provisioning job (``provision`` block with a schedule) takes the same
``lock`` and the queueing lock ``tenant:source#provision``. The warehouse's own
per-source lock stays as the fence behind them (a daemon on the same warehouse).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lms_sync.config import ClusterConfig, Config
from lms_sync.errors import UserError
from lms_sync.logs import get_logger, one_line

SYNC_TASK = "lms_sync.sync_source"
IDENTITY_TASK = "lms_sync.identity"
PROVISION_TASK = "lms_sync.provision"
TICK_TASK = "lms_sync.tick"
SYNC_QUEUE = "lms_sync.sync"          # sync and identity jobs: the --concurrency slots
CONTROL_QUEUE = "lms_sync.control"    # the ticker: a slot of its own, never behind a long sync


def sync_lock(tenant: str, source: str) -> str:
    return f"{tenant}:{source}"


def sync_queueing_lock(tenant: str, source: str, full_refresh: bool = False,
                       since: str | None = None) -> str:
    """At most one waiting job per key: a plain run, a full refresh and a backfill from a
    given time are different requests ('#' is in no tenant or source name)."""
    key = sync_lock(tenant, source)
    if full_refresh:
        key += "#full-refresh"
    if since:
        key += f"#since={since}"
    return key


def provision_lock(tenant: str, source: str) -> str:
    return f"{sync_lock(tenant, source)}#provision"


def identity_lock(tenant: str) -> str:
    # '#' is in no source id (config.py's _SOURCE_ID), so no source's lock is this one
    return f"{tenant}#identity"


@dataclass(frozen=True)
class QueueTarget:
    """A queue: a PostgreSQL URL (may carry a password) and a schema; ``where`` names
    the setting it came from, for error messages."""

    url: str
    schema: str
    where: str

    @property
    def conninfo(self) -> str:
        """The URL as libpq reads it (no SQLAlchemy ``+driver``)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    @property
    def shown(self) -> str:
        """Host, database and schema, for logs and messages: never the password."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database} schema {self.schema}"

    @property
    def options(self) -> str:
        return f"-c search_path={self.schema}"

    def lock_key(self, what: str) -> int:
        """A PostgreSQL advisory lock key for ``what`` in this queue."""
        digest = hashlib.blake2b(f"{self.schema}|{what}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)


def resolve_target(url: str | None, schema: str | None, configs: Iterable[Config]) -> QueueTarget:
    """The queue from ``--queue-url`` / ``--queue-schema``, else the one the configs name
    (``cluster.queue_url``, which defaults to ``$LMS_SYNC_QUEUE_URL``), else, with no
    config at all, ``$LMS_SYNC_QUEUE_URL``."""
    env = ClusterConfig()  # $LMS_SYNC_QUEUE_URL, $LMS_SYNC_QUEUE_SCHEMA
    if url or (not configs and env.queue_url):
        where = "--queue-url" if url else "LMS_SYNC_QUEUE_URL"
        target = QueueTarget(url or env.queue_url or "", schema or env.queue_schema, where)
    else:
        named = {(c.cluster.queue_url, schema or c.cluster.queue_schema): c.path
                 for c in configs if c.cluster.queue_url}
        if not named:
            raise UserError("no job queue is configured, cluster.queue_url; set it in the config, "
                            "export LMS_SYNC_QUEUE_URL or pass --queue-url")
        if len(named) > 1:
            paths = ", ".join(sorted(named.values())[:3])
            raise UserError(f"the configs name different job queues ({paths}), cluster.queue_url; "
                            "give them one, or pass --queue-url")
        (queue_url, queue_schema), path = next(iter(named.items()))
        target = QueueTarget(queue_url, queue_schema, f"{path}: cluster.queue_url")
    _check_url(target)
    return target


def _check_url(target: QueueTarget) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(target.url).get_backend_name()
    except ArgumentError:
        backend = None
    if backend != "postgresql":
        raise UserError(f"the job queue must be a PostgreSQL database URL, {target.where}; "
                        "use e.g. postgresql://user@host:5432/db")


def same_queue(target: QueueTarget, cfg: Config) -> bool:
    """Whether a tenant's config leaves the queue to the worker or names this one."""
    if not cfg.cluster.queue_url:
        return True
    other = QueueTarget(cfg.cluster.queue_url, cfg.cluster.queue_schema, "")
    try:
        return other.conninfo == target.conninfo and other.schema == target.schema
    except Exception:  # noqa: BLE001 - not a URL: not this queue
        return False


# ------------------------------------------------------------------ the schema


def _connect(target: QueueTarget) -> Any:
    import psycopg

    try:
        return psycopg.connect(target.conninfo, options=target.options, connect_timeout=10)
    except psycopg.Error as exc:
        raise UserError(f"cannot reach the job queue at {target.shown} ({one_line(exc)}), "
                        f"{target.where}; check the URL and that PostgreSQL is running") from None


def is_ready(target: QueueTarget) -> bool:
    """Whether procrastinate's tables exist in the queue's schema."""
    with _connect(target) as conn:
        found = conn.execute("SELECT to_regclass(%s)", [f'"{target.schema}".procrastinate_jobs'])
        return found.fetchone()[0] is not None


def missing_functions(target: QueueTarget) -> list[str]:
    """The functions of the installed procrastinate's schema that the queue lacks: every
    schema change of procrastinate 3 adds a function with a new name (``_v2``), so a
    queue that missed a migration lacks one."""
    from lms_sync.cluster.schema import schema_functions

    with _connect(target) as conn:
        have = {r[0] for r in conn.execute(
            "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s", [target.schema])}
    return sorted(schema_functions() - have)


def require_ready(target: QueueTarget) -> None:
    if not is_ready(target):
        raise UserError(f"the job queue at {target.shown} has no procrastinate tables yet, "
                        f"{target.where}; run `lms-sync cluster init` once")
    missing = missing_functions(target)
    if missing:
        from lms_sync.cluster.schema import procrastinate_version

        raise UserError(f"the job queue at {target.shown} lacks procrastinate "
                        f"{procrastinate_version()}'s {', '.join(missing[:3])}"
                        f"{' and more' if len(missing) > 3 else ''}, {target.where}; stop the workers "
                        "and run `lms-sync cluster init`: it applies the migrations it lacks")


def init_queue(target: QueueTarget) -> Any:
    """Create procrastinate's schema in the queue's schema, or apply the migrations it
    lacks (:mod:`lms_sync.cluster.schema`); returns a ``schema.Outcome``."""
    import psycopg

    from lms_sync.cluster import schema

    with _connect(target) as conn:
        conn.autocommit = True
        try:
            return schema.init(conn, target.schema, target.lock_key("init"), target.shown)
        except psycopg.Error as exc:
            raise UserError(f"cannot create or read the job queue's schema at {target.shown} "
                            f"({one_line(exc)}), {target.where}; its user needs CREATE on the "
                            "database (a scratch schema is made and dropped) and on the schema") from None


# ------------------------------------------------------------------ the app


def build_app(target: QueueTarget, pool_size: int = 4) -> Any:
    """A procrastinate App on the queue (not opened). Tasks are deferred by name, so a
    process that only queues jobs (``lms-sync enqueue``) registers none."""
    from procrastinate import App, PsycopgConnector

    _quiet_procrastinate()

    connector = PsycopgConnector(conninfo=target.conninfo, kwargs={"options": target.options},
                                 min_size=1, max_size=pool_size)
    return App(connector=connector)


def _quiet_procrastinate() -> None:
    """procrastinate logs every job at INFO; our events say it per tenant and source. Its
    error line for a job we ended on purpose (RunFailed, JobAborted: logged by us as one
    line) would repeat ours with a traceback."""
    import logging

    logger = logging.getLogger("procrastinate")
    if logging.getLogger().level > logging.DEBUG:  # --log-level DEBUG shows them all
        logger.setLevel(logging.WARNING)

    def not_ours(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ not in {"RunFailed", "JobAborted"}

    for name in ("procrastinate", "procrastinate.worker"):  # filters do not inherit
        logger = logging.getLogger(name)
        if not any(getattr(f, "__name__", "") == "not_ours" for f in logger.filters):
            logger.addFilter(not_ours)


def sync_deferrer(app: Any, args: dict[str, Any], retry_in: float | None = None) -> Any:
    """A procrastinate job deferrer for one run of ``args``' tenant and source."""
    tenant, source = args["tenant"], args["source"]
    options: dict[str, Any] = {
        "lock": sync_lock(tenant, source), "queue": SYNC_QUEUE,
        "queueing_lock": sync_queueing_lock(tenant, source, bool(args.get("full_refresh")),
                                            args.get("since"))}
    if retry_in:
        options["schedule_in"] = {"seconds": retry_in}
    return app.configure_task(SYNC_TASK, **options)


def sync_args(tenant: str, source: str, *, full_refresh: bool = False, since: str | None = None,
              attempt: int = 1, due: str | None = None) -> dict[str, Any]:
    """A sync job's arguments: what to run, never where it stopped (the cursor stays in
    the warehouse, committed with each batch)."""
    return {"tenant": tenant, "source": source, "full_refresh": full_refresh, "since": since,
            "attempt": attempt, "due": due}


def coalesced(tenant: str, source: str, **fields: Any) -> None:
    from lms_sync.cluster import metrics

    metrics.coalesced.labels(tenant, source).inc()
    get_logger("lms_sync.cluster").info(
        "sync.coalesced", tenant=tenant, source=source,
        reason="the same run of this source is already queued; it serves this request", **fields)


def _request(args: dict[str, Any]) -> dict[str, Any]:
    """What a coalesced request asked for, for its log line."""
    return {k: args[k] for k in ("due", "full_refresh", "since") if args.get(k)}


def defer_sync(app: Any, args: dict[str, Any], retry_in: float | None = None) -> int | None:
    """Queue a run (from a thread or a plain process); None if one was already queued."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        return sync_deferrer(app, args, retry_in).defer(**args)
    except AlreadyEnqueued:
        coalesced(args["tenant"], args["source"], **_request(args))
        return None


async def defer_sync_async(app: Any, args: dict[str, Any]) -> int | None:
    """:func:`defer_sync` on the worker's event loop (the ticker)."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        return await sync_deferrer(app, args).defer_async(**args)
    except AlreadyEnqueued:
        coalesced(args["tenant"], args["source"], **_request(args))
        return None


def provision_deferrer(app: Any, tenant: str, source: str) -> Any:
    """A provisioning run of ``tenant``'s ``source``: never beside a sync of that source."""
    return app.configure_task(PROVISION_TASK, lock=sync_lock(tenant, source),
                              queueing_lock=provision_lock(tenant, source), queue=SYNC_QUEUE)


def _provision_coalesced(tenant: str, source: str, due: str | None) -> None:
    get_logger("lms_sync.cluster").info(
        "provision.coalesced", tenant=tenant, source=source, due=due,
        reason="a provisioning run of this source is already queued; it serves this one")


def defer_provision(app: Any, tenant: str, source: str, due: str | None = None) -> int | None:
    """Queue a provisioning run (a thread or a plain process); None if one was waiting."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        return provision_deferrer(app, tenant, source).defer(tenant=tenant, source=source, due=due)
    except AlreadyEnqueued:
        _provision_coalesced(tenant, source, due)
        return None


async def defer_provision_async(app: Any, tenant: str, source: str, due: str | None = None) -> int | None:
    """:func:`defer_provision` on the worker's event loop (the ticker)."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        return await provision_deferrer(app, tenant, source).defer_async(
            tenant=tenant, source=source, due=due)
    except AlreadyEnqueued:
        _provision_coalesced(tenant, source, due)
        return None

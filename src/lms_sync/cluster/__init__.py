"""The worker pool: many tenants' sources run by many processes from one job queue.

``lms-sync daemon`` (APScheduler, one process) stays the embedded default. Past one
machine, ``lms-sync worker`` processes share a procrastinate queue in PostgreSQL
(extra ``[cluster]``): a job is one run of one source of one tenant.

Modules: ``queue`` (where the queue lives, the procrastinate app, deferring jobs),
``tenants`` (one config file per tenant, re-read when it changes), ``jobs`` (what a
job does), ``ticker`` (which sources fell due), ``reaper`` (jobs of dead workers),
``worker`` (the process), ``status`` (``lms-sync cluster status``), ``metrics``.
"""

from __future__ import annotations

from lms_sync.errors import UserError


def require_procrastinate() -> None:
    """UserError unless the ``[cluster]`` extra is installed."""
    try:
        import procrastinate  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("the worker pool needs procrastinate, which is not installed; "
                        "install the extra: pip install 'lms-sync[cluster]'") from None

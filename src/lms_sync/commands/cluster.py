"""The worker pool's commands (extra ``[cluster]``; see ``lms_sync.cluster``):

    lms-sync worker --configs DIR [--config F]... [--concurrency N]
    lms-sync enqueue --config F [--source ID]... [--full-refresh] [--since ISO8601]
    lms-sync cluster init | status

A tenant is one config file; its name is the file's stem.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lms_sync.commands import command
from lms_sync.errors import UserError


def _queue_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue-url", metavar="URL", help="the job queue's PostgreSQL URL "
                   "(default: the configs' cluster.queue_url, i.e. $LMS_SYNC_QUEUE_URL)")
    p.add_argument("--queue-schema", metavar="NAME", help="its schema (default: cluster.queue_schema)")


def _tenant_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", metavar="DIR", action="append", default=[],
                   help="serve every *.yaml in DIR: one tenant per file, named by the file")
    p.add_argument("--config", metavar="PATH", action="append", default=[],
                   help="a tenant's config file (repeatable; default: $LMS_SYNC_CONFIG, "
                        "then ./config.yaml, if no --configs)")


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from lms_sync.config import DaemonConfig

    w = sub.add_parser("worker", help="run queued jobs of many tenants (worker pool, PostgreSQL)")
    _tenant_options(w)
    _queue_options(w)
    w.add_argument("--concurrency", type=int, default=4, metavar="N", help="runs at once (default 4)")
    w.add_argument("--health-port", type=int, default=DaemonConfig().health_port, metavar="PORT",
                   help="serve /healthz and /metrics (default: $LMS_SYNC_HEALTH_PORT; 0: any free port)")
    w.add_argument("--health-host", default="0.0.0.0", metavar="HOST")  # noqa: S104
    w.add_argument("--shutdown-timeout", type=float, default=60.0, metavar="S",
                   help="on SIGTERM, how long runs in flight may take to commit their batch")
    w.add_argument("--heartbeat-seconds", type=int, default=10, metavar="S",
                   help="the worker's heartbeat, and how often dead workers' jobs are looked for")
    w.add_argument("--stalled-seconds", type=float, default=60.0, metavar="S",
                   help="a worker silent this long is dead: its jobs are queued again")
    w.add_argument("--reload-seconds", type=float, default=5.0, metavar="S",
                   help="how often the tenant files are checked for changes")
    w.add_argument("--no-migrate", action="store_true", help="do not migrate tenants' warehouses")
    w.add_argument("--log-format", choices=["json", "console"], default="json")
    w.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO")
    w.set_defaults(func=run_worker)

    e = sub.add_parser("enqueue", parents=[common], help="queue a run of a tenant's sources now")
    e.add_argument("--source", action="append", default=[], metavar="ID", help="only this source")
    e.add_argument("--full-refresh", action="store_true", help="ignore saved cursors")
    e.add_argument("--since", metavar="ISO8601", help="read changes since this time (backfill)")
    _queue_options(e)
    e.set_defaults(func=run_enqueue)

    c = sub.add_parser("cluster", help="the worker pool's job queue")
    csub = c.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    init = csub.add_parser("init", parents=[common], help="create the job queue (procrastinate's schema), "
                           "or apply the procrastinate migrations it lacks: --queue-url, else the one "
                           "--config names, else $LMS_SYNC_QUEUE_URL")
    _queue_options(init)
    init.set_defaults(func=run_init)
    st = csub.add_parser("status", help="queued, running, last result and next due per tenant and source")
    _tenant_options(st)
    _queue_options(st)
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.set_defaults(func=run_status)


# ---------------------------------------------------------------------- helpers


def _tenants(args: argparse.Namespace, target: Any = None, migrate: bool = True) -> Any:
    from lms_sync.cluster.tenants import Tenants
    from lms_sync.config import default_config_path

    dirs = [Path(d) for d in args.configs]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"tenant folder {d} does not exist, --configs; "
                            "give a folder of one config file per tenant")
    files = [Path(f) for f in args.config] or ([] if dirs else [Path(default_config_path())])
    return Tenants(dirs, files, target, migrate)


def _open_app(target: Any) -> Any:
    from lms_sync.cluster.queue import build_app, require_ready

    require_ready(target)
    return build_app(target).open()


# ---------------------------------------------------------------------- commands


def run_worker(args: argparse.Namespace) -> int:
    from lms_sync.cluster import require_procrastinate
    from lms_sync.cluster.queue import require_ready, resolve_target
    from lms_sync.cluster.tenants import quiet_configs
    from lms_sync.cluster.worker import Settings, serve
    from lms_sync.config import _url_password
    from lms_sync.logs import configure, redactor

    require_procrastinate()
    configure(args.log_format, args.log_level)
    if args.concurrency < 1 or not 1 <= args.heartbeat_seconds <= 59:
        raise UserError("--concurrency must be 1 or more, --heartbeat-seconds 1 to 59")
    tenants = _tenants(args, migrate=not args.no_migrate)
    tenants.keep_warm = 2 * args.concurrency  # idle warehouse pools kept open between jobs
    configs = [] if args.queue_url else quiet_configs(tenants.paths())
    tenants.target = target = resolve_target(args.queue_url, args.queue_schema, configs)
    redactor.add([p for p in [_url_password(target.url)] if p])
    require_ready(target)
    tenants.refresh()
    settings = Settings(target, args.concurrency, args.heartbeat_seconds, args.stalled_seconds,
                        args.shutdown_timeout, args.reload_seconds, args.health_host, args.health_port)
    return serve(settings, tenants)


def run_enqueue(args: argparse.Namespace) -> int:
    from lms_sync.cli import parse_since, select_sources, setup
    from lms_sync.cluster import require_procrastinate
    from lms_sync.cluster.queue import defer_sync, resolve_target, sync_args
    from lms_sync.cluster.tenants import check_name

    require_procrastinate()
    cfg = setup(args)
    tenant = Path(cfg.path).stem
    check_name(tenant, cfg.path)
    sources = select_sources(cfg, args.source)
    since = parse_since(args.since)
    app = _open_app(resolve_target(args.queue_url, args.queue_schema, [cfg]))
    try:
        for source in sources:
            job = defer_sync(app, sync_args(tenant, source.id, full_refresh=args.full_refresh,
                                            since=since.isoformat() if since else None))
            # a full refresh or a backfill waits beside a plain run, never melted into it
            what = "a full refresh" if args.full_refresh else "a run"
            what += f" since {since.isoformat()}" if since else ""
            plain = not (args.full_refresh or since)
            print(f"{tenant}/{source.id}: " + (
                f"queued{'' if plain else ' ' + what} (job {job})" if job else
                f"{what} is already queued; it serves this request"))
    finally:
        app.close()
    return 0


def run_init(args: argparse.Namespace) -> int:
    from lms_sync.cli import setup
    from lms_sync.cluster import require_procrastinate
    from lms_sync.cluster.queue import init_queue, resolve_target

    require_procrastinate()
    # the queue of --queue-url, else of --config, else $LMS_SYNC_QUEUE_URL (a compose service)
    configs = [setup(args)] if args.config and not args.queue_url else []
    target = resolve_target(args.queue_url, args.queue_schema, configs)
    from lms_sync.cluster.schema import procrastinate_version

    outcome = init_queue(target)
    version = f"procrastinate {procrastinate_version()}"
    if outcome.state == "created":
        print(f"job queue created: {target.shown} ({version})")
    elif outcome.state == "current":
        print(f"job queue already there: {target.shown} (up to date with {version})")
    else:
        print(f"job queue migrated: {target.shown} ({len(outcome.applied)} migrations of {version} "
              f"applied: {', '.join(outcome.applied)})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from lms_sync.cluster import require_procrastinate
    from lms_sync.cluster.queue import resolve_target
    from lms_sync.cluster.status import collect, render
    from lms_sync.logs import configure

    require_procrastinate()
    configure("json", "WARNING")  # stdout is the table; a tenant that does not load is one line
    tenants = _tenants(args, migrate=False)
    tenants.refresh()
    app = _open_app(resolve_target(args.queue_url, args.queue_schema, [t.cfg for t in tenants.all()]))
    try:
        rows = collect(app, tenants)
    finally:
        app.close()
        tenants.close()
    if args.format == "json":
        print(json.dumps(rows, default=str, indent=2))
    else:
        print(render(rows))
    for path in tenants.skipped():
        print(f"  ! skipped {path} (see the error above)")
    return 0

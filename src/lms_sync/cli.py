"""The ``lms-sync`` command line (docs/contracts.md, "Command line").

Exit codes: 0 success; 1 a source failed; 2 a user error (config, arguments,
unreachable warehouse), printed as one line ``lms-sync: error: …`` without a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lms_sync import __version__
from lms_sync.config import Config, load_config
from lms_sync.errors import ConfigError, LmsSyncError, UserError
from lms_sync.logs import configure, get_logger, one_line
from lms_sync.memory import tune_gc, tune_malloc

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="config file (default: $LMS_SYNC_CONFIG, then ./config.yaml)")
    p = argparse.ArgumentParser(prog="lms-sync", description="Unified LMS progress sync.")
    p.add_argument("--version", action="version", version=f"lms-sync {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("sync", parents=[common], help="run every enabled source (or --source) once")
    s.add_argument("--source", action="append", default=[], metavar="ID", help="only this source")
    s.add_argument("--full-refresh", action="store_true", help="ignore saved cursors")
    s.add_argument("--since", metavar="ISO8601", help="read changes since this time (backfill)")
    s.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    s.add_argument("--parallel", type=int, metavar="N",
                   help="sources run at once (default: defaults.parallel_sources)")
    s.set_defaults(func=cmd_sync)

    st = sub.add_parser("status", parents=[common], help="last run, result, rows and cursor per stream")
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.set_defaults(func=cmd_status)

    db = sub.add_parser("db", help="warehouse maintenance")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbsub.add_parser("upgrade", parents=[common], help="apply the alembic migrations")
    up.set_defaults(func=cmd_db_upgrade)

    c = sub.add_parser("check", parents=[common], help="validate config and try credentials")
    c.add_argument("--source", action="append", default=[], metavar="ID")
    c.set_defaults(func=cmd_check)

    for extra in EXTRA_COMMANDS:
        extra(sub, common)
    return p


EXTRA_COMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = []
"""Other modules add sub-commands here (daemon, demo, sandbox, report, identity)."""


def main(argv: Sequence[str] | None = None) -> int:
    tune_malloc()
    _load_extra_commands()
    args = _parser().parse_args(argv)
    tune_gc()  # after the imports: they are what it freezes
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"lms-sync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("lms-sync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `lms-sync status | head`: the reader went away; that is not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _load_extra_commands() -> None:
    import importlib

    for module in ("lms_sync.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


# ---------------------------------------------------------------------- helpers


def setup(args: argparse.Namespace) -> Config:
    """Load the config and configure logging from it."""
    cfg = load_config(args.config)
    configure(cfg.logging.format, cfg.logging.level, cfg.secret_values())
    return cfg


def open_warehouse(cfg: Config, migrate: bool = True,
                   on_migrated: Callable[[str, str], None] | None = None) -> Engine:
    """An engine for the warehouse, migrated unless told not to; UserError if it cannot be
    reached, is at a revision this lms-sync does not know, or (not migrated here) has no
    tables yet. ``on_migrated(revision, description)`` hears of each migration applied."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError

    from lms_sync.warehouse.db import is_migrated, make_engine, upgrade

    try:
        engine = make_engine(cfg.warehouse.url, cfg.warehouse.schema_)
    except ConfigError as exc:
        raise ConfigError(exc.what, f"{cfg.path}: {exc.where}", exc.fix) from None
    try:
        with engine.connect():
            pass
        if migrate:
            upgrade(engine, on_applied=on_migrated)
        elif not is_migrated(engine):
            raise UserError(f"the warehouse has no lms-sync tables yet, {cfg.path}: warehouse.url; "
                            "run `lms-sync db upgrade` (or a sync) first")
    except DBAPIError as exc:
        raise UserError(
            f"cannot reach the warehouse ({one_line(exc)}), {cfg.path}: warehouse.url; "
            "check the URL and that the database is running"
        ) from None
    except CommandError as exc:
        raise UserError(
            f"the warehouse is at a schema revision this lms-sync does not know ({str(exc)[:120]}), "
            f"{cfg.path}: warehouse.url; run the lms-sync version that migrated it, or a newer one"
        ) from None
    return engine


def select_sources(cfg: Config, ids: list[str]) -> list:
    if ids:
        for i in ids:
            if i in cfg.unusable:  # disabled and not valid: an error once it is asked for
                raise cfg.unusable[i]
        unknown = [i for i in ids if i not in cfg.sources]
        if unknown:
            raise ConfigError(f"unknown source {unknown[0]!r}", f"{cfg.path}: sources",
                              f"use one of: {', '.join(cfg.sources) or '(none configured)'}")
        return [cfg.sources[i] for i in ids]
    return [s for s in cfg.sources.values() if s.enabled]


def parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--since {value!r} is not an ISO 8601 time; use e.g. 2026-01-31T00:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- commands


def cmd_sync(args: argparse.Namespace) -> int:
    from lms_sync.pipeline import run_sources

    cfg = setup(args)
    sources = select_sources(cfg, args.source)
    since = parse_since(args.since)
    engine = open_warehouse(cfg, migrate=not args.no_migrate)
    log = get_logger("lms_sync.cli")
    if not sources:
        log.warning("sync.nothing_to_do", reason="no enabled sources in the config")
        return EXIT_OK
    results = run_sources(engine, cfg, sources, parallel=args.parallel,
                          full_refresh=args.full_refresh, since=since)
    failed = [r for r in results if r.result != "succeeded"]
    for r in results:
        line = f"{r.source_id}: {r.result}"
        if r.streams:
            line += " (" + ", ".join(f"{s.stream} {s.read} read/{s.written} written" for s in r.streams) + ")"
        if r.error:
            line += f" — {r.error}"
        print(line)
    engine.dispose()
    return EXIT_FAILED if failed else EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from lms_sync.warehouse.db import current_revision

    cfg = setup(args)
    log = get_logger("lms_sync.cli")

    def migrated(revision: str, description: str) -> None:
        log.info("db.migrated", revision=revision, description=description)

    engine = open_warehouse(cfg, migrate=True, on_migrated=migrated)
    log.info("db.upgraded", revision=current_revision(engine))
    print(f"warehouse at revision {current_revision(engine)}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from lms_sync.status import collect_status, render_table

    cfg = setup(args)
    engine = open_warehouse(cfg, migrate=False)
    rows, summary = collect_status(engine, cfg)
    if args.format == "json":
        print(json.dumps({"streams": rows, "summary": summary}, default=str, indent=2))
    else:
        print(render_table(rows, summary))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from lms_sync.connectors import connector_class

    cfg = setup(args)
    log = get_logger("lms_sync.cli")
    failed = 0
    for source in select_sources(cfg, args.source):
        connector = None
        try:  # one source's failure, whatever it is, never hides the others' results
            connector = connector_class(source.kind)(source, log.bind(source=source.id))
            connector.check()
            print(f"{source.id}: ok ({source.kind}, {source.base_url})")
        except Exception as exc:  # noqa: BLE001
            failed += 1
            text = one_line(exc)
            if not isinstance(exc, LmsSyncError):
                text = f"{type(exc).__name__}: {text}"
                log.error("check.failed", source=source.id, error=text, exc_info=True)
            print(f"{source.id}: FAILED — {text}")
        finally:
            if connector is not None:
                connector.close()
    print(f"config {cfg.path}: valid, {len(cfg.sources)} source(s)")
    return EXIT_FAILED if failed else EXIT_OK

"""``lms-sync provision --source ID [--dry-run] [--force]``: keep a source's vendor users in
step with the persons of its ``provision.from_sources`` (see :mod:`lms_sync.provision.run`).

Exit codes as ``sync``: 0 done, 1 failed or refused, 2 a config or usage error. A run
prints one line; ``--dry-run`` prints the plan (counts and the first rows of each kind,
with names: the only place names appear) and sends nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

from lms_sync.cli import EXIT_FAILED, EXIT_OK, open_warehouse, select_sources, setup
from lms_sync.commands import command
from lms_sync.errors import ConfigError
from lms_sync.provision.plan import RemoteUser, Wanted
from lms_sync.provision.run import ProvisionResult, run_provision

SHOWN = 10  # rows of each kind a dry run prints
T = TypeVar("T")


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("provision", parents=[common],
                       help="create, update and deactivate a source's users from HR (Sparkwise)")
    p.add_argument("--source", required=True, metavar="ID", help="the source to provision")
    p.add_argument("--dry-run", action="store_true", help="print the plan and send nothing")
    p.add_argument("--force", action="store_true",
                   help="send even if it deactivates more than max_deactivate_fraction")
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = setup(args)
    [source] = select_sources(cfg, [args.source])
    if source.provision is None:
        raise ConfigError(f"source {source.id!r} has no provision block",
                          f"{cfg.path}: sources.{source.id}",
                          "add provision: (see config.example.yaml)")
    engine = open_warehouse(cfg, migrate=not args.no_migrate)
    result = run_provision(engine, cfg, source, dry_run=args.dry_run, force=args.force)
    engine.dispose()
    print("\n".join(render_plan(result)) if args.dry_run else summary(result))
    return EXIT_OK if result.ok else EXIT_FAILED


def summary(r: ProvisionResult) -> str:
    """The one line a run prints."""
    if r.result != "succeeded":
        return f"{r.source_id}: provision {r.result} — {r.error}"
    assert r.plan is not None
    line = (f"{r.source_id}: provision succeeded ({r.sent['create']} created, "
            f"{r.sent['update']} updated, {r.sent['deactivate']} deactivated, "
            f"{r.plan.unchanged} unchanged")
    if r.failed:
        line += f", {r.failed} refused by the vendor: retried next run"
    if r.plan.held:
        line += f", {len(r.plan.held)} deactivations held: {_held(r)}"
    return line + ")"


def render_plan(r: ProvisionResult) -> list[str]:
    if r.plan is None:
        return [summary(r)]
    p = r.plan
    lines = [f"{r.source_id}: plan from {', '.join(r.from_sources) or 'no source'} "
             f"(dry run, nothing sent): {len(p.create)} create, {len(p.update)} update, "
             f"{len(p.deactivate)} deactivate, {p.unchanged} unchanged",
             f"  vendor users: {p.remote_users} ({p.active_remote} active; {p.untouched} not ours, "
             f"left alone); persons skipped: {p.no_hr_id} without an HR id, {p.absent} inactive "
             "or gone with no user"]
    lines += _rows("create", p.create, _wanted)
    lines += _rows("update", p.update, lambda c: _change(c.before, c.user))
    lines += _rows("deactivate", p.deactivate, _remote)
    if p.held:
        lines.append(f"deactivations held: {len(p.held)} ({_held(r)})")
    if r.result != "succeeded":
        lines.append(summary(r))
    return lines


def _rows(kind: str, items: Sequence[T], show: Callable[[T], str]) -> list[str]:
    out = [f"  {kind:<10}  {show(item)}" for item in items[:SHOWN]]
    if len(items) > SHOWN:
        out.append(f"  {kind:<10}  … and {len(items) - SHOWN} more")
    return out


def _wanted(u: Wanted) -> str:
    return f"{u.remote_id:<12} {u.first_name} {u.last_name}".rstrip()


def _remote(u: RemoteUser) -> str:
    return f"{u.remote_id or '-':<12} {u.first_name} {u.last_name}".rstrip()


def _change(before: RemoteUser, after: Wanted) -> str:
    what = [] if before.active else ["reactivate"]
    if (before.first_name, before.last_name) != (after.first_name, after.last_name):
        what.append(f"was {before.first_name} {before.last_name}".rstrip())
    return f"{_wanted(after)} ({', '.join(what)})"


def _held(r: ProvisionResult) -> str:
    return "; ".join(f"{sid}: {why}" for sid, why in r.held_by.items())


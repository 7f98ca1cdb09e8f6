"""``lms-sync identity``: look at and correct how learners were matched into persons.

    lms-sync identity show EMAIL|PERSON_ID|SOURCE_ID:EXTERNAL_ID [--format table|json]
    lms-sync identity link LEARNER LEARNER [--note TEXT]     force two learners together
    lms-sync identity unlink LEARNER LEARNER [--note TEXT]   force two learners apart
    lms-sync identity recompute                              re-match everyone (after a rules change)

A LEARNER is ``SOURCE_ID:EXTERNAL_ID`` (the vendor's id) or the numeric learner id
that ``identity show`` prints. Overrides are stored in ``identity_overrides`` and
take effect at once (the two learners and their persons are re-matched).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select

from lms_sync.cli import EXIT_OK, open_warehouse, setup
from lms_sync.commands import command
from lms_sync.errors import UserError
from lms_sync.warehouse import identity
from lms_sync.warehouse.org_units import person_org_units
from lms_sync.warehouse.tables import learners


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("identity", help="show, link, unlink or recompute persons")
    isub = p.add_subparsers(dest="identity_command", metavar="ACTION", required=True)

    show = isub.add_parser("show", parents=[common], help="a person, its learners, org units and history")
    show.add_argument("who", metavar="EMAIL|PERSON_ID|SOURCE_ID:EXTERNAL_ID")
    show.add_argument("--format", choices=["table", "json"], default="table")
    show.set_defaults(func=cmd_show)

    for name, action, text in (("link", identity.LINK, "force two learners into one person"),
                               ("unlink", identity.APART, "force two learners into different persons")):
        sp = isub.add_parser(name, parents=[common], help=text)
        sp.add_argument("learner_a", metavar="LEARNER", help="SOURCE_ID:EXTERNAL_ID or learner id")
        sp.add_argument("learner_b", metavar="LEARNER")
        sp.add_argument("--note", help="why (kept with the override)")
        sp.set_defaults(func=cmd_override, action=action)

    rc = isub.add_parser("recompute", parents=[common], help="re-match every learner")
    rc.set_defaults(func=cmd_recompute)


def resolve_person(engine: Any, cfg: Any, who: str) -> list[int]:
    """Live person ids for ``who``; UserError (exit 2) if there is none."""
    with engine.connect() as conn:
        found = identity.find_persons(conn, who, cfg.identity)
    if not found:
        raise UserError(f"no person matches {who!r}; give an email, a person id or "
                        "SOURCE_ID:EXTERNAL_ID of a synced learner")
    return found


def cmd_show(args: argparse.Namespace) -> int:
    cfg = setup(args)
    engine = open_warehouse(cfg)
    ids = resolve_person(engine, cfg, args.who)
    with engine.connect() as conn:
        people = [identity.describe_person(conn, pid) for pid in ids]
        for info in people:  # the union of its accounts' org units
            info["org_units"] = person_org_units(conn, info["person"]["id"])
    if args.format == "json":
        print(json.dumps(people, default=_json_default, indent=2))
    else:
        print("\n\n".join(_render(p) for p in people))
    engine.dispose()
    return EXIT_OK


def cmd_override(args: argparse.Namespace) -> int:
    cfg = setup(args)
    engine = open_warehouse(cfg)
    la, lb, result = identity.set_override(engine, cfg.identity, args.learner_a, args.learner_b,
                                           args.action, args.note)
    with engine.connect() as conn:
        now = dict(conn.execute(select(learners.c.id, learners.c.person_id)
                                .where(learners.c.id.in_([la.id, lb.id]))).all())
    names = f"{la.source_id}:{la.external_id} and {lb.source_id}:{lb.external_id}"
    if args.action == identity.LINK:
        print(f"linked {names}: both are person {now[la.id]}")
    else:
        print(f"kept apart {names}: persons {now[la.id]} and {now[lb.id]}")
    print(_result_line(result))
    engine.dispose()
    return EXIT_OK


def cmd_recompute(args: argparse.Namespace) -> int:
    cfg = setup(args)
    engine = open_warehouse(cfg)
    result = identity.recompute(engine, cfg.identity)
    print(_result_line(result))
    engine.dispose()
    return EXIT_OK


# ---------------------------------------------------------------------- rendering


def _result_line(r: identity.MatchResult) -> str:
    return (f"matched {r.learners} learner(s) in {r.seconds:.2f}s: {r.merges} merges, "
            f"{r.splits} splits, {r.persons_created} new persons, {r.persons_deleted} persons "
            f"retired, {r.relinked} learner(s) moved")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    out = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return out


def _render(info: dict[str, Any]) -> str:
    p = info["person"]
    lines = [f"person {p['id']}: {p['primary_email'] or '-'} ({p['display_name'] or 'no name'})"
             f", first seen {_fmt(p['first_seen_at'])}"]
    lines.append("")
    lines += table(
        ["learner", "source", "external_id", "email", "hr_id", "name", "placeholder", "deleted"],
        [[m["id"], m["source_id"], m["external_id"], m["email"], m["hr_id"],
          " ".join(x for x in (m["first_name"], m["last_name"]) if x) or m["display_name"],
          m["is_placeholder"], m["deleted_at"]] for m in info["learners"]],
    )
    sections = (
        ("org units", ["source", "kind", "path", "external_id"],
         [[u["source_id"], u["kind"], u["path"] or u["name"], u["external_id"]]
          for u in info.get("org_units", [])]),
        ("history", ["at", "kind", "rule", "kept", "merged"],
         [[h["at"], h["kind"], h["rule"], h["kept_person_id"], h["merged_person_id"]]
          for h in info["history"]]),
        ("overrides", ["action", "learner_a", "learner_b", "note", "created"],
         [[o["action"], o["learner_a_id"], o["learner_b_id"], o["note"], o["created_at"]]
          for o in info["overrides"]]),
    )
    for title, headers, rows in sections:
        if rows:
            lines += ["", f"{title}:", *("  " + line for line in table(headers, rows))]
    return "\n".join(lines)

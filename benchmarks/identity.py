"""Identity matching at scale: full recompute and incremental passes over 100k learners.

    python benchmarks/identity.py [--warehouse URL] [--learners 100000] [--changed 1000]

Builds ``--learners`` learners over five sources in a fresh warehouse (default: a
temporary SQLite file; for a PostgreSQL URL a scratch schema, for MySQL/MariaDB a
scratch database, both dropped afterwards). People overlap across sources by
email (with case, padding and an aliased domain), by HR id (zero-padded in one
source) or both; 1% are anonymized placeholders, some use a shared mailbox.

Times, each relative to a baseline measured in the same run on the same
database (``SELECT`` of every learner's matching columns, fetched into Python):

* full_first: ``identity recompute`` on unmatched learners (creates every person)
* full_again: a second recompute (nothing changes: the steady-state cost)
* incremental: ``after_run`` after ``--changed`` learners were written (half new
  accounts of existing people, half changed emails/HR ids: merges and splits)
* incremental_noop: the same pass again with nothing changed
* first_sync: ``after_run`` over every learner after their persons, keys and
  ``matched_at`` were cleared (what the pass after a first sync does)

Each phase also reports its CPU seconds (``cpu_s``: user + system of this process,
i.e. the pass's Python and driver work; the database server's CPU is not counted).

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, func, select, text, update
from sqlalchemy.engine import make_url

from lms_sync.config import IdentityConfig
from lms_sync.logs import configure
from lms_sync.warehouse import identity
from lms_sync.warehouse.db import make_engine, upgrade
from lms_sync.warehouse.tables import learners, person_merges, persons, sources

SOURCES = ["absorb", "ispring", "udemy", "sessions", "academy"]
SETTINGS = IdentityConfig(email_domain_aliases={"corp.example.com": "example.com"},
                          shared_mailboxes=["training@example.com"],
                          hr_id_sources=["absorb", "ispring", "academy"])


@contextmanager
def scratch(url: str | None) -> Iterator[tuple[str, str | None]]:
    """(url, schema) of a fresh warehouse, dropped afterwards."""
    if not url:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'identity.db'}", None
        return
    backend = make_url(url).get_backend_name()
    name = f"bench_identity_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        yield url, None
        return
    admin = create_engine(url)
    try:
        if backend == "postgresql":
            yield url, name
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            return
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False), None
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


def learner_row(rng: random.Random, source: str, n: int, person: int, now: datetime) -> dict[str, Any]:
    row: dict[str, Any] = {"source_id": source, "external_id": f"{source}-{n}", "row_hash": "x",
                           "first_seen_at": now, "updated_at": now, "is_placeholder": False,
                           "first_name": "P", "last_name": str(person)}
    roll = rng.random()
    if roll < 0.01:
        row.update(is_placeholder=True, display_name="Anonymized User", first_name=None, last_name=None)
        return row
    email = f"p{person}@example.com"
    if roll < 0.03:
        email = "training@example.com"
    elif roll < 0.10:
        email = f"p{person}@corp.example.com"
    elif roll < 0.15:
        email = f" P{person}@Example.com "
    elif roll < 0.25:
        email = None  # linked (if at all) by HR id only
    row["email"] = email.strip().lower() if email else None
    if source in {"absorb", "ispring", "academy"} and rng.random() < 0.8:
        row["hr_id"] = f"{person:08d}" if source == "ispring" else str(person)
    return row


def build(engine: Any, count: int, rng: random.Random) -> None:
    now = datetime.now(UTC)
    people = max(1, int(count / 2.5))
    with engine.begin() as conn:
        conn.execute(sources.insert(), [{"id": s, "kind": s, "first_seen_at": now, "updated_at": now}
                                        for s in SOURCES])
    rows = [learner_row(rng, SOURCES[i % len(SOURCES)], i, rng.randrange(people), now)
            for i in range(count)]
    keys = set().union(*(r.keys() for r in rows))
    rows = [{k: r.get(k) for k in keys} for r in rows]
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(learners.insert(), rows[i:i + 5000])


CPU: dict[str, float] = {}


def timed(fn: Any, name: str | None = None) -> tuple[float, Any]:
    started, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if name:
        CPU[name] = round(time.process_time() - cpu, 3)
    return round(time.perf_counter() - started, 3), result


def unmatch(engine: Any) -> None:
    """Back to a first load: no persons, no keys, nothing matched."""
    with engine.begin() as conn:
        conn.execute(person_merges.delete())
        conn.execute(update(learners).values(person_id=None, email_key=None, hr_key=None,
                                             matched_at=None))
        conn.execute(persons.delete())


def baseline(engine: Any) -> float:
    c = learners.c
    cols = [c.id, c.source_id, c.external_id, c.email, c.hr_id, c.is_placeholder, c.person_id,
            c.first_name, c.last_name, c.display_name, c.email_key, c.hr_key]

    def load() -> int:
        with engine.connect() as conn:
            return len(conn.execute(select(*cols)).all())

    return min(timed(load)[0] for _ in range(3))


def change(engine: Any, count: int, total: int, rng: random.Random) -> set[int]:
    """Write ``count`` learners: new accounts of existing people, changed emails/HR ids."""
    now = datetime.now(UTC)
    people = max(1, int(total / 2.5))
    new = [learner_row(rng, SOURCES[i % len(SOURCES)], total + i, rng.randrange(people), now)
           for i in range(count // 2)]
    keys = set().union(*(r.keys() for r in new))
    new = [{k: r.get(k) for k in keys} for r in new]
    with engine.begin() as conn:
        conn.execute(learners.insert(), new)
        ids = set(conn.execute(select(learners.c.id).where(learners.c.external_id.in_(
            [r["external_id"] for r in new]))).scalars())
        victims = rng.sample(range(1, total + 1), count - count // 2)
        edits = [{"lid": lid, "email": f"p{rng.randrange(people)}@example.com",
                  "hr": str(rng.randrange(people)) if rng.random() < 0.3 else None} for lid in victims]
        conn.execute(update(learners).where(learners.c.id == bindparam("lid"))
                     .values(email=bindparam("email"), hr_id=bindparam("hr"), updated_at=now), edits)
    return ids | set(victims)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warehouse", metavar="URL", help="database URL (default: a temporary SQLite file)")
    p.add_argument("--learners", type=int, default=100_000)
    p.add_argument("--changed", type=int, default=1000)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    configure("json", "WARNING")  # logs to stderr; the figures alone on stdout
    rng = random.Random(args.seed)
    with scratch(args.warehouse) as (url, schema):
        engine = make_engine(url, schema)
        upgrade(engine)
        build_s, _ = timed(lambda: build(engine, args.learners, rng))
        base = baseline(engine)
        full_first, r1 = timed(lambda: identity.recompute(engine, SETTINGS), "full_first")
        full_again, r2 = timed(lambda: identity.recompute(engine, SETTINGS), "full_again")
        ids = change(engine, args.changed, args.learners, rng)
        incr, r3 = timed(lambda: identity.after_run(engine, SETTINGS, ids), "incremental")
        noop, r4 = timed(lambda: identity.after_run(engine, SETTINGS, ids), "incremental_noop")
        unmatch(engine)
        with engine.connect() as conn:
            every = list(conn.execute(select(learners.c.id)).scalars())
        first, r5 = timed(lambda: identity.after_run(engine, SETTINGS, every), "first_sync")
        with engine.connect() as conn:
            live = conn.execute(select(func.count()).select_from(persons)
                                .where(persons.c.deleted_at.is_(None))).scalar()
            log = dict(conn.execute(select(person_merges.c.kind, func.count())
                                    .group_by(person_merges.c.kind)).all())
        engine.dispose()
    out = {
        "dialect": make_url(url).get_backend_name(),
        "learners": args.learners,
        "persons": live,
        "build_s": build_s,
        "baseline_select_s": base,
        "full_first_s": full_first,
        "full_again_s": full_again,
        "incremental_s": incr,
        "incremental_noop_s": noop,
        "incremental_learners_examined": r3.learners,
        "incremental": {k: getattr(r3, k) for k in ("merges", "splits", "persons_created",
                                                     "persons_deleted", "relinked")},
        "full_first": {k: getattr(r1, k) for k in ("persons_created", "relinked")},
        "full_again_relinked": r2.relinked,
        "noop_examined": r4.learners,
        "first_sync_s": first,
        "first_sync": {k: getattr(r5, k) for k in ("learners", "persons_created", "relinked")},
        "cpu_s": CPU,
        "person_merges": log,
        "ratio_to_baseline": {
            "full_first": round(full_first / base, 1),
            "full_again": round(full_again / base, 1),
            "incremental": round(incr / base, 2),
            "incremental_noop": round(noop / base, 2),
        },
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

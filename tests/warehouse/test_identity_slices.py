"""Identity passes in many slices, on every database: the same persons, ids, keys and history
on each (PostgreSQL matches over array parameters, SQLite and MySQL/MariaDB over IN lists),
for a first load, changes, and a re-sync whose later slices find their seeds matched
already by an earlier slice."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, update

from lms_sync.config import IdentityConfig
from lms_sync.warehouse import identity
from lms_sync.warehouse.tables import learners, person_merges, persons, sources
from tests.conftest import _make_warehouse

SOURCES = ["s0", "s1", "s2", "s3"]
SETTINGS = IdentityConfig(email_domain_aliases={"corp.example.com": "example.com"},
                          shared_mailboxes=["training@example.com"], hr_id_sources=["s0", "s1"])
# values an array literal must quote or escape: quotes, backslashes, commas, braces,
# spaces, the word NULL, non-ASCII
ODD = ['o"neil', "back\\slash", "a,b", "{brace}", "two  words", "NULL", "Zoë “Q”", "\\\"", ""]


def _learner(rng: random.Random, i: int, person: int) -> dict[str, Any]:
    odd = rng.choice(ODD)
    anon = rng.random() < 0.05
    email = rng.choice([f"p{person}@example.com", f"P{person}@corp.example.com ",
                        f'{odd}{person}@example.com', "training@example.com", None])
    return {"source_id": SOURCES[i % len(SOURCES)], "external_id": f"u{i}", "row_hash": "x",
            "is_placeholder": anon, "email": None if anon else email,
            "hr_id": rng.choice([f"{person:05d}", f"{odd}{person}", "n/a", None]),
            "first_name": rng.choice([odd, None]), "last_name": f"L{person}",
            "display_name": "Anonymized User" if anon else odd}


def _scenario(wh: Any, monkeypatch: Any) -> tuple[Any, list[identity.MatchResult]]:
    monkeypatch.setattr(identity, "PASS_SEEDS", 7)
    rng = random.Random(19)
    clock = [datetime(2024, 1, 1, tzinfo=UTC)]

    def now() -> datetime:
        clock[0] += timedelta(seconds=1)
        return clock[0]

    t = now()
    with wh.engine.begin() as conn:
        conn.execute(sources.insert(), [{"id": s, "kind": s, "first_seen_at": t, "updated_at": t}
                                        for s in SOURCES])
    rows = [_learner(rng, i, rng.randrange(60)) for i in range(150)]
    results = []

    def write(new: list[dict[str, Any]]) -> list[int]:
        t = now()
        with wh.engine.begin() as conn:
            for row in new:  # one at a time: the same ids on every database
                conn.execute(learners.insert().values(**row, first_seen_at=t, updated_at=t))
            names = [r["external_id"] for r in new]
            return list(conn.execute(select(learners.c.id).where(learners.c.external_id.in_(names))
                                     .order_by(learners.c.id)).scalars())

    def edit(ids: list[int]) -> None:
        t = now()
        with wh.engine.begin() as conn:
            conn.execute(update(learners).where(learners.c.id == bindparam("lid"))
                         .values(email=bindparam("e"), hr_id=bindparam("h"), updated_at=t),
                         [{"lid": lid, "e": f"p{rng.randrange(60)}@example.com",
                           "h": rng.choice([str(rng.randrange(60)), None])} for lid in ids])

    every = write(rows)
    results.append(identity.after_run(wh.engine, SETTINGS, every))  # a first load
    added = write([_learner(rng, 150 + i, rng.randrange(60)) for i in range(20)])
    changed = rng.sample(every, 25)
    edit(changed)
    results.append(identity.after_run(wh.engine, SETTINGS, added + changed))
    every += added
    edit(rng.sample(every, 15))
    results.append(identity.after_run(wh.engine, SETTINGS, every))  # a re-sync: all written again
    results.append(identity.recompute(wh.engine, SETTINGS))
    with wh.engine.connect() as conn:
        state = (
            [tuple(r) for r in conn.execute(select(
                learners.c.id, learners.c.person_id, learners.c.email_key, learners.c.hr_key,
                learners.c.matched_at.is_(None)).order_by(learners.c.id))],
            [tuple(r) for r in conn.execute(select(
                persons.c.id, persons.c.primary_email, persons.c.display_name,
                persons.c.deleted_at.is_(None)).order_by(persons.c.id))],
            [(r.kind, r.kept_person_id, r.merged_person_id, r.rule, r.detail)
             for r in conn.execute(select(person_merges).order_by(person_merges.c.id))],
        )
    return state, results


def test_sliced_passes_give_the_same_persons_on_every_database(warehouse, tmp_path: Path,
                                                                 monkeypatch):
    state, results = _scenario(warehouse, monkeypatch)
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    for reference in _make_warehouse("sqlite", reference_dir):
        expected, expected_results = _scenario(reference, monkeypatch)
    assert state == expected
    assert [r.as_dict() | {"seconds": 0} for r in results] == \
        [r.as_dict() | {"seconds": 0} for r in expected_results]
    first, changes, resync, recompute = results
    assert first.persons_created > 0 and changes.merges + changes.splits > 0
    assert (recompute.relinked, recompute.merges, recompute.splits, recompute.persons_created) == \
        (0, 0, 0, 0)
    # the re-sync's slices leave out seeds an earlier slice examined: about one look a
    # learner (each slice passing all its seeds looked at 268 here: 1.6 a learner)
    assert resync.learners <= len(state[0]) * 5 // 4
    # names and keys with quotes, backslashes, commas, braces made it through unchanged
    names = {name for _, _, name, _ in state[1] if name}
    assert any('"' in n for n in names) and any("\\" in n for n in names)
    assert any("{brace}" in (hk or "") for _, _, _, hk, _ in state[0])


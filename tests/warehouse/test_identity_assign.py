"""Person assignment on plain data: which learners are one person, which id it keeps, what
the merge/split history says. No database: ``identity/assign.py`` is pure."""

from __future__ import annotations

import ast
import random
from datetime import UTC, datetime
from pathlib import Path

from lms_sync.warehouse.identity import assign
from lms_sync.warehouse.identity.assign import Learner, Override, Person
from lms_sync.warehouse.identity.rules import APART, LINK, Rules

NOW = datetime(2026, 3, 1, tzinfo=UTC)
RULES = Rules(aliases={"corp.example.com": "example.com"}, shared=frozenset({"training@example.com"}))


def learner(lid: int, email: str | None = None, hr: str | None = None, *, pid: int | None = None,
            placeholder: bool = False, gone: bool = False, first: str | None = None) -> Learner:
    return Learner(lid, "absorb", f"x{lid}", email, hr, placeholder, pid, first, None, None,
                   None, None, gone)


def run(people: list[Learner], overrides: tuple[Override, ...] = (),
        persons: dict[int, Person] | None = None):
    """One pass over ``people``; new persons get ids from 100 on."""
    rows = {p.id: p for p in people}
    keys = {p.id: RULES.keys(p) for p in people}
    uf = assign.link(rows, keys, overrides)
    persons = persons or {}
    live = {pid for pid, p in persons.items() if p.live}
    plan = assign.assign(rows, keys, uf, live)
    plan.add_persons(range(100, 100 + len(plan.new_comps)))
    person_of = {lid: plan.final[plan.comp_of[lid]] for lid in rows}
    return plan, person_of, assign.history(plan, uf, overrides, NOW), assign.gone_persons(plan, live), uf


def persons_of(*pids: int) -> dict[int, Person]:
    return {pid: Person(None, None, True) for pid in pids}


def test_email_and_hr_links_are_transitive_and_normalized():
    _, person_of, history, _, uf = run([
        learner(1, "Jane@Corp.Example.com"), learner(2, " jane@example.com", "000123"),
        learner(3, None, "123"), learner(4, "bob@example.com"), learner(5, "training@example.com"),
        learner(6, "training@example.com"), learner(7, "x@example.com", placeholder=True),
        learner(8, "x@example.com", placeholder=True),
    ])
    assert person_of[1] == person_of[2] == person_of[3]
    assert len({person_of[i] for i in (1, 4, 5, 6, 7, 8)}) == 6  # shared mailbox, placeholders: alone
    assert sorted(rule for _, _, rule in uf.edges) == ["email", "hr_id"]
    assert history == []  # new persons only: nothing merged or split


def test_apart_refuses_the_link_and_placeholders_never_link():
    overrides = (Override(1, 2, APART), Override(3, 4, LINK), Override(5, 6, LINK))
    _, person_of, _, _, uf = run([learner(1, "a@example.com"), learner(2, "a@example.com"),
                                  learner(3), learner(4), learner(5, placeholder=True), learner(6)],
                                 overrides)
    assert person_of[1] != person_of[2] and uf.refused == [(1, 2)]
    assert person_of[3] == person_of[4]
    assert person_of[5] != person_of[6]


def test_a_merge_keeps_the_oldest_id_and_records_why():
    people = [learner(1, "a@example.com", pid=20), learner(2, "a@example.com", "7", pid=10),
              learner(3, None, "7", pid=30)]
    plan, person_of, history, gone, _ = run(people, persons=persons_of(10, 20, 30))
    assert set(person_of.values()) == {10} and plan.new_comps == []
    assert gone == [20, 30]
    assert [(r["kind"], r["kept_person_id"], r["merged_person_id"], r["rule"]) for r in history] == [
        ("merge", 10, 20, "email"), ("merge", 10, 30, "hr_id")]


def test_a_split_leaves_the_id_with_the_larger_part_and_names_an_apart_override():
    people = [learner(1, "a@example.com", pid=10), learner(2, "a@example.com", pid=10),
              learner(3, "b@example.com", pid=10), learner(4, "c@example.com", pid=10)]
    overrides = (Override(3, 1, APART),)
    _, person_of, history, gone, _ = run(people, overrides, persons_of(10))
    assert person_of[1] == person_of[2] == 10 and gone == []
    assert {person_of[3], person_of[4]} == {100, 101}
    assert [(r["kind"], r["kept_person_id"], r["merged_person_id"], r["rule"], r["detail"])
            for r in history] == [
        ("split", 10, 100, "override", {"learner_ids": [3], "learners": 1}),
        ("split", 10, 101, "unlinked", {"learner_ids": [4], "learners": 1})]


def test_a_part_an_older_person_absorbs_does_not_keep_the_id():
    """Person 20's learners split: one joins person 10 (older), the other keeps 20."""
    people = [learner(1, "a@example.com", pid=10), learner(2, "a@example.com", pid=20),
              learner(3, "b@example.com", pid=20), learner(4, "b@example.com", pid=20)]
    _, person_of, history, gone, _ = run(people, persons=persons_of(10, 20))
    assert person_of == {1: 10, 2: 10, 3: 20, 4: 20} and gone == []
    assert [(r["kind"], r["kept_person_id"], r["merged_person_id"]) for r in history] == [
        ("split", 20, 10)]


def test_attributes_prefer_live_accounts_and_the_commonest_email():
    people = [learner(1, "old@example.com", gone=True, first="Janet"),
              learner(2, "jane@example.com", "9", first="Jane"),
              learner(3, "JANE@corp.example.com", "9"), learner(4, "j2@example.com", "9")]
    keys = {p.id: RULES.keys(p) for p in people}
    rows = {p.id: p for p in people}
    assert assign.attributes([1, 2, 3, 4], rows, keys) == ("jane@example.com", "Jane")
    assert assign.attributes([1], rows, keys) == ("old@example.com", "Janet")


def test_updates_name_only_what_changed():
    people = [learner(1, "a@example.com", pid=10), learner(2, "a@example.com", pid=None)]
    rows = {p.id: p for p in people}
    keys = {p.id: RULES.keys(p) for p in people}
    plan = assign.assign(rows, keys, assign.link(rows, keys, ()), {10})
    changes, relinked = assign.learner_updates(plan, rows, keys)
    assert relinked == 1
    assert changes == [{"lid": 1, "pid": 10, "ek": "a@example.com", "hk": None},  # keys now stored
                       {"lid": 2, "pid": 10, "ek": "a@example.com", "hk": None}]
    assert assign.person_updates(plan, {10: Person("a@example.com", None, True)}) == []
    assert assign.person_updates(plan, {10: Person("b@example.com", None, True)}) == [
        {"pid": 10, "email": "a@example.com", "name": None}]


def test_the_order_learners_arrive_in_does_not_change_the_persons():
    rng = random.Random(5)
    people = [learner(i, f"p{rng.randrange(30)}@example.com", str(rng.randrange(30)))
              for i in range(1, 200)]
    overrides = (Override(3, 4, APART), Override(10, 11, LINK))
    first = run(people, overrides)[1]
    rng.shuffle(people)
    assert run(people, overrides)[1] == first


def test_assignment_imports_no_database_code():
    for name in ("assign.py", "rules.py"):
        source = Path(assign.__file__).with_name(name).read_text(encoding="utf-8")
        modules = {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                   for alias in node.names}
        modules |= {node.module or "" for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.ImportFrom)}
        assert not {m for m in modules if m.startswith("sqlalchemy") or "store" in m}, name

"""Identity matching: learners of several sources become persons, on every database.

Learners are written through the real upsert path (BatchWriter) and matched by
the real pass the pipeline runs after every sync (identity.after_run).
"""

from __future__ import annotations

import json
import random

import pytest
import yaml
from sqlalchemy import select

from lms_sync.canonical import Learner
from lms_sync.config import IdentityConfig
from lms_sync.errors import UserError
from lms_sync.status import collect_status, render_table
from lms_sync.warehouse import identity
from lms_sync.warehouse.identity import Rules, normalize_hr_id
from lms_sync.warehouse.state import ensure_source, now_utc
from lms_sync.warehouse.tables import learners, person_merges, persons
from lms_sync.warehouse.upsert import BatchWriter
from tests.cli_helpers import run_cli
from tests.conftest import make_config

RULES = IdentityConfig(
    email_domain_aliases={"corp.example.com": "example.com"},
    shared_mailboxes=["Training@Example.com"],
    hr_id_sources=["absorb", "ispring", "sessions"],
)


def L(ext: str, email: str | None = None, hr: str | None = None, *, anon: bool = False,
      first: str | None = None, last: str | None = None) -> Learner:
    return Learner(external_id=ext, email=email, hr_id=hr, is_placeholder=anon,
                   first_name=first, last_name=last,
                   display_name="Anonymized User" if anon else None)


def write(wh, source: str, *records: Learner) -> set[int]:
    with wh.engine.begin() as conn:
        ensure_source(conn, source, source)
        writer = BatchWriter(conn, source)
        writer.write(list(records), now_utc())
    return writer.learner_ids


def run(wh, settings=RULES, **batches: list[Learner]) -> identity.MatchResult:
    """Write each source's learners, then match what was written (as the pipeline does)."""
    ids: set[int] = set()
    for source, records in batches.items():
        ids |= write(wh, source, *records)
    return identity.after_run(wh.engine, settings, ids)


def person_of(wh) -> dict[str, int]:
    with wh.engine.connect() as conn:
        rows = conn.execute(select(learners.c.source_id, learners.c.external_id,
                                   learners.c.person_id)).all()
    return {f"{r.source_id}:{r.external_id}": r.person_id for r in rows}


def groups(wh) -> set[frozenset[str]]:
    by: dict[int, set[str]] = {}
    for name, pid in person_of(wh).items():
        by.setdefault(pid, set()).add(name)
    return {frozenset(g) for g in by.values()}


def log(wh) -> list[tuple[str, int, int, str]]:
    with wh.engine.connect() as conn:
        rows = conn.execute(select(person_merges).order_by(person_merges.c.id)).mappings().all()
    return [(r["kind"], r["kept_person_id"], r["merged_person_id"], r["rule"]) for r in rows]


def assert_consistent(wh) -> None:
    """Every learner has a live person; every live person has a learner."""
    with wh.engine.connect() as conn:
        live = set(conn.execute(select(persons.c.id).where(persons.c.deleted_at.is_(None))).scalars())
        used = set(conn.execute(select(learners.c.person_id)).scalars())
    assert None not in used
    assert used == live


def test_normalization_rules():
    rules = Rules.from_config(RULES)
    assert rules.email_key("  Jane.Doe@CORP.example.com ") == "jane.doe@example.com"
    assert rules.email_key("   ") is None
    assert normalize_hr_id(" 000123 ") == "123" == normalize_hr_id("123")
    assert normalize_hr_id("E00123") == "e00123" != normalize_hr_id("E123")
    assert normalize_hr_id("ABC-7") == normalize_hr_id("abc-7 ")
    for empty in (None, "", "  ", "0", "000", "N/A", "none", "-"):
        assert normalize_hr_id(empty) is None
    row = type("Row", (), {"is_placeholder": False, "email": "training@corp.example.com",
                           "hr_id": "7", "source_id": "udemy"})
    assert rules.keys(row) == (None, None)  # shared mailbox; udemy HR ids not comparable


def test_matching_merges_splits_and_stable_ids(warehouse):
    """Chains, aliases, shared mailboxes, placeholders, HR ids; then merges and splits."""
    run(warehouse,
        absorb=[L("a-jane", "jane@example.com", "E1", first="Jane", last="Doe"),
                L("a-bob", "bob@example.com", "00042"),
                L("a-carol", "carol@example.com"),
                L("a-anon1", anon=True), L("a-anon2", anon=True),
                L("a-train", "training@example.com", "T1"),
                L("a-empty")],
        ispring=[L("i-jane", " JANE@corp.example.com ", None),       # domain alias
                 L("i-bob", "robert@example.com", "42"),              # HR id, leading zeros
                 L("i-carol", "c.smith@example.com", "C7"),
                 L("i-train", "TRAINING@example.com", "T2"),          # shared mailbox
                 L("i-empty", "", None)],
        udemy=[L("u-x", "x@example.com", "E1")])                      # udemy HR ids don't compare
    assert groups(warehouse) == {
        frozenset({"absorb:a-jane", "ispring:i-jane"}), frozenset({"absorb:a-bob", "ispring:i-bob"}),
        frozenset({"absorb:a-carol"}), frozenset({"ispring:i-carol"}),
        frozenset({"absorb:a-anon1"}), frozenset({"absorb:a-anon2"}),
        frozenset({"absorb:a-train"}), frozenset({"ispring:i-train"}),
        frozenset({"absorb:a-empty"}), frozenset({"ispring:i-empty"}), frozenset({"udemy:u-x"}),
    }
    assert log(warehouse) == []  # new persons are not merges
    first = person_of(warehouse)
    with warehouse.engine.connect() as conn:
        jane = conn.execute(select(persons).where(persons.c.id == first["absorb:a-jane"])).mappings().one()
    assert (jane["primary_email"], jane["display_name"]) == ("jane@example.com", "Jane Doe")
    assert_consistent(warehouse)

    # a chain: s-carol shares a-carol's email and i-carol's HR id -> the two persons merge
    result = run(warehouse, sessions=[L("s-carol", "Carol@Example.com", "c7"),
                                      L("s-jane", "jane@corp.example.com")])
    now = person_of(warehouse)
    carol_ids = (first["absorb:a-carol"], first["ispring:i-carol"])
    kept = min(carol_ids)
    assert now["absorb:a-carol"] == now["ispring:i-carol"] == now["sessions:s-carol"] == kept
    assert now["sessions:s-jane"] == first["absorb:a-jane"]  # a person keeps its id as learners join
    assert log(warehouse) == [("merge", kept, max(carol_ids), "hr_id")]
    assert (result.merges, result.splits, result.persons_created) == (1, 0, 0)
    assert {k: v for k, v in now.items() if "carol" not in k} == \
        {k: v for k, v in first.items() if "carol" not in k} | {"sessions:s-jane": now["sessions:s-jane"]}
    with warehouse.engine.connect() as conn:
        gone = conn.execute(select(persons.c.deleted_at).where(persons.c.id == max(carol_ids))).scalar()
    assert gone is not None  # soft-deleted, never hard-deleted
    assert_consistent(warehouse)

    # links disappear: bob's HR id changes; s-carol's email changes (she keeps the HR link)
    result = run(warehouse, ispring=[L("i-bob", "robert@example.com", "43")],
                 sessions=[L("s-carol", "carol.new@example.com", "c7")])
    after = person_of(warehouse)
    bob = first["absorb:a-bob"]
    assert after["absorb:a-bob"] == bob != after["ispring:i-bob"]  # tie: the oldest learner keeps
    assert after["ispring:i-carol"] == after["sessions:s-carol"] == kept  # the larger part keeps
    assert after["absorb:a-carol"] not in {kept, max(carol_ids)}        # a new person, never reused
    assert log(warehouse)[1:] == [("split", bob, after["ispring:i-bob"], "unlinked"),
                                  ("split", kept, after["absorb:a-carol"], "unlinked")]
    assert (result.merges, result.splits, result.persons_created) == (0, 2, 2)
    assert_consistent(warehouse)

    # overrides: force-apart splits jane, force-link joins the two empty-email learners
    _, _, res = identity.set_override(warehouse.engine, RULES, "absorb:a-jane", "ispring:i-jane", "apart")
    assert res.splits == 1
    ids = person_of(warehouse)
    assert ids["absorb:a-jane"] == first["absorb:a-jane"]
    assert ids["ispring:i-jane"] not in {ids["absorb:a-jane"], ids["sessions:s-jane"]}
    assert ids["sessions:s-jane"] == ids["absorb:a-jane"]  # s-jane still links to a-jane (oldest)
    assert log(warehouse)[-1] == ("split", first["absorb:a-jane"], ids["ispring:i-jane"], "override")
    empty_a, empty_i = ids["absorb:a-empty"], ids["ispring:i-empty"]
    la, lb, res = identity.set_override(warehouse.engine, RULES, "absorb:a-empty",
                                        str(_learner_id(warehouse, "i-empty")),
                                        "link", note="same person, confirmed by HR")
    assert res.merges == 1 and person_of(warehouse)["ispring:i-empty"] == min(empty_a, empty_i)
    assert log(warehouse)[-1] == ("merge", min(empty_a, empty_i), max(empty_a, empty_i), "override")
    with pytest.raises(UserError, match="placeholder"):
        identity.set_override(warehouse.engine, RULES, "absorb:a-anon1", "absorb:a-anon2", "link")
    with pytest.raises(UserError, match="no learner"):
        identity.set_override(warehouse.engine, RULES, "absorb:nobody", "absorb:a-anon2", "apart")
    assert_consistent(warehouse)

    # a full recompute agrees with the incremental passes: nothing moves
    before = person_of(warehouse)
    result = identity.recompute(warehouse.engine, RULES)
    assert (result.relinked, result.merges, result.splits, result.persons_created) == (0, 0, 0, 0)
    assert person_of(warehouse) == before


def test_a_learner_leaving_for_an_older_person_leaves_the_rest_their_person(warehouse):
    """Person 2 = {B, C}; B's email becomes A's (person 1). C's links did not change: C keeps
    person 2, and the log says B split off from 2 into 1 (before, C got a new person and
    person 2 was logged as merged into 1, so a dashboard keyed on 2 lost C's history)."""
    run(warehouse, absorb=[L("a", "x@example.com"), L("b", "c@example.com"),
                           L("c", "c@example.com")])
    first = person_of(warehouse)
    assert first["absorb:b"] == first["absorb:c"] != first["absorb:a"]
    result = run(warehouse, absorb=[L("b", "x@example.com")])
    after = person_of(warehouse)
    assert after["absorb:c"] == first["absorb:c"]  # unchanged links, unchanged person
    assert after["absorb:b"] == after["absorb:a"] == first["absorb:a"]
    assert log(warehouse)[-1] == ("split", first["absorb:c"], first["absorb:a"], "unlinked")
    assert (result.merges, result.splits, result.persons_created) == (0, 1, 0)
    assert_consistent(warehouse)


def test_a_persons_email_and_name_come_from_its_live_accounts(warehouse):
    """An account deleted upstream (its old address) must not become the person's email."""
    from sqlalchemy import update

    run(warehouse, absorb=[L("a", "john.old@example.com", "E7", first="Johnny")],
        ispring=[L("i", "john@example.com", "E7", first="John")])
    pid = person_of(warehouse)["absorb:a"]
    assert pid == person_of(warehouse)["ispring:i"]
    with warehouse.engine.begin() as conn:
        conn.execute(update(learners).where(learners.c.external_id == "a").values(deleted_at=now_utc()))
    identity.recompute(warehouse.engine, RULES)
    with warehouse.engine.connect() as conn:
        email, name = conn.execute(select(persons.c.primary_email, persons.c.display_name)
                                   .where(persons.c.id == pid)).one()
    assert (email, name) == ("john@example.com", "John")


def _learner_id(wh, external_id: str) -> int:
    with wh.engine.connect() as conn:
        return conn.execute(select(learners.c.id).where(learners.c.external_id == external_id)).scalar()


def test_incremental_passes_equal_a_full_recompute(sqlite_warehouse):
    """Random learners over four sources, changed over several runs: incremental == full."""
    rng = random.Random(11)
    emails = [f"p{i}@example.com" for i in range(60)] + ["training@example.com"]
    hrs = [f"{i:05d}" for i in range(50)] + [None] * 20
    settings = IdentityConfig(shared_mailboxes=["training@example.com"],
                              hr_id_sources=["s0", "s1", "s2"])

    def rand_learner(source: int, i: int) -> Learner:
        anon = rng.random() < 0.05
        return L(f"u{i}", None if anon else rng.choice(emails + [None]), rng.choice(hrs), anon=anon)

    for round_ in range(4):
        batches = {}
        for s in range(4):
            batches[f"s{s}"] = [rand_learner(s, rng.randrange(80)) for _ in range(40 if round_ else 80)]
        run(sqlite_warehouse, settings, **batches)
        assert_consistent(sqlite_warehouse)
    with sqlite_warehouse.engine.begin() as conn:  # some overrides, matched incrementally
        ids = sorted(conn.execute(select(learners.c.id).where(learners.c.is_placeholder.is_(False)))
                     .scalars())
    for a, b in zip(ids[::17], ids[5::17], strict=False):
        identity.set_override(sqlite_warehouse.engine, settings, str(a), str(b),
                              rng.choice(["link", "apart"]))
    before = person_of(sqlite_warehouse)
    assert len(set(before.values())) < len(before)  # the data really links people
    result = identity.recompute(sqlite_warehouse.engine, settings)
    assert (result.relinked, result.merges, result.splits) == (0, 0, 0)
    assert person_of(sqlite_warehouse) == before
    assert_consistent(sqlite_warehouse)


def test_a_rules_change_needs_recompute(sqlite_warehouse):
    run(sqlite_warehouse, absorb=[L("a1", "ann@old.example.com")], udemy=[L("u1", "ann@example.com")])
    assert len(groups(sqlite_warehouse)) == 2
    aliased = IdentityConfig(email_domain_aliases={"old.example.com": "example.com"})
    result = identity.recompute(sqlite_warehouse.engine, aliased)
    assert result.merges == 1
    assert groups(sqlite_warehouse) == {frozenset({"absorb:a1", "udemy:u1"})}
    # an incremental pass with nothing written does nothing
    assert identity.after_run(sqlite_warehouse.engine, aliased, []).learners == 0


def test_status_summary_counts_persons_and_unmatched(sqlite_warehouse):
    run(sqlite_warehouse, absorb=[L("a1", "ann@example.com"), L("a2", "solo@example.com"),
                                  L("a3", anon=True)],
        udemy=[L("u1", "ANN@example.com"), L("u2", anon=True)])
    cfg = make_config(sqlite_warehouse, {})
    _rows, summary = collect_status(sqlite_warehouse.engine, cfg)
    assert summary["persons"] == 4
    assert summary["learners_per_source"] == {"absorb": 3, "udemy": 2}
    assert summary["persons_in_several_sources"] == 1
    assert summary["unmatched_learners"] == 1
    assert summary["placeholder_learners"] == 2
    assert summary["learners_without_person"] == 0
    text = render_table([], summary)
    assert "persons: 4 (1 in several sources)" in text
    assert "unmatched learners: 1   placeholders: 2" in text
    from sqlalchemy import update

    with sqlite_warehouse.engine.begin() as conn:  # solo's only account is deleted upstream
        conn.execute(update(learners).where(learners.c.external_id == "a2").values(deleted_at=now_utc()))
    assert collect_status(sqlite_warehouse.engine, cfg)[1]["persons"] == 3


def _config(tmp_path, wh) -> str:
    tree = {"warehouse": wh.config_block(), "logging": {"format": "json", "level": "WARNING"},
            "identity": {"email_domain_aliases": {"corp.example.com": "example.com"}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


def test_identity_commands(tmp_path, sqlite_warehouse):
    run(sqlite_warehouse, IdentityConfig(email_domain_aliases={"corp.example.com": "example.com"}),
        absorb=[L("a1", "ann@example.com", first="Ann", last="Lee"), L("a2", "bo@example.com")],
        ispring=[L("i1", "ann@corp.example.com"), L("i2", "bo.b@example.com")])
    cfg = _config(tmp_path, sqlite_warehouse)
    ids = person_of(sqlite_warehouse)

    shown = run_cli("identity", "show", "ANN@example.com", "--format", "json", "--config", cfg)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert [p["person"]["id"] for p in data] == [ids["absorb:a1"]]
    assert {m["external_id"] for m in data[0]["learners"]} == {"a1", "i1"}

    linked = run_cli("identity", "link", "absorb:a2", "ispring:i2", "--note", "same Bo", "--config", cfg)
    assert linked.returncode == 0, linked.stderr
    assert f"person {ids['absorb:a2']}" in linked.stdout
    assert person_of(sqlite_warehouse)["ispring:i2"] == ids["absorb:a2"]

    table = run_cli("identity", "show", f"{ids['ispring:i2']}", "--config", cfg)
    assert table.returncode == 0, table.stderr
    assert "ispring" in table.stdout and "i2" in table.stdout and "link" in table.stdout
    assert "merge" in table.stdout and "override" in table.stdout

    apart = run_cli("identity", "unlink", "absorb:a1", "ispring:i1", "--config", cfg)
    assert apart.returncode == 0, apart.stderr
    after = person_of(sqlite_warehouse)
    assert after["absorb:a1"] == ids["absorb:a1"] != after["ispring:i1"]
    # the merged person's old id still finds the live person
    with sqlite_warehouse.engine.connect() as conn:
        assert identity.find_persons(conn, str(ids["ispring:i2"])) == [ids["absorb:a2"]]

    again = run_cli("identity", "recompute", "--config", cfg)
    assert again.returncode == 0, again.stderr
    assert "0 merges, 0 splits" in again.stdout
    assert person_of(sqlite_warehouse) == after

    unknown = run_cli("identity", "show", "nobody@example.com", "--config", cfg)
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    assert unknown.stderr.strip().startswith("lms-sync: error: no person matches 'nobody@example.com'")
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_learners_written_without_a_pass_are_matched_by_the_next_one(warehouse):
    """A run that died before matching: the next pass still finds its learners."""
    run(warehouse, absorb=[L("a1", "kim@example.com"), L("a2", "lee@example.com")])
    write(warehouse, "udemy", L("u1", "KIM@example.com"))            # new, never matched
    write(warehouse, "absorb", L("a2", "kim@corp.example.com"))       # changed, never re-matched
    result = identity.after_run(warehouse.engine, RULES, [])
    assert result.learners == 3
    assert groups(warehouse) == {frozenset({"absorb:a1", "absorb:a2", "udemy:u1"})}
    assert identity.after_run(warehouse.engine, RULES, []).learners == 0  # nothing stale now

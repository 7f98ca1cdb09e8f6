"""Identity matching: link the learners of every source into persons (DESIGN §4).

Rules
-----
Two learners are the same person when they share a *normalized email* or a
*comparable HR id*, transitively (union-find over all learners):

* email key: trimmed, lower-case; the domain mapped through
  ``identity.email_domain_aliases`` (``jane@corp.example.com`` -> ``jane@example.com``).
  Emails listed in ``identity.shared_mailboxes`` (training@, hr@...) and empty
  emails never link.
* HR id key: trimmed and case-folded; an all-digit id also loses its leading
  zeros (``000123`` == ``123``: spreadsheets and HR exports drop or pad them
  freely), while an id with letters keeps them (``E00123`` != ``E123``). Values
  that mean "none" (``-``, ``n/a``, ``none``, ``null``, ``0``...) never link. Only
  sources listed in ``identity.hr_id_sources`` compare HR ids (default: all).
* placeholders (``learners.is_placeholder``: Udemy's "Anonymized User") never
  link, not even by a manual override: each is a person of its own.
* ``identity_overrides``: ``link`` forces two learners together, ``apart`` keeps
  them in different persons even when an email/HR id says otherwise (the link
  that would join them is refused; the rest of the rules still apply).

Unions are attempted in a fixed order (overrides, then email keys, then HR keys,
each sorted), so a full recompute and an incremental pass give the same persons.

Stable ids
----------
A person keeps its id as learners join. When persons merge, the oldest
(smallest) id is kept and each absorbed person gets a ``person_merges`` row
(``kind='merge'``, ``rule`` = ``email``/``hr_id``/``override`` or a ``+`` join
of them) and ``deleted_at``. When a person's learners no longer link, the part
with the most of its learners (tie: the oldest learner) keeps the id; every
other part becomes a new person (or joins another), recorded as
``kind='split'`` (``kept_person_id`` = the person split, ``merged_person_id`` =
where the part went; ``rule`` = ``override`` for a force-apart, else
``unlinked``). Persons are never hard-deleted and no learner points at a
deleted person.

Incremental
-----------
``learners.email_key``/``hr_key`` store each learner's keys (indexed) and
``matched_at`` when it was last examined. A pass after a run re-examines only
the learners the run wrote, learners without a person, and learners updated
since they were matched (a crashed run's writes), plus everything reachable
from them: the other learners of their persons (a link may have gone) and the
learners sharing their keys or overrides (a link may have come). Those sets
are complete components, so the pass is exact. After changing the identity
rules in the config, run ``lms-sync identity recompute`` (a full pass).

Passes are serialized across threads and processes (an advisory lock on
PostgreSQL, GET_LOCK on MySQL/MariaDB, a lock file beside an SQLite database).
Identity is derived data: changing a learner's ``person_id`` does not touch the
learner's ``updated_at``; a person's ``updated_at`` moves when its email or
name changes.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, func, or_, select, text, update
from sqlalchemy.exc import OperationalError

from lms_sync import memory
from lms_sync.errors import UserError
from lms_sync.logs import get_logger, one_line
from lms_sync.warehouse import dialect as dialects
from lms_sync.warehouse.rowids import RowIds
from lms_sync.warehouse.state import now_utc
from lms_sync.warehouse.tables import identity_overrides, learners, person_merges, persons

CHUNK = 500  # keys per IN (...) lookup: below every driver's parameter limit
PASS_SEEDS = 5000
"""Seeds per transaction of an incremental pass. A pass holds every learner linked to its
seeds (~1.7 KB each): matching a first load of 120,000 learners at once took ~200 MB;
in slices of 5,000 seeds the peak stays near one slice's closure, whatever the total."""
LINK, APART = "link", "apart"
_NULL_HR_IDS = frozenset({"-", "--", "n/a", "na", "none", "null", "nil", "0", "?", "unknown"})

_COLS = (learners.c.id, learners.c.source_id, learners.c.external_id, learners.c.email, learners.c.hr_id,
         learners.c.is_placeholder, learners.c.person_id, learners.c.first_name,
         learners.c.last_name, learners.c.display_name, learners.c.email_key, learners.c.hr_key,
         learners.c.deleted_at.is_not(None).label("gone"))  # a flag: no datetime made per row
_GONE = len(_COLS) - 1


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rules:
    """The matching rules of ``identity`` in the config, normalized once."""

    aliases: dict[str, str] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()
    hr_sources: frozenset[str] | None = None

    @classmethod
    def from_config(cls, settings: Any) -> Rules:
        if settings is None:
            return cls()
        aliases = {str(k).strip().lower().lstrip("@"): str(v).strip().lower().lstrip("@")
                   for k, v in (settings.email_domain_aliases or {}).items()}
        plain = cls(aliases=aliases)
        shared = frozenset(k for k in (plain.email_key(m) for m in settings.shared_mailboxes or [])
                           if k)
        hr = settings.hr_id_sources
        return cls(aliases, shared, None if hr is None else frozenset(hr))

    def email_key(self, email: str | None) -> str | None:
        """The normalized email (aliases applied); None for an empty one."""
        value = (email or "").strip().lower()
        if not value:
            return None
        local, at, domain = value.rpartition("@")
        if at and domain in self.aliases:
            value = f"{local}@{self.aliases[domain]}"
        return value

    def hr_key(self, hr_id: str | None) -> str | None:
        return normalize_hr_id(hr_id)

    def keys(self, row: Any) -> tuple[str | None, str | None]:
        """(email key, HR key) a learner row links by; None where it never links."""
        return self.keys_of(row.source_id, row.email, row.hr_id, row.is_placeholder)

    def keys_of(self, source_id: str, email: str | None, hr_id: str | None,
                is_placeholder: bool) -> tuple[str | None, str | None]:
        if is_placeholder:
            return None, None
        ek = self.email_key(email) if email else None
        if ek is not None and (ek in self.shared or len(ek) > 320):
            ek = None
        hk = None
        if hr_id and (self.hr_sources is None or source_id in self.hr_sources):
            hk = normalize_hr_id(hr_id)
            if hk is not None and len(hk) > 255:
                hk = None
        return ek, hk


def normalize_hr_id(value: str | None) -> str | None:
    """Trim and case-fold; all-digit ids lose leading zeros; "none"-like values -> None."""
    key = re.sub(r"\s+", " ", (value or "").strip()).casefold()
    if key.isdigit():
        key = key.lstrip("0") or "0"
    if not key or key in _NULL_HR_IDS:
        return None
    return key


# --------------------------------------------------------------------------- results


@dataclass
class MatchResult:
    """What one matching pass did."""

    learners: int = 0
    persons_created: int = 0
    persons_deleted: int = 0
    persons_updated: int = 0
    merges: int = 0
    splits: int = 0
    relinked: int = 0
    seconds: float = 0.0
    full: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, other: MatchResult) -> None:
        for name in ("learners", "persons_created", "persons_deleted", "persons_updated",
                     "merges", "splits", "relinked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# --------------------------------------------------------------------------- entry points


def after_run(engine: Engine, settings: Any, learner_ids: Iterable[int]) -> MatchResult:
    """Re-match the learners a run wrote (and whatever they touch). Called by the pipeline."""
    return match(engine, settings, learner_ids)


def recompute(engine: Engine, settings: Any) -> MatchResult:
    """Re-match every learner (after a rules change, or to repair)."""
    return match(engine, settings, full=True)


def match(engine: Engine, settings: Any, learner_ids: Iterable[int] = (), *,
          full: bool = False) -> MatchResult:
    """One matching pass: incremental from ``learner_ids`` (+ stale learners), or ``full``."""
    rules = Rules.from_config(settings)
    log = get_logger("lms_sync.identity")
    started = time.monotonic()
    if full:
        result = _pass(engine, rules, set(), True, log)
    else:
        # learners whose match is missing or older than their row join the seeds (a run
        # that died before its pass); each slice is a complete pass of its own
        seeds = RowIds(learner_ids)
        with engine.connect() as conn:
            seeds.update(_stale_ids(conn))
        result = MatchResult()
        for part in _chunks(seeds.sorted(), PASS_SEEDS):
            result.add(_pass(engine, rules, set(part), False, log))
            memory.trim()  # a slice's closure is freed: give its pages back before the next
    result.seconds = round(time.monotonic() - started, 3)
    if result.learners:
        log.info("identity.matched", **result.as_dict())
    return result


def _pass(engine: Engine, rules: Rules, seeds: set[int], full: bool,
          log: Any) -> MatchResult:
    for attempt in range(1, 4):
        try:
            with locked_transaction(engine) as conn:
                return _Pass(conn, rules).run(seeds, full)
        except OperationalError as exc:  # deadlock / lock timeout with a concurrent batch
            if attempt == 3:
                raise
            log.warning("identity.retry", attempt=attempt,
                        error=one_line(exc))
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _stale_ids(conn: Connection) -> Iterator[int]:
    """Streamed: after a first load that is every learner."""
    c = learners.c
    return iter(conn.execution_options(stream_results=True, yield_per=10_000).execute(
        select(c.id).where(or_(c.person_id.is_(None), c.matched_at.is_(None),
                               c.updated_at > c.matched_at))
    ).scalars())


# --------------------------------------------------------------------------- locking

_PROCESS_LOCK = threading.Lock()


@contextmanager
def locked_transaction(engine: Engine, timeout: int = 600) -> Iterator[Connection]:
    """A transaction holding the warehouse-wide identity lock (one pass at a time)."""
    with _PROCESS_LOCK:
        try:
            with dialects.locked_transaction(engine, "identity:", timeout) as conn:
                yield conn
        except dialects.LockBusy:
            raise UserError("identity matching is busy in another process; try again later") from None


# --------------------------------------------------------------------------- the pass


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _UnionFind:
    """Union-find over learner ids with force-apart constraints and a spanning forest."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.parent = {i: i for i in ids}
        self.size = dict.fromkeys(self.parent, 1)
        self.forbid: dict[int, set[int]] = {}
        self.edges: list[tuple[int, int, str]] = []
        self.refused: list[tuple[int, int]] = []

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int, rule: str) -> bool:
        """Join a's and b's components unless a force-apart forbids it; True if joined."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        fa, fb = self.forbid.get(ra), self.forbid.get(rb)
        if (fa and any(self.find(x) == rb for x in fa)) or (fb and any(self.find(x) == ra for x in fb)):
            self.refused.append((a, b))
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb, fa, fb = rb, ra, fb, fa
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        if fb:
            if fa:
                fa |= fb
            else:
                self.forbid[ra] = fb
            del self.forbid[rb]
        self.edges.append((a, b, rule))
        return True

    def group(self, members: list[int], rule: str) -> None:
        """Join learners sharing one key (each into the first part it may join)."""
        anchors = [members[0]]
        for m in members[1:]:
            for anchor in anchors:
                if self.union(anchor, m, rule):
                    break
            else:
                anchors.append(m)


class _Pass:
    def __init__(self, conn: Connection, rules: Rules) -> None:
        self.conn = conn
        self.rules = rules
        self.dialect = dialects.name(conn)
        self.rows: dict[int, Any] = {}
        self.keys: dict[int, tuple[str | None, str | None]] = {}
        self.stored: dict[int, tuple[int | None, str | None, str | None]] = {}
        """learner id -> (person_id, email_key, hr_key) as stored before this pass"""

    # ------------------------------------------------------------------ loading

    def _add(self, rows: Iterable[Any]) -> list[Any]:
        new = []
        known, keys, stored, keys_of = self.rows, self.keys, self.stored, self.rules.keys_of
        for row in rows:
            lid, source_id, _ext, email, hr_id, placeholder, pid, _f, _l, _d, ek, hk, _gone = row
            if lid not in known:
                known[lid] = row
                keys[lid] = keys_of(source_id, email, hr_id, placeholder)
                stored[lid] = (pid, ek, hk)
                new.append(row)
        return new

    def _load_where(self, column: Any, values: Iterable[Any]) -> list[Any]:
        found: list[Any] = []
        for part in _chunks(sorted(values)):
            found += self._add(self.conn.execute(select(*_COLS).where(column.in_(part))).all())
        return found

    def _closure(self, seeds: set[int], overrides: list[Any]) -> None:
        """Load the seeds and every learner linked to them, before or after this pass."""
        partners: dict[int, set[int]] = defaultdict(set)
        for o in overrides:
            partners[o.learner_a_id].add(o.learner_b_id)
            partners[o.learner_b_id].add(o.learner_a_id)
        seen_e: set[str] = set()
        seen_h: set[str] = set()
        seen_p: set[int] = set()
        frontier = self._load_where(learners.c.id, seeds)
        while frontier:
            new_e, new_h, new_p, new_ids = set(), set(), set(), set()
            for row in frontier:
                ek, hk = self.keys[row.id]
                if ek is not None and ek not in seen_e:
                    new_e.add(ek)
                if hk is not None and hk not in seen_h:
                    new_h.add(hk)
                if row.person_id is not None and row.person_id not in seen_p:
                    new_p.add(row.person_id)
                new_ids |= {p for p in partners.get(row.id, ()) if p not in self.rows}
            seen_e |= new_e
            seen_h |= new_h
            seen_p |= new_p
            frontier = (self._load_where(learners.c.email_key, new_e)
                        + self._load_where(learners.c.hr_key, new_h)
                        + self._load_where(learners.c.person_id, new_p)
                        + self._load_where(learners.c.id, new_ids))

    # ------------------------------------------------------------------ matching

    def run(self, seeds: set[int], full: bool) -> MatchResult:
        started_at = now_utc()
        result = MatchResult(full=full)
        overrides = self.conn.execute(select(identity_overrides.c.learner_a_id,
                                             identity_overrides.c.learner_b_id,
                                             identity_overrides.c.action)).all()
        if full:
            self._add(self.conn.execute(select(*_COLS)).all())
        else:
            if not seeds:
                return result
            self._closure(seeds, overrides)
        if not self.rows:
            return result
        result.learners = len(self.rows)
        uf = self._components(overrides)
        comps: dict[int, list[int]] = defaultdict(list)
        for lid in sorted(self.rows):
            comps[uf.find(lid)].append(lid)
        self._assign(list(comps.values()), uf, overrides, started_at, full, result)
        return result

    def _components(self, overrides: list[Any]) -> _UnionFind:
        rows, keys = self.rows, self.keys
        uf = _UnionFind(rows)
        links = []
        for o in overrides:
            a, b = o.learner_a_id, o.learner_b_id
            if a not in rows or b not in rows or a == b:
                continue
            if o.action == APART:
                uf.forbid.setdefault(a, set()).add(b)
                uf.forbid.setdefault(b, set()).add(a)
            elif o.action == LINK and not rows[a].is_placeholder and not rows[b].is_placeholder:
                links.append((min(a, b), max(a, b)))
        for a, b in sorted(links):
            uf.union(a, b, "override")
        by_email: dict[str, list[int]] = defaultdict(list)
        by_hr: dict[str, list[int]] = defaultdict(list)
        for lid in sorted(rows):
            ek, hk = keys[lid]
            if ek is not None:
                by_email[ek].append(lid)
            if hk is not None:
                by_hr[hk].append(lid)
        for rule, groups in (("email", by_email), ("hr_id", by_hr)):
            for key in sorted(groups):
                members = groups[key]
                if len(members) > 1:
                    uf.group(members, rule)
        return uf

    def _assign(self, comps: list[list[int]], uf: _UnionFind, overrides: list[Any],
                started_at: datetime, full: bool, result: MatchResult) -> None:
        conn, rows = self.conn, self.rows
        now = now_utc()
        # the persons involved, as they are now
        stored = self.stored
        old_ids = {v[0] for v in stored.values() if v[0] is not None}
        person_rows: dict[int, Any] = {}
        pc = persons.c
        if full:
            for p in conn.execute(select(pc.id, pc.primary_email, pc.display_name, pc.deleted_at)
                                  .where(pc.deleted_at.is_(None))):
                person_rows[p.id] = p
        else:
            for part in _chunks(sorted(old_ids)):
                for p in conn.execute(select(pc.id, pc.primary_email, pc.display_name,
                                             pc.deleted_at).where(pc.id.in_(part))):
                    person_rows[p.id] = p
        live = {pid for pid, p in person_rows.items() if p.deleted_at is None}

        comp_of: dict[int, int] = {}
        for ci, members in enumerate(comps):
            for lid in members:
                comp_of[lid] = ci
        # which part of each old person keeps its id: a part no older person has learners
        # in (there it would be absorbed; a part of its own keeps the id, and the learners
        # that left are recorded as split off), then most of its learners, then the oldest
        old_members: dict[int, list[int]] = defaultdict(list)
        for lid in sorted(rows):
            pid = stored[lid][0]
            if pid in live:
                old_members[pid].append(lid)
        oldest_in: dict[int, int] = {}  # component -> the oldest person with learners in it
        for pid, members in old_members.items():
            for lid in members:
                ci = comp_of[lid]
                oldest_in[ci] = min(oldest_in.get(ci, pid), pid)
        heir_of: dict[int, int] = {}
        claims: dict[int, list[int]] = defaultdict(list)
        moved: list[int] = []  # persons whose learners did not all stay together
        for pid, members in old_members.items():
            heir = comp_of[members[0]]
            if any(comp_of[lid] != heir for lid in members):
                counts = Counter(comp_of[lid] for lid in members)
                first: dict[int, int] = {}
                for lid in members:
                    first.setdefault(comp_of[lid], lid)
                heir = min(counts, key=lambda ci: (oldest_in[ci] < pid, -counts[ci], first[ci]))
                moved.append(pid)
            heir_of[pid] = heir
            claims[heir].append(pid)

        final: dict[int, int] = {}
        new_comps: list[int] = []
        for ci in range(len(comps)):
            if claims.get(ci):
                final[ci] = min(claims[ci])
            else:
                new_comps.append(ci)
        attrs = {ci: self._attributes(comps[ci]) for ci in range(len(comps))}
        if new_comps:
            ids = self._insert_persons([attrs[ci] for ci in new_comps], now)
            final.update(zip(new_comps, ids, strict=True))
            result.persons_created = len(ids)

        # person rows: attributes, deletions
        changed_attrs = []
        for ci, pid in final.items():
            if pid in person_rows:
                p = person_rows[pid]
                email, name = attrs[ci]
                if (p.primary_email, p.display_name) != (email, name):
                    changed_attrs.append({"pid": pid, "email": email, "name": name})
        if changed_attrs:
            conn.execute(
                update(persons).where(persons.c.id == bindparam("pid"))
                .values(primary_email=bindparam("email"), display_name=bindparam("name"),
                        updated_at=now),
                changed_attrs,
            )
            result.persons_updated = len(changed_attrs)
        kept = set(final.values())
        gone = sorted((live if full else old_ids & live) - kept)

        # learner rows: person and keys
        person_of = {lid: final[comp_of[lid]] for lid in rows}
        changes = []
        keys = self.keys
        for lid, (old_pid, old_ek, old_hk) in self.stored.items():
            pid = person_of[lid]
            ek, hk = keys[lid]
            if old_pid != pid or old_ek != ek or old_hk != hk:
                changes.append({"lid": lid, "pid": pid, "ek": ek, "hk": hk})
                if old_pid != pid:
                    result.relinked += 1
        changes.sort(key=lambda c: c["lid"])
        self._update_learners(changes, started_at)
        # matched_at only moves on stale learners (an up-to-date learner stays up to date)
        c = learners.c
        stale = or_(c.matched_at.is_(None), c.updated_at > c.matched_at)
        if full:
            conn.execute(update(learners).where(stale).values(matched_at=started_at))
        else:
            for part in _chunks(sorted(rows)):
                conn.execute(update(learners).where(c.id.in_(part), stale)
                             .values(matched_at=started_at))
        for part in _chunks(gone):
            conn.execute(update(persons).where(persons.c.id.in_(part))
                         .values(deleted_at=now, updated_at=now))
        result.persons_deleted = len(gone)

        # the merge/split log
        moved += [pid for pid, heir in heir_of.items() if final[heir] != pid]
        records = self._history(sorted(set(moved)), comp_of, heir_of, old_members, final, uf,
                                overrides, now)
        if records:
            conn.execute(person_merges.insert(), records)
        result.merges = sum(1 for r in records if r["kind"] == "merge")
        result.splits = len(records) - result.merges

    def _history(self, moved: list[int], comp_of: dict[int, int], heir_of: dict[int, int],
                 old_members: dict[int, list[int]], final: dict[int, int], uf: _UnionFind,
                 overrides: list[Any], now: datetime) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        if not moved:
            return records
        old_of = {lid: pid for pid in moved for lid in old_members[pid]}
        incident: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for a, b, rule in uf.edges:
            if a in old_of:
                incident[a].append((b, rule))
            if b in old_of:
                incident[b].append((a, rule))
        apart = {(min(o.learner_a_id, o.learner_b_id), max(o.learner_a_id, o.learner_b_id))
                 for o in overrides if o.action == APART}
        for pid in moved:
            members = old_members[pid]
            heir = heir_of[pid]
            by_comp: dict[int, list[int]] = defaultdict(list)
            for lid in members:
                by_comp[comp_of[lid]].append(lid)
            if final[heir] != pid:  # absorbed into an older person
                inside = set(by_comp[heir])
                rules = sorted({rule for lid in inside for other, rule in incident[lid]
                                if old_of.get(other) != pid}) or ["rematch"]
                records.append(_record(now, final[heir], pid, "+".join(rules), "merge",
                                       by_comp[heir]))
            for ci, part in sorted(by_comp.items()):
                if ci == heir:
                    continue
                stay = by_comp[heir]
                forced = any((min(a, b), max(a, b)) in apart for a in part for b in stay) \
                    if apart else False
                records.append(_record(now, final[heir], final[ci],
                                       "override" if forced else "unlinked", "split", part))
        return records

    def _attributes(self, members: list[int]) -> tuple[str | None, str | None]:
        """(primary_email, display_name) of a person: its most common email key, oldest name,
        from its live accounts (a deleted account's old address must not win), else all."""
        counts: Counter[str] = Counter()
        first: dict[str, int] = {}
        name = None
        keys, rows = self.keys, self.rows
        if len(members) > 1:
            members = [lid for lid in members if not rows[lid][_GONE]] or members
        for lid in members:
            ek = keys[lid][0]
            if ek is not None:
                counts[ek] += 1
                first.setdefault(ek, lid)
            if name is None:
                row = rows[lid]  # (..., first_name, last_name, display_name, ...) as in _COLS
                full_name = " ".join(p for p in (row[7], row[8]) if p)
                name = full_name or row[9] or None
        if len(counts) == 1:
            email = next(iter(counts))
        else:
            email = min(counts, key=lambda k: (-counts[k], first[k])) if counts else None
        return email, (name[:500] if name else None)

    def _insert_persons(self, attrs: list[tuple[str | None, str | None]], now: datetime) -> list[int]:
        rows = [{"primary_email": e, "display_name": n, "first_seen_at": now, "updated_at": now}
                for e, n in attrs]
        dialect = self.conn.dialect
        if dialect.insert_executemany_returning_sort_by_parameter_order:
            stmt = persons.insert().returning(persons.c.id, sort_by_parameter_order=True)
            return list(self.conn.execute(stmt, rows).scalars())
        return [self.conn.execute(persons.insert().values(**r)).inserted_primary_key[0] for r in rows]

    def _update_learners(self, changes: list[dict[str, Any]], started_at: datetime) -> None:
        """Write person/keys of changed learners (and matched_at, so the row is written once)."""
        if not changes:
            return
        c = learners.c
        matched = case((or_(c.matched_at.is_(None), c.updated_at > c.matched_at),
                        bindparam("started", started_at, type_=c.matched_at.type)),
                       else_=c.matched_at)
        if self.dialect == "postgresql":
            # one statement per 5000 learners: arrays unnested into a join
            stmt = text(
                f"UPDATE {_qualified(learners)} AS l SET person_id = v.pid, email_key = v.ek, "
                "hr_key = v.hk, matched_at = CASE WHEN l.matched_at IS NULL OR "
                "l.updated_at > l.matched_at THEN :started ELSE l.matched_at END "
                "FROM unnest(CAST(:lids AS BIGINT[]), CAST(:pids AS BIGINT[]), "
                "CAST(:eks AS TEXT[]), CAST(:hks AS TEXT[])) AS v(lid, pid, ek, hk) WHERE l.id = v.lid"
            ).bindparams(bindparam("started", type_=c.matched_at.type))
            for part in _chunks(changes, 5000):
                self.conn.execute(stmt, {"lids": [x["lid"] for x in part],
                                         "pids": [x["pid"] for x in part],
                                         "eks": [x["ek"] for x in part],
                                         "hks": [x["hk"] for x in part],
                                         "started": started_at})
            return
        if self.dialect == "sqlite":
            # SQLite runs executemany in-process
            self.conn.execute(
                update(learners).where(c.id == bindparam("lid"))
                .values(person_id=bindparam("pid"), email_key=bindparam("ek"),
                        hr_key=bindparam("hk"), matched_at=matched),
                [{**x, "started": started_at} for x in changes],
            )
            return
        # MySQL/MariaDB: the changes go into a temporary table (PyMySQL batches an INSERT
        # executemany into multi-row INSERTs), then one UPDATE ... JOIN writes them all.
        # (MySQL assigns SET columns left to right: matched_at's CASE reads no column set before it.)
        conn = self.conn
        conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS lms_sync_identity_changes "
                          "(lid BIGINT PRIMARY KEY, pid BIGINT, ek VARCHAR(320), hk VARCHAR(255)) "
                          "CHARACTER SET utf8mb4"))
        conn.execute(text("DELETE FROM lms_sync_identity_changes"))
        conn.execute(text("INSERT INTO lms_sync_identity_changes (lid, pid, ek, hk) "
                          "VALUES (:lid, :pid, :ek, :hk)"), changes)
        conn.execute(text(
            "UPDATE learners l JOIN lms_sync_identity_changes t ON l.id = t.lid "
            "SET l.person_id = t.pid, l.email_key = t.ek, l.hr_key = t.hk, "
            "l.matched_at = CASE WHEN l.matched_at IS NULL OR l.updated_at > l.matched_at "
            "THEN :started ELSE l.matched_at END"
        ).bindparams(bindparam("started", type_=c.matched_at.type)), {"started": started_at})
        conn.execute(text("DROP TEMPORARY TABLE lms_sync_identity_changes"))


def _qualified(table: Any) -> str:
    return f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'


def _record(at: datetime, kept: int, merged: int, rule: str, kind: str,
            learner_ids: list[int]) -> dict[str, Any]:
    return {"at": at, "kept_person_id": kept, "merged_person_id": merged, "rule": rule,
            "kind": kind, "detail": {"learner_ids": sorted(learner_ids)[:100],
                                     "learners": len(learner_ids)}}


# --------------------------------------------------------------------------- overrides & lookups


def resolve_learner(conn: Connection, token: str) -> Any:
    """A learner row by numeric id or ``source_id:external_id``; UserError if unknown."""
    token = token.strip()
    c = learners.c
    if token.isdigit():
        row = conn.execute(select(*_COLS).where(c.id == int(token))).first()
    else:
        source_id, colon, external_id = token.partition(":")
        row = None
        if colon:
            row = conn.execute(select(*_COLS).where(c.source_id == source_id,
                                                    c.external_id == external_id)).first()
    if row is None:
        raise UserError(f"no learner {token!r} in the warehouse; name a learner as "
                        "SOURCE_ID:EXTERNAL_ID or by its numeric id (see lms-sync identity show EMAIL)")
    return row


def set_override(engine: Engine, settings: Any, a: str, b: str, action: str,
                 note: str | None = None) -> tuple[Any, Any, MatchResult]:
    """Record a force-link (``link``) or force-apart (``apart``) of two learners and re-match them."""
    with engine.begin() as conn:
        la, lb = resolve_learner(conn, a), resolve_learner(conn, b)
        if la.id == lb.id:
            raise UserError(f"{a!r} and {b!r} are the same learner; name two different learners")
        if action == LINK:
            for token, row in ((a, la), (b, lb)):
                if row.is_placeholder:
                    raise UserError(f"learner {token!r} is a placeholder identity (anonymized or "
                                    "shared) and never links to anyone; nothing was changed")
        lo, hi = min(la.id, lb.id), max(la.id, lb.id)
        oc = identity_overrides.c
        conn.execute(identity_overrides.delete().where(
            or_((oc.learner_a_id == lo) & (oc.learner_b_id == hi),
                (oc.learner_a_id == hi) & (oc.learner_b_id == lo))))
        conn.execute(identity_overrides.insert().values(
            learner_a_id=lo, learner_b_id=hi, action=action, note=note, created_at=now_utc()))
    result = match(engine, settings, [la.id, lb.id])
    return la, lb, result


def find_persons(conn: Connection, token: str, settings: Any = None) -> list[int]:
    """Live person ids for EMAIL, PERSON_ID or SOURCE_ID:EXTERNAL_ID (a merged id follows its merge)."""
    token = token.strip()
    if token.isdigit():
        pid = int(token)
        for _ in range(100):  # follow merges of a deleted person to the live one
            row = conn.execute(select(persons.c.id, persons.c.deleted_at)
                               .where(persons.c.id == pid)).first()
            if row is None:
                return []
            if row.deleted_at is None:
                return [pid]
            nxt = conn.execute(
                select(person_merges.c.kept_person_id)
                .where(person_merges.c.merged_person_id == pid, person_merges.c.kind == "merge")
                .order_by(person_merges.c.id.desc()).limit(1)
            ).scalar()
            if nxt is None:
                return []
            pid = nxt
        return []
    source_id, colon, external_id = token.partition(":")
    if colon and "@" not in source_id:
        pid = conn.execute(select(learners.c.person_id).where(
            learners.c.source_id == source_id, learners.c.external_id == external_id)).scalar()
        if pid is not None:
            return [pid]
    if "@" in token:
        key = Rules.from_config(settings).email_key(token)
        raw = token.strip().lower()
        found = set(conn.execute(select(learners.c.person_id).where(
            or_(learners.c.email_key == key, learners.c.email == raw),
            learners.c.person_id.is_not(None))).scalars())
        found |= set(conn.execute(select(persons.c.id).where(
            persons.c.primary_email == key, persons.c.deleted_at.is_(None))).scalars())
        if found:
            return sorted(set(conn.execute(select(persons.c.id).where(
                persons.c.id.in_(sorted(found)), persons.c.deleted_at.is_(None))).scalars()))
    return []


def describe_person(conn: Connection, person_id: int) -> dict[str, Any]:
    """A person, its learners, its merge/split history and the overrides on its learners."""
    p = conn.execute(select(persons).where(persons.c.id == person_id)).mappings().first()
    if p is None:
        raise UserError(f"no person {person_id}")
    c = learners.c
    members = conn.execute(
        select(c.id, c.source_id, c.external_id, c.email, c.hr_id, c.first_name, c.last_name,
               c.display_name, c.is_placeholder, c.is_active, c.deleted_at)
        .where(c.person_id == person_id).order_by(c.id)
    ).mappings().all()
    ids = [m["id"] for m in members]
    pm = person_merges.c
    history = conn.execute(
        select(pm.at, pm.kind, pm.rule, pm.kept_person_id, pm.merged_person_id, pm.detail)
        .where(or_(pm.kept_person_id == person_id, pm.merged_person_id == person_id))
        .order_by(pm.id)
    ).mappings().all()
    oc = identity_overrides.c
    overrides = []
    for part in _chunks(ids):
        overrides += conn.execute(
            select(oc.learner_a_id, oc.learner_b_id, oc.action, oc.note, oc.created_at)
            .where(or_(oc.learner_a_id.in_(part), oc.learner_b_id.in_(part)))
        ).mappings().all()
    return {
        "person": dict(p),
        "learners": [dict(m) for m in members],
        "history": [dict(h) for h in history],
        "overrides": [dict(o) for o in overrides],
    }


def summary(conn: Connection) -> dict[str, int]:
    """Identity totals for ``lms-sync status``."""
    c = learners.c
    live = c.deleted_at.is_(None)
    per_person = (select(c.person_id, func.count().label("n"), func.count(c.source_id.distinct())
                         .label("sources"))
                  .where(live, c.person_id.is_not(None)).group_by(c.person_id).subquery())
    alone = select(per_person.c.person_id).where(per_person.c.n == 1)
    return {
        "persons_in_several_sources": conn.execute(
            select(func.count()).select_from(per_person).where(per_person.c.sources > 1)).scalar() or 0,
        "unmatched_learners": conn.execute(
            select(func.count()).where(live, c.is_placeholder.is_(False), c.person_id.in_(alone))
        ).scalar() or 0,
        "placeholder_learners": conn.execute(
            select(func.count()).where(live, c.is_placeholder.is_(True))).scalar() or 0,
        "learners_without_person": conn.execute(
            select(func.count()).where(live, c.person_id.is_(None))).scalar() or 0,
    }

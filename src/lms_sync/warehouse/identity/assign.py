"""Union-find and person assignment: which learners are one person, which id it keeps.

Pure: plain data in, plain data out, no database (``store.py`` loads and saves).

Two learners are one person when they share an email key or an HR key (``rules.py``),
transitively, or when an override links them; an ``apart`` override refuses the union that
would join them (the other rules still apply). Unions are attempted in a fixed order
(overrides, then email keys, then HR keys, each sorted), so a full recompute and an
incremental pass give the same persons.

Stable ids: a person keeps its id as learners join. When persons merge, the oldest
(smallest) id is kept and each absorbed person gets a ``person_merges`` row
(``kind='merge'``, ``rule`` = ``email``/``hr_id``/``override`` or a ``+`` join of them) and
is deleted. When a person's learners no longer link, the part with the most of its learners
(tie: the oldest learner) keeps the id; every other part becomes a new person (or joins
another), recorded as ``kind='split'`` (``kept_person_id`` = the person split,
``merged_person_id`` = where the part went; ``rule`` = ``override`` for a force-apart, else
``unlinked``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from lms_sync.warehouse.identity.rules import APART, LINK, Keys


class Learner(NamedTuple):
    """A learner as a pass sees it; ``person_id`` and the keys as stored before the pass."""

    id: int
    source_id: str
    external_id: str
    email: str | None
    hr_id: str | None
    is_placeholder: bool
    person_id: int | None
    first_name: str | None
    last_name: str | None
    display_name: str | None
    email_key: str | None
    hr_key: str | None
    gone: bool  # soft-deleted upstream


class Override(NamedTuple):
    learner_a_id: int
    learner_b_id: int
    action: str  # LINK or APART


class Person(NamedTuple):
    """A person row as stored before the pass."""

    primary_email: str | None
    display_name: str | None
    live: bool


Attributes = tuple[str | None, str | None]
"""(primary_email, display_name) of a person."""


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


class UnionFind:
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

    def components(self) -> list[list[int]]:
        """The learners of each component, sorted; components in order of their first learner."""
        comps: dict[int, list[int]] = defaultdict(list)
        for lid in sorted(self.parent):
            comps[self.find(lid)].append(lid)
        return list(comps.values())


def link(learners: Mapping[int, Learner], keys: Mapping[int, Keys],
         overrides: Iterable[Override]) -> UnionFind:
    """Union every learner with those it shares a key or a ``link`` override with."""
    uf = UnionFind(learners)
    links = []
    for o in overrides:
        a, b = o.learner_a_id, o.learner_b_id
        if a not in learners or b not in learners or a == b:
            continue
        if o.action == APART:
            uf.forbid.setdefault(a, set()).add(b)
            uf.forbid.setdefault(b, set()).add(a)
        elif o.action == LINK and not learners[a].is_placeholder and not learners[b].is_placeholder:
            links.append((min(a, b), max(a, b)))
    for a, b in sorted(links):
        uf.union(a, b, "override")
    by_email: dict[str, list[int]] = defaultdict(list)
    by_hr: dict[str, list[int]] = defaultdict(list)
    for lid in sorted(learners):
        ek, hk = keys[lid]
        if ek is not None:
            by_email[ek].append(lid)
        if hk is not None:
            by_hr[hk].append(lid)
    for rule, groups in (("email", by_email), ("hr_id", by_hr)):
        for key in sorted(key for key, members in groups.items() if len(members) > 1):
            uf.group(groups[key], rule)
    return uf


@dataclass
class Assignment:
    """Which person each component becomes, and what that changes."""

    comps: list[list[int]]
    comp_of: dict[int, int]
    """learner id -> its component (an index into ``comps``)"""
    old_members: dict[int, list[int]]
    """live person -> its learners before the pass"""
    heir_of: dict[int, int] = field(default_factory=dict)
    """live person -> the component that keeps its id (or is absorbed by an older one)"""
    moved: list[int] = field(default_factory=list)
    """persons whose learners did not all stay together"""
    final: dict[int, int] = field(default_factory=dict)
    """component -> its person id"""
    new_comps: list[int] = field(default_factory=list)
    """components that need a new person (``add_persons`` gives them their ids)"""
    attrs: dict[int, Attributes] = field(default_factory=dict)

    def add_persons(self, ids: Sequence[int]) -> None:
        self.final.update(zip(self.new_comps, ids, strict=True))


def assign(learners: Mapping[int, Learner], keys: Mapping[int, Keys], uf: UnionFind,
           live: set[int]) -> Assignment:
    """Give each component a person: the id an old person passes on, or a new one."""
    comps = uf.components()
    comp_of = {lid: ci for ci, members in enumerate(comps) for lid in members}
    old_members: dict[int, list[int]] = defaultdict(list)
    for lid in sorted(learners):
        pid = learners[lid].person_id
        if pid in live:
            old_members[pid].append(lid)
    plan = Assignment(comps, comp_of, old_members)
    claims = _claim(plan)
    for ci in range(len(comps)):
        if claims.get(ci):
            plan.final[ci] = min(claims[ci])
        else:
            plan.new_comps.append(ci)
    plan.attrs = {ci: attributes(members, learners, keys) for ci, members in enumerate(comps)}
    return plan


def _claim(plan: Assignment) -> dict[int, list[int]]:
    """Which part of each old person keeps its id: a part no older person has learners in
    (there it would be absorbed; a part of its own keeps the id, and the learners that left
    are recorded as split off), then most of its learners, then the oldest. Returns the
    persons claiming each component."""
    comp_of = plan.comp_of
    oldest_in: dict[int, int] = {}  # component -> the oldest person with learners in it
    for pid, members in plan.old_members.items():
        for lid in members:
            ci = comp_of[lid]
            oldest_in[ci] = min(oldest_in.get(ci, pid), pid)
    claims: dict[int, list[int]] = defaultdict(list)
    for pid, members in plan.old_members.items():
        heir = comp_of[members[0]]
        if any(comp_of[lid] != heir for lid in members):
            counts = Counter(comp_of[lid] for lid in members)
            first: dict[int, int] = {}
            for lid in members:
                first.setdefault(comp_of[lid], lid)
            heir = min(counts, key=lambda ci: (oldest_in[ci] < pid, -counts[ci], first[ci]))
            plan.moved.append(pid)
        plan.heir_of[pid] = heir
        claims[heir].append(pid)
    return claims


def attributes(members: list[int], learners: Mapping[int, Learner],
               keys: Mapping[int, Keys]) -> Attributes:
    """(primary_email, display_name) of a person: its most common email key, oldest name,
    from its live accounts (a deleted account's old address must not win), else all."""
    if len(members) == 1:  # most persons: no counting
        lid = members[0]
        return keys[lid][0], _name(learners[lid])
    members = [lid for lid in members if not learners[lid].gone] or members
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    name: str | None = None
    for lid in members:
        ek = keys[lid][0]
        if ek is not None:
            if ek in counts:
                counts[ek] += 1
            else:
                counts[ek] = 1
                first[ek] = lid
        if name is None:
            name = _name(learners[lid])
    email: str | None = None
    if len(counts) == 1:
        email = next(iter(counts))
    elif counts:
        email = min(counts, key=lambda k: (-counts[k], first[k]))
    return email, name


def _name(row: Learner) -> str | None:
    """A learner's name: first and last (those given), else its display name; <= 500."""
    first, last = row.first_name, row.last_name
    full_name = (f"{first} {last}" if first and last else first or last) or row.display_name
    return full_name[:500] if full_name else None


def person_updates(plan: Assignment, persons: Mapping[int, Person]) -> list[dict[str, Any]]:
    """``{pid, email, name}`` of each kept person whose email or name changes."""
    changed = []
    for ci, pid in plan.final.items():
        p = persons.get(pid)
        if p is not None and (p.primary_email, p.display_name) != plan.attrs[ci]:
            email, name = plan.attrs[ci]
            changed.append({"pid": pid, "email": email, "name": name})
    return changed


def learner_updates(plan: Assignment, learners: Mapping[int, Learner],
                    keys: Mapping[int, Keys]) -> tuple[list[dict[str, Any]], int]:
    """``{lid, pid, ek, hk}`` of each learner whose person or keys change, by learner id;
    and how many changed person."""
    changes = []
    relinked = 0
    for lid, row in sorted(learners.items()):
        pid = plan.final[plan.comp_of[lid]]
        ek, hk = keys[lid]
        if row.person_id != pid or row.email_key != ek or row.hr_key != hk:
            changes.append({"lid": lid, "pid": pid, "ek": ek, "hk": hk})
            relinked += row.person_id != pid
    return changes, relinked


def gone_persons(plan: Assignment, live: set[int]) -> list[int]:
    """Live persons no component kept: merged into another, or left without learners."""
    return sorted(live - set(plan.final.values()))


def history(plan: Assignment, uf: UnionFind, overrides: Iterable[Override],
            now: datetime) -> list[dict[str, Any]]:
    """The ``person_merges`` rows of this pass: a merge per absorbed person, a split per part
    that left a person."""
    final, heir_of = plan.final, plan.heir_of
    moved = sorted({*plan.moved, *(pid for pid, heir in heir_of.items() if final[heir] != pid)})
    records: list[dict[str, Any]] = []
    if not moved:
        return records
    old_of = {lid: pid for pid in moved for lid in plan.old_members[pid]}
    incident: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for a, b, rule in uf.edges:
        if a in old_of:
            incident[a].append((b, rule))
        if b in old_of:
            incident[b].append((a, rule))
    apart = {(min(o.learner_a_id, o.learner_b_id), max(o.learner_a_id, o.learner_b_id))
             for o in overrides if o.action == APART}
    for pid in moved:
        heir = heir_of[pid]
        by_comp: dict[int, list[int]] = defaultdict(list)
        for lid in plan.old_members[pid]:
            by_comp[plan.comp_of[lid]].append(lid)
        if final[heir] != pid:  # absorbed into an older person
            rules = sorted({rule for lid in by_comp[heir] for other, rule in incident[lid]
                            if old_of.get(other) != pid}) or ["rematch"]
            records.append(_record(now, final[heir], pid, "+".join(rules), "merge", by_comp[heir]))
        for ci, part in sorted(by_comp.items()):
            if ci == heir:
                continue
            stay = by_comp[heir]
            forced = bool(apart) and any((min(a, b), max(a, b)) in apart for a in part for b in stay)
            records.append(_record(now, final[heir], final[ci],
                                   "override" if forced else "unlinked", "split", part))
    return records


def _record(at: datetime, kept: int, merged: int, rule: str, kind: str,
            learner_ids: list[int]) -> dict[str, Any]:
    return {"at": at, "kept_person_id": kept, "merged_person_id": merged, "rule": rule,
            "kind": kind, "detail": {"learner_ids": sorted(learner_ids)[:100],
                                     "learners": len(learner_ids)}}

"""The provisioning plan: pure functions from plain data, no vendor and no database.

Input: the learners of the ``from_sources`` (:class:`LearnerRow`, grouped into persons)
and the vendor's current users (:class:`RemoteUser`). Output: a :class:`Plan` of users
to create, update and deactivate, and how many are already in step.

A person *wants* a vendor user with their HR id as ``remoteId``. They are *active* when
one of their accounts in the from_sources is live (not soft-deleted) and not inactive;
a person none of whose accounts is, has left: their vendor user is deactivated. Users
whose ``remoteId`` names no known person, or who have none, are never touched (someone
else made them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

Key = Callable[[str | None], str | None]
"""The comparable form of an HR id (None: not an id), e.g. identity.normalize_hr_id."""


@dataclass(frozen=True)
class LearnerRow:
    """One account of a person in a from_source, as the warehouse holds it."""

    learner_id: int
    person_id: int | None
    source_id: str
    hr_id: str | None
    first_name: str | None
    last_name: str | None
    display_name: str | None
    is_active: bool | None
    deleted: bool

    @property
    def present(self) -> bool:
        return not self.deleted and self.is_active is not False


@dataclass(frozen=True)
class Wanted:
    """What the vendor should hold for one person (the body of an upsert)."""

    remote_id: str
    first_name: str
    last_name: str
    active: bool


@dataclass(frozen=True)
class RemoteUser:
    """A user as the vendor lists it."""

    id: str
    remote_id: str | None
    first_name: str
    last_name: str
    active: bool


@dataclass(frozen=True)
class Change:
    """An update: what is sent, and the vendor's user it changes."""

    user: Wanted
    before: RemoteUser


@dataclass
class Plan:
    create: list[Wanted] = field(default_factory=list)
    update: list[Change] = field(default_factory=list)
    deactivate: list[RemoteUser] = field(default_factory=list)
    held: list[RemoteUser] = field(default_factory=list)
    """Deactivations not sent this run: a from_source's state is unknown."""
    unchanged: int = 0
    """Users already in step."""
    absent: int = 0
    """Persons inactive or gone who have no user: nothing to do."""
    untouched: int = 0
    """Vendor users without a remoteId, or whose remoteId names no known person."""
    no_hr_id: int = 0
    """Active persons skipped: none of their accounts carries an HR id."""
    remote_users: int = 0
    """Users the vendor holds now."""
    active_remote: int = 0
    """Of them, the active ones (what max_deactivate_fraction is a share of)."""


def wanted_people(rows: Iterable[LearnerRow], source_order: Sequence[str],
                  key: Key) -> tuple[list[Wanted], int]:
    """One :class:`Wanted` per person with an HR id, and how many active persons have none.

    The HR id and name come from the person's best account: present before merely live
    before deleted, then in ``source_order``, then the oldest learner. Two persons with one
    HR id (identity kept them apart) give one user, active if either is.
    """
    rank = {sid: i for i, sid in enumerate(source_order)}
    persons: dict[tuple[str, int], list[LearnerRow]] = {}
    for row in rows:
        pid = ("person", row.person_id) if row.person_id is not None else ("learner", row.learner_id)
        persons.setdefault(pid, []).append(row)
    by_key: dict[str, Wanted] = {}
    no_hr_id = 0
    for accounts in persons.values():
        accounts.sort(key=lambda r: (not r.present, r.deleted, rank.get(r.source_id, len(rank)),
                                     r.learner_id))
        active = accounts[0].present
        best = next((r for r in accounts if key(r.hr_id)), None)
        if best is None:
            no_hr_id += active
            continue
        wanted = Wanted(str(best.hr_id).strip(), *_names(best), active=active)
        k = key(best.hr_id)
        assert k is not None
        if k not in by_key or (active and not by_key[k].active):
            by_key[k] = wanted
    return list(by_key.values()), no_hr_id


def _names(row: LearnerRow) -> tuple[str, str]:
    first, last = (row.first_name or "").strip(), (row.last_name or "").strip()
    if not first and not last and row.display_name:  # "Jane Q. Doe" -> "Jane", "Q. Doe"
        first, _, last = row.display_name.strip().partition(" ")
    return first, last


def make_plan(wanted: Iterable[Wanted], remote: Iterable[RemoteUser], key: Key, *,
              deactivate: bool = True, hold: bool = False) -> Plan:
    """Compare what should be with what the vendor holds.

    ``deactivate``: False leaves every user active (``deactivate_leavers: false``).
    ``hold``: deactivations are listed as held, not to be sent.
    """
    plan = Plan()
    by_key: dict[str, RemoteUser] = {}
    for user in remote:
        plan.remote_users += 1
        plan.active_remote += user.active
        k = key(user.remote_id)
        if k is None or k in by_key:  # no remoteId (made by hand), or a duplicate: not ours
            plan.untouched += 1
            continue
        by_key[k] = user
    for person in sorted(wanted, key=lambda w: w.remote_id):  # the plan reads in id order
        wanted_key = key(person.remote_id)
        found = by_key.pop(wanted_key) if wanted_key in by_key else None
        if found is None:
            if person.active:
                plan.create.append(person)
            else:
                plan.absent += 1
        elif not person.active:
            if found.active and deactivate:
                (plan.held if hold else plan.deactivate).append(found)
            else:
                plan.unchanged += 1
        else:
            _compare(plan, person, found)
    plan.untouched += len(by_key)
    return plan


def _compare(plan: Plan, person: Wanted, user: RemoteUser) -> None:
    # the vendor keeps users by remoteId: an update names the user by *its* remoteId, so a
    # hand-typed "e100001" is updated, not doubled by an "E100001"; a name we lack is kept
    first = person.first_name or user.first_name
    last = person.last_name or user.last_name
    if (first, last) == (user.first_name, user.last_name) and user.active:
        plan.unchanged += 1
        return
    assert user.remote_id is not None
    plan.update.append(Change(Wanted(user.remote_id, first, last, True), user))


def refusal(plan: Plan, max_fraction: float) -> str | None:
    """Why the plan must not be sent (too many deactivations), or None."""
    n, active = len(plan.deactivate), plan.active_remote
    if n == 0 or n <= max_fraction * active:
        return None
    share = f"{n / active:.1%}" if active else "all"
    return (f"would deactivate {n} of {active} active users ({share}), more than "
            f"max_deactivate_fraction {max_fraction:g}")


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]

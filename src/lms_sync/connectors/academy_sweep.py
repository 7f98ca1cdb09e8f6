"""Monotree academy: the user sweep's memory of users and of earlier sweeps.

:class:`SweepUsers`, every listed user as columns of what the ``progress`` sweep
(``connectors.academy``) reads; :class:`SweepState`, its cursor: where the sweep stands,
what kind it is and whom an incremental one visits. See docs/vendors/academy.md.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import TypeAdapter, ValidationError

from lms_sync.canonical import utc

FULL, INCREMENTAL = "full", "incremental"


def _day(value: object) -> date | None:
    """The calendar date of a vendor date or timestamp; unreadable -> date.max (treat as recent)."""
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return date.max


def course_digest(ids: Iterable[str]) -> str:
    """A short fingerprint of the course list (its ids), kept in the cursor."""
    return hashlib.sha1(",".join(sorted(ids)).encode(), usedforsecurity=False).hexdigest()[:16]


class SweepUser(NamedTuple):
    """One listed user as the sweep reads it (built by :class:`SweepUsers` on demand)."""

    id: int
    type: str | None
    last_active_on: date | None  # the vendor's day; date.max: unreadable (treated as recent)
    created_on: date | None
    registered_on: date | None   # the day of registered_at as the vendor wrote it
    registered_at: Any           # a UTC datetime; None; or the vendor's value, unreadable
    hired_at: Any


_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)  # the parser VUser's datetime fields use
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NONE = -(2**63)   # no value
_ODD = -(2**63) + 1  # a value pydantic cannot read: kept as sent, in ``_odd``


class SweepUsers:
    """Every listed user with an integer id (but those of ``skip_types``), in id order, as
    columns: ~34 bytes a user, not ~210 as NamedTuples (docs/vendors/academy.md, "The
    sweep's user list"); ``users[i]`` rebuilds one :class:`SweepUser`."""

    def __init__(self, skip_types: Iterable[str] = ()) -> None:
        self._skip = {t.lower() for t in skip_types}  # types the sweep never visits
        self.ids = array("q")
        self._type = array("H")                 # per user: an index into _types
        self._types: list[str | None] = []
        self._type_at: dict[str | None, int] = {}
        self._days = (array("i"), array("i"), array("i"))  # last active, created, registered
        self._times = (array("q"), array("q"))             # registered_at, hired_at
        self._odd: dict[tuple[int, int], Any] = {}         # (user id, time column) -> as sent

    @classmethod
    def of(cls, rows: Iterable[Any], skip_types: Iterable[str] = ()) -> SweepUsers:
        """The listed ``rows`` but those without an integer id or of ``skip_types`` (any case)."""
        users = cls(skip_types)
        for row in rows:
            users.add(row)
        return users.sorted()

    def add(self, row: Any) -> None:
        """Append one listed row (call ``sorted()`` once all are in)."""
        if not isinstance(row, dict) or not isinstance(row.get("id"), int) \
                or isinstance(row.get("id"), bool):
            return
        uid, kind = row["id"], row.get("type")
        kind = kind if kind is None or isinstance(kind, str) else str(kind)
        if self._skip and str(kind or "").lower() in self._skip:
            return
        self.ids.append(uid)
        self._type.append(self._type_at.setdefault(kind, len(self._types)))
        if len(self._types) < len(self._type_at):
            self._types.append(kind)
        for column, value in zip(self._days, (row.get("last_active_on"), row.get("created_at"),
                                              row.get("registered_at")), strict=True):
            day = _day(value)
            column.append(day.toordinal() if day else 0)
        for n, (column, value) in enumerate(zip(self._times, (row.get("registered_at"),
                                                              row.get("hired_at")), strict=True)):
            column.append(self._micros(uid, n, value))

    def _micros(self, uid: int, column: int, value: Any) -> int:
        if value is None:
            return _NONE
        try:
            return (utc(_TIME.validate_python(value)) - _EPOCH) // timedelta(microseconds=1)
        except (ValidationError, OverflowError):
            self._odd[(uid, column)] = value  # VUser refuses it the same way later
            return _ODD

    def _time(self, i: int, column: int) -> Any:
        value = self._times[column][i]
        if value == _NONE:
            return None
        if value == _ODD:
            return self._odd[(self.ids[i], column)]
        return _EPOCH + timedelta(microseconds=value)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> SweepUser:
        days = [date.fromordinal(c[i]) if c[i] else None for c in self._days]
        return SweepUser(self.ids[i], self._types[self._type[i]], days[0], days[1], days[2],
                         self._time(i, 0), self._time(i, 1))

    def __iter__(self) -> Iterator[SweepUser]:
        return (self[i] for i in range(len(self)))

    def sorted(self) -> SweepUsers:
        """These users in id order: a new object, or this one when already in order."""
        ids = self.ids
        if all(ids[i] < ids[i + 1] for i in range(len(ids) - 1)):
            return self  # the vendor lists in id order: no list of positions (~36 B a user)
        positions = sorted(range(len(self)), key=ids.__getitem__)
        out = SweepUsers()
        out._skip, out._types, out._type_at, out._odd = self._skip, self._types, self._type_at, self._odd
        pairs = [(self.ids, out.ids), (self._type, out._type),
                 *zip(self._days, out._days, strict=True), *zip(self._times, out._times, strict=True)]
        for src, dst in pairs:
            dst.extend(src[i] for i in positions)
        return out

    def position_after(self, uid: int | None) -> int:
        """The position of the first user whose id is above ``uid`` (0 for None)."""
        return 0 if uid is None else bisect_right(self.ids, uid)


@dataclass
class SweepState:
    """The ``progress`` cursor, read: the sweep under way and what earlier sweeps left
    behind. Anything missing or unreadable reads as "unknown": the next sweep is full."""

    sweep: int = 1
    after_id: int | None = None
    done: int = 0
    total: int = 0
    mode: str | None = None            # of the sweep under way; None between sweeps
    started_on: date | None = None     # UTC date the sweep under way started
    last_full_on: date | None = None   # start date of the last complete full sweep
    last_sweep_on: date | None = None  # start date of the last complete sweep of either kind
    max_id: int | None = None          # highest user id the last complete sweep listed
    courses: str | None = None         # course_digest() when the last sweep started
    awaiting: set[int] = field(default_factory=set)     # a course awaits an admin's sign-off
    due: dict[int, date] = field(default_factory=dict)  # open onboarding -> its due date

    @classmethod
    def from_cursor(cls, cur: dict[str, Any] | None) -> SweepState:
        cur = cur if isinstance(cur, dict) else {}

        def day(key: str) -> date | None:
            found = _day(cur.get(key))
            return None if found == date.max else found

        def number(key: str) -> int | None:
            value = cur.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        mode = cur.get("mode")
        if mode not in (FULL, INCREMENTAL) or (mode == INCREMENTAL and day("last_sweep_on") is None):
            # an old cursor's sweep under way was a full one; so is one we cannot read
            mode = FULL if number("after_id") is not None else None
        return cls(
            sweep=number("sweep") or 1, after_id=number("after_id"), done=number("done") or 0,
            total=number("total") or 0, mode=mode, started_on=day("started_on"),
            last_full_on=day("last_full_on"), last_sweep_on=day("last_sweep_on"), max_id=number("max_id"),
            courses=cur.get("courses") if isinstance(cur.get("courses"), str) else None,
            awaiting={i for i in cur.get("awaiting") or () if isinstance(i, int)}, due=_due(cur.get("due")))

    def to_cursor(self) -> dict[str, Any]:
        """A fresh JSON-able dict (the pipeline may still hold the previous one)."""
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {"sweep": self.sweep, "after_id": self.after_id, "done": self.done, "total": self.total,
                "mode": self.mode, "started_on": iso(self.started_on), "last_full_on": iso(self.last_full_on),
                "last_sweep_on": iso(self.last_sweep_on), "max_id": self.max_id, "courses": self.courses,
                "awaiting": sorted(self.awaiting), "due": _by_day(self.due)}

    def note(self, uid: int, courses: list[Any] | None, onboarding: dict[str, Any] | None,
             today: date) -> None:
        """Record what a visit saw of the states that change without the user being active."""
        self.awaiting.discard(uid)
        self.due.pop(uid, None)
        if courses is None:
            return
        if any(isinstance(r, dict) and r.get("awaits_manual_completion") for r in courses):
            self.awaiting.add(uid)
        days = onboarding.get("onboarding_days") if isinstance(onboarding, dict) else None
        if (isinstance(days, int) and not isinstance(days, bool) and onboarding
                and not onboarding.get("onboarding_completed_at") and not onboarding.get("is_overdue")):
            due = today + timedelta(days=days)  # is_overdue flips once this date passes
            self.due[uid] = _DAYS.setdefault(due, due)

    def finish(self, ids: Sequence[int]) -> None:
        """The sweep under way is complete (``ids``: every listed user, ascending); the next starts anew."""
        self.last_sweep_on = self.started_on
        if self.mode == FULL:
            self.last_full_on = self.started_on  # None for an old cursor's sweep: the next is full
        self.max_id = ids[-1] if ids else self.max_id

        def listed(uid: int) -> bool:
            i = bisect_left(ids, uid)
            return i < len(ids) and ids[i] == uid

        self.awaiting = {u for u in self.awaiting if listed(u)}
        self.due = {k: v for k, v in self.due.items() if listed(k)}
        self.sweep, self.after_id, self.done, self.mode, self.started_on = self.sweep + 1, None, 0, None, None

    def plan(self, course_ids: Iterable[str] | None, every: int, today: date,
             full: str | None = None) -> str:
        """Start a sweep (``full``: why it must be full, e.g. a first sweep): its mode, its
        start date, the course list noted; returns why that mode."""
        digest = course_digest(course_ids) if course_ids is not None else None
        changed = digest is not None and self.courses is not None and digest != self.courses
        self.courses, self.started_on, self.mode = digest or self.courses, today, FULL
        if full:
            return full
        if every == 0:
            return "full_sweep_every_days is 0"
        if self.last_full_on is None or self.last_sweep_on is None:
            return "no complete full sweep on record"
        if self.last_sweep_on > today or (today - self.last_full_on).days >= every:
            return f"last full sweep started {self.last_full_on.isoformat()}"
        if changed:
            return "the course list changed"
        self.mode = INCREMENTAL
        return f"users new, active or open since {self.last_sweep_on.isoformat()}"

    def pick(self, users: SweepUsers, today: date) -> tuple[range, Sequence[int], dict[int, str]]:
        """The positions the sweep under way has left, those this sweep visits (an
        incremental one: those :meth:`why_visit` names) and why (user id -> reason)."""
        rest = range(users.position_after(self.after_id), len(users))
        why: dict[int, str] = {}
        if self.mode != INCREMENTAL:
            return rest, rest, why
        todo = array("i")
        for i in rest:
            if (reason := self.why_visit(users[i], today)) is not None:
                why[users.ids[i]] = reason
                todo.append(i)
        return rest, todo, why

    def why_visit(self, user: SweepUser, today: date) -> str | None:
        """Why an incremental sweep visits ``user``: "open", "new", "active"; None = skip."""
        uid = user.id
        if uid in self.awaiting or (uid in self.due and self.due[uid] <= today):
            return "open"
        assert self.last_sweep_on is not None  # an incremental sweep follows a complete one
        since = self.last_sweep_on - timedelta(days=1)  # last_active_on is in the vendor's zone
        joined = [user.created_on, user.registered_on]
        if (self.max_id is None or uid > self.max_id or all(d is None for d in joined)
                or any(d is not None and d >= since for d in joined)):
            return "new"
        active = user.last_active_on
        return "active" if active is not None and active >= since else None


_DAYS: dict[date, date] = {}  # one date object per due day, however many users share it


def _by_day(due: dict[int, date]) -> dict[str, list[int]]:
    """``due`` for the cursor: due day -> user ids. Per user a list slot of the same int
    (a cursor is built every 50 users); {"<id>": "<day>"} took ~150 bytes a user a copy."""
    days: dict[date, list[int]] = {}
    for uid, day in sorted(due.items()):
        days.setdefault(day, []).append(uid)
    return {day.isoformat(): ids for day, ids in sorted(days.items())}


def _due(value: Any) -> dict[int, date]:
    """The cursor's ``due``: {"<day>": [ids]}, or older cursors' {"<id>": "<day>"}."""
    due: dict[int, date] = {}
    for key, item in (value.items() if isinstance(value, dict) else ()):
        if isinstance(item, list):
            day = _day(key)
            ids = [uid for uid in item if isinstance(uid, int) and not isinstance(uid, bool)]
        else:
            day, ids = _day(item), [int(key)] if str(key).isdigit() else []
        if day is not None and day != date.max:
            due.update(dict.fromkeys(ids, _DAYS.setdefault(day, day)))
    return due

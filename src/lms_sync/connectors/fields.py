"""Small vendor-free helpers of the REST connectors, tested value by value: a .NET TimeSpan or
ISO 8601 duration in seconds (:func:`timespan_seconds`), a percentage kept in range
(:func:`percent`), a time to the second (:func:`second_of`), an id as one URL path segment
(:func:`segment`), a path option with named placeholders (:func:`path_template`); and
per-record calls run beside a stream of records (:func:`calls_beside`)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from lms_sync.canonical import utc

if TYPE_CHECKING:
    from lms_sync.http.client import HttpClient

_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")
_ISO_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?"
                           r"(?:(\d+(?:\.\d+)?)S)?)?$")


def timespan_seconds(value: str | None, name: str = "duration") -> float | None:
    """A .NET TimeSpan ``"[-][d.]hh:mm:ss[.fffffff]"`` (or ISO 8601 ``P1DT2H``) -> seconds;
    blank -> None; anything else a ValueError naming the field (``name``)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    m = _TIMESPAN.match(text)
    if m:
        sign, days, h, mins, s, frac = m.groups()
        total: float = int(days or 0) * 86400 + int(h) * 3600 + int(mins) * 60 + int(s)
        total += float(f"0.{frac}") if frac else 0.0
        return -total if sign else total
    m = _ISO_DURATION.match(text)
    if m and text not in ("P", "PT") and not text.endswith("T"):
        d, h, mins, s = (float(x or 0) for x in m.groups())
        return d * 86400 + h * 3600 + mins * 60 + s
    raise ValueError(f"{name} {text!r} is not a TimeSpan")


def second_of(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; naive: UTC) to the second; None when blank or
    not a time."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not UTC:  # (per row of a sorted walk: skip what costs ~1 us twice)
        when = utc(when)
    return when.replace(microsecond=0) if when.microsecond else when


def segment(value: Any) -> str:
    """A vendor id as one URL path segment: ``/``, ``?``, ``#``, ``%`` and spaces escaped, so
    an id never changes which resource is asked for."""
    return quote(str(value), safe="")


def path_template(value: str, *names: str) -> str:
    """A path option with placeholders: from ``/``, with ``{name}`` for each of ``names``
    and no other ``{}``; else a ValueError saying so."""
    try:
        value.format(**{name: name for name in names})
    except (KeyError, IndexError, ValueError):
        value = ""
    if not value.startswith("/") or any(f"{{{name}}}" not in value for name in names):
        wanted = " and ".join(f"{{{name}}}" for name in names)
        raise ValueError(f"must be a path from / with {wanted} (and no other {{}})")
    return value


def percent(value: float | None, name: str, tolerance: float = 0.5) -> float | None:
    """A percentage clamped to 0..100; further out than ``tolerance`` is a ValueError."""
    if value is None:
        return None
    if not -tolerance <= value <= 100 + tolerance:
        raise ValueError(f"{name} {value} is not a percentage")
    return min(100.0, max(0.0, float(value)))


V = TypeVar("V")
J = TypeVar("J")
F = TypeVar("F")


def calls_beside(http: HttpClient, items: Iterable[tuple[V, J | None]], fetch: Callable[[J], F],
                 then: Callable[[F], Iterable[V]], held: int) -> Iterator[V]:
    """Each item's value, and ``then(fetch(job))`` for each item with a job (e.g. a
    record and the per-record call it needs). The calls run back to back on
    ``http.map_concurrent``, which pulls ``items`` (in this thread) as workers free up;
    ``fetch`` runs in a worker, ``then`` here. Values made meanwhile wait, at most
    ``held`` of them (then a no-op job lets them out), and come before the next call's."""
    ready: deque[V] = deque()

    def jobs() -> Iterator[J | None]:
        for value, job in items:
            ready.append(value)
            if job is not None:
                yield job
            elif len(ready) >= held:
                yield None

    for fetched in http.map_concurrent(lambda job: None if job is None else (fetch(job),), jobs()):
        while ready:
            yield ready.popleft()
        if fetched is not None:
            yield from then(fetched[0])
    yield from ready

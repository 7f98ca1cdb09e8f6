"""Canonical records built from values a vendor model has already validated, without a
second validation: :func:`construct`.

A record built by ``Enrollment(**values)`` validates every field again, and runs the
canonical models' per-field Python validator (``_aware_utc``) once a field: ~10 us a
record, as much as the vendor row's own validation. ``model_construct`` skips that but
loops over every field in Python with its alias lookups (~15 us on pydantic 2.14). Here a
record is what ``model_construct`` makes (every field in ``__dict__``, defaults filled in,
``model_fields_set`` the given names), in ~3.5 us (an enrollment), with the checks the vendor model cannot
make: each field's length and range constraints (an id over 255 characters, a negative
time spent) raise ValueError, and a missing required field TypeError, as validating
would (the record is then skipped). What it does not check is the caller's promise: every
value of the canonical field's type, datetimes aware UTC (vendor fields typed
:data:`lms_sync.canonical.UTCTime`), enums as their plain ``.value`` strings,
emails trimmed lower-case (:func:`lms_sync.canonical.normalize_email`). The contract
suite holds every connector to it: each record equals
``type(r).model_validate(r.model_dump())``, value types included.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import annotated_types as at

from lms_sync.canonical import Record

R = TypeVar("R", bound=Record)

_set = object.__setattr__


Check = tuple[str, bool, Any, Any, str]
"""(field, on its length, lowest, highest allowed, what the value must be): bounds inclusive."""

_BOUNDS: dict[type, tuple[str, bool, bool]] = {  # constraint -> (its attribute, on length, lower)
    at.MinLen: ("min_length", True, True), at.MaxLen: ("max_length", True, False),
    at.Ge: ("ge", False, True), at.Le: ("le", False, False),
}


def _check(name: str, metadata: list[Any]) -> Check:
    lo: Any = None
    hi: Any = None
    on_len = False
    for m in metadata:
        if type(m) not in _BOUNDS:  # one this module does not know (gt, a pattern): validate such records
            raise TypeError(f"construct() cannot check {m!r} of {name}")
        attr, on_len, lower = _BOUNDS[type(m)]
        lo, hi = (getattr(m, attr), hi) if lower else (lo, getattr(m, attr))
    what = " and ".join([f">= {lo}"] * (lo is not None) + [f"<= {hi}"] * (hi is not None))
    return (name, on_len, -math.inf if lo is None else lo, math.inf if hi is None else hi,
            f"{'of a length ' if on_len else ''}{what}")


@dataclass(frozen=True)
class _Plan:
    template: dict[str, Any]  # every field's default (None for the required: always given)
    names: frozenset[str]
    required: frozenset[str]
    factories: tuple[tuple[str, Callable[[], Any]], ...]
    checks: tuple[Check, ...]
    private: dict[str, Any] | None  # private attributes' defaults (Record caches its encoding there)


@functools.cache
def _plan(cls: type[Record]) -> _Plan:
    template: dict[str, Any] = {}
    required: set[str] = set()
    factories: list[tuple[str, Callable[[], Any]]] = []
    checks: list[Check] = []
    for name, f in cls.model_fields.items():
        template[name] = None
        if f.is_required():
            required.add(name)
        elif f.default_factory is not None:
            factories.append((name, f.default_factory))  # type: ignore[arg-type]  # takes no data
        else:
            template[name] = f.get_default()
        if f.metadata:
            checks.append(_check(name, f.metadata))
    private = {k: p.get_default() for k, p in cls.__private_attributes__.items()} or None
    return _Plan(template, frozenset(template), frozenset(required), tuple(factories), tuple(checks),
                 private)


def construct(cls: type[R], **values: Any) -> R:
    """A ``cls`` record of ``values`` (see the module's docstring for what the caller
    guarantees); ValueError when a constraint fails, TypeError for a missing or unknown field."""
    plan = _plan(cls)
    given = values.keys()
    if not given <= plan.names or not plan.required <= given:
        raise TypeError(f"{cls.__name__} takes {sorted(plan.names)}, requires {sorted(plan.required)}; "
                        f"given {sorted(given)}")
    data = plan.template.copy()
    data.update(values)
    for name, factory in plan.factories:
        if name not in values:
            data[name] = factory()  # a fresh one per record, as validating makes
    for name, on_len, lo, hi, what in plan.checks:
        value = data[name]
        if value is not None and not lo <= (len(value) if on_len else value) <= hi:
            raise ValueError(f"{name} must be {what}")
    record = cls.__new__(cls)
    _set(record, "__dict__", data)
    _set(record, "__pydantic_fields_set__", set(given))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None if plan.private is None else plan.private.copy())
    return record

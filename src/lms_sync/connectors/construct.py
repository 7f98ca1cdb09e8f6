"""Canonical records built from values a vendor model has already validated, without a
second validation: :func:`construct`.

A record built by ``Enrollment(**values)`` validates every field again, and runs the
canonical models' per-field Python validator (``_aware_utc``) once a field: ~10 us a
record, as much as the vendor row's own validation. ``model_construct`` skips that but
loops over every field in Python with its alias lookups (~15 us on pydantic 2.14). Here a
record is what ``model_construct`` makes (every field in ``__dict__``, defaults filled in,
``model_fields_set`` the given names), in ~2 us, with the checks the vendor model cannot
make: each field's length and range constraints (an id over 255 characters, a negative
time spent) raise ValueError, and a missing required field TypeError, as validating
would (the record is then skipped). What it does not check is the caller's promise: every
value of the canonical field's type, datetimes aware UTC (vendor fields typed
:data:`lms_sync.connectors.rest.UtcWhen`), enums as their plain ``.value`` strings,
emails trimmed lower-case (:func:`email`). The contract suite holds every connector to it:
each record equals ``type(r).model_validate(r.model_dump())``, value types included.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import annotated_types as at

from lms_sync.canonical import Record

R = TypeVar("R", bound=Record)

_set = object.__setattr__


Check = tuple[bool, Callable[[Any, Any], bool], Any, str]
Checks = dict[str, list[Check]]
"""(on the value's length, the comparison, its bound, what the value must be)."""

_KINDS: dict[type, tuple[str, bool, Callable[[Any, Any], bool], str]] = {
    at.MinLen: ("min_length", True, operator.ge, "at least {} characters"),
    at.MaxLen: ("max_length", True, operator.le, "at most {} characters"),
    at.Ge: ("ge", False, operator.ge, ">= {}"), at.Le: ("le", False, operator.le, "<= {}"),
    at.Gt: ("gt", False, operator.gt, "> {}"), at.Lt: ("lt", False, operator.lt, "< {}"),
}


def _checks(metadata: list[Any]) -> list[Check]:
    out: list[Check] = []
    for m in metadata:
        if type(m) not in _KINDS:  # a constraint this module does not know: validate such records
            raise TypeError(f"construct() cannot check {m!r}")
        attr, on_len, op, what = _KINDS[type(m)]
        bound = getattr(m, attr)
        out.append((on_len, op, bound, what.format(bound)))
    return out


@dataclass(frozen=True)
class _Plan:
    template: dict[str, Any]  # every field's default (None for the required: always given)
    names: frozenset[str]
    required: frozenset[str]
    factories: tuple[tuple[str, Callable[[], Any]], ...]
    checks: Checks


@functools.cache
def _plan(cls: type[Record]) -> _Plan:
    template: dict[str, Any] = {}
    required: set[str] = set()
    factories: list[tuple[str, Callable[[], Any]]] = []
    checks: Checks = {}
    for name, f in cls.model_fields.items():
        template[name] = None
        if f.is_required():
            required.add(name)
        elif f.default_factory is not None:
            factories.append((name, f.default_factory))  # type: ignore[arg-type]  # takes no data
        else:
            template[name] = f.get_default()
        if f.metadata:
            checks[name] = _checks(f.metadata)
    return _Plan(template, frozenset(template), frozenset(required), tuple(factories), checks)


def construct(cls: type[R], **values: Any) -> R:
    """A ``cls`` record of ``values`` (see the module's docstring for what the caller
    guarantees); ValueError when a constraint fails, TypeError for a missing or unknown field."""
    plan = _plan(cls)
    given = values.keys()
    if not given <= plan.names:
        raise TypeError(f"unknown fields for {cls.__name__}: {sorted(given - plan.names)}")
    if not plan.required <= given:
        raise TypeError(f"{cls.__name__} requires {sorted(plan.required - given)}")
    data = plan.template.copy()
    data.update(values)
    for name, factory in plan.factories:
        if name not in values:
            data[name] = factory()  # a fresh one per record, as validating makes
    for name, tests in plan.checks.items():
        value = data[name]
        if value is not None:
            for on_len, op, bound, what in tests:
                if not op(len(value) if on_len else value, bound):
                    raise ValueError(f"{name} must be {what}")
    record = cls.__new__(cls)
    _set(record, "__dict__", data)
    _set(record, "__pydantic_fields_set__", set(values))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record


def email(value: str | None) -> str | None:
    """An email as :class:`~lms_sync.canonical.Learner` keeps it: trimmed, lower-case, or None."""
    value = (value or "").strip().lower()
    return value or None

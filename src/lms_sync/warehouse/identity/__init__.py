"""Identity matching: link the learners of every source into persons (docs/contracts.md,
"Identity").

The package, by concern:

* ``rules.py``: which keys a learner links by (email, HR id, placeholders, aliases);
* ``assign.py``: union-find and person assignment, pure (no database);
* ``store.py``: loading and saving per database, the warehouse-wide identity lock;
* ``overrides.py``: manual ``link``/``apart`` corrections;
* ``queries.py``: the lookups of ``identity show``, ``report`` and ``status``;
* here: the entry points, :func:`after_run` (the pipeline, after every run),
  :func:`recompute` (a full pass) and :func:`set_override`.

A pass after a run re-examines only the learners the run wrote, learners without a person,
and learners updated since they were matched (a crashed run's writes), plus everything
reachable from them. After changing the identity rules in the config, run
``lms-sync identity recompute`` (a full pass).
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine

from lms_sync import memory
from lms_sync.logs import get_logger
from lms_sync.warehouse import retry
from lms_sync.warehouse.identity import assign, store
from lms_sync.warehouse.identity.assign import Learner, MatchResult
from lms_sync.warehouse.identity.overrides import record_override, resolve_learner
from lms_sync.warehouse.identity.queries import describe_person, find_persons, summary
from lms_sync.warehouse.identity.rules import APART, LINK, Rules, normalize_hr_id
from lms_sync.warehouse.identity.store import locked_transaction
from lms_sync.warehouse.rowids import RowIds
from lms_sync.warehouse.state import now_utc

__all__ = ["APART", "LINK", "PASS_SEEDS", "MatchResult", "Rules", "after_run", "describe_person",
           "find_persons", "locked_transaction", "match", "normalize_hr_id", "recompute",
           "resolve_learner", "set_override", "summary"]

PASS_SEEDS = 5000
"""Seeds per transaction of an incremental pass. A pass holds every learner linked to its
seeds (~1.7 KB each): matching a first load of 120,000 learners at once took ~200 MB;
in slices of 5,000 seeds the peak stays near one slice's closure, whatever the total."""


def after_run(engine: Engine, settings: Any, learner_ids: Iterable[int],
              window: float = retry.DEFAULT_WINDOW) -> MatchResult:
    """Re-match the learners a run wrote (and whatever they touch). Called by the pipeline;
    ``window`` is ``warehouse.reconnect_seconds``."""
    return match(engine, settings, learner_ids, window=window)


def recompute(engine: Engine, settings: Any) -> MatchResult:
    """Re-match every learner (after a rules change, or to repair)."""
    return match(engine, settings, full=True)


def set_override(engine: Engine, settings: Any, a: str, b: str, action: str,
                 note: str | None = None) -> tuple[Learner, Learner, MatchResult]:
    """Record a force-link (``link``) or force-apart (``apart``) of two learners and re-match them."""
    with engine.begin() as conn:
        la, lb = record_override(conn, a, b, action, note)
    return la, lb, match(engine, settings, [la.id, lb.id])


def match(engine: Engine, settings: Any, learner_ids: Iterable[int] = (), *,
          full: bool = False, window: float = retry.DEFAULT_WINDOW) -> MatchResult:
    """One matching pass: incremental from ``learner_ids`` (+ stale learners), or ``full``.
    Each slice is one transaction under the warehouse retry policy (``window`` seconds)."""
    rules = Rules.from_config(settings)
    log = get_logger("lms_sync.identity")
    started = time.monotonic()
    if full:
        result = _retried(engine, rules, set(), True, window)[0]
    else:
        # stale learners join the seeds; each slice is a complete pass of its own
        seeds = RowIds(learner_ids)
        seeds.update(retry.transaction(engine, store.stale_ids,
                                       window=window, op="identity.stale_ids"))
        order = seeds.sorted()
        skip = bytearray(len(order))  # seeds an earlier slice examined (_skip_examined)
        result = MatchResult()
        for start in range(0, len(order), PASS_SEEDS):
            end = min(start + PASS_SEEDS, len(order))
            part = {order[i] for i in range(start, end) if not skip[i]}
            if not part:
                continue
            sliced, examined = _retried(engine, rules, part, False, window)
            result.add(sliced)
            _skip_examined(order, skip, end, examined)
            del part, examined
            memory.trim()  # a slice's closure is freed: give its pages back before the next
    result.seconds = round(time.monotonic() - started, 3)
    if result.learners:
        log.info("identity.matched", **result.as_dict())
    return result


def _skip_examined(seeds: Sequence[int], skip: bytearray, end: int, examined: list[int]) -> None:
    """Mark the seeds from ``end`` on that a slice examined (``examined`` sorted): later
    slices leave them out. Such a seed's whole component was matched by that slice and
    nothing has touched it since (a slice that did would have examined it too), so passing
    it again would change nothing: the persons, ids and history come out the same. It
    counts when the seeds already have persons (a re-sync writes every learner again): the
    first slices reach the later seeds through persons and keys, and each slice examined
    them all again. (A first load has no stored keys to reach forward by.) The slices keep
    their bounds."""
    if end < len(seeds):
        for lid in examined[bisect_left(examined, seeds[end]):]:
            at = bisect_left(seeds, lid, end)
            if at < len(seeds) and seeds[at] == lid:
                skip[at] = 1


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a slice runs. A slice makes several objects a
    learner (rows, keys, union-find and plan entries) and keeps them to its end: each few
    hundred allocations start a collection, and the oldest generation's, which walks every
    object of the process, came round again and again (a third of the pass's CPU at 30,000
    learners). The slice's objects hold next to no cycles: reference counting frees them when it
    ends, and collection resumes then. The switch is process-wide; a slice lasts seconds."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _retried(engine: Engine, rules: Rules, seeds: set[int], full: bool,
             window: float) -> tuple[MatchResult, list[int]]:
    """One pass in one transaction, done again whole after a deadlock with a concurrent
    batch or a lost connection (the warehouse retry policy, logged as ``identity.retry``).
    Returns what it did and the learners it examined (sorted; none for ``full``)."""

    def attempt() -> tuple[MatchResult, list[int]]:
        with locked_transaction(engine) as conn, _gc_paused():
            return _pass(conn, rules, seeds, full)

    return retry.call(attempt, engine=engine, window=window, event="identity.retry",
                      seeds=len(seeds), full=full)


def _pass(conn: Connection, rules: Rules, seeds: set[int],
          full: bool) -> tuple[MatchResult, list[int]]:
    """Load the learners (every one, or the seeds' closure), assign persons, save. Returns
    what it did and the learners examined (sorted; none for ``full``)."""
    started_at = now_utc()
    result = MatchResult(full=full)
    overrides = store.load_overrides(conn)
    loaded = store.Loader(conn, rules)
    if full:
        loaded.everyone()
    elif seeds:
        loaded.closure(seeds, overrides)
    if not loaded.learners:
        return result, []
    examined = [] if full else sorted(loaded.learners)
    result.learners = len(loaded.learners)
    uf = assign.link(loaded.learners, loaded.keys, overrides)
    old_ids = {row.person_id for row in loaded.learners.values() if row.person_id is not None}
    persons = store.load_persons(conn, None if full else old_ids)
    live = {pid for pid, p in persons.items() if p.live}
    plan = assign.assign(loaded.learners, loaded.keys, uf, live)
    now = now_utc()
    plan.add_persons(store.insert_persons(conn, [plan.attrs[ci] for ci in plan.new_comps], now))
    result.persons_created = len(plan.new_comps)
    changed = assign.person_updates(plan, persons)
    store.update_persons(conn, changed, now)
    result.persons_updated = len(changed)
    changes, result.relinked = assign.learner_updates(plan, loaded.learners, loaded.keys)
    store.update_learners(conn, changes, started_at)
    store.mark_matched(conn, None if full else examined, started_at)
    gone = assign.gone_persons(plan, live)
    store.delete_persons(conn, gone, now)
    result.persons_deleted = len(gone)
    records = assign.history(plan, uf, overrides, now)
    store.insert_history(conn, records)
    result.merges = sum(1 for r in records if r["kind"] == "merge")
    result.splits = len(records) - result.merges
    return result, examined

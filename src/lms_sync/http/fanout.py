"""Fan-out: per-item generators on worker threads with bounded memory.

:func:`interleave` is for collections a vendor only lists per parent (Absorb's
enrollments per course): each worker walks one parent's pages, and the pages meet
in one bounded queue, so a run holds at most ``workers + queue_size`` pages at a
time however big each parent is (collecting a parent's pages into a list held a
whole course, and with several courses in flight a peak RSS that grew with the data).
The threads, the queue, errors and closing are :class:`lms_sync.producer.Producer`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from lms_sync.producer import Producer

T = TypeVar("T")
R = TypeVar("R")


def interleave(fn: Callable[[T], Iterable[R]], items: Iterable[T], workers: int,
               queue_size: int | None = None) -> Iterator[R]:
    """Yield everything ``fn(item)`` yields, for every item, up to ``workers`` items at once.

    Values of one item keep their order; values of different items interleave in the
    order they arrive. The first error of any worker is raised here (the others stop at
    their next value). Closing the iterator early stops the workers the same way.
    Log context (contextvars) is carried into the worker threads.
    """
    if workers <= 1:
        for item in items:
            yield from fn(item)
        return
    # one value a hand-over: a value here is a page (hundreds of records) already
    yield from Producer(fn, items, workers=workers, ahead=queue_size or 2 * workers,
                        name="interleave", join_timeout=5)

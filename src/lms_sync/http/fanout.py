"""Fan-out helpers: run per-item generators on worker threads with bounded memory.

:func:`interleave` is for collections a vendor only lists per parent (Absorb's
enrollments per course): each worker walks one parent's pages, and the pages meet
in one bounded queue, so a run holds at most ``workers + queue_size`` pages at a
time however big each parent is (collecting a parent's pages into a list held a
whole course, and with several courses in flight a peak RSS that grew with the data).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

class _Done:
    """A worker has no more values."""


_DONE = _Done()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def interleave(fn: Callable[[T], Iterable[R]], items: Iterable[T], workers: int,
               queue_size: int | None = None) -> Iterator[R]:
    """Yield everything ``fn(item)`` yields, for every item, up to ``workers`` items at once.

    Values of one item keep their order; values of different items interleave in the
    order they arrive. The first error of any worker is raised here (the others stop at
    their next value). Closing the iterator early stops the workers the same way.
    Log context (contextvars) is carried into the worker threads.
    """
    workers = max(1, workers)
    if workers == 1:
        for item in items:
            yield from fn(item)
        return
    out: queue.Queue[R | _Failed | _Done] = queue.Queue(maxsize=queue_size or 2 * workers)
    todo: queue.Queue[T] = queue.Queue()
    for item in items:
        todo.put(item)
    stop = threading.Event()

    def put(value: R | _Failed | _Done) -> bool:
        while not stop.is_set():
            try:
                out.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            while not stop.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                for value in fn(item):
                    if not put(value):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failed(exc))
        finally:
            put(_DONE)

    threads = [threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                                name=f"interleave-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            value = out.get()
            if isinstance(value, _Done):
                running -= 1
            elif isinstance(value, _Failed):
                raise value.error
            else:
                yield value
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)

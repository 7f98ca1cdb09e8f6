"""One producer mechanism: generators run on worker threads, their values handed over in order.

:class:`Producer` runs ``fn(job)`` for each job on up to ``workers`` threads and hands
what they yield to the consuming thread through one bounded queue. It is the pipeline's
read-ahead (one job: a stream's ``read``, a few batches ahead of the writer) and the
fan-out of per-parent lists (:func:`lms_sync.http.fanout.interleave`: Absorb's
enrollments, one course a job).

* Values travel in chunks of up to ``chunk`` (one queue hand-over per chunk, not per
  value: a queue put/get pair costs ~10 us); ``cut(value)`` ends a chunk early (the
  pipeline cuts at a checkpoint, so the writer sees it as soon as it is read).
* The queue holds ``ahead`` chunks; each worker holds one more while it waits.
* A worker's exception reaches the consumer after the values it yielded before, with
  its own traceback (and a note naming the thread); the other workers stop.
* ``hold(value)``: after handing over a chunk that ends with ``value``, the worker waits
  while it stays true (the pipeline pauses at a checkpoint on a stop request).
* :meth:`close` (also on leaving the iteration) stops the workers at their next value,
  closes each generator in its own thread and joins the threads.
* Threads run in a copy of the creator's contextvars (the log's run/source/stream).
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
J = TypeVar("J")

_POLL = 0.1  # seconds between checks for close() while a worker waits on a full queue


class _Done:
    """A worker has no more values."""


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = _Done()


class Producer(Generic[T]):
    """``fn(job)`` for every job, on up to ``workers`` threads; iterate to get the values."""

    def __init__(self, fn: Callable[[J], Iterable[T]], jobs: Iterable[J], *, workers: int = 1,
                 ahead: int = 1, chunk: int = 1, cut: Callable[[T], bool] | None = None,
                 hold: Callable[[T], bool] | None = None, name: str = "producer",
                 join_timeout: float | None = None) -> None:
        self._fn: Callable[[Any], Iterable[T]] = fn
        self._jobs: deque[Any] = deque(jobs)  # taken in this thread, as the caller listed them
        self._chunk, self._cut, self._hold = max(1, chunk), cut, hold
        self._queue: queue.Queue[list[T] | _Failed | _Done] = queue.Queue(maxsize=max(1, ahead))
        self._closed = threading.Event()
        self._join_timeout = join_timeout
        n = max(1, min(workers, len(self._jobs)))
        suffix = (lambda i: f"-{i}") if n > 1 else (lambda i: "")
        self._threads = [threading.Thread(target=contextvars.copy_context().run, args=(self._work,),
                                          name=f"{name}{suffix(i)}", daemon=True)  # a vendor that
                         for i in range(n)]                                        # never answers
        self._running = n                                                          # can't block exit
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ worker side

    def _put(self, item: list[T] | _Failed | _Done) -> bool:
        while not self._closed.is_set():  # timeouts: a consumer that has gone doesn't hang us
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._closed.is_set():
                try:
                    job = self._jobs.popleft()
                except IndexError:
                    break
                if not self._run(job):
                    return
        except BaseException as exc:  # noqa: BLE001 - raised in the consumer, in order
            exc.add_note(f"(raised in thread {threading.current_thread().name})")
            self._put(_Failed(exc))
            return
        self._put(_DONE)

    def _run(self, job: Any) -> bool:
        """Hand over everything ``fn(job)`` yields; False when closed meanwhile."""
        items = iter(self._fn(job))
        chunk: list[T] = []
        size, cut, hold, closed = self._chunk, self._cut, self._hold, self._closed
        try:
            for item in items:
                if closed.is_set():
                    return False
                chunk.append(item)
                if len(chunk) >= size or (cut is not None and cut(item)):
                    # hold is checked before the put: the consumer, checking after, sees it too
                    held = hold is not None and hold(item)
                    if not self._put(chunk):
                        return False
                    chunk = []
                    while held and hold is not None and hold(item):
                        if closed.wait(_POLL):
                            return False
        except BaseException:
            if chunk:
                self._put(chunk)  # the values before the error come first
            raise
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        return not chunk or self._put(chunk)

    # ------------------------------------------------------------------ consumer side

    def __iter__(self) -> Iterator[T]:
        try:
            while self._running:
                try:
                    got = self._queue.get(timeout=1.0)
                except queue.Empty:
                    if any(t.is_alive() for t in self._threads) or not self._queue.empty():
                        continue
                    raise RuntimeError("a producer thread ended without a result") from None
                if isinstance(got, list):
                    yield from got
                elif isinstance(got, _Done):
                    self._running -= 1
                else:
                    raise got.error
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers at their next value; wait until their generators are closed."""
        self._closed.set()
        me = threading.current_thread()
        for thread in self._threads:
            if thread is not me:
                thread.join(self._join_timeout)

    def __enter__(self) -> Producer[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""interleave(): per-item generators on worker threads, bounded, errors surfaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from lms_sync.http.fanout import interleave


def pages_of(item: int) -> Iterator[tuple[int, int]]:
    for page in range(5):
        yield item, page


@pytest.mark.parametrize("workers", [1, 4])
def test_every_value_once_and_each_items_values_in_order(workers: int) -> None:
    got = list(interleave(pages_of, range(20), workers))
    assert sorted(got) == [(i, p) for i in range(20) for p in range(5)]
    for item in range(20):
        assert [p for i, p in got if i == item] == list(range(5))


def test_a_worker_error_reaches_the_consumer() -> None:
    def fn(item: int) -> Iterator[int]:
        yield item
        if item == 3:
            raise ValueError("page 2 of course 3 is not JSON")
        yield item

    with pytest.raises(ValueError, match="course 3"):
        list(interleave(fn, range(10), 3))


def test_producers_stay_a_bounded_distance_ahead_of_a_slow_consumer() -> None:
    produced = 0
    lock = threading.Lock()

    def fn(item: int) -> Iterator[int]:
        nonlocal produced
        for page in range(100):
            with lock:
                produced += 1
            yield page

    consumed, ahead = 0, 0
    for _ in interleave(fn, range(4), 4, queue_size=8):
        consumed += 1
        time.sleep(0.001)
        with lock:
            ahead = max(ahead, produced - consumed)
    assert consumed == 400
    # at most the queue plus one value in each worker's hand (+1 being handed over)
    assert ahead <= 8 + 4 + 1


def test_closing_early_stops_the_workers() -> None:
    started = threading.Event()

    def endless(item: int) -> Iterator[int]:
        started.set()
        n = 0
        while True:
            n += 1
            yield n

    it = interleave(endless, range(3), 3)
    assert next(it) >= 1
    it.close()
    deadline = time.monotonic() + 5
    while any(t.name.startswith("interleave-") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "worker threads still running after close()"
        time.sleep(0.05)

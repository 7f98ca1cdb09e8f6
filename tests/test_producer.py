"""Producer: generators on worker threads, values handed over in chunks, in order."""

from __future__ import annotations

import contextvars
import threading
import time
import traceback
from collections.abc import Iterator

import pytest

from lms_sync.producer import Producer

_where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


def test_values_arrive_in_order_in_chunks_cut_where_asked() -> None:
    handed: list[int] = []

    def numbers(_: object) -> Iterator[int]:
        for n in range(25):
            handed.append(n)
            yield n

    producer = Producer(numbers, [None], chunk=4, cut=lambda n: n == 9, ahead=1)
    assert list(producer) == list(range(25))
    assert handed == list(range(25))


def test_a_cut_value_is_handed_over_before_the_next_is_made() -> None:
    made = threading.Event()

    def read(_: object) -> Iterator[str]:
        yield "a"
        yield "checkpoint"
        made.set()  # only after the consumer took the chunk ending at the checkpoint
        yield "b"

    producer = Producer(read, [None], chunk=100, cut=lambda v: v == "checkpoint", ahead=1)
    got = iter(producer)
    assert [next(got), next(got)] == ["a", "checkpoint"]
    assert list(got) == ["b"]
    assert made.is_set()


def test_an_error_comes_after_the_values_before_it_with_its_own_traceback() -> None:
    def failing(_: object) -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("page 3 is not JSON")

    got: list[int] = []
    with pytest.raises(ValueError, match="page 3") as info:
        for value in Producer(failing, [None], chunk=10, name="reader"):
            got.append(value)
    assert got == [1, 2]
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "failing" in frames  # where it was raised, in the worker thread
    assert any("thread reader" in note for note in info.value.__notes__)


def test_several_workers_each_jobs_values_in_order() -> None:
    def pages(job: int) -> Iterator[tuple[int, int]]:
        for page in range(5):
            yield job, page

    got = list(Producer(pages, range(12), workers=3, ahead=2))
    assert sorted(got) == [(j, p) for j in range(12) for p in range(5)]
    for job in range(12):
        assert [p for j, p in got if j == job] == list(range(5))


def test_the_workers_run_in_the_creators_context() -> None:
    _where.set("run-7")

    def read(_: object) -> Iterator[str]:
        yield _where.get()
        yield threading.current_thread().name

    assert list(Producer(read, [None], name="lms-sync-reader")) == ["run-7", "lms-sync-reader"]


def test_hold_pauses_the_worker_after_handing_over_until_released() -> None:
    stop = threading.Event()
    made: list[str] = []

    def read(_: object) -> Iterator[str]:
        for value in ("a", "checkpoint", "b", "checkpoint"):
            made.append(value)
            yield value

    stop.set()
    producer = Producer(read, [None], chunk=100, cut=lambda v: v == "checkpoint",
                        hold=lambda v: v == "checkpoint" and stop.is_set())
    got = iter(producer)
    assert [next(got), next(got)] == ["a", "checkpoint"]
    time.sleep(0.3)
    assert made == ["a", "checkpoint"]  # held: nothing more is read
    stop.clear()
    assert list(got) == ["b", "checkpoint"]


def test_close_stops_the_worker_and_closes_its_generator_in_its_own_thread() -> None:
    closed_in: list[str] = []

    def endless(_: object) -> Iterator[int]:
        n = 0
        try:
            while True:
                n += 1
                yield n
        finally:
            closed_in.append(threading.current_thread().name)

    producer = Producer(endless, [None], chunk=3, name="endless")
    got = iter(producer)
    assert next(got) == 1
    producer.close()
    assert closed_in == ["endless"]
    assert not [t for t in threading.enumerate() if t.name == "endless"]


def test_leaving_the_iteration_early_closes_the_producer() -> None:
    def endless(job: int) -> Iterator[int]:
        while True:
            yield job

    got = iter(Producer(endless, range(3), workers=3, name="fan"))
    assert next(got) in (0, 1, 2)
    got.close()  # type: ignore[attr-defined]  # a generator
    assert not [t for t in threading.enumerate() if t.name.startswith("fan-")]

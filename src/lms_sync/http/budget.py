"""Per-source request budget: concurrency, a token bucket, and header-based pacing."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping


class RequestBudget:
    """Admits requests no faster than the source allows.

    * ``max_concurrency`` requests in flight at most (a semaphore);
    * ``requests_per_second`` on average with a burst of ``burst`` (GCRA token bucket);
    * vendors that send ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` are paced so
      the remaining requests spread evenly over the time left in the window, and a
      ``Retry-After`` pauses every request of the source, not just the one that got it.
    """

    def __init__(self, max_concurrency: int = 4, requests_per_second: float | None = None,
                 burst: int | None = None) -> None:
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._burst = burst if burst is not None else max(1, max_concurrency)
        self._lock = threading.Lock()
        self._next_at = 0.0  # GCRA theoretical arrival time
        self._paused_until = 0.0
        self.waited_seconds = 0.0

    def __enter__(self) -> RequestBudget:
        self._slots.acquire()
        try:
            self._wait_turn()
        except BaseException:
            self._slots.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()

    def _wait_turn(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._paused_until)
            if self._interval:
                earliest = self._next_at - self._interval * (self._burst - 1)
                start = max(start, earliest)
                self._next_at = max(self._next_at, start) + self._interval
            delay = start - now
        if delay > 0:
            self.waited_seconds += delay
            time.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every request of this source for ``seconds`` (a Retry-After)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Pace from ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` when present."""
        remaining = _number(headers.get("x-ratelimit-remaining"))
        reset = _number(headers.get("x-ratelimit-reset"))
        if remaining is None or reset is None:
            return
        # Reset is either epoch seconds or seconds from now, depending on the vendor.
        seconds_left = reset - time.time() if reset > 1_000_000_000 else reset
        seconds_left = max(0.0, min(seconds_left, 3600.0))
        # Requests already in flight will spend some of what remains.
        usable = remaining - (self.max_concurrency - 1)
        spacing = seconds_left if usable <= 0 else seconds_left / (usable + 1)
        with self._lock:
            now = time.monotonic()
            self._paused_until = max(self._paused_until, now + spacing)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None

"""Crontab expressions as APScheduler 3 triggers, with crontab's weekday numbers."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMERIC_DOW = re.compile(r"(\*|[0-7](?:-[0-7])?)(?:/(\d+))?")


def crontab_day_of_week(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday) as APScheduler 3 names.

    APScheduler 3 reads numbers with 0 = Monday (its ``from_crontab`` passes them
    through), so ``0 3 * * 0`` would run on Mondays. Numbers become day names,
    which mean the same in both.
    """
    if field in {"*", "?"}:
        return "*"
    out: list[str] = []
    for part in field.split(","):
        match = _NUMERIC_DOW.fullmatch(part)
        if not match:
            out.append(part.lower())  # names (mon-fri) mean the same in both
            continue
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            lo, hi = 0, 6
        elif "-" in span:
            lo, hi = (int(x) for x in span.split("-"))
        else:
            lo = int(span)
            hi = 6 if match.group(2) else lo  # "1/2" is "1-6/2" in cron
        out.extend(_DAYS[d % 7] for d in range(lo, hi + 1, max(step, 1)))
    return ",".join(dict.fromkeys(out))


def cron_trigger(expr: str, timezone: str, jitter_seconds: int = 0) -> BaseTrigger:
    """A trigger for a 5-field crontab expression with crontab's weekday numbers, plus jitter.

    When both day of month and day of week are restricted, crontab runs on a day matching
    *either* (``0 6 1 * 1``: every Monday and every 1st); APScheduler's CronTrigger wants
    both, so such an expression is two triggers, either of which fires.
    """
    minute, hour, day, month, day_of_week = expr.split()
    dow = crontab_day_of_week(day_of_week)
    zone, jitter = ZoneInfo(timezone), jitter_seconds or None
    if day not in {"*", "?"} and dow != "*":
        return OrTrigger([CronTrigger(minute=minute, hour=hour, day=day, month=month, timezone=zone),
                          CronTrigger(minute=minute, hour=hour, month=month, day_of_week=dow,
                                      timezone=zone)], jitter=jitter)
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=dow,
                       timezone=zone, jitter=jitter)

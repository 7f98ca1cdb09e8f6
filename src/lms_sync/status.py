"""What ``lms-sync status`` shows: one row per source and stream, plus identity totals.

Identity totals (live learners only): ``persons`` (live persons),
``persons_in_several_sources``, ``learners_per_source``, ``unmatched_learners``
(non-placeholder learners whose person has no other learner: nothing matched
them), ``placeholder_learners`` (anonymized identities, never matched) and
``learners_without_person`` (not matched yet; 0 after every sync).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select

from lms_sync.config import Config
from lms_sync.logs import redactor
from lms_sync.warehouse.identity import summary as identity_summary
from lms_sync.warehouse.tables import learners, sources, sync_runs, sync_state


def next_run(cfg: Config, source_id: str, stream: str = "-") -> datetime | None:
    from lms_sync.cron import cron_trigger

    source = cfg.sources.get(source_id)
    if source is None or not source.enabled:
        return None
    expr, tz = cfg.schedule_of(source)
    if stream == "provision":  # its own job (lms-sync provision), if scheduled
        p = source.provision
        if p is None or not p.enabled or not p.schedule:
            return None
        expr = p.schedule
    trigger = cron_trigger(expr, tz)
    now = datetime.now(ZoneInfo(tz))
    when = trigger.get_next_fire_time(None, now)
    return when.astimezone(UTC) if when else None


def collect_status(engine: Engine, cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with engine.connect() as conn:
        latest = (
            select(sync_runs.c.source_id, sync_runs.c.stream, func.max(sync_runs.c.id).label("id"))
            .group_by(sync_runs.c.source_id, sync_runs.c.stream)
            .subquery()
        )
        runs = conn.execute(
            select(sync_runs).join(latest, sync_runs.c.id == latest.c.id)
            .order_by(sync_runs.c.source_id, sync_runs.c.id)
        ).mappings().all()
        cursors = {
            (r.source_id, r.stream): r.cursor for r in conn.execute(select(sync_state)).all()
        }
        per_source: dict[str, int] = dict(conn.execute(
            select(learners.c.source_id, func.count()).where(learners.c.deleted_at.is_(None))
            .group_by(learners.c.source_id)
        ).all())
        identity_totals = identity_summary(conn)
        # persons with a live account: one whose accounts were all deleted upstream has
        # left (its row stays, for the history)
        person_count = conn.execute(
            select(func.count(func.distinct(learners.c.person_id)))
            .where(learners.c.deleted_at.is_(None), learners.c.person_id.is_not(None))).scalar()
        known_sources = [r.id for r in conn.execute(select(sources.c.id)).all()]
    rows = []
    seen_sources = set()
    for run in runs:
        seen_sources.add(run["source_id"])
        rows.append({
            "source": run["source_id"],
            "stream": run["stream"],
            "last_run": run["started_at"],
            "result": run["result"],
            "read": run["records_read"],
            "written": run["records_written"],
            "distinct_read": run["distinct_read"],
            "vendor_total": run["vendor_total"],
            "excluded": run["records_excluded"],
            "cursor": cursors.get((run["source_id"], run["stream"])),
            "next_run": next_run(cfg, run["source_id"], run["stream"]),
            # runs stored before errors were scrubbed may hold a secret a vendor echoed
            "error": redactor.scrub(run["error"]) if run["error"] else run["error"],
        })
    for source_id in cfg.sources:
        if source_id not in seen_sources:
            rows.append({"source": source_id, "stream": "-", "last_run": None, "result": "never run",
                         "read": 0, "written": 0, "cursor": None,
                         "distinct_read": None, "vendor_total": None, "excluded": None,
                         "next_run": next_run(cfg, source_id), "error": None})
    summary = {
        "persons": person_count,
        "learners_per_source": per_source,
        **identity_totals,
        "sources_in_warehouse": known_sources,
    }
    return rows, summary


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str, separators=(",", ":"))
        return text if len(text) <= 48 else text[:45] + "..."
    return str(value)


def read_reported(row: dict[str, Any]) -> str:
    """``distinct ids read / the vendor's total`` ('-' where the vendor reports none), and
    the rows of that total the stream leaves out by design (``+N excluded``)."""
    if row["distinct_read"] is None and row["vendor_total"] is None:
        return "-"
    text = f"{_fmt(row['distinct_read'])}/{_fmt(row['vendor_total'])}"
    return text + (f" +{row['excluded']} excluded" if row.get("excluded") else "")


def render_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    headers = ["source", "stream", "last_run", "result", "read", "read/reported", "written", "cursor",
               "next_run"]
    cells = [[read_reported(r) if h == "read/reported" else _fmt(r[h]) for h in headers]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    for r in rows:
        if r["error"] and r["result"] != "succeeded":
            lines.append(f"  ! {r['source']}/{r['stream']}: {r['error']}")
    per = ", ".join(f"{k}={v}" for k, v in sorted(summary["learners_per_source"].items())) or "none"
    lines.append("")
    lines.append(f"persons: {summary['persons']} "
                 f"({summary['persons_in_several_sources']} in several sources)   "
                 f"learners per source: {per}")
    lines.append(f"unmatched learners: {summary['unmatched_learners']}   "
                 f"placeholders: {summary['placeholder_learners']}   "
                 f"without a person: {summary['learners_without_person']}")
    return "\n".join(lines)

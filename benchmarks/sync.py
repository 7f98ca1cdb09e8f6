"""End-to-end sync benchmark against the sandbox fakes, compared to its limits.

    python benchmarks/sync.py --learners 10000 \\
        --warehouse postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        [--latency-ms 50] [--kinds absorb,udemy] [--batch-size 1000] [--out results.json]

``--learners``: a comma list (``10000,100000``) checks that peak RSS stays flat. Per size,
the fakes (every kind with a connector and a fake, or ``--kinds``) run in this process;
each phase in a child process of its own, so its peak RSS is the sync's own:

1. ``full``      first sync of every source into an empty warehouse (run_source per source,
                 as ``lms-sync sync`` does); the fakes record every request they answer;
2. ``resync``    the same sync again, nothing changed upstream (incremental where the
                 connector keeps a cursor): must write 0 rows;
3. ``refresh``   ``--full-refresh`` re-sync: everything re-read, compared, 0 rows written;
4. limit (a)     the rows the full sync wrote, loaded by the database's fastest raw path
                 (see benchmarks/common.py), one transaction per batch as the sync must;
5. limit (b)     the requests the full sync's connectors asked for (recorded in the sync
                 child) sent again through the source's own HTTP client (auth, rate-limit
                 pacing, retries, max_concurrency), bodies read, not parsed.

``--workload bulk``: issue #19's record-heavy workload (Absorb, Udemy; cached fake pages),
``--repeat N`` medians, ``--before FILE`` ratios, ``BENCH_PYSPY=1`` a py-spy profile.
Figures are ratios against limits measured in the same run (the machine may be noisy);
scratch warehouses are dropped afterwards. More in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util  # noqa: F401 - lms_sync's available_kinds() uses importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CORES = len(os.sched_getaffinity(0))

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# the record-heavy workload of issue #19: what a generic loader would be compared on
BULK: dict[str, Any] = {
    "learners": "20000", "kinds": ["absorb", "udemy"], "warehouse": PG_URL,
    "options": {"absorb": {"page_size": 1000, "lesson_enrollments": False},
                "udemy": {"page_size": 100}},
}
BULK_TARGETS = {"records_per_cpu_second": 20_000, "resync_over_fetch_only": 1.5, "peak_rss_mb": 250}

TARGETS = {
    "full_records_per_s": 50_000,
    "full_vs_warehouse_limit": 0.5,
    "resync_vs_full_time": 0.25,
    "peak_rss_mb": 250,
    "rss_growth_largest_vs_smallest": 1.10,
    "latency_wall_vs_bound": 1.25,
}


# =========================================================================== children


def child_sync(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every source once (as ``lms-sync sync`` does) and report what it did."""
    from lms_sync.config import parse_config
    from lms_sync.connectors import connector_class
    from lms_sync.logs import configure
    from lms_sync.memory import tune_malloc

    try:
        from lms_sync.memory import tune_gc
    except ImportError:  # BENCH_CHILD_SRC: a checkout older than tune_gc
        tune_gc = None  # type: ignore[assignment]
    from lms_sync.warehouse.db import make_engine

    tune_malloc()  # as `lms-sync` does at start
    configure("json", "WARNING")

    cfg = parse_config(spec["config"], "benchmark")
    for source in cfg.sources.values():  # import the connectors before the baseline
        connector_class(source.kind)
    if tune_gc is not None:
        tune_gc()  # as `lms-sync` does once its commands are imported
    import structlog

    import lms_sync.pipeline as pipeline

    identity_s: Counter[str] = Counter()
    inner = pipeline.identity.after_run

    def timed_after_run(*a: Any, **kw: Any) -> Any:  # timing only; behaviour unchanged
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            source = structlog.contextvars.get_contextvars().get("source", "")
            identity_s[source] += time.perf_counter() - t

    pipeline.identity.after_run = timed_after_run
    engine = make_engine(cfg.warehouse.url, cfg.warehouse.schema_)
    sql = common.SqlTimer() if spec.get("sql_stats") else None
    recorder = common.ClientRecorder(spec["record"]) if spec.get("record") else None
    baseline = common.peak_rss_mb()
    sampler = common.RssSampler(os.environ["BENCH_RSS_TRACE"]) if os.environ.get("BENCH_RSS_TRACE") else None
    heap = common.HeapPeak(os.environ["BENCH_TRACEMALLOC"]) \
        if os.environ.get("BENCH_TRACEMALLOC") and not spec["full_refresh"] else None
    out: list[dict[str, Any]] = []
    cpu0 = common.cpu_seconds()
    t0 = time.perf_counter()
    # as `lms-sync sync` does: sources concurrently (defaults.parallel_sources)
    parallel = min(pipeline.default_parallelism(cfg, engine), len(cfg.sources))
    results = pipeline.run_sources(engine, cfg, list(cfg.sources.values()),
                                   full_refresh=spec["full_refresh"])
    for source, res in zip(cfg.sources.values(), results, strict=True):
        tables: Counter[str] = Counter()
        for s in res.streams:
            tables.update(s.tables)
        out.append({
            "source": source.id, "kind": source.kind, "result": res.result, "error": res.error,
            "seconds": round(res.duration, 3),
            "identity_seconds": round(identity_s[source.id], 3),
            "read": sum(s.read for s in res.streams),
            "written": sum(s.written for s in res.streams),
            "skipped": sum(s.skipped for s in res.streams),
            "deleted": sum(s.deleted for s in res.streams),
            "tables": dict(tables), "http": dict(res.http),
            "max_concurrency": source.http.max_concurrency,
            "streams": [{"stream": s.stream, "result": s.result, "read": s.read,
                         "written": s.written, "error": s.error} for s in res.streams],
        })
    wall = time.perf_counter() - t0
    cpu = common.cpu_seconds() - cpu0
    if sampler:
        sampler.stop()
    if heap:
        heap.stop()
    engine.dispose()
    if recorder:
        recorder.close()
    return {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "parallel": parallel, "sources": out,
            "identity_seconds": round(sum(identity_s.values()), 3), "rss_baseline_mb": baseline,
            "rss_peak_mb": common.peak_rss_mb(), "sql": sql.top() if sql else None}


def child_warehouse_limit(spec: dict[str, Any]) -> dict[str, Any]:
    return common.warehouse_limit(spec["block"], spec["batch_size"])


def child_fetch_limit(spec: dict[str, Any]) -> dict[str, Any]:
    from lms_sync.config import parse_config
    from lms_sync.logs import configure

    configure("json", "WARNING")
    cfg = parse_config(spec["config"], "benchmark")
    # sources side by side, as the sync runs them (defaults.parallel_sources)
    from lms_sync.pipeline import default_parallelism

    recorded = common.load_recorded(spec["requests"])
    from lms_sync.warehouse.db import make_engine

    engine = make_engine(cfg.warehouse.url, cfg.warehouse.schema_)
    workers = min(default_parallelism(cfg, engine), len(recorded))
    engine.dispose()
    cpu0 = common.cpu_seconds()
    t0 = time.perf_counter()
    parse = bool(spec.get("parse"))  # fetch-only: each JSON body parsed, nothing else
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {sid: pool.submit(common.replay, cfg.sources[sid], requests, parse)
                   for sid, requests in recorded.items()}
        sources = {sid: f.result() for sid, f in futures.items()}
    return {"sources": sources, "seconds": round(time.perf_counter() - t0, 3), "parallel": workers,
            "cpu_seconds": round(common.cpu_seconds() - cpu0, 3)}


CHILDREN = {"sync": child_sync, "warehouse-limit": child_warehouse_limit,
            "fetch-limit": child_fetch_limit}


# =========================================================================== parent


def available(kinds: list[str] | None) -> list[str]:
    from lms_sync.connectors import available_kinds
    from lms_sync.sandbox.registry import available_fakes

    both = [k for k in available_kinds() if k in set(available_fakes())]
    if kinds:
        missing = [k for k in kinds if k not in both]
        if missing:
            raise SystemExit(f"benchmark: no connector+fake for {missing}; available: {both}")
        return kinds
    return both


def bench_size(learners: int, args: argparse.Namespace, kinds: list[str], tmp: Path) -> dict[str, Any]:
    from lms_sync.commands.sandbox import start_all
    from lms_sync.config import parse_config
    from lms_sync.warehouse.db import make_engine, upgrade

    script = str(Path(__file__).resolve())
    t = time.perf_counter()
    started = start_all(learners, args.seed, kinds, latency_ms=args.latency_ms)
    sources = {f"{kind}-bench": block for kind, _server, block in started}
    setup_s = time.perf_counter() - t
    run: dict[str, Any] = {"learners": learners, "latency_ms": args.latency_ms, "kinds": kinds,
                           "fake_start_seconds": round(setup_s, 3)}
    try:
        with common.scratch_warehouse(args.warehouse, tmp) as block:
            wh = {**block, "batch_size": args.batch_size}
            tree = {"warehouse": wh, "logging": {"format": "json", "level": "WARNING"},
                    "sources": sources}
            cfg = parse_config(tree, "benchmark")
            engine = make_engine(cfg.warehouse.url, cfg.warehouse.schema_)
            upgrade(engine)
            engine.dispose()
            fakes_cpu = common.cpu_seconds()  # this process serves the fakes, and only that
            run["full"] = common.run_child(script, "sync", {"config": tree, "full_refresh": False,
                                                          "sql_stats": args.sql_stats,
                                                          "record": str(tmp / "requests.jsonl")},
                                         tmp)
            run["full"]["fakes_cpu_seconds"] = round(common.cpu_seconds() - fakes_cpu, 3)
            _check(run["full"], "full")
            if args.full_only:
                return run
            run["resync"] = common.run_child(script, "sync", {"config": tree, "full_refresh": False}, tmp)
            run["refresh"] = common.run_child(script, "sync", {"config": tree, "full_refresh": True}, tmp)
            run["warehouse_limit"] = common.run_child(
                script, "warehouse-limit", {"block": block, "batch_size": args.batch_size}, tmp)
            run["fetch_limit"] = common.run_child(
                script, "fetch-limit", {"config": tree, "requests": str(tmp / "requests.jsonl")}, tmp)
    finally:
        for _kind, server, _block in started:
            server.stop()
    run["summary"] = summarize(run)
    return run


# =========================================================================== bulk workload


def pyspy_prefix(learners: int) -> tuple[list[str] | None, str | None]:
    """``py-spy record`` to run a child under (env ``BENCH_PYSPY``: ``1``, or the output file)."""
    want = os.environ.get("BENCH_PYSPY")
    if not want:
        return None, None
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        raise SystemExit("benchmark: BENCH_PYSPY needs py-spy: pip install -e '.[bench]'")
    out = str(Path(f"pyspy-full-{learners}.txt" if want == "1" else want).resolve())
    # --gil: the thread holding the GIL, i.e. where the process's Python CPU goes; raw =
    # collapsed stacks (flamegraph.pl input; benchmarks/pyspy_top.py reads it)
    return [exe, "record", "--format", "raw", "--rate", "100", "--gil", "--threads",
            "--nonblocking", "--output", out, "--"], out


class _Phase:
    """Runs benchmark children, each with its own figures from outside: the fakes' CPU (this
    process serves them and meanwhile only waits for the child) and the CPU of the child's
    PostgreSQL backends (tagged ``application_name``, sampled from /proc)."""

    def __init__(self, script: str, tmp: Path, pg_url: str | None) -> None:
        self.script, self.tmp, self.pg_url, self.n = script, tmp, pg_url, 0

    def run(self, mode: str, spec: dict[str, Any], prefix: list[str] | None = None) -> dict[str, Any]:
        self.n += 1
        sampler = None
        if self.pg_url:
            app = f"lmsbench-{os.getpid()}-{self.n}"
            spec = json.loads(json.dumps(spec))
            for block in ([spec["config"]["warehouse"]] if "config" in spec else []) + (
                    [spec["block"]] if "block" in spec else []):
                block["url"] = common.tagged(block["url"], app)
            sampler = common.PgBackends(self.pg_url, app)
            sampler.start()
        cpu0 = common.cpu_seconds()
        result = common.run_child(self.script, mode, spec, self.tmp, prefix)
        fakes = common.cpu_seconds() - cpu0
        if sampler:
            result["pg_backend_cpu_seconds"] = sampler.stop()
            fakes -= sampler.own_cpu_seconds
        result["fakes_cpu_seconds"] = round(max(fakes, 0.0), 3)
        return result


def bench_bulk(learners: int, args: argparse.Namespace, kinds: list[str], tmp: Path) -> dict[str, Any]:
    """The bulk workload at one size: a warm-up sync (the fakes render and store their pages),
    then ``--repeat`` rounds of full / resync / refresh / limits / fetch-only replays."""
    from lms_sync.commands.sandbox import start_all
    from lms_sync.config import parse_config
    from lms_sync.warehouse.db import make_engine, upgrade

    script = str(Path(__file__).resolve())
    started = start_all(learners, args.seed, kinds, latency_ms=0.0)
    for kind, server, block in started:
        block.setdefault("options", {}).update(BULK["options"].get(kind, {}))
        server.vendor.cache_pages = args.cache_pages
    sources = {f"{kind}-bench": block for kind, _server, block in started}
    is_pg = args.warehouse.startswith("postgresql")
    phases = _Phase(script, tmp, args.warehouse if is_pg else None)
    prefix, profile = pyspy_prefix(learners)
    entry: dict[str, Any] = {"learners": learners, "kinds": kinds, "cache_pages": args.cache_pages,
                             "options": {k: BULK["options"].get(k, {}) for k in kinds}, "runs": []}

    def tree_for(block: dict[str, Any]) -> dict[str, Any]:
        tree = {"warehouse": {**block, "batch_size": args.batch_size},
                "logging": {"format": "json", "level": "WARNING"}, "sources": sources}
        cfg = parse_config(tree, "benchmark")
        engine = make_engine(cfg.warehouse.url, cfg.warehouse.schema_)
        upgrade(engine)
        engine.dispose()
        return tree

    try:
        if args.cache_pages:  # the fakes render every page once, here; measured runs get bytes
            with common.scratch_warehouse(args.warehouse, tmp) as block:
                warm = phases.run("sync", {"config": tree_for(block), "full_refresh": False}, prefix)
            entry["warmup"] = {"seconds": warm["seconds"], "cpu_seconds": warm["cpu_seconds"],
                               "fakes_cpu_seconds": warm["fakes_cpu_seconds"],
                               "records": sum(s["read"] for s in warm["sources"]),
                               "profiled": profile}
            prefix = None
        for r in range(args.repeat):
            run: dict[str, Any] = {"learners": learners, "latency_ms": 0.0, "kinds": kinds,
                                   "repeat": r + 1, "load_average_before": os.getloadavg()}
            with common.scratch_warehouse(args.warehouse, tmp) as block:
                tree = tree_for(block)
                for name, refresh in (("full", False), ("resync", False), ("refresh", True)):
                    rec = str(tmp / f"requests-{name}.jsonl")
                    run[name] = phases.run("sync", {"config": tree, "full_refresh": refresh,
                                                    "record": rec}, prefix if name == "full" else None)
                    run[name]["profiled"] = profile if name == "full" and prefix else None
                    _check(run[name], name)
                prefix = None
                run["warehouse_limit"] = phases.run(
                    "warehouse-limit", {"block": block, "batch_size": args.batch_size})
                run["fetch_limit"] = phases.run(
                    "fetch-limit", {"config": tree, "requests": str(tmp / "requests-full.jsonl")})
                for name in ("full", "resync", "refresh"):
                    run[f"fetch_only_{name}"] = phases.run(
                        "fetch-limit", {"config": tree, "requests": str(tmp / f"requests-{name}.jsonl"),
                                        "parse": True})
            run["load_average_after"] = os.getloadavg()
            run["summary"] = summarize(run)
            run["bulk"] = summarize_bulk(run)
            entry["runs"].append(run)
            print(f"bulk {learners}: repeat {r + 1}/{args.repeat} done "
                  f"(load average {run['load_average_after'][0]:.2f})", file=sys.stderr, flush=True)
    finally:
        for _kind, server, _block in started:
            server.stop()
    entry["medians"] = median_tree([run["bulk"] for run in entry["runs"]])
    return entry


def summarize_bulk(run: dict[str, Any]) -> dict[str, Any]:
    """Per phase: records per CPU-second, wall records/s, the fetch-only replay of the phase's
    own requests, peak RSS, the fakes' and PostgreSQL's CPU; then the limits and #19's ratios."""
    out: dict[str, Any] = {}
    for name in ("full", "resync", "refresh"):
        ph, fo = run[name], run[f"fetch_only_{name}"]
        records = sum(s["read"] for s in ph["sources"])
        cpu = ph["cpu_seconds"]
        out[name] = {
            "records": records, "rows_written": sum(s["written"] for s in ph["sources"]),
            "http_requests": sum(s["http"].get("requests", 0) for s in ph["sources"]),
            "seconds": ph["seconds"],
            "records_per_s": round(records / ph["seconds"]) if ph["seconds"] else None,
            "cpu_seconds": cpu, "records_per_cpu_second": round(records / cpu) if cpu else None,
            "cpu_us_per_record": round(cpu * 1e6 / records, 1) if records else None,
            "process_cpu_seconds": ph["process_cpu_seconds"], "peak_rss_mb": ph["rss_peak_mb"],
            "fakes_cpu_seconds": ph["fakes_cpu_seconds"],
            "pg_backend_cpu_seconds": ph.get("pg_backend_cpu_seconds"),
            "fetch_only_seconds": fo["seconds"], "fetch_only_cpu_seconds": fo["cpu_seconds"],
            "fetch_only_requests": sum(s["requests"] for s in fo["sources"].values()),
            "fetch_only_fakes_cpu_seconds": fo["fakes_cpu_seconds"],
            "over_fetch_only": _ratio(ph["seconds"], fo["seconds"]),
            "sources": {s["source"]: {"records": s["read"], "rows_written": s["written"],
                                      "seconds": s["seconds"], "result": s["result"]} for s in ph["sources"]},
        }
    wlim = run["warehouse_limit"]
    full, resync = out["full"], out["resync"]
    out["warehouse_limit"] = {
        "rows": wlim["rows"], "seconds": wlim["seconds"], "rows_per_s": wlim["rows_per_s"],
        "pg_backend_cpu_seconds": wlim.get("pg_backend_cpu_seconds"),
        # the rows of every table the full sync wrote (history, memberships too), as the limit loads
        "full_table_rows": sum(sum(s["tables"].values()) for s in run["full"]["sources"]),
        "full_rows_per_s": round(sum(sum(s["tables"].values()) for s in run["full"]["sources"])
                                 / full["seconds"]) if full["seconds"] else None}
    out["full_vs_warehouse_limit"] = _ratio(wlim["seconds"], full["seconds"])
    out["fetch_limit_seconds"] = run["fetch_limit"]["seconds"]  # the full sync's requests, unparsed
    out["fetch_limit_cpu_seconds"] = run["fetch_limit"]["cpu_seconds"]
    # issue #19: a no-change re-sync within 1.5 x the time of fetching its own pages
    out["resync_over_fetch_only"] = resync["over_fetch_only"]
    out["resync_over_fetch_only_of_full"] = _ratio(resync["seconds"], full["fetch_only_seconds"])
    out["resync_vs_full_time"] = _ratio(resync["seconds"], full["seconds"])
    out["load_average"] = [round(x, 2) for x in run["load_average_after"]]
    return out


def median_tree(items: list[Any]) -> Any:
    """The median of every number at the same place in ``items`` (dicts alike); else the first."""
    first = items[0]
    if isinstance(first, dict):
        return {k: median_tree([i[k] for i in items if isinstance(i, dict) and k in i]) for k in first}
    if isinstance(first, list) and all(isinstance(i, list) and len(i) == len(first) for i in items):
        return [median_tree([i[n] for i in items]) for n in range(len(first))]
    nums = [i for i in items if isinstance(i, int | float) and not isinstance(i, bool)]
    if nums and len(nums) == len(items):
        m = statistics.median(nums)
        return round(m, 3) if isinstance(m, float) else m
    return first


def bulk_targets(medians: dict[str, Any]) -> dict[str, Any]:
    full, resync = medians["full"], medians["resync"]
    peak = max(medians[p]["peak_rss_mb"] for p in ("full", "resync", "refresh"))
    return {
        "records_per_cpu_second": {"value": full["records_per_cpu_second"], "target": ">= 20000",
                                   "met": (full["records_per_cpu_second"] or 0) >= 20_000},
        "resync_over_fetch_only": {"value": medians["resync_over_fetch_only"], "target": "<= 1.5, 0 rows",
                                   "met": (medians["resync_over_fetch_only"] or 99) <= 1.5
                                   and resync["rows_written"] == 0},
        "peak_rss_mb": {"value": peak, "target": "<= 250", "met": peak <= 250},
    }


def print_bulk(entry: dict[str, Any]) -> None:
    med = entry["medians"]
    warm = entry.get("warmup")
    print(f"\n== bulk workload: {entry['learners']} people, {','.join(entry['kinds'])} "
          f"{entry['options']}, pages cached by the fakes: {entry['cache_pages']}, "
          f"{len(entry['runs'])} repeat(s)")
    if warm:
        print(f"warm-up full sync (the fakes render every page once): {warm['seconds']} s, sync "
              f"{warm['cpu_seconds']} CPU-s, fakes {warm['fakes_cpu_seconds']} CPU-s"
              + (f"; py-spy profile: {warm['profiled']}" if warm.get("profiled") else ""))
    head = (f"{'phase':8} {'rep':>4} {'records':>8} {'rows':>8} {'reqs':>5} {'wall s':>7} {'rec/s':>7} "
            f"{'CPU s':>6} {'rec/CPU-s':>9} {'us/rec':>7} {'fetch-only s':>12} {'÷fetch':>7} {'RSS MB':>7} "
            f"{'fakes CPU':>9} {'PG CPU':>7}")
    print(head)
    rows = [(str(run["repeat"]), run["bulk"]) for run in entry["runs"]]
    if len(rows) > 1:
        rows.append(("med", med))
    for name in ("full", "resync", "refresh"):
        for rep, b in rows:
            p = b[name]
            print(f"{name:8} {rep:>4} {p['records']:8.0f} {p['rows_written']:8.0f} {p['http_requests']:5.0f} "
                  f"{p['seconds']:7.2f} {p['records_per_s'] or 0:7.0f} {p['cpu_seconds']:6.2f} "
                  f"{p['records_per_cpu_second'] or 0:9.0f} {p['cpu_us_per_record'] or 0:7.1f} "
                  f"{p['fetch_only_seconds']:12.2f} {p['over_fetch_only'] or 0:7.2f} {p['peak_rss_mb']:7.1f} "
                  f"{p['fakes_cpu_seconds']:9.2f} {p['pg_backend_cpu_seconds'] or 0:7.2f}")
    w = med["warehouse_limit"]
    print(f"warehouse limit (COPY + merge, batches of the sync's size): {w['rows']:.0f} rows in "
          f"{w['seconds']} s = {w['rows_per_s']:.0f} rows/s (PG CPU {w['pg_backend_cpu_seconds']}); "
          f"the full sync wrote "
          f"{w['full_table_rows']:.0f} rows at {w['full_rows_per_s']:.0f} rows/s: "
          f"{med['full_vs_warehouse_limit']} x the limit's speed")
    print(f"fetch limit (the full sync's requests, bodies read, not parsed): {med['fetch_limit_seconds']} s; "
          f"fetch-only (parsed with orjson): {med['full']['fetch_only_seconds']} s, "
          f"{med['full']['fetch_only_cpu_seconds']} CPU-s")
    print(f"re-sync: {med['resync_over_fetch_only']} x its own fetch-only time "
          f"({med['resync_over_fetch_only_of_full']} x the full sync's), "
          f"{med['resync']['rows_written']} rows written, {med['resync_vs_full_time']} x the full time; "
          f"load average {med['load_average']}")
    print("issue #19 targets (medians):")
    for name, t in bulk_targets(med).items():
        print(f"  {name:28} {t['value']!s:>10}  target {t['target']:>14}  {'met' if t['met'] else 'MISSED'}")


BEFORE_FIGURES = [
    "full.records_per_cpu_second", "full.cpu_us_per_record", "full.records_per_s", "full.seconds",
    "full.cpu_seconds", "full.process_cpu_seconds", "full.peak_rss_mb", "full.fetch_only_seconds",
    "full.over_fetch_only", "full.fakes_cpu_seconds", "full.pg_backend_cpu_seconds",
    "resync.seconds", "resync.cpu_seconds", "resync.http_requests", "resync.fetch_only_seconds",
    "resync.peak_rss_mb", "refresh.seconds", "refresh.cpu_seconds", "refresh.records_per_cpu_second",
    "refresh.peak_rss_mb", "warehouse_limit.rows_per_s", "full_vs_warehouse_limit",
    "resync_over_fetch_only", "resync_vs_full_time",
]


def print_before(before_path: str, result: dict[str, Any]) -> None:
    """after / before of the key figures: bulk medians of the same size (else the default
    workload's overall summary of the last run)."""
    before = json.loads(Path(before_path).read_text())

    def dig(tree: Any, dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        return tree

    print(f"\nagainst {before_path} ({before.get('started_at')}): after / before")
    if result.get("bulk"):
        old = {e["learners"]: e["medians"] for e in before.get("bulk", [])}
        pairs = [(f"{e['learners']} people: ", old.get(e["learners"]), e["medians"], BEFORE_FIGURES)
                 for e in result["bulk"]]
    else:
        keys = ["records_per_s", "records_per_cpu_second", "seconds", "resync_seconds", "refresh_seconds",
                "full_vs_fetch_limit", "full_vs_warehouse_limit", "resync_vs_full_time"]
        pairs = [("", before["runs"][-1]["summary"]["overall"] if before.get("runs") else None,
                  result["runs"][-1]["summary"]["overall"], keys)]
    for label, old_tree, new_tree, keys in pairs:
        if old_tree is None:
            print(f"  {label}no matching figures in {before_path}")
            continue
        for key in keys:
            a, b = dig(new_tree, key), dig(old_tree, key)
            ratio = _ratio(a, b)
            print(f"  {label}{key:34} {b!s:>10} -> {a!s:>10}  {ratio if ratio is not None else '-'!s:>7} x")


def _check(phase: dict[str, Any], name: str) -> None:
    for s in phase["sources"]:
        if s["result"] != "succeeded":
            print(f"benchmark: {name}: {s['source']} {s['result']}: {s['error']}", file=sys.stderr)


def _ratio(a: float | None, b: float | None, nd: int = 3) -> float | None:
    return round(a / b, nd) if a is not None and b else None


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    full, resync, refresh = run["full"], run["resync"], run["refresh"]
    fetch, wlim = run["fetch_limit"]["sources"], run["warehouse_limit"]
    fetch_s = run["fetch_limit"]["seconds"]  # sources side by side, as in the sync
    latency = run["latency_ms"] / 1000
    per: dict[str, Any] = {}
    tables: Counter[str] = Counter()
    for s in full["sources"]:
        sid = s["source"]
        tables.update(s["tables"])
        requests = s["http"].get("requests", 0)
        f = fetch.get(sid, {})
        bound = requests / s["max_concurrency"] * latency if latency else None
        per[sid] = {
            "result": s["result"], "records": s["read"], "seconds": s["seconds"],
            "records_per_s": round(s["read"] / s["seconds"]) if s["seconds"] else None,
            "rows_written": s["written"], "tables": s["tables"], "http": s["http"],
            "identity_seconds": s["identity_seconds"],
            "fetch_limit_seconds": f.get("seconds"),
            "fetch_limit_vs_sync": _ratio(f.get("seconds"), s["seconds"]),
            "latency_bound_seconds": round(bound, 3) if bound else None,
            "wall_vs_latency_bound": _ratio(s["seconds"], bound),
        }
    for phase in ("resync", "refresh"):
        for s in run[phase]["sources"]:
            per[s["source"]][f"{phase}_seconds"] = s["seconds"]
            per[s["source"]][f"{phase}_rows_written"] = s["written"]
            per[s["source"]][f"{phase}_result"] = s["result"]
    records = sum(s["read"] for s in full["sources"])
    requests = sum(s["http"].get("requests", 0) for s in full["sources"])
    # sources run side by side (up to `parallel` at once): the wall time can beat neither
    # the slowest source's own bound nor the sum of bounds shared among the slots
    bounds = [p["latency_bound_seconds"] or 0 for p in per.values()]
    slots = full.get("parallel") or 1
    bound = max(max(bounds), sum(bounds) / slots) if latency and bounds else None
    overall = {
        "records": records, "rows_written": sum(s["written"] for s in full["sources"]),
        "tables": dict(tables), "seconds": full["seconds"],
        "records_per_s": round(records / full["seconds"]) if full["seconds"] else None,
        "identity_seconds": full.get("identity_seconds"),  # one pass after every source
        "http_requests": requests,
        "peak_rss_mb": {"full": full["rss_peak_mb"], "resync": resync["rss_peak_mb"],
                        "refresh": refresh["rss_peak_mb"], "baseline_after_imports": full["rss_baseline_mb"]},
        "warehouse_limit_seconds": wlim["seconds"], "warehouse_limit_rows_per_s": wlim["rows_per_s"],
        "full_vs_warehouse_limit": _ratio(wlim["seconds"], full["seconds"]),
        "fetch_limit_seconds": round(fetch_s, 3),
        "full_vs_fetch_limit": _ratio(fetch_s, full["seconds"]),
        "fetch_limit_records_per_s": round(records / fetch_s) if fetch_s else None,
        # CPU time of the syncing process (all threads): steadier than wall time on a shared
        # machine, and the sync's own cost, apart from the fakes' and the database's
        "cpu_seconds": {"full": full["cpu_seconds"], "resync": resync["cpu_seconds"],
                        "refresh": refresh["cpu_seconds"],
                        "fetch_limit": run["fetch_limit"]["cpu_seconds"]},
        "records_per_cpu_second": round(records / full["cpu_seconds"]) if full["cpu_seconds"] else None,
        # what the fakes spent serving the full sync (the benchmark process, whole phase)
        "fakes_cpu_seconds": full["fakes_cpu_seconds"],
        # CPU floor: sync and fakes share this machine's cores, so no full sync can take less
        # than their CPU time over the core count (the database's own CPU not counted)
        "cpu_floor_seconds": round((full["cpu_seconds"] + full["fakes_cpu_seconds"]) / CORES, 3),
        "cpu_floor_records_per_s": round(records * CORES / (full["cpu_seconds"] + full["fakes_cpu_seconds"]))
        if full["cpu_seconds"] else None,
        "resync_seconds": resync["seconds"],
        "resync_rows_written": sum(s["written"] for s in resync["sources"]),
        "resync_vs_full_time": _ratio(resync["seconds"], full["seconds"]),
        "refresh_seconds": refresh["seconds"],
        "refresh_rows_written": sum(s["written"] for s in refresh["sources"]),
        "refresh_vs_full_time": _ratio(refresh["seconds"], full["seconds"]),
        "latency_bound_seconds": round(bound, 3) if bound else None,
        "wall_vs_latency_bound": _ratio(full["seconds"], bound),
        "failed_sources": [s["source"] for ph in (full, resync, refresh) for s in ph["sources"]
                           if s["result"] != "succeeded"],
    }
    return {"overall": overall, "sources": per}


def targets(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target: the measured value and whether it is met (None: not measured here)."""
    last = runs[-1]["summary"]["overall"]
    out: dict[str, Any] = {}

    def put(name: str, value: float | None, ok: bool | None) -> None:
        out[name] = {"value": value, "target": TARGETS[name], "met": ok}

    lat = runs[-1]["latency_ms"]
    if not lat:
        put("full_records_per_s", last["records_per_s"],
            last["records_per_s"] is not None and last["records_per_s"] >= TARGETS["full_records_per_s"])
        v = last["full_vs_warehouse_limit"]
        put("full_vs_warehouse_limit", v, v is not None and v >= TARGETS["full_vs_warehouse_limit"])
        v = last["resync_vs_full_time"]
        put("resync_vs_full_time", v, v is not None and v <= TARGETS["resync_vs_full_time"]
            and last["resync_rows_written"] == 0)
    peak = max(max(r["summary"]["overall"]["peak_rss_mb"][p] for p in ("full", "resync", "refresh"))
               for r in runs)
    put("peak_rss_mb", peak, peak <= TARGETS["peak_rss_mb"])
    if len(runs) > 1:
        first = runs[0]["summary"]["overall"]["peak_rss_mb"]["full"]
        growth = _ratio(last["peak_rss_mb"]["full"], first)
        put("rss_growth_largest_vs_smallest", growth,
            growth is not None and growth <= TARGETS["rss_growth_largest_vs_smallest"])
    if lat:
        v = last["wall_vs_latency_bound"]
        put("latency_wall_vs_bound", v, v is not None and v <= TARGETS["latency_wall_vs_bound"])
    return out


def print_report(result: dict[str, Any]) -> None:
    for run in result["runs"]:
        o = run["summary"]["overall"]
        print(f"\n== {run['learners']} learners, latency {run['latency_ms']} ms, "
              f"kinds {','.join(run['kinds'])}")
        print(f"{'source':18} {'records':>9} {'sec':>8} {'rec/s':>8} {'rows':>9} {'reqs':>6} "
              f"{'fetch/sync':>10} {'resync s':>8} {'refresh s':>9} {'ident s':>7}")
        for sid, p in run["summary"]["sources"].items():
            print(f"{sid:18} {p['records']:9d} {p['seconds']:8.2f} {p['records_per_s'] or 0:8d} "
                  f"{p['rows_written']:9d} {p['http'].get('requests', 0):6d} "
                  f"{p['fetch_limit_vs_sync'] or 0:10.3f} {p['resync_seconds']:8.2f} "
                  f"{p['refresh_seconds']:9.2f} {'':>7}"
                  + ("" if p["result"] == "succeeded" else f"  {p['result'].upper()}"))
        print(f"{'overall':18} {o['records']:9d} {o['seconds']:8.2f} {o['records_per_s'] or 0:8d} "
              f"{o['rows_written']:9d} {o['http_requests']:6d} {o['full_vs_fetch_limit'] or 0:10.3f} "
              f"{o['resync_seconds']:8.2f} {o['refresh_seconds']:9.2f} {o['identity_seconds'] or 0:7.2f}")
        print(f"rows per table: {o['tables']}")
        print(f"warehouse limit: {o['warehouse_limit_seconds']} s ({o['warehouse_limit_rows_per_s']} rows/s)"
              f" -> sync at {o['full_vs_warehouse_limit']} x limit;  fetch limit {o['fetch_limit_seconds']} s"
              f" -> sync at {o['full_vs_fetch_limit']} x limit (the fetch limit alone allows"
              f" {o['fetch_limit_records_per_s']} records/s)")
        print(f"re-sync {o['resync_vs_full_time']} x full time, {o['resync_rows_written']} rows written;"
              f" full-refresh re-sync {o['refresh_vs_full_time']} x, {o['refresh_rows_written']} rows")
        print(f"peak RSS MB: {o['peak_rss_mb']}")
        c = o["cpu_seconds"]
        print(f"CPU s: sync {c['full']} ({o['records_per_cpu_second']} records per CPU-second; the fetch"
              f" limit's replay of its requests alone: {c['fetch_limit']}) + fakes {o['fakes_cpu_seconds']}"
              f" -> on {CORES} cores no full sync beats {o['cpu_floor_seconds']} s"
              f" ({o['cpu_floor_records_per_s']} records/s); re-sync {c['resync']}, refresh {c['refresh']}")
        if run["full"].get("sql"):
            q = run["full"]["sql"]
            print(f"full sync SQL: {q['total_seconds']} s in {q['statements']} statements; top:")
            for t in q["top"]:
                print(f"  {t['seconds']:8.3f} s {t['count']:6d}  {t['sql']}")
        if o["latency_bound_seconds"]:
            print(f"latency bound {o['latency_bound_seconds']} s -> "
                  f"wall {o['wall_vs_latency_bound']} x bound")
        if o["failed_sources"]:
            print(f"FAILED: {o['failed_sources']}")
    print("\ntargets:")
    for name, t in result["targets"].items():
        print(f"  {name:32} {t['value']!s:>10}  target {t['target']!s:>7}  "
              f"{'met' if t['met'] else 'MISSED'}")


def print_full_only(result: dict[str, Any]) -> None:
    first = None
    for run in result["runs"]:
        full = run["full"]
        records = sum(s["read"] for s in full["sources"])
        rows = sum(s["written"] for s in full["sources"])
        first = first or full["rss_peak_mb"]
        print(f"{run['learners']:7d} learners: {records} records, {rows} rows, {full['seconds']} s "
              f"({full['cpu_seconds']} CPU s), "
              f"peak RSS {full['rss_peak_mb']} MB ({full['rss_peak_mb'] / first:.3f} x first; "
              f"{full['rss_baseline_mb']} MB after imports)")
        for s in full["sources"]:
            if s["result"] != "succeeded":
                print(f"  {s['source']} {s['result'].upper()}: {s['error']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        mode, spec_path, out_path = argv[1:4]
        spec = json.loads(Path(spec_path).read_text())
        profile = os.environ.get("BENCH_PROFILE")  # a directory: pyinstrument each full sync
        if profile and mode == "sync" and not spec["full_refresh"] and not Path(profile, "done").exists():
            from pyinstrument import Profiler  # pip install pyinstrument (not a dependency)

            with Profiler(interval=0.002) as prof:
                result = CHILDREN[mode](spec)
            Path(profile, "full.txt").write_text(prof.output_text(unicode=False, show_all=False))
            Path(profile, "done").touch()
        else:
            result = CHILDREN[mode](spec)
        Path(out_path).write_text(json.dumps(result))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["default", "bulk"], default="default",
                   help="bulk: issue #19's record-heavy workload (Absorb without lessons, page_size 1000, "
                   f"and Udemy; {BULK['learners']} people; {PG_URL})")
    p.add_argument("--learners", default=None, help="people in the population; comma list ok "
                   f"(default 1000; bulk: {BULK['learners']})")
    p.add_argument("--warehouse", default=None, help="database URL (a scratch "
                   "schema/database/file of its own is used and dropped; default sqlite:///, "
                   "bulk: PostgreSQL)")
    p.add_argument("--repeat", type=int, default=1, help="rounds per size (bulk: medians reported)")
    p.add_argument("--before", metavar="FILE", help="a previous --out JSON: print after/before ratios")
    p.add_argument("--no-cache-pages", dest="cache_pages", action="store_false",
                   help="bulk: the fakes render every page on every request (no warm-up sync)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every fake response")
    p.add_argument("--kinds", default="", help="comma list (default: every connector with a fake)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="warehouse.batch_size (default: the service's own default)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--full-only", action="store_true",
                   help="run the full sync only (no re-syncs, no limits): quick peak-RSS checks")
    p.add_argument("--sql-stats", action="store_true",
                   help="time every SQL statement of the full sync (adds a little overhead)")
    args = p.parse_args(argv)
    if args.batch_size is None:
        from lms_sync.config import WarehouseConfig

        args.batch_size = WarehouseConfig.model_fields["batch_size"].default
    bulk = args.workload == "bulk"
    args.learners = args.learners or (BULK["learners"] if bulk else "1000")
    args.warehouse = args.warehouse or (BULK["warehouse"] if bulk else "sqlite:///")
    kinds = available([k for k in args.kinds.split(",") if k] or (BULK["kinds"] if bulk else None))
    sizes = [int(x) for x in args.learners.split(",")]
    result: dict[str, Any] = {"command": " ".join(["python", "benchmarks/sync.py", *argv]),
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "load_average_at_start": os.getloadavg(), "cores": CORES, "runs": []}
    with tempfile.TemporaryDirectory(prefix="lms-bench-") as tmp:
        if bulk:
            result["workload"] = "bulk"
            result["bulk"] = []
            for n in sizes:
                result["bulk"].append(bench_bulk(n, args, kinds, Path(tmp)))  # its runs inside
        else:
            for n in sizes:
                for _ in range(args.repeat):
                    result["runs"].append(bench_size(n, args, kinds, Path(tmp)))
    result["load_average_at_end"] = os.getloadavg()
    if bulk:
        for entry in result["bulk"]:
            entry["targets"] = bulk_targets(entry["medians"])
    if args.out:  # before the report: a report's bug must not lose a long run's figures
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    if args.full_only and not bulk:
        print_full_only(result)
    elif bulk:
        for entry in result["bulk"]:
            print_bulk(entry)
        print(f"load average at start {result['load_average_at_start']}, "
              f"at end {result['load_average_at_end']}; {CORES} cores")
    else:
        result["targets"] = targets(result["runs"])
        print_report(result)
    if args.before:
        print_before(args.before, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""End-to-end sync benchmark against the sandbox fakes, compared to its limits.

    python benchmarks/sync.py --learners 10000 \\
        --warehouse postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        [--latency-ms 50] [--kinds absorb,udemy] [--batch-size 1000] [--out results.json]

``--learners`` takes a comma list (``10000,100000``) to check that peak RSS stays flat.

For each size: the fakes of every kind that has both a connector and a fake (or
``--kinds``) are started in this process; each phase runs in a child process of its own,
so its peak RSS is the sync's own:

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

Figures are ratios against limits measured in the same run (the machine may be noisy);
scratch warehouses are dropped afterwards. More in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util  # noqa: F401 - lms_sync's available_kinds() uses importlib.util
import json
import os
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
    from lms_sync.warehouse.db import make_engine

    tune_malloc()  # as `lms-sync` does at start
    configure("json", "WARNING")
    cfg = parse_config(spec["config"], "benchmark")
    for source in cfg.sources.values():  # import the connectors before the baseline
        connector_class(source.kind)
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
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {sid: pool.submit(common.replay, cfg.sources[sid], requests)
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
    p.add_argument("--learners", default="1000", help="people in the population; comma list ok")
    p.add_argument("--warehouse", default="sqlite:///", help="database URL (a scratch "
                   "schema/database/file of its own is used and dropped)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every fake response")
    p.add_argument("--kinds", default="", help="comma list (default: every connector with a fake)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--full-only", action="store_true",
                   help="run the full sync only (no re-syncs, no limits): quick peak-RSS checks")
    p.add_argument("--sql-stats", action="store_true",
                   help="time every SQL statement of the full sync (adds a little overhead)")
    args = p.parse_args(argv)
    kinds = available([k for k in args.kinds.split(",") if k] or None)
    sizes = [int(x) for x in args.learners.split(",")]
    result: dict[str, Any] = {"command": " ".join(["python", "benchmarks/sync.py", *argv]),
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "runs": []}
    with tempfile.TemporaryDirectory(prefix="lms-bench-") as tmp:
        for n in sizes:
            result["runs"].append(bench_size(n, args, kinds, Path(tmp)))
    if args.full_only:
        print_full_only(result)
    else:
        result["targets"] = targets(result["runs"])
        print_report(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

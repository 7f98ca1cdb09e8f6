"""The worker pool's scaling: one tick's work done by 1, 2 and 4 `lms-sync worker` processes.

    python benchmarks/cluster.py --warehouse postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        [--sources 40] [--latency-ms 50] [--learners 20] [--workers 1,2,4] [--concurrency 1] \\
        [--repeat 1] [--out results.json]

``--sources / 5`` tenants, each with its own five sandbox vendors (all five kinds) in an
`lms-sync sandbox` process of their own, answering every request ``--latency-ms`` late.
Each round gets a fresh job queue and fresh, migrated warehouse schemas (one per tenant),
so every round does the same work: the first full sync of every source, and each
tenant's identity pass.

A round starts its workers and waits until each has registered and opened its tenants'
warehouses (``tenants.prepared``), then queues the tick of a minute every source's cron
names (1 January, 00:00) the way procrastinate's periodic deferrer does; a worker's
ticker runs it and queues every source. The figure is the wall time from that tick to an
empty queue (the workers' start-up, imports and warehouse migrations before it are not
counted); the speed-up is the first worker count's time over each round's, by their
medians with ``--repeat N`` (rounds interleaved: 1, 2, 4, 1, 2, 4, ... so the machine's
other load falls on all of them alike). Peak RSS (VmHWM) of every worker process is read
just before it is stopped. CPU seconds over the tick's work, each side apart: the
workers (their processes), the fakes (their processes: not in the workers, not in this
one), the PostgreSQL backends serving the workers (tagged ``application_name``, a
lower bound), the whole PostgreSQL server (other users' sessions too), and the
machine's busy time not ours (``other_cpu_seconds``: a shared machine's other load).
``cores_busy`` is ours over the wall time: far below the machine's cores, the round waits
on latency; ``machine_cores_busy`` near the cores, on CPU someone else has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CORES = len(os.sched_getaffinity(0))
APP = "lmsbench"  # application_name of every PostgreSQL connection of the workers: their backends' CPU
NEW_YEAR = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
SCHEDULE = "0 0 1 1 *"  # due at NEW_YEAR's tick only: the workers' own start-up tick queues nothing
TARGET_SPEEDUP_AT_4 = 3.0


class Sandbox:
    """One tenant's five sandbox vendors, served by an `lms-sync sandbox` process of their
    own: eight tenants' vendors in one process would share its GIL and measure that."""

    def __init__(self, seed: int, learners: int, latency_ms: float, folder: Path) -> None:
        self.config = folder / f"sandbox{seed}.yaml"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lms_sync", "sandbox", "--port-base", "0", "--seed", str(seed),
             "--learners", str(learners), "--latency-ms", str(latency_ms),
             "--write-config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sources(self) -> dict[str, Any]:
        while not self.config.exists() or not self.config.read_text(encoding="utf-8").strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"lms-sync sandbox exited ({self.proc.returncode})")
            time.sleep(0.1)
        time.sleep(0.2)  # written in one go, but give the writer its close
        return yaml.safe_load(self.config.read_text(encoding="utf-8"))["sources"]

    def cpu_seconds(self) -> float:
        return common.process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def prepare(url: str, blocks: list[dict[str, Any]], folder: Path) -> tuple[Any, list[str]]:
    """A fresh queue and one fresh, migrated warehouse schema per tenant; their config files
    (the workers' connections tagged ``application_name``, see :class:`common.PgBackends`)."""
    from lms_sync.cluster.queue import QueueTarget, init_queue
    from lms_sync.warehouse.db import make_engine, upgrade

    folder.mkdir(parents=True)
    target = QueueTarget(url, f"bench_q_{uuid.uuid4().hex[:8]}", "--warehouse")
    init_queue(target)
    schemas = [target.schema]
    for t, sources in enumerate(blocks):
        schema = f"bench_w_{uuid.uuid4().hex[:8]}"
        schemas.append(schema)
        engine = make_engine(url, schema)
        upgrade(engine)
        engine.dispose()
        tree = {"warehouse": {"url": common.tagged(url, APP), "schema": schema},
                "logging": {"format": "json", "level": "INFO"}, "defaults": {"schedule": SCHEDULE},
                "sources": sources}
        (folder / f"tenant{t:02d}.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    return target, schemas


class WorkerProcess:
    def __init__(self, folder: Path, target: Any, concurrency: int, log: Path) -> None:
        self.log = log
        self._fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lms_sync", "worker", "--configs", str(folder),
             "--queue-url", common.tagged(target.url, APP), "--queue-schema", target.schema,
             "--concurrency", str(concurrency), "--heartbeat-seconds", "2"],
            env={k: v for k, v in os.environ.items() if not k.startswith("LMS_SYNC_")},
            stdout=subprocess.DEVNULL, stderr=self._fh)

    def started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited ({self.proc.returncode}):\n{self.log.read_text()[-2000:]}")
        log = self.log.read_text()  # registered, and its tenants' warehouses opened
        return '"event": "worker.started"' in log and '"event": "tenants.prepared"' in log

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            line = next(line for line in fh if line.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)

    def cpu_seconds(self) -> float:
        return common.process_cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        finally:
            self._fh.close()


def postgres_cpu_seconds() -> float:
    """User + system CPU of every process of the local PostgreSQL server so far (its other
    users' share included: on a shared machine, an upper bound of this benchmark's)."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                head, _, rest = fh.read().rpartition(")")
        except OSError:
            continue
        if head.partition("(")[2].startswith("postgres"):
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat: all but idle
    and iowait), whoever's: what else runs on a shared machine shows here."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def queue_counts(conn: Any) -> dict[str, int]:
    rows = conn.execute("SELECT task_name || ':' || status, count(*) FROM procrastinate_jobs "
                        "GROUP BY 1").fetchall()
    return dict(rows)


def tick(target: Any) -> None:
    from lms_sync.cluster.queue import build_app
    from lms_sync.cluster.ticker import defer_tick

    async def go() -> None:
        async with build_app(target).open_async() as app:
            assert await defer_tick(app, NEW_YEAR) is not None

    asyncio.run(go())


def run_round(workers: int, args: argparse.Namespace, sandboxes: list[Sandbox],
              tmp: Path) -> dict[str, Any]:
    import psycopg

    from lms_sync.cluster.queue import IDENTITY_TASK, SYNC_TASK

    folder = tmp / f"round{len(list(tmp.glob('round*')))}-{workers}"
    blocks = [sandbox.sources() for sandbox in sandboxes]
    target, schemas = prepare(args.warehouse, blocks, folder)
    pool = [WorkerProcess(folder, target, args.concurrency, folder / f"worker{i}.log")
            for i in range(workers)]
    try:
        while not all(w.started() for w in pool):
            time.sleep(0.1)
        cpu0 = [w.cpu_seconds() for w in pool]
        fakes0, pg0, machine0 = (sum(f.cpu_seconds() for f in sandboxes), postgres_cpu_seconds(),
                                 machine_busy_seconds())
        backends = common.PgBackends(target.conninfo, APP)
        backends.start()
        sources = sum(len(b) for b in blocks)
        with psycopg.connect(target.conninfo, options=target.options, autocommit=True) as conn:
            t0 = time.perf_counter()
            tick(target)
            while True:
                counts = queue_counts(conn)
                busy = sum(n for k, n in counts.items() if k.endswith((":todo", ":doing")))
                done = counts.get(f"{SYNC_TASK}:succeeded", 0) + counts.get(f"{SYNC_TASK}:failed", 0)
                if not busy and done >= sources:
                    break
                time.sleep(0.1)
            wall = time.perf_counter() - t0
        machine = machine_busy_seconds() - machine0
        ours_pg = round(backends.stop(), 2)
        fakes_cpu = round(sum(f.cpu_seconds() for f in sandboxes) - fakes0, 2)
        pg_cpu = round(postgres_cpu_seconds() - pg0, 2)
        rss = [w.peak_rss_mb() for w in pool]
        cpu = [round(w.cpu_seconds() - c, 2) for w, c in zip(pool, cpu0, strict=True)]
    finally:
        codes = [w.stop() for w in pool]
        common.drop_pg_schemas(args.warehouse, schemas)
    failed = counts.get(f"{SYNC_TASK}:failed", 0)
    return {"workers": workers, "concurrency": args.concurrency, "wall_seconds": round(wall, 2),
            "sync_jobs": counts.get(f"{SYNC_TASK}:succeeded", 0), "failed_jobs": failed,
            "identity_jobs": counts.get(f"{IDENTITY_TASK}:succeeded", 0),
            "peak_rss_mb_per_worker": rss, "cpu_seconds_per_worker": cpu,
            "workers_cpu_seconds": round(sum(cpu), 2), "fakes_cpu_seconds": fakes_cpu,
            "postgres_backends_cpu_seconds": ours_pg, "postgres_server_cpu_seconds": pg_cpu,
            # connections the workers opened or used during the round (sampled: short ones missed)
            "postgres_backends": len(backends.seen),
            # the machine's busy CPU not ours (other users of this shared machine, the
            # PostgreSQL server's other sessions, the benchmark's own polling)
            "other_cpu_seconds": round(machine - sum(cpu) - fakes_cpu - ours_pg, 2),
            # no schedule of this work on these cores can be faster
            "cpu_floor_seconds": round((sum(cpu) + fakes_cpu + ours_pg) / CORES, 2),
            # cores this round kept busy on average: ours, and the whole machine's
            "cores_busy": round((sum(cpu) + fakes_cpu + ours_pg) / wall, 2),
            "machine_cores_busy": round(machine / wall, 2),
            "load_average_1min": os.getloadavg()[0], "exit_codes": codes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warehouse", required=True, help="PostgreSQL URL (the queue and the warehouses)")
    p.add_argument("--sources", type=int, default=40, help="a multiple of 5 (tenants x five kinds)")
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--learners", type=int, default=20, help="people per tenant's sandbox")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--concurrency", type=int, default=1, help="runs at once per worker")
    p.add_argument("--repeat", type=int, default=1, help="run the rounds this many times, "
                   "interleaved (1, 2, 4, 1, 2, 4, ...); the figures are each count's median")
    p.add_argument("--out", help="also write the results here (JSON)")
    p.add_argument("--logs", metavar="DIR", help="keep the tenants' files and workers' logs here")
    args = p.parse_args(argv)
    from lms_sync.logs import configure

    configure("json", "WARNING")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sandboxes = [Sandbox(t + 1, args.learners, args.latency_ms, Path(tmp))
                     for t in range(max(1, args.sources // 5))]
        try:
            for _ in range(args.repeat):
                for n in (int(x) for x in args.workers.split(",")):
                    rounds.append(run_round(n, args, sandboxes, Path(args.logs or tmp)))
                    print(json.dumps(rounds[-1]), file=sys.stderr)
        finally:
            for sandbox in sandboxes:
                sandbox.stop()
    counts = list(dict.fromkeys(r["workers"] for r in rounds))
    median = {n: statistics.median(r["wall_seconds"] for r in rounds if r["workers"] == n) for n in counts}
    for r in rounds:
        r["speedup"] = round(median[counts[0]] / r["wall_seconds"], 2)
    summary = {n: {"median_wall_seconds": round(median[n], 2),
                   "speedup": round(median[counts[0]] / median[n], 2)} for n in counts}
    result = {"sources": 5 * len(sandboxes), "tenants": len(sandboxes),
              "latency_ms": args.latency_ms, "learners": args.learners, "cores": CORES,
              "load_average": os.getloadavg(), "summary": summary, "rounds": rounds,
              "target": {"speedup_at_4_workers": TARGET_SPEEDUP_AT_4}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

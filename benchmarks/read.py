"""The read side alone: CPU per record of the connectors, no warehouse, before/after in one run.

    python benchmarks/read.py --learners 20000 [--kinds absorb,udemy] [--lessons] \\
        [--repeat 3] [--against /path/to/other/checkout]

The sandbox fakes run in this process (the bulk workload's settings: Absorb ``page_size``
1000, no lessons unless ``--lessons``; Udemy ``page_size`` 100). Each round reads every
stream of every source in a child process of its own, as the pipeline's reader thread
does (``stream.read(ctx)`` in order; records are counted and dropped), and reports the
child's CPU seconds per record. With ``--against DIR`` every round runs that checkout's
``src`` (PYTHONPATH) first and this one's after it, alternating, so the ratio of their
medians is taken on the same (noisy, shared) machine in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def child_read(spec: dict[str, Any]) -> dict[str, Any]:
    """Read every stream of every source once; CPU seconds and records per source."""
    from datetime import UTC, datetime

    import lms_sync
    from lms_sync.config import parse_config
    from lms_sync.connectors import connector_class
    from lms_sync.connectors.base import Checkpoint, ReadContext
    from lms_sync.logs import configure, get_logger

    configure("json", "WARNING")
    cfg = parse_config(spec["config"], "benchmark")
    log = get_logger("bench")
    out: dict[str, Any] = {}
    assert spec.get("src") is None or lms_sync.__file__.startswith(spec["src"]), lms_sync.__file__
    for source in cfg.sources.values():
        cls = connector_class(source.kind)
        cpu0, t0, records = common.cpu_seconds(), time.perf_counter(), 0
        with cls(source, log) as connector:
            for stream in connector.streams():
                ctx = ReadContext(source.id, stream.name, None, False, None, datetime.now(UTC), log)
                for item in stream.read(ctx):
                    if not isinstance(item, Checkpoint):
                        records += 1
        out[source.id] = {"records": records, "cpu_seconds": round(common.cpu_seconds() - cpu0, 3),
                          "seconds": round(time.perf_counter() - t0, 3)}
    return out


def run_child(src: str | None, spec: dict[str, Any], tmp: Path) -> dict[str, Any]:
    spec_path, out_path = tmp / "read.json", tmp / "read.out.json"
    spec_path.write_text(json.dumps({**spec, "src": src}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if src:
        env["PYTHONPATH"] = src
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path),
                           str(out_path)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"read child failed:\n{proc.stderr[-3000:]}")
    return json.loads(out_path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        result = child_read(json.loads(Path(argv[1]).read_text()))
        Path(argv[2]).write_text(json.dumps(result))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learners", type=int, default=20000)
    p.add_argument("--kinds", default="absorb,udemy")
    p.add_argument("--lessons", action="store_true", help="Absorb lesson enrollments too")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--against", help="another checkout: its src is measured first in every round")
    p.add_argument("--out", help="write the JSON result here")
    args = p.parse_args(argv)

    from lms_sync.commands.sandbox import start_all

    started = start_all(args.learners, args.seed, args.kinds.split(","))
    sources = {}
    for kind, _server, block in started:
        options = dict(block.get("options") or {})
        if kind == "absorb":
            options.update(page_size=1000, lesson_enrollments=args.lessons)
        if kind == "udemy":
            options.update(page_size=100)
        sources[f"{kind}-bench"] = {**block, "options": options}
    spec = {"config": {"warehouse": {"url": "sqlite:///"}, "sources": sources}}
    sides: list[tuple[str, str | None]] = [("this", None)]
    if args.against:
        sides.insert(0, ("against", str(Path(args.against, "src"))))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    try:
        with tempfile.TemporaryDirectory(prefix="lms-read-") as tmp:
            for i in range(args.repeat):
                for name, src in sides:
                    got = run_child(src, spec, Path(tmp))
                    rounds[name].append(got)
                    line = "  ".join(f"{sid} {r['records']} rec {r['cpu_seconds']:.2f} CPU s "
                                     f"({r['cpu_seconds'] / r['records'] * 1e6:.1f} us/rec)"
                                     for sid, r in got.items())
                    print(f"round {i + 1} {name:8} {line}", flush=True)
    finally:
        for _kind, server, _block in started:
            server.stop()
    summary: dict[str, Any] = {}
    for name, runs in rounds.items():
        per = {sid: statistics.median(r[sid]["cpu_seconds"] / r[sid]["records"] * 1e6 for r in runs)
               for sid in runs[0]}
        total = statistics.median(sum(r[s]["cpu_seconds"] for s in r) / sum(r[s]["records"] for s in r) * 1e6
                                  for r in runs)
        summary[name] = {"us_per_record": round(total, 2),
                         "by_source": {k: round(v, 2) for k, v in per.items()}}
    if "against" in summary:
        summary["this_vs_against"] = round(summary["this"]["us_per_record"] /
                                           summary["against"]["us_per_record"], 3)
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rounds": rounds, "summary": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak memory of reading iSpring module results: 10,000 rows vs 100,000 rows.

Each size runs in a fresh process that reads the whole ``results`` stream of the real
connector from the sandbox fake over loopback HTTP (XML pages of ``--page-size`` rows,
parsed with iterparse and normalized to canonical records, which are then dropped, as the
pipeline drops them once a batch is written). The fake runs in a process of its own so
its memory is not counted. Memory should be flat: the peak RSS of the 100,000-row read
within ~10% of the 10,000-row read.

    /work/venv/bin/python benchmarks/ispring_memory.py [--rows 10000 100000] [--page-size 1000]
                                                       [--parser-only]

``--parser-only`` parses generated pages in memory (no HTTP): it isolates the parser from
the allocator noise of buffering ~1 MB response bodies in the HTTP layer.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def serve(rows: int, ready: mp.Queue) -> None:
    from lms_sync.sandbox.ispring import FakeIspring
    from lms_sync.sandbox.population import Population
    from lms_sync.sandbox.server import SandboxServer

    fake = FakeIspring(Population(rows // 3 + 100, seed=11), max_results=rows)
    server = SandboxServer(fake).start()
    ready.put(server.url)
    while True:
        time.sleep(3600)


def measure(rows: int, page_size: int) -> dict:
    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()
    fake = ctx.Process(target=serve, args=(rows, ready), daemon=True)
    fake.start()
    try:
        url = ready.get(timeout=60)
        import structlog

        from lms_sync.config import parse_config
        from lms_sync.connectors.base import ReadContext
        from lms_sync.connectors.ispring import IspringConnector
        from lms_sync.logs import configure
        from lms_sync.sandbox.ispring import FakeIspring

        configure("json", "WARNING")
        source = {"kind": "ispring", "base_url": url,
                  "auth": {"client_id": FakeIspring.CLIENT_ID, "client_secret": FakeIspring.CLIENT_SECRET},
                  "options": {"page_size": page_size}}
        cfg = parse_config({"sources": {"bench": source}}, "bench.yaml")
        log = structlog.get_logger("bench")
        connector = IspringConnector(cfg.sources["bench"], log)
        results = connector.streams()[1]
        read_ctx = ReadContext("bench", results.name, None, True, None, datetime.now(UTC), log)
        baseline = rss_mb()
        started = time.monotonic()
        enrollments = other = 0
        for item in results.read(read_ctx):
            if getattr(item, "table", None) == "enrollments":
                enrollments += 1
            else:
                other += 1
        seconds = time.monotonic() - started
        connector.close()
        return {"rows": enrollments, "other_records": other, "pages": read_ctx.counters.get("pages", 0),
                "seconds": round(seconds, 1), "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(rss_mb(), 1), "growth_mb": round(rss_mb() - baseline, 1)}
    finally:
        fake.terminate()
        fake.join(10)


def measure_parser(rows: int, page_size: int) -> dict:
    """Parse + normalize generated XML pages in memory: no HTTP, no fake process."""
    import uuid

    from lms_sync.connectors.ispring import XmlRows
    from lms_sync.connectors.ispring_records import IspringResult, normalize_result
    from lms_sync.sandbox.ispring import XML_HEAD, FakeIspring, _xml
    from lms_sync.sandbox.population import Population

    fake = FakeIspring(Population(page_size // 2 + 100, seed=11))
    sample = [row for _, row in zip(range(page_size), fake.all_results(), strict=False)]
    template = (XML_HEAD + "<response><results>" + "".join(_xml("result", list(r.items())) for _, r in sample)
                + "</results><nextPageToken>t</nextPageToken></response>").encode()
    del fake, sample
    baseline = rss_mb()
    started, n = time.monotonic(), 0
    for _ in range(rows // page_size):  # every page has fresh ids, like a real read
        body = template.replace(b"<enrollmentId>", b"<enrollmentId>" + uuid.uuid4().hex.encode())
        for row in XmlRows(body, "result"):
            normalize_result(IspringResult.model_validate(row), row)
            n += 1
    return {"rows": n, "pages": rows // page_size, "seconds": round(time.monotonic() - started, 1),
            "baseline_rss_mb": round(baseline, 1), "peak_rss_mb": round(rss_mb(), 1),
            "growth_mb": round(rss_mb() - baseline, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--parser-only", action="store_true",
                        help="parse generated pages in memory instead of reading the fake over HTTP")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = measure_parser if args.parser_only else measure
        print(json.dumps(fn(args.child, args.page_size)))
        return 0
    figures = []
    extra = ["--parser-only"] if args.parser_only else []
    for rows in args.rows:  # a fresh process per size: ru_maxrss is a process-lifetime peak
        out = subprocess.run([sys.executable, __file__, "--child", str(rows), "--page-size",
                              str(args.page_size), *extra], capture_output=True, text=True, check=True)
        figures.append(json.loads(out.stdout.strip().splitlines()[-1]))
        f = figures[-1]
        print(f"{f['rows']:>7} rows  {f['pages']:>4} pages  {f['seconds']:>6}s  "
              f"baseline {f['baseline_rss_mb']:>6} MB  peak {f['peak_rss_mb']:>6} MB  "
              f"growth {f['growth_mb']:>5} MB")
    if len(figures) >= 2:
        ratio = figures[-1]["peak_rss_mb"] / figures[0]["peak_rss_mb"]
        verdict = "flat" if ratio <= 1.10 else "NOT flat"
        print(f"peak RSS {figures[-1]['rows']} rows / {figures[0]['rows']} rows = {ratio:.3f} ({verdict})")
        return 0 if ratio <= 1.10 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

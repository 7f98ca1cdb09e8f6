"""Where a py-spy profile's samples go: top functions (self, cumulative), modules, areas, threads.

    python benchmarks/pyspy_top.py pyspy-full-20000.txt [--top 30] [--under FUNC] [--skip-thread NAME]

Reads py-spy's ``--format raw`` output (collapsed stacks, ``frame;frame;... count``), as
``BENCH_PYSPY=1 benchmarks/sync.py`` writes it (``record --gil --threads``: one line per
stack of the thread holding the GIL, the thread's name as the first frame). Self = samples
where the function is the innermost frame; cumulative = samples with it anywhere on the
stack (once per stack). Modules and areas are counted by the innermost frame's file; areas
group the modules by what they do (HTTP client, JSON, pydantic, psycopg, ...).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \(\d+\)(?::\s*(?P<name>.*))?$")
_TAIL = re.compile(r"[-_]?\d+(?:_\d+)*$|\s*\(.*\)$")

# (area, module prefixes), first match wins; modules are dotted paths of the innermost frame's file
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("json (stdlib json, orjson)", ("json.", "orjson")),
    ("pydantic", ("pydantic", "pydantic_core")),
    ("psycopg (driver)", ("psycopg", "psycopg_binary", "psycopg_pool")),
    ("sqlalchemy", ("sqlalchemy",)),
    ("HTTP client (httpx, httpcore, h11, ssl, socket)",
     ("httpx", "httpcore", "h11", "anyio", "ssl", "socket", "selectors", "http.", "email.")),
    ("XML (lxml)", ("lxml",)),
    ("lms_sync.connectors (reader: vendor rows -> records)", ("lms_sync.connectors",)),
    ("lms_sync.http (our HTTP layer)", ("lms_sync.http",)),
    ("lms_sync.warehouse (writer, identity)", ("lms_sync.warehouse",)),
    ("lms_sync.pipeline", ("lms_sync.pipeline",)),
    ("lms_sync.canonical (records)", ("lms_sync.canonical",)),
    ("lms_sync (other)", ("lms_sync",)),
    ("logging (structlog, logging)", ("structlog", "logging")),
    ("threads, queues, locks", ("threading", "queue", "concurrent.")),
    ("datetime, re, hashing, other stdlib", ("datetime", "_strptime", "re.", "hashlib", "uuid",
                                             "copy", "decimal", "enum", "typing", "functools",
                                             "collections", "abc", "contextlib", "dataclasses")),
]


def module_of(path: str) -> str:
    """A frame's file as a dotted module: ``.../site-packages/httpx/_client.py`` -> ``httpx._client``."""
    for marker in ("site-packages/", "dist-packages/", "/src/", "lib/python3."):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            if marker == "lib/python3.":
                path = path.partition("/")[2]
            break
    path = path.removesuffix(".py").removesuffix("/__init__")
    return path.strip("/<>").replace("/", ".") or "?"


def area_of(module: str) -> str:
    for area, prefixes in AREAS:
        if any(module == p.rstrip(".") or module.startswith(p if p.endswith(".") else p + ".")
               or module == p for p in prefixes):
            return area
    return "other"


def thread_group(name: str) -> str:
    """Thread names without their numbering: ``ThreadPoolExecutor-0_3`` -> ``ThreadPoolExecutor``."""
    prev = None
    while prev != name:
        prev, name = name, _TAIL.sub("", name)
    return name or "?"


def load(path: str) -> list[tuple[str, list[tuple[str, str]], int]]:
    """Stacks as (thread group, [(function, module)] outermost first, samples)."""
    out = []
    for raw in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        m = _THREAD.match(frames[0])
        if m:  # py-spy names a thread once Python's threading knows it (not the main one early on)
            thread = thread_group(m.group("name")) if m.group("name") else "(no name)"
            frames = frames[1:]
        parsed = []
        for frame in frames:
            fm = _FRAME.match(frame)
            func, module = (fm.group("func"), module_of(fm.group("file"))) if fm else (frame, "?")
            parsed.append((func, module))
        if parsed:
            out.append((thread, parsed, int(count)))
    return out


def report(path: str, top: int = 30, under: str | None = None, skip: tuple[str, ...] = ()) -> str:
    stacks = load(path)
    everything = sum(n for _, _, n in stacks)
    if under:  # e.g. run_source: the sources' own threads only
        stacks = [st for st in stacks if any(under == f for f, _ in st[1])]
    if skip:  # e.g. "(no name)": the child's start-up and imports, before the sync
        stacks = [st for st in stacks if st[0] not in skip]
    total = sum(n for _, _, n in stacks) or 1
    self_fn: Counter[str] = Counter()
    cum_fn: Counter[str] = Counter()
    self_mod: Counter[str] = Counter()
    cum_mod: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    thread_areas: Counter[tuple[str, str]] = Counter()
    for thread, frames, n in stacks:
        func, module = frames[-1]
        self_fn[f"{module}:{func}"] += n
        self_mod[module] += n
        area = area_of(module)
        areas[area] += n
        threads[thread] += n
        thread_areas[(thread, area)] += n
        for name in {f"{m}:{f}" for f, m in frames}:
            cum_fn[name] += n
        for name in {m for _, m in frames}:
            cum_mod[name] += n

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    kept = [f"under {under}"] if under else []
    kept += [f"without threads {list(skip)}"] if skip else []
    lines = [f"{path}: {total} samples" + (f" of {everything} ({', '.join(kept)})" if kept else "")]
    lines.append(f"\ntop {top} functions by self samples (innermost frame)")
    lines += [f"  {pct(n)} {n:7d}  {name}" for name, n in self_fn.most_common(top)]
    lines.append(f"\ntop {top} functions by cumulative samples (anywhere on the stack)")
    lines += [f"  {pct(n)} {n:7d}  {name}" for name, n in cum_fn.most_common(top)]
    lines.append(f"\ntop {top} modules by self samples")
    lines += [f"  {pct(n)} {n:7d}  {name}" for name, n in self_mod.most_common(top)]
    lines.append("\nareas by self samples (innermost frame's module)")
    lines += [f"  {pct(n)} {n:7d}  {name}" for name, n in areas.most_common()]
    lines.append("\nthreads (names without their numbering) and their top areas")
    for thread, n in threads.most_common():
        lines.append(f"  {pct(n)} {n:7d}  {thread}")
        inner = sorted(((c, a) for (t, a), c in thread_areas.items() if t == thread), reverse=True)[:6]
        lines += [f"      {pct(c)}  {a}" for c, a in inner]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="py-spy raw (collapsed stacks) file")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--under", metavar="FUNCTION", help="only stacks through this function "
                   "(e.g. run_source: the sources' threads, without start-up and imports)")
    p.add_argument("--skip-thread", action="append", default=[], metavar="NAME",
                   help="leave out this thread group (repeatable), e.g. '(no name)'")
    args = p.parse_args(argv)
    print(report(args.file, args.top, args.under, tuple(args.skip_thread)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

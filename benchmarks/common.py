"""Helpers for benchmarks/sync.py: warehouses of their own, the two limits, child processes.

The limits a sync is compared to, measured on the same machine in the same run:

* warehouse limit: the rows the sync wrote (read back from its warehouse, so the
  same number and width) loaded into empty tables of the same shape with the
  fastest raw path of that database, one transaction per ``batch_size`` rows as
  the sync must: PostgreSQL COPY into a temp table + one INSERT … SELECT … ON
  CONFLICT DO UPDATE; SQLite executemany in one transaction; MariaDB/MySQL
  multi-row INSERT … ON DUPLICATE KEY UPDATE (PyMySQL's executemany).
* fetch limit: the HTTP requests the sync's connectors asked for, sent again
  through the source's own HTTP client (same auth, concurrency, rate budget and
  retries), bodies read and not parsed; "fetch-only" (``--workload bulk``): the same,
  and each JSON body parsed with orjson, nothing else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# tables the sync writes, in load order; value: the conflict key (None: plain insert)
LOAD_TABLES: dict[str, tuple[str, ...] | None] = {
    "persons": None,
    "learners": ("source_id", "external_id"),
    "courses": ("source_id", "external_id"),
    "org_units": ("source_id", "external_id"),
    "enrollments": ("source_id", "external_id"),
    "activity_progress": ("source_id", "external_id"),
    "learner_org_units": ("source_id", "external_id"),
    "enrollment_history": None,
    "stat_snapshots": ("source_id", "external_id", "as_of"),
}


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) so far, in seconds.

    The machine is shared: CPU time per record is far steadier than wall time, and it is
    the sync's own cost (the fakes run in the parent process, PostgreSQL in its own)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child's figure
    would start at the (fake-serving) parent's RSS; VmHWM belongs to the new image.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
except OSError:
    _LIBC = None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc_mb() -> tuple[float, float, float]:
    """glibc's bytes in use, free inside its heaps, and in mmapped blocks (MB), all arenas;
    zeros where there is no mallinfo2 (glibc < 2.33, musl)."""
    mallinfo2 = getattr(_LIBC, "mallinfo2", None)
    if mallinfo2 is None:
        return 0.0, 0.0, 0.0
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks / 2**20, info.fordblks / 2**20, info.hblkhd / 2**20


class RssSampler:
    """Diagnostics (env BENCH_RSS_TRACE=file): every 0.5 s append "seconds VmRSS RssAnon
    RssFile malloc-used malloc-free malloc-mmapped thread-names" (MB) to ``path``, to see
    when in a sync the resident set grows, and whether glibc's heaps (used, or free but
    kept) or the rest of the anonymous memory (pymalloc's arenas, stacks) hold it."""

    def __init__(self, path: str) -> None:
        self._stop = threading.Event()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by stop()
        t0 = time.perf_counter()

        def run() -> None:
            while not self._stop.wait(0.5):
                status = {}
                with open("/proc/self/status", encoding="ascii") as fh:
                    for line in fh:
                        key, _, value = line.partition(":")
                        if key in ("VmRSS", "RssAnon", "RssFile"):
                            status[key] = int(value.split()[0]) / 1024
                sizes = " ".join(f"{status.get(k, 0.0):7.1f}" for k in ("VmRSS", "RssAnon", "RssFile"))
                heap = " ".join(f"{mb:7.1f}" for mb in _malloc_mb())
                names = sorted({t.name.split("_")[0] for t in threading.enumerate()})
                self._fh.write(f"{time.perf_counter() - t0:7.1f} {sizes} {heap} {' '.join(names)}\n")
                self._fh.flush()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._fh.close()


class HeapPeak:
    """Diagnostics (env BENCH_TRACEMALLOC=file): trace Python allocations, snapshot every
    0.25 s, keep the snapshot with the most traced memory, and on stop() write its top
    allocation sites (BENCH_TRACEMALLOC_FRAMES frames, default 3) to ``path``; with
    BENCH_TRACEMALLOC_BASE_S=s, what grew from a snapshot s seconds in to the peak after
    it. Slows the sync down a lot; RSS figures of such a run are not comparable."""

    def __init__(self, path: str, top: int = 30) -> None:
        import tracemalloc

        self._path, self._top, self._tm = path, top, tracemalloc
        self._stop = threading.Event()
        self._best: tuple[int, Any] = (0, None)
        self._base: Any = None  # BENCH_TRACEMALLOC_BASE_S: the peak is compared to this one
        base_s = float(os.environ.get("BENCH_TRACEMALLOC_BASE_S", "0"))
        tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "3")))
        t0 = time.perf_counter()

        def run() -> None:
            while not self._stop.wait(0.25):
                if base_s and self._base is None and time.perf_counter() - t0 >= base_s:
                    self._base, self._best = tracemalloc.take_snapshot(), (0, None)
                current = tracemalloc.get_traced_memory()[0]
                if current > self._best[0]:
                    self._best = (current, tracemalloc.take_snapshot())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        size, snap = self._best
        lines = [f"peak traced {size / 2**20:.1f} MiB"]
        if snap is not None and self._base is not None:
            lines[0] += " (growth since the base snapshot, largest first)"
            for diff in snap.compare_to(self._base, "traceback")[: self._top]:
                lines.append(f"{diff.size_diff / 2**20:+8.2f} MiB {diff.count_diff:+8d} blocks")
                lines.extend(f"      {frame}" for frame in diff.traceback)
        elif snap is not None:
            for stat in snap.statistics("traceback")[: self._top]:
                lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} blocks")
                lines.extend(f"      {frame}" for frame in stat.traceback)
        self._tm.stop()
        Path(self._path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- warehouses


@contextmanager
def scratch_warehouse(url: str, tmp: Path) -> Iterator[dict[str, Any]]:
    """A fresh, empty warehouse block ({"url", "schema"?}) dropped afterwards."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    name = f"bench_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        yield {"url": f"sqlite:///{tmp / (name + '.db')}"}
        return
    if backend == "postgresql":
        try:
            yield {"url": url, "schema": name}
        finally:
            drop_pg_schemas(url, [name, name + "_limit"])
        return
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    admin.dispose()
    try:
        yield {"url": parsed.set(database=name).render_as_string(hide_password=False)}
    finally:
        admin = create_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}_limit`"))
        admin.dispose()


def drop_pg_schemas(url: str, names: list[str]) -> None:
    admin = create_engine(url)
    with admin.begin() as conn:
        for name in names:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()


# --------------------------------------------------------------------------- warehouse limit


def warehouse_limit(block: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """Load the rows the sync wrote into empty twins of its tables; time only the load."""
    backend = make_url(block["url"]).get_backend_name()
    fn = {"postgresql": _limit_postgres, "sqlite": _limit_sqlite}.get(backend, _limit_mysql)
    per_table: dict[str, dict[str, Any]] = {}
    total_rows, total_s = 0, 0.0
    for table, key in LOAD_TABLES.items():
        rows, seconds = fn(block, table, key, batch_size)
        if rows:
            per_table[table] = {"rows": rows, "seconds": round(seconds, 3)}
            total_rows += rows
            total_s += seconds
    return {"method": {"postgresql": "COPY to temp table + INSERT ... SELECT ... ON CONFLICT",
                       "sqlite": "executemany INSERT ... ON CONFLICT, one transaction per batch",
                       }.get(backend, "multi-row INSERT ... ON DUPLICATE KEY UPDATE"),
            "batch_size": batch_size, "rows": total_rows, "seconds": round(total_s, 3),
            "rows_per_s": round(total_rows / total_s) if total_s else None, "tables": per_table}


def _batches(rows: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _limit_postgres(block: dict, table: str, key: tuple[str, ...] | None,
                    batch_size: int) -> tuple[int, float]:
    import psycopg

    url = make_url(block["url"]).set(drivername="postgresql")
    schema, limit = block["schema"], block["schema"] + "_limit"
    dsn = url.render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{limit}"')
        conn.execute(f'CREATE TABLE "{limit}".{table} (LIKE "{schema}".{table} INCLUDING ALL)')
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema=%s "
            "AND table_name=%s AND column_name <> 'id' ORDER BY ordinal_position", (schema, table))]
        collist = ", ".join(cols)
        # text values: what COPY parses anyway; the same bytes as the sync's rows
        rows = conn.execute(
            f'SELECT {", ".join(f"{c}::text" for c in cols)} FROM "{schema}".{table} ORDER BY id'
        ).fetchall()
        conn.commit()
        if not rows:
            return 0, 0.0
        if key:
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in key)
            merge = (f'INSERT INTO "{limit}".{table} ({collist}) SELECT {collist} FROM bench_tmp '
                     f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}")
        else:
            merge = f'INSERT INTO "{limit}".{table} ({collist}) SELECT {collist} FROM bench_tmp'
        t0 = time.perf_counter()
        for part in _batches(rows, batch_size):
            with conn.transaction():
                conn.execute(f'CREATE TEMP TABLE bench_tmp (LIKE "{limit}".{table} '
                             "INCLUDING DEFAULTS) ON COMMIT DROP")
                with conn.cursor().copy(f"COPY bench_tmp ({collist}) FROM STDIN") as copy:
                    for row in part:
                        copy.write_row(row)
                conn.execute(merge)
        return len(rows), time.perf_counter() - t0


def _limit_sqlite(block: dict, table: str, key: tuple[str, ...] | None,
                  batch_size: int) -> tuple[int, float]:
    import sqlite3

    path = make_url(block["url"]).database
    src = sqlite3.connect(path)
    ddl = src.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?",
                      (table,)).fetchone()[0]
    cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
    rows = src.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY id").fetchall()
    src.close()
    if not rows:
        return 0, 0.0
    dst = sqlite3.connect(f"{path}.limit.db", isolation_level=None)
    dst.execute("PRAGMA journal_mode=WAL")
    dst.execute("PRAGMA synchronous=NORMAL")
    dst.execute(ddl)
    if key:
        dst.execute(f"CREATE UNIQUE INDEX uq_{table} ON {table} ({', '.join(key)})")
    marks = ", ".join("?" for _ in cols)
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"
    if key:
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
        sql += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    t0 = time.perf_counter()
    for part in _batches(rows, batch_size):
        dst.execute("BEGIN")
        dst.executemany(sql, part)
        dst.execute("COMMIT")
    seconds = time.perf_counter() - t0
    dst.close()
    return len(rows), seconds


def _limit_mysql(block: dict, table: str, key: tuple[str, ...] | None,
                 batch_size: int) -> tuple[int, float]:
    import pymysql

    url = make_url(block["url"])
    src_db, lim_db = url.database, f"{url.database}_limit"
    conn = pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306,
                           user=url.username or "root", password=url.password or "",
                           charset="utf8mb4", autocommit=False)
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{lim_db}` CHARACTER SET utf8mb4")
        cur.execute(f"CREATE TABLE `{lim_db}`.`{table}` LIKE `{src_db}`.`{table}`")
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema=%s "
                    "AND table_name=%s AND column_name <> 'id' ORDER BY ordinal_position",
                    (src_db, table))
        cols = [r[0] for r in cur.fetchall()]
        cur.execute(f"SELECT {', '.join(cols)} FROM `{src_db}`.`{table}` ORDER BY id")
        rows = cur.fetchall()
        conn.commit()
        if not rows:
            return 0, 0.0
        sql = (f"INSERT INTO `{lim_db}`.`{table}` ({', '.join(cols)}) "
               f"VALUES ({', '.join('%s' for _ in cols)})")
        if key:
            sql += " ON DUPLICATE KEY UPDATE " + ", ".join(
                f"{c} = VALUES({c})" for c in cols if c not in key)
        t0 = time.perf_counter()
        for part in _batches(list(rows), batch_size):
            cur.executemany(sql, part)  # PyMySQL sends one multi-row INSERT per batch
            conn.commit()
        return len(rows), time.perf_counter() - t0
    finally:
        conn.close()


# --------------------------------------------------------------------------- fetch limit


class ClientRecorder:
    """Appends every request a connector asks its HttpClient for to ``path`` (JSON lines).

    One line per logical request (retries and token fetches are the client's own business
    and happen again on replay). On disk, not in memory: the sync's peak RSS is measured.
    """

    def __init__(self, path: str) -> None:
        from lms_sync.http.client import HttpClient

        self._lock = threading.Lock()
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        inner = HttpClient.request
        recorder = self

        def request(client: HttpClient, method: str, path_or_url: str, **kw: Any) -> Any:
            params = kw.get("params")
            entry = {"source": client.source_id, "method": method,
                     "url": str(client.url(path_or_url)),
                     "params": list(params.items()) if isinstance(params, dict) else params,
                     **{k: kw.get(k) for k in ("json", "data", "headers")}}
            line = json.dumps(entry, default=str)
            with recorder._lock:
                recorder._file.write(line + "\n")
            return inner(client, method, path_or_url, **kw)

        HttpClient.request = request  # type: ignore[method-assign]

    def close(self) -> None:
        self._file.close()


def load_recorded(path: str) -> dict[str, list[dict[str, Any]]]:
    """What :class:`ClientRecorder` wrote: source id -> its requests, in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            entry = json.loads(line)
            out.setdefault(entry.pop("source"), []).append(entry)
    return out


def replay(source: Any, requests: list[dict[str, Any]], parse: bool = False) -> dict[str, Any]:
    """Send ``requests`` again through the source's own client; read bodies, and with
    ``parse`` parse each JSON body with orjson (nothing else: the "fetch-only" time).

    The connector builds its client as in a sync (auth, ``max_concurrency``, the rate
    budget and X-RateLimit pacing, retries on 429/5xx), so the figure is the fastest the
    source can be fetched within its vendor's limits.
    """
    import orjson
    import structlog

    from lms_sync.connectors import connector_class

    connector = connector_class(source.kind)(source, structlog.get_logger("bench"))
    client = connector.http
    assert client is not None, f"{source.kind}: connector built no HTTP client in __init__"
    statuses: dict[int, int] = {}
    nbytes = 0
    accept = range(400, 600)  # what the sync accepted (404 = no record) must not fail here

    def one(req: dict[str, Any]) -> tuple[int, int]:
        r = client.request(req["method"], req["url"], params=req["params"], json=req["json"],
                           data=req["data"], headers=req["headers"],
                           accept=[c for c in accept if c not in (401, 429) and c < 500])
        if parse and "json" in r.headers.get("content-type", ""):
            orjson.loads(r.content)
        return r.status_code, len(r.content)

    t0 = time.perf_counter()
    with connector, ThreadPoolExecutor(max_workers=source.http.max_concurrency) as pool:
        for status, size in pool.map(one, requests):
            statuses[status] = statuses.get(status, 0) + 1
            nbytes += size
    seconds = time.perf_counter() - t0
    return {"requests": len(requests), "seconds": round(seconds, 3), "bytes": nbytes,
            "statuses": statuses, "concurrency": source.http.max_concurrency,
            "http": dict(client.stats)}


# --------------------------------------------------------------------------- child processes


def children_cpu_seconds() -> float:
    """User + system CPU of this process's finished (waited-for) children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(script: str, mode: str, spec: dict[str, Any], tmp: Path,
              prefix: list[str] | None = None) -> dict[str, Any]:
    """Run ``script --child MODE spec.json`` in a fresh interpreter; return its JSON result.

    ``prefix``: a command that runs the child (``py-spy record ... --``). The result's
    ``process_cpu_seconds`` is the child's whole CPU (imports included; a prefix's too)."""
    spec_path = tmp / f"{mode}-{uuid.uuid4().hex[:6]}.json"
    out_path = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if other := os.environ.get("BENCH_CHILD_SRC"):  # the sync of another checkout's src/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (other, env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    cpu0 = children_cpu_seconds()
    proc = subprocess.run([*(prefix or []), sys.executable, script, "--child", mode, str(spec_path),
                           str(out_path)], env=env, capture_output=True, text=True)
    process_cpu = children_cpu_seconds() - cpu0
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark child {mode!r} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(out_path.read_text())
    result["process_seconds"] = round(time.perf_counter() - t0, 3)
    result["process_cpu_seconds"] = round(process_cpu, 3)
    return result


class SqlTimer:
    """Time every statement the sync sends (SQLAlchemy cursor events), by statement shape."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.stats: dict[str, list[float]] = {}
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, _cur: Any, _stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn: Any, _cur: Any, stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        key = " ".join(stmt.split())[:90]
        s = self.stats.setdefault(key, [0, 0.0])
        s[0] += 1
        s[1] += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())

    def top(self, n: int = 12) -> dict[str, Any]:
        total = sum(v[1] for v in self.stats.values())
        rows = sorted(self.stats.items(), key=lambda kv: -kv[1][1])[:n]
        return {"total_seconds": round(total, 3),
                "statements": sum(int(v[0]) for v in self.stats.values()),
                "top": [{"sql": k, "count": int(v[0]), "seconds": round(v[1], 3)} for k, v in rows]}


# --------------------------------------------------------------------------- PostgreSQL CPU


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat, clock ticks)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tagged(url: str, name: str) -> str:
    """``url`` whose connections carry ``application_name=name`` (to find their backends)."""
    return make_url(url).update_query_dict({"application_name": name}).render_as_string(
        hide_password=False)


class PgBackends(threading.Thread):
    """CPU of the PostgreSQL backends whose ``application_name`` is ``app``, sampled every
    50 ms from /proc (the server is local): a backend's last sample stands for it, so this
    is a lower bound (each backend's last <= 50 ms are missed); backends already there at
    ``start()`` count from then. ``conninfo``: a libpq URL or a SQLAlchemy one.
    ``own_cpu_seconds``: this thread's own CPU, for the caller to take out of its figure."""

    def __init__(self, conninfo: str, app: str) -> None:
        super().__init__(daemon=True)
        if "+" in conninfo.partition("://")[0]:  # postgresql+psycopg://: libpq wants none
            conninfo = make_url(conninfo).set(drivername="postgresql").render_as_string(
                hide_password=False)
        self.url, self.app, self.done = conninfo, app, threading.Event()
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self.own_cpu_seconds = 0.0

    def _sample(self, conn: Any, into: dict[int, float]) -> None:
        for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                   [self.app]):
            try:
                into[pid] = process_cpu_seconds(pid)
            except OSError:  # gone since the query
                continue

    def start(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            self._sample(conn, self.base)
        super().start()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while True:
                    stop = self.done.wait(0.05)
                    self._sample(conn, self.seen)
                    if stop:
                        break
        finally:
            self.own_cpu_seconds = time.thread_time()

    def stop(self) -> float:
        """CPU seconds of the tagged backends since ``start()``."""
        self.done.set()
        self.join()
        return round(sum(self.seen.values()) - sum(self.base.get(p, 0.0) for p in self.seen), 3)

"""Tenants: one config file each, its stem the tenant's name, re-read when it changes.

A file that does not load (bad YAML, a missing ``${VAR}``, an unknown key) is logged
once as one line (``tenant.skipped``) and left out until it changes; it never takes
the other tenants down. A tenant whose file goes away is dropped (``tenant.removed``).

Warehouse engines are made on a tenant's first job in this process, migrated once
(under a warehouse-wide lock: several workers may start on a fresh warehouse at once).
A worker serving hundreds of tenants must not keep a pool open to each, but a new
PostgreSQL connection costs a server process and a cold catalog cache: the pools of
the ``keep_warm`` warehouses used last stay open between jobs (a tenant's sources
usually run one after another), any other idle pool is closed, and so is one idle
for ``WARM_SECONDS``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from lms_sync.cluster import metrics
from lms_sync.cluster.queue import QueueTarget, same_queue
from lms_sync.config import Config, load_config
from lms_sync.errors import ConfigError
from lms_sync.logs import get_logger, redactor

WARM_SECONDS = 60.0  # an idle warehouse pool kept open at most this long
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # as a source id: no ':' or '#' (locks)


def check_name(name: str, path: str) -> None:
    """ConfigError unless ``name`` (a file's stem) can name a tenant."""
    if not _NAME.match(name):
        raise ConfigError(f"tenant name {name!r} (the file's name) is not valid", path,
                          "name the file with letters, digits, '-', '_' or '.'")


def quiet_configs(paths: Iterable[Path]) -> list[Config]:
    """The configs of ``paths`` that load, without a word about the others (which the
    worker reports as it loads its tenants)."""
    out = []
    for path in paths:
        try:
            out.append(load_config(path))
        except ConfigError:
            continue
    return out


@dataclass(frozen=True)
class Tenant:
    name: str
    path: Path
    cfg: Config
    stamp: tuple[int, int]  # (mtime_ns, size) of the file it was read from


@dataclass
class _Warehouse:
    engine: Engine
    active: int = 0
    last_used: float = 0.0
    migrated: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Tenants:
    """The tenants of ``dirs`` (every ``*.yaml``) and ``files``; thread-safe."""

    def __init__(self, dirs: Iterable[Path], files: Iterable[Path], target: QueueTarget | None = None,
                 migrate: bool = True, keep_warm: int = 0) -> None:
        self.dirs, self.files = list(dirs), list(files)
        self.target, self.migrate = target, migrate
        self.keep_warm = keep_warm  # idle warehouse pools left open (see the module doc)
        self.log = get_logger("lms_sync.cluster")
        self._lock = threading.Lock()
        self._loaded: dict[str, Tenant] = {}
        self._broken: dict[Path, tuple[int, int]] = {}
        self._warehouses: dict[tuple[str, str | None], _Warehouse] = {}

    # ------------------------------------------------------------------ the files

    def paths(self) -> list[Path]:
        found = [p for d in self.dirs for p in sorted(d.glob("*.yaml")) if p.is_file()]
        return found + [f for f in self.files if f not in found]

    def refresh(self) -> list[Tenant]:
        """Load new and changed files, drop removed ones; returns the tenants (re)loaded."""
        with self._lock:
            seen: dict[str, Path] = {}
            before = dict(self._loaded)
            for path in self.paths():
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed between the listing and now
                    continue
                self._refresh_one(path, (st.st_mtime_ns, st.st_size), seen)
            present = set(seen.values())
            self._broken = {p: s for p, s in self._broken.items() if p in present}
            for name in [n for n in self._loaded if n not in seen]:
                self.log.warning("tenant.removed", tenant=name, path=str(self._loaded.pop(name).path))
            metrics.tenants.labels("loaded").set(len(self._loaded))
            metrics.tenants.labels("skipped").set(len(self._broken))
            return [t for n, t in self._loaded.items() if before.get(n) is not t]

    def _refresh_one(self, path: Path, stamp: tuple[int, int], seen: dict[str, Path]) -> None:
        name = path.stem
        if name in seen:
            self._skip(name, path, stamp, ConfigError(
                f"tenant {name!r} is also {seen[name]}", str(path), "give each tenant file its own name"))
            return
        seen[name] = path
        current = self._loaded.get(name)
        if (current and current.path == path and current.stamp == stamp) or \
                self._broken.get(path) == stamp:
            return
        try:
            cfg = self._load(name, path)
        except ConfigError as exc:
            self._loaded.pop(name, None)
            self._skip(name, path, stamp, exc)
            return
        self._broken.pop(path, None)
        redactor.add(cfg.secret_values())
        self._loaded[name] = Tenant(name, path, cfg, stamp)
        self.log.info("tenant.reloaded" if current else "tenant.loaded", tenant=name, path=str(path),
                      sources=[s.id for s in cfg.sources.values() if s.enabled])

    def _load(self, name: str, path: Path) -> Config:
        check_name(name, str(path))
        cfg = load_config(path)
        if self.target is not None and not same_queue(self.target, cfg):
            raise ConfigError("it names another job queue than this worker's",
                              f"{path}: cluster.queue_url",
                              "serve it from a worker of that queue, or remove the key")
        return cfg

    def _skip(self, name: str, path: Path, stamp: tuple[int, int], exc: ConfigError) -> None:
        if self._broken.get(path) != stamp:  # once per version of the file
            self.log.error("tenant.skipped", tenant=name, path=str(path), error=str(exc))
        self._broken[path] = stamp

    # ------------------------------------------------------------------ lookups

    def get(self, name: str) -> Tenant | None:
        with self._lock:
            return self._loaded.get(name)

    def all(self) -> list[Tenant]:
        with self._lock:
            return list(self._loaded.values())

    def skipped(self) -> list[str]:
        with self._lock:
            return sorted(str(p) for p in self._broken)

    # ------------------------------------------------------------------ warehouses

    @contextmanager
    def warehouse(self, tenant: Tenant) -> Iterator[Engine]:
        """The tenant's warehouse engine, migrated, for the length of one job."""
        from lms_sync.warehouse.db import make_engine

        key = (tenant.cfg.warehouse.url, tenant.cfg.warehouse.schema_)
        with self._lock:
            wh = self._warehouses.get(key)
            if wh is None:
                try:
                    wh = _Warehouse(make_engine(*key))
                except ConfigError as exc:
                    raise ConfigError(exc.what, f"{tenant.path}: {exc.where}", exc.fix) from None
                self._warehouses[key] = wh
            wh.active += 1
        try:
            with wh.lock:
                if self.migrate and not wh.migrated:
                    _migrate(wh.engine)
                    wh.migrated = True
            yield wh.engine
        finally:
            with self._lock:
                wh.active -= 1
                wh.last_used = time.monotonic()
                idle = self._cool()
            for engine in idle:
                engine.dispose()  # idle connections only; the engine stays usable

    def _cool(self, older_than: float = WARM_SECONDS) -> list[Engine]:
        """The engines whose idle pools to close (under self._lock): beyond the
        ``keep_warm`` used last, or idle for ``older_than`` seconds."""
        idle = sorted((wh for wh in self._warehouses.values() if not wh.active and wh.last_used),
                      key=lambda wh: wh.last_used, reverse=True)
        now = time.monotonic()
        cold = [wh for i, wh in enumerate(idle) if i >= self.keep_warm or now - wh.last_used > older_than]
        for wh in cold:
            wh.last_used = 0.0  # closed: nothing to close until it is used again
        return [wh.engine for wh in cold]

    def cool(self) -> None:
        """Close the pools idle for longer than ``WARM_SECONDS`` (the worker calls it now and then)."""
        with self._lock:
            idle = self._cool()
        for engine in idle:
            engine.dispose()

    def prepare(self, tenants: Iterable[Tenant]) -> None:
        """Open and migrate these tenants' warehouses now, not in their first job: a
        warehouse that cannot be reached is said at once (``tenant.warehouse_failed``),
        and the first tick does not wait for alembic."""
        from lms_sync.logs import one_line

        for tenant in tenants:
            try:
                with self.warehouse(tenant):
                    pass
            except Exception as exc:  # noqa: BLE001 - the tenant's jobs retry; the others go on
                self.log.error("tenant.warehouse_failed", tenant=tenant.name, error=one_line(exc))

    def close(self) -> None:
        with self._lock:
            for wh in self._warehouses.values():
                wh.engine.dispose()


_MIGRATING = threading.Lock()


def _migrate(engine: Engine) -> None:
    """Apply the warehouse migrations, one process at a time (workers start together), and
    one warehouse at a time in this process: alembic keeps the migration context in a
    module global, so two tenants' upgrades in two threads would mix their schemas."""
    from lms_sync.warehouse.db import upgrade
    from lms_sync.warehouse.dialect import locked_transaction

    with _MIGRATING, locked_transaction(engine, "migrate:"):
        upgrade(engine)

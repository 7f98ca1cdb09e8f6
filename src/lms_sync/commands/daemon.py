"""``lms-sync daemon``: run every enabled source on its schedule until SIGTERM/SIGINT.

On a signal: no new runs start, runs in flight commit their current batch and
stop (``interrupted``), bounded by ``daemon.shutdown_timeout_seconds``; exit 0.
A config change is a restart (``lms-sync check`` validates the new file first).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from lms_sync.commands import command
from lms_sync.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from lms_sync.config import Config
    from lms_sync.health import HealthServer
    from lms_sync.scheduler import Scheduler


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("daemon", parents=[common], help="run the schedule until SIGTERM/SIGINT")
    p.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lms_sync.cli import open_warehouse, setup
    from lms_sync.logs import get_logger
    from lms_sync.scheduler import Scheduler, fail_abandoned_runs

    cfg = setup(args)
    log = get_logger("lms_sync.daemon")
    sources = [s for s in cfg.sources.values() if s.enabled]
    if not sources:
        raise ConfigError("no enabled source to schedule", f"{cfg.path}: sources",
                          "add a source or set enabled: true on one")
    engine = open_warehouse(cfg, migrate=not args.no_migrate)

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if len(received) > 1:  # a second signal: stop now; runs left running are marked
            log.warning("daemon.forced_exit", signal=received[-1])  # abandoned at the next start
            logging.shutdown()
            os._exit(1)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    abandoned = fail_abandoned_runs(engine, window=cfg.warehouse.reconnect_seconds)
    if abandoned:
        log.warning("runs.abandoned", runs=abandoned,
                    reason="left running by a process that stopped; marked failed")
    scheduler = Scheduler(engine, cfg, sources)
    health = None
    try:
        if cfg.daemon.health_port is not None:
            health = _health_server(cfg, engine, scheduler)
        scheduler.start()
        while not stop.wait(1.0):
            pass
        log.info("daemon.signal", signal=received[0] if received else None)
    finally:
        clean = scheduler.shutdown()
        if health is not None:
            health.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not clean:
        # a run reached no checkpoint or batch boundary in time; its rows are marked
        # interrupted, and waiting for its thread would block the exit
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    engine.dispose()
    return 0


def _health_server(cfg: Config, engine: Engine, scheduler: Scheduler) -> HealthServer:
    from lms_sync.health import HealthServer

    host, port = cfg.daemon.health_host, cfg.daemon.health_port
    assert port is not None
    try:
        server = HealthServer(host, port, engine,
                     status=lambda: {"jobs": scheduler.jobs(), "in_flight": scheduler.in_flight(),
                                     "last_results": dict(scheduler.last_results)},
                     alive=lambda: scheduler.running)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                          f"{cfg.path}: daemon.health_port",
                          "choose a free port, or remove daemon.health_port") from None
    return server.start()

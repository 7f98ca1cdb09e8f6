"""``lms-sync sandbox``: serve the fake vendors on loopback for manual or compose use."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import yaml

from lms_sync.commands import command


@command
def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sandbox", help="serve the sandbox vendors on loopback")
    p.add_argument("--learners", type=int, default=200, help="people in the population")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 inside a container)")
    p.add_argument("--port-base", type=int, default=8801,
                   help="first port; vendors get consecutive ports (0: any free port)")
    p.add_argument("--public-host", default=None,
                   help="host name written into the printed config (default: --host)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every response")
    p.add_argument("--kind", action="append", default=[], help="only these vendors")
    p.add_argument("--warehouse-url", default="sqlite:///lms_sync.db",
                   help="warehouse URL written into the printed config")
    p.add_argument("--write-config", metavar="PATH", help="also write the config to PATH")
    p.add_argument("--config", metavar="PATH", help="accepted, as by every command, but not read: "
                   "the sandbox prints (and --write-config writes) a config for its vendors")
    p.set_defaults(func=run)


def start_all(learners: int, seed: int, kinds: list[str] | None = None, host: str = "127.0.0.1",
              port_base: int = 0, latency_ms: float = 0.0, public_host: str | None = None):
    """Start every available fake; returns [(kind, server, source_config)]."""
    from lms_sync.sandbox.population import Population
    from lms_sync.sandbox.registry import available_fakes, make_fake
    from lms_sync.sandbox.server import SandboxServer

    population = Population(learners, seed)
    out = []
    for i, kind in enumerate(kinds or available_fakes()):
        fake = make_fake(kind, population)
        fake.faults.latency_ms = latency_ms
        server = SandboxServer(fake, port=port_base + i if port_base else 0, host=host).start()
        url = f"http://{public_host or host}:{server.port}"
        out.append((kind, server, fake.source_config(url)))
    return out


def sandbox_config(started: list, warehouse_url: str) -> dict:
    return {
        "warehouse": {"url": warehouse_url},
        "logging": {"format": "json", "level": "INFO"},
        "sources": {f"{kind}-sandbox": block for kind, _server, block in started},
    }


def run(args: argparse.Namespace) -> int:
    started = start_all(args.learners, args.seed, args.kind or None, args.host, args.port_base,
                        args.latency_ms, args.public_host)
    text = yaml.safe_dump(sandbox_config(started, args.warehouse_url), sort_keys=False)
    if args.write_config:
        with open(args.write_config, "w", encoding="utf-8") as fh:
            fh.write(text)
    print("# sandbox vendors are serving; this config points lms-sync at them:")
    print(text, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    for _kind, server, _block in started:
        server.stop()
    print("sandbox stopped", file=sys.stderr)
    return 0

"""Packaging: Dockerfile, docker-compose.yml, .env.example, docker/sandbox-config.yaml.

There is no Docker engine on the test machines, so the commands the containers
run are run here as processes, taken from the compose file and the Dockerfile:
the `sandbox` service's command (its port base moved to free ports, its
interface to loopback), the daemon with docker/sandbox-config.yaml (the
`sandbox` host name mapped to loopback, as Docker's DNS would), and both
healthchecks. ``docker-compose config`` validates the file in .ci/run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
SANDBOX_CONFIG = ROOT / "docker" / "sandbox-config.yaml"
PORT_BASE = 8801


def _bin(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", "lms_sync"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMS_SYNC_")}
    return {**env, **extra}


def _free_port_base(count: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


def _dockerfile_healthcheck() -> list[str]:
    text = DOCKERFILE.replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "Dockerfile has no HEALTHCHECK ... CMD [...]"
    return json.loads(match.group(1))


# ------------------------------------------------------------------ static checks


def test_dockerfile_builds_a_non_root_daemon_image_with_a_healthcheck():
    lines = [line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "pip install '.[postgres,cluster]'" in DOCKERFILE  # the daemon and the worker pool
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    assert user not in {"root", "0"}
    assert re.search(rf"useradd .*\b{user}\b", DOCKERFILE)
    assert lines[-1] == 'CMD ["lms-sync", "daemon"]'
    assert _dockerfile_healthcheck()[:2] == ["python", "-c"]
    # what the image copies is what pip needs: pyproject (+ its readme) and the sources
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert sorted(sum(copies, [])) == ["README.md", "pyproject.toml", "src"]
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".env", "config.yaml", ".git", ".venv"} <= set(ignored)
    assert not {"src", "pyproject.toml", "README.md"} & set(ignored)


def test_compose_file_wires_postgres_daemon_and_sandbox():
    pg = SERVICES["postgres"]
    assert pg["image"].startswith("postgres:")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert set(COMPOSE["volumes"]) == {"pgdata"}

    for name, profile, config in [("lms-sync", "daemon", "./config.yaml"),
                                  ("lms-sync-sandbox", "sandbox", "./docker/sandbox-config.yaml")]:
        svc = SERVICES[name]
        assert svc["profiles"] == [profile]
        assert svc["command"] == ["lms-sync", "daemon"]
        assert svc["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert svc["restart"] == "unless-stopped"
        assert svc["env_file"] == ".env"
        target = svc["environment"]["LMS_SYNC_CONFIG"]
        assert f"{config}:{target}:ro" in svc["volumes"]
        assert (ROOT / config).exists() or config == "./config.yaml"  # config.yaml is the user's
        assert svc["environment"]["LMS_SYNC_WAREHOUSE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in svc["environment"]["LMS_SYNC_WAREHOUSE_URL"]
        assert svc["ports"] == ["${LMS_SYNC_HEALTH_PUBLISH:-8080}:8080"]
        # time for runs in flight to commit (daemon.shutdown_timeout_seconds defaults to 60)
        assert int(svc["stop_grace_period"].rstrip("s")) > 60
    assert SERVICES["lms-sync-sandbox"]["depends_on"]["sandbox"] == {"condition": "service_healthy"}
    assert SERVICES["sandbox"]["profiles"] == ["sandbox", "cluster"]
    assert SERVICES["sandbox"]["command"][:2] == ["lms-sync", "sandbox"]


def test_compose_cluster_profile_runs_three_workers_over_the_sandbox_tenants():
    from lms_sync.cli import _load_extra_commands, _parser
    from lms_sync.config import parse_config

    init, worker = SERVICES["cluster-init"], SERVICES["lms-sync-worker"]
    assert init["profiles"] == worker["profiles"] == ["cluster"]
    assert worker["deploy"]["replicas"] == 3
    assert worker["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                    "sandbox": {"condition": "service_healthy"},
                                    "cluster-init": {"condition": "service_completed_successfully"}}
    assert worker["volumes"] == ["./docker/tenants:/etc/lms-sync/tenants:ro"]
    queue_url = worker["environment"]["LMS_SYNC_QUEUE_URL"]
    assert queue_url.startswith("postgresql://") and "@postgres:5432/" in queue_url
    _load_extra_commands()
    for svc in (init, worker):  # the commands parse as lms-sync parses them
        assert svc["command"][0] == "lms-sync"
        _parser().parse_args(svc["command"][1:])
    assert _parser().parse_args(worker["command"][1:]).configs == ["/etc/lms-sync/tenants"]
    # the tenants: the sandbox's sources, each in a warehouse schema of its own
    sandbox = yaml.safe_load(SANDBOX_CONFIG.read_text(encoding="utf-8"))
    paths = sorted((ROOT / "docker" / "tenants").glob("*.yaml"))
    tenants = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in paths]
    assert len(tenants) >= 2
    assert all(t["sources"] == sandbox["sources"] for t in tenants)
    env = {"LMS_SYNC_WAREHOUSE_URL": "postgresql+psycopg://lms_sync:pw@postgres:5432/lms_sync"}
    configs = [parse_config(t, str(p), environ=env) for t, p in zip(tenants, paths, strict=True)]
    assert len({c.warehouse.schema_ for c in configs}) == len(configs)


def test_env_example_names_every_variable_the_compose_file_and_example_config_need():
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    required = set()
    for path in ("docker-compose.yml", "config.example.yaml"):
        code = "\n".join(line.split("#")[0] for line in (ROOT / path).read_text().splitlines())
        for var, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*)(:-[^}]*)?", code):
            if not default:
                required.add(var)
    assert required <= names, f"missing from .env.example: {sorted(required - names)}"


# ------------------------------------------------------------------ the containers' commands


def test_sandbox_service_and_sandbox_daemon_run_as_compose_runs_them(tmp_path):
    from lms_sync.sandbox.registry import available_fakes

    kinds = available_fakes()
    command = list(SERVICES["sandbox"]["command"])
    assert command[command.index("--port-base") + 1] == str(PORT_BASE)
    assert command[command.index("--public-host") + 1] == "sandbox"
    base = _free_port_base(len(kinds))
    command[command.index("--port-base") + 1] = str(base)
    command[command.index("--host") + 1] = "127.0.0.1"
    sandbox = subprocess.Popen([*_bin("lms-sync"), *command[1:], "--learners", "60"], cwd=tmp_path,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    daemon = None
    try:
        printed: list[str] = []
        done = threading.Event()

        def read() -> None:  # the printed config ends with a blank line; the sandbox keeps serving
            for line in sandbox.stdout:  # type: ignore[union-attr]
                if not line.strip() and printed:
                    break
                printed.append(line)
            done.set()

        threading.Thread(target=read, daemon=True).start()
        assert done.wait(60), "the sandbox printed no config"
        served = yaml.safe_load("".join(printed))

        # docker/sandbox-config.yaml points at exactly what the sandbox service serves
        shipped = yaml.safe_load(SANDBOX_CONFIG.read_text(encoding="utf-8"))
        moved = {sid: {**block, "base_url": re.sub(
            r":(\d+)$", lambda m: f":{int(m.group(1)) - base + PORT_BASE}", block["base_url"])}
            for sid, block in served["sources"].items()}
        assert moved == shipped["sources"]
        assert set(shipped["sources"]) == {f"{k}-sandbox" for k in kinds}
        assert shipped["warehouse"]["url"] == "${LMS_SYNC_WAREHOUSE_URL}"
        assert shipped["daemon"]["health_port"] == 8080 and shipped["daemon"]["run_on_start"] is True

        # the lms-sync-sandbox container: `lms-sync daemon` on that config, `sandbox` -> loopback
        text = SANDBOX_CONFIG.read_text(encoding="utf-8")
        text = re.sub(r"http://sandbox:(\d+)",
                      lambda m: f"http://127.0.0.1:{int(m.group(1)) - PORT_BASE + base}", text)
        text = text.replace("health_port: 8080", "health_port: 0")
        config = tmp_path / "config.yaml"
        config.write_text(text, encoding="utf-8")
        log = tmp_path / "daemon.log"
        env = _env(LMS_SYNC_CONFIG=str(config),
                   LMS_SYNC_WAREHOUSE_URL=f"sqlite:///{tmp_path / 'warehouse.db'}")
        with open(log, "w", encoding="utf-8") as err:
            daemon = subprocess.Popen([*_bin("lms-sync"), *SERVICES["lms-sync-sandbox"]["command"][1:]],
                                      cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
        port = None
        health: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and daemon.poll() is None:
            if port is None:
                for line in log.read_text().splitlines():
                    event = json.loads(line)
                    if event["event"] == "health.listening":
                        port = event["port"]
            else:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:  # noqa: S310
                    health = json.loads(resp.read())
                if len(health["last_results"]) == len(kinds):
                    break
            time.sleep(0.2)
        assert health.get("last_results") == {f"{k}-sandbox": "succeeded" for k in kinds}, \
            log.read_text()[-3000:]

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
            metrics = resp.read().decode()
        for kind in kinds:
            requests = re.search(rf'^lms_sync_http_requests_total{{source="{kind}-sandbox"}} (\S+)$',
                                 metrics, re.M)
            assert requests and float(requests.group(1)) > 0, kind

        # the image's HEALTHCHECK, as Docker runs it in the container
        probe = _dockerfile_healthcheck()
        ok = subprocess.run([sys.executable, *probe[1:]], env=_env(LMS_SYNC_HEALTH_PORT=str(port)),
                            capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        # ...and the sandbox service's healthcheck, on the moved ports
        check = SERVICES["sandbox"]["healthcheck"]["test"]
        code = check[-1].replace(f"range({PORT_BASE}, {PORT_BASE + 5})",
                                 f"range({base}, {base + len(kinds)})")
        assert code != check[-1]
        assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
        # the healthcheck fails once the daemon is gone
        down = subprocess.run([sys.executable, *probe[1:]], env=_env(LMS_SYNC_HEALTH_PORT=str(port)),
                              capture_output=True, timeout=30)
        assert down.returncode != 0
    finally:
        for proc in (daemon, sandbox):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert sandbox.returncode == 0


def test_compose_commands_are_plain_argument_lists():
    # exec form everywhere: signals reach lms-sync itself (no shell in between)
    for name in ("lms-sync", "lms-sync-sandbox", "sandbox"):
        assert isinstance(SERVICES[name]["command"], list), name
    assert shlex.join(SERVICES["sandbox"]["command"]) == (
        "lms-sync sandbox --host 0.0.0.0 --port-base 8801 --public-host sandbox")

"""Config loading: interpolation, validation, and one-line errors (exit 2)."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import SecretStr

from lms_sync.config import load_config, parse_config
from lms_sync.errors import ConfigError
from lms_sync.warehouse.tables import learners
from tests.cli_helpers import run_cli
from tests.conftest import count_rows

GOOD = """
warehouse: {url: "sqlite:///%(db)s"}
sources:
  syn-a:
    kind: synthetic
    base_url: http://127.0.0.1:9
    schedule: "*/5 * * * *"
    auth: {token: "${SYN_TOKEN:-fallback-token}"}
    options: {users: 20}
"""


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text) % {"db": tmp_path / "w.db"}, encoding="utf-8")
    return path


def test_env_interpolation_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SYN_TOKEN", "from-env-123")
    cfg = load_config(write(tmp_path, GOOD))
    source = cfg.sources["syn-a"]
    assert isinstance(source.auth.token, SecretStr)
    assert source.auth.token.get_secret_value() == "from-env-123"
    assert source.options.users == 20
    assert cfg.schedule_of(source) == ("*/5 * * * *", "UTC")
    assert "from-env-123" in cfg.secret_values()
    assert "from-env-123" not in repr(cfg)
    monkeypatch.delenv("SYN_TOKEN")
    assert load_config(write(tmp_path, GOOD)).sources["syn-a"].auth.token.get_secret_value() == \
        "fallback-token"


def test_example_config_is_valid(monkeypatch):
    for var in ("ABSORB_API_KEY", "ABSORB_USER", "ABSORB_PASSWORD", "ISPRING_CLIENT_ID",
                "ISPRING_CLIENT_SECRET", "UDEMY_CLIENT_ID", "UDEMY_CLIENT_SECRET",
                "UDEMY_ORGANIZATION_ID", "SPARKWISE_API_KEY", "MONOTREE_API_KEY"):
        monkeypatch.setenv(var, "x-" + var.lower())
    cfg = load_config("config.example.yaml")
    assert {s.kind for s in cfg.sources.values()} == {"absorb", "ispring", "udemy", "sessions",
                                                       "academy"}
    assert cfg.daemon.health_port == 8080
    assert "x-absorb_password" in cfg.secret_values()


def test_example_config_needs_only_the_enabled_sources_credentials(monkeypatch, tmp_path):
    """README set-up: copy config.example.yaml, fill in Absorb's credentials only (or leave
    the others empty, as .env.example does). The disabled sources are an error only where
    they are asked for by name."""
    for var in ("ISPRING_CLIENT_ID", "ISPRING_CLIENT_SECRET", "UDEMY_CLIENT_ID", "UDEMY_CLIENT_SECRET",
                "UDEMY_ORGANIZATION_ID", "SPARKWISE_API_KEY", "MONOTREE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("ABSORB_API_KEY", "ABSORB_USER", "ABSORB_PASSWORD"):
        monkeypatch.setenv(var, "x-" + var.lower())
    cfg = load_config("config.example.yaml")
    assert [s.kind for s in cfg.sources.values()] == ["absorb"]
    assert set(cfg.unusable) == {"ispring-main", "udemy-main", "sessions-main", "academy-main"}
    for var in ("ISPRING_CLIENT_ID", "UDEMY_CLIENT_ID", "SPARKWISE_API_KEY", "MONOTREE_API_KEY"):
        monkeypatch.setenv(var, "")  # as .env.example leaves them
    empty = load_config("config.example.yaml")
    assert [s.id for s in empty.sources.values() if s.enabled] == ["absorb-main"]
    path = tmp_path / "config.yaml"
    path.write_text(open("config.example.yaml", encoding="utf-8").read()
                    .replace("${LMS_SYNC_WAREHOUSE_URL:-sqlite:///lms_sync.db}",
                             f"sqlite:///{tmp_path / 'w.db'}"), encoding="utf-8")
    proc = run_cli("check", "--config", str(path), "--source", "udemy-main")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "environment variable UDEMY_CLIENT_SECRET is not set" in proc.stderr
    broken = path.read_text().replace("enabled: true", "enabled: yes-please", 1)
    path.write_text(broken)
    assert run_cli("check", "--config", str(path)).returncode == 2  # enabled ones stay strict


def test_health_port_defaults_to_the_images_variable(monkeypatch):
    """The image sets LMS_SYNC_HEALTH_PORT=8080 and its HEALTHCHECK probes it: a config
    without daemon.health_port must still serve it there (the container stayed unhealthy)."""
    monkeypatch.delenv("LMS_SYNC_HEALTH_PORT", raising=False)
    assert parse_config({}).daemon.health_port is None
    monkeypatch.setenv("LMS_SYNC_HEALTH_PORT", "8080")
    assert parse_config({}).daemon.health_port == 8080
    assert parse_config({"daemon": {"health_port": None}}).daemon.health_port is None


def test_crontab_weekday_numbers(tmp_path):
    from lms_sync.config import validate_cron

    assert validate_cron("0 3 * * 7") == "0 3 * * 7"  # Sunday, as in crontab
    with pytest.raises(ValueError, match="not valid"):
        validate_cron("0 25 * * *")


BAD_CASES = {
    "unknown-kind": (
        "sources:\n  a:\n    kind: moodle\n    base_url: http://x\n",
        ["unknown source kind 'moodle'", "sources.a.kind", "use one of"],
    ),
    "missing-env": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: http://x\n"
        "    auth: {token: \"${LMS_SYNC_TEST_UNSET_VAR}\"}\n",
        ["environment variable LMS_SYNC_TEST_UNSET_VAR is not set", "sources.a.auth.token"],
    ),
    "bad-cron": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: http://x\n    schedule: \"every hour\"\n",
        ["cron expression", "sources.a.schedule"],
    ),
    "wrong-type": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: http://x\n    options: {users: lots}\n",
        ["sources.a.options.users", "valid integer"],
    ),
    "unknown-option": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: http://x\n    options: {pagesize: 5}\n",
        ["unknown key", "sources.a.options.pagesize"],
    ),
    "bad-yaml": ("sources: [unclosed\n", ["not valid YAML", "config.yaml:"]),
    "missing-file": (None, ["not found", "--config"]),
    "bad-timezone": ("defaults: {timezone: Mars/Olympus}\n", ["unknown timezone", "defaults.timezone"]),
    "bad-warehouse-url": ("warehouse: {url: 'nonsense'}\n", ["warehouse.url"]),
    "source-id-twice": (
        "sources:\n  1:\n    kind: synthetic\n    base_url: http://x\n"
        "  '1':\n    kind: synthetic\n    base_url: http://y\n",
        ["source id '1' is given twice", "sources", "distinct id"],
    ),
    "http-not-a-mapping": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: http://x\n    http: 5\n",
        ["http must be a mapping", "sources.a.http"],
    ),
    "kind-not-a-string": (
        "sources:\n  a:\n    kind: [synthetic]\n    base_url: http://x\n",
        ["unknown source kind", "sources.a.kind"],
    ),
    "base-url-bad-port": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: 'https://host:abc'\n",
        ["is not an http(s) URL", "sources.a.base_url"],
    ),
    "base-url-with-credentials": (
        "sources:\n  a:\n    kind: synthetic\n    base_url: 'https://me:pw-in-url-77@host'\n",
        ["must not carry credentials", "sources.a.base_url", "under auth"],
    ),
    "sqlite-folder-not-creatable": (
        "warehouse: {url: 'sqlite:////dev/null/x/w.db'}\n",
        ["cannot create the SQLite file's folder", "warehouse.url", "writable folder"],
    ),
    "postgres-driver-not-psycopg-3": (
        "warehouse: {url: 'postgresql+psycopg2://postgres:pw-drv-77@127.0.0.1:5432/test'}\n",
        ["PostgreSQL driver 'psycopg2' is not supported", "config.yaml: warehouse.url",
         "start the URL with postgresql+psycopg://"],
    ),
    "bad-postgres-connect-argument": (
        "warehouse: {url: 'postgresql+psycopg://postgres:pw-arg-77@127.0.0.1:5432/test"
        "?connect_timeout=abc'}\n",
        ["cannot reach the warehouse", "warehouse.url"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_config_is_one_line_exit_2(case, tmp_path):
    text, expected = BAD_CASES[case]
    path = tmp_path / "config.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    proc = run_cli("sync", "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lms-sync: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in expected:
        assert fragment in lines[0]
    assert "-77" not in proc.stderr  # a password in a URL is never echoed


def test_config_repr_hides_the_warehouse_password():
    cfg = parse_config({"warehouse": {"url": "postgresql+psycopg://u:HUNTER2PASS@h/db"}})
    for text in (repr(cfg), str(cfg), repr(cfg.warehouse), str(cfg.warehouse)):
        assert "HUNTER2PASS" not in text and "u:***@h/db" in text


def test_secret_typed_wrongly_is_not_echoed(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"sources": {"a": {"kind": "synthetic", "base_url": "http://x",
                                        "auth": {"token": ["hunter2-secret"]}}}})
    assert "hunter2" not in str(err.value)
    assert "sources.a.auth.token" in str(err.value)


def test_unknown_source_on_command_line(tmp_path):
    path = write(tmp_path, GOOD)
    proc = run_cli("sync", "--config", str(path), "--source", "nope")
    assert proc.returncode == 2
    assert "unknown source 'nope'" in proc.stderr and "syn-a" in proc.stderr


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL+psycopg"])
def test_a_postgres_url_without_a_driver_means_psycopg_3(scheme):
    cfg = parse_config({"warehouse": {"url": f"{scheme}://u:pw@db.example.com:5432/lms?sslmode=require"}})
    assert cfg.warehouse.url == "postgresql+psycopg://u:pw@db.example.com:5432/lms?sslmode=require"
    assert parse_config({"warehouse": {"url": "sqlite:///w.db"}}).warehouse.url == "sqlite:///w.db"


def test_a_bare_postgres_url_syncs_through_copy(postgres_warehouse, tmp_path):
    """``postgres://`` (as hosting providers hand it out) means psycopg 3, which COPY needs."""
    bare = postgres_warehouse.url.replace("postgresql+psycopg://", "postgres://")
    path = tmp_path / "config.yaml"
    path.write_text(f"warehouse: {{url: '{bare}', schema: {postgres_warehouse.schema}}}\n"
                    "sources:\n  syn:\n    kind: synthetic\n    base_url: http://127.0.0.1:9\n"
                    "    options: {users: 40}\n", encoding="utf-8")
    proc = run_cli("sync", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert count_rows(postgres_warehouse, learners) == 40


def test_batches_end_at_records_or_bytes_with_documented_defaults():
    warehouse = parse_config({}).warehouse
    assert (warehouse.batch_size, warehouse.batch_bytes) == (2500, 16 * 1024 * 1024)
    tuned = parse_config({"warehouse": {"batch_size": 200, "batch_bytes": 65536}}).warehouse
    assert (tuned.batch_size, tuned.batch_bytes) == (200, 65536)
    with pytest.raises(ConfigError):
        parse_config({"warehouse": {"batch_bytes": 10}})

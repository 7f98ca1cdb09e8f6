"""Config file loading (docs/contracts.md, "Config"): YAML + ``${VAR}`` interpolation + pydantic.

Every problem becomes one :class:`ConfigError` naming the file, the key path
and the fix. Per-kind ``auth`` and ``options`` are validated by the models the
connector declares (``Connector.Auth`` / ``Connector.Options``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from lms_sync.connectors import KINDS, connector_class
from lms_sync.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def validate_cron(expr: str, timezone: str = "UTC") -> str:
    """Raise ValueError unless ``expr`` is a 5-field crontab expression."""
    from lms_sync.cron import cron_trigger

    if len(expr.split()) != 5:
        raise ValueError(f"cron expression {expr!r} must have 5 fields (min hour day month dow)")
    try:
        cron_trigger(expr, timezone)
    except ValueError as exc:
        raise ValueError(f"cron expression {expr!r} is not valid: {exc}") from None
    return expr


def _validate_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r} (use an IANA name such as UTC)") from exc
    return value


class WarehouseConfig(_Model):
    url: str = Field(default="sqlite:///lms_sync.db", repr=False)  # may carry a password
    schema_: str | None = Field(default=None, alias="schema")
    batch_size: int = Field(default=2500, ge=1, le=100_000)
    """Records per transaction (with the stream's cursor)."""
    batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """A batch also ends when its records' encoded ``raw`` reaches this many bytes: big vendor
    rows make smaller batches, so memory per batch stays bounded."""
    reconnect_seconds: float = Field(default=120.0, ge=0, le=3600)
    """How long a run waits, retrying, for a warehouse whose connection was lost (a
    failover, a restart) before it fails."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        from sqlalchemy.engine import make_url

        try:
            shown = make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - not a URL: show nothing of it
            shown = "<not a database URL>"
        yield "url", shown
        yield from super().__repr_args__()


class LoggingConfig(_Model):
    format: Literal["json", "console"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class HttpSettings(_Model):
    """Per-source HTTP behaviour; defaults.http sets it for all sources."""

    timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=6, ge=1, le=20)
    max_wait_seconds: float = Field(default=60.0, ge=0)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    requests_per_second: float | None = Field(default=None, gt=0)


class DefaultsConfig(_Model):
    schedule: str = "0 */2 * * *"
    timezone: str = "UTC"
    http: HttpSettings = Field(default_factory=HttpSettings)
    parallel_sources: int | None = Field(default=None, ge=1, le=32)
    """Sources `lms-sync sync` runs at once (default: 8 on PostgreSQL, else 1)."""

    _tz = field_validator("timezone")(_validate_tz)


class IdentityConfig(_Model):
    hr_id_sources: list[str] | None = None
    """Sources whose HR ids are comparable; None means all."""
    email_domain_aliases: dict[str, str] = Field(default_factory=dict)
    """alias domain -> canonical domain, e.g. corp.example.com: example.com."""
    shared_mailboxes: list[str] = Field(default_factory=list)
    """Emails that never link people (training@, hr@ ...)."""


def _health_port_default() -> int | None:
    """``LMS_SYNC_HEALTH_PORT`` (the image sets 8080 and its HEALTHCHECK probes it), else off."""
    value = os.environ.get("LMS_SYNC_HEALTH_PORT", "").strip()
    return int(value) if value.isdigit() else None


class DaemonConfig(_Model):
    health_port: int | None = Field(default_factory=_health_port_default, ge=0, le=65535)
    health_host: str = "0.0.0.0"  # noqa: S104 - inside a container by design
    run_on_start: bool = False
    misfire_grace_seconds: int = Field(default=300, ge=1)
    jitter_seconds: int = Field(default=10, ge=0)
    shutdown_timeout_seconds: float = Field(default=60.0, ge=0)


class ProvisionConfig(_Model):
    """``sources.<id>.provision``: keep this source's vendor users in step (lms-sync provision)."""

    enabled: bool = True
    from_sources: list[str] | None = Field(default=None, min_length=1)
    """Sources whose live learners define who should exist; None: every other enabled one."""
    require_hr_id: bool = True
    deactivate_leavers: bool = True
    max_deactivate_fraction: float = Field(default=0.05, ge=0, le=1)
    schedule: str | None = None
    """Cron of the daemon's provisioning job; None: only `lms-sync provision` runs it."""

    @field_validator("require_hr_id")
    @classmethod
    def _hr_id_only(cls, value: bool) -> bool:
        if not value:  # a remoteId is what the vendor's completions name a person by
            raise ValueError("only true is supported: a person without an HR id has no id "
                             "the vendor's completions could name them by")
        return value


def _queue_url_default() -> str | None:
    """``LMS_SYNC_QUEUE_URL``, so many tenant files need not repeat the queue's address."""
    return os.environ.get("LMS_SYNC_QUEUE_URL", "").strip() or None


class ClusterConfig(_Model):
    """The worker pool (``lms-sync worker``, extra ``[cluster]``): where the job queue lives
    and how a failed run of this config's sources is retried."""

    queue_url: str | None = Field(default_factory=_queue_url_default, repr=False)
    queue_schema: str = Field(default_factory=lambda: os.environ.get("LMS_SYNC_QUEUE_SCHEMA")
                              or "lms_sync_queue", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    retries: int = Field(default=5, ge=0, le=100)
    retry_wait_seconds: float = Field(default=60.0, ge=0)
    """The first retry waits this long; each further one twice as long (at most an hour)."""


class SourceConfig(_Model):
    id: str
    kind: str
    base_url: str
    enabled: bool = True
    schedule: str | None = None
    timezone: str | None = None
    auth: BaseModel
    options: BaseModel
    http: HttpSettings
    fail_on_invalid_records: bool = False
    provision: ProvisionConfig | None = None

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def secret_values(self) -> list[str]:
        out = []
        for value in self.auth.__dict__.values():
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
        return out


class Config(_Model):
    warehouse: WarehouseConfig = Field(default_factory=WarehouseConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    defaults: DefaultsConfig = Field(default_factory=DefaultsConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    path: str = "<memory>"
    unusable: dict[str, ConfigError] = Field(default_factory=dict, exclude=True, repr=False)
    """Disabled sources whose settings are not valid (e.g. unset credentials), with why."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def secret_values(self) -> list[str]:
        """Every secret in the config, for the log redaction processor."""
        values = [v for s in self.sources.values() for v in s.secret_values()]
        for url in (self.warehouse.url, self.cluster.queue_url):
            password = _url_password(url) if url else None
            if password:
                values.append(password)
        return values

    def schedule_of(self, source: SourceConfig) -> tuple[str, str]:
        return (source.schedule or self.defaults.schedule, source.timezone or self.defaults.timezone)


_PSYCOPG = "postgresql+psycopg"


def postgres_driver(url: str, where: str) -> str:
    """``url`` with a bare PostgreSQL scheme made explicit as psycopg 3, the driver the COPY
    path needs; any other PostgreSQL driver is a ConfigError now rather than at the first batch."""
    scheme, sep, rest = url.partition("://")
    backend, _, driver = scheme.lower().partition("+")
    if not sep or backend not in {"postgresql", "postgres"}:
        return url
    if driver in {"", "psycopg"}:
        return f"{_PSYCOPG}://{rest}"
    raise ConfigError(f"the PostgreSQL driver {driver!r} is not supported (lms-sync needs psycopg 3)",
                      where, f"start the URL with {_PSYCOPG}:// and pip install 'lms-sync[postgres]'")


def _url_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - a bad URL is reported elsewhere
        return None


# --------------------------------------------------------------------------- loading


def default_config_path() -> str:
    return os.environ.get("LMS_SYNC_CONFIG") or "config.yaml"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, interpolate and validate a config file."""
    path = str(path or default_config_path())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found", fix="pass --config PATH or set LMS_SYNC_CONFIG"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config is not valid YAML ({problem})", where, "fix the syntax") from None
    return parse_config(tree if tree is not None else {}, path)


def parse_config(tree: Any, path: str = "<memory>", environ: dict[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML tree."""
    if not isinstance(tree, dict):
        raise ConfigError("config must be a mapping at the top level", path)
    env = os.environ if environ is None else environ
    sources_tree = tree.get("sources") or {}
    if not isinstance(sources_tree, dict):
        raise ConfigError("'sources' must be a mapping of source id to settings", f"{path}: sources")
    tree = _interpolate({k: v for k, v in tree.items() if k != "sources"}, env, path, ())
    try:
        cfg = Config.model_validate({**tree, "path": path})
    except ValidationError as exc:
        raise _as_config_error(exc, path, ()) from None
    cfg.warehouse.url = postgres_driver(cfg.warehouse.url, f"{path}: warehouse.url")
    try:
        validate_cron(cfg.defaults.schedule, cfg.defaults.timezone)
    except ValueError as exc:
        raise ConfigError(str(exc), f"{path}: defaults.schedule", "use e.g. '0 */2 * * *'") from None
    for source_id, settings in sources_tree.items():
        sid = str(source_id)
        if sid in cfg.sources or sid in cfg.unusable:  # 1 and "1": YAML keeps both, we could not
            raise ConfigError(f"source id {sid!r} is given twice", f"{path}: sources",
                              "give each source a distinct id")
        try:
            cfg.sources[sid] = _parse_source(
                sid, _interpolate(settings, env, path, ("sources", sid)), cfg, path)
        except ConfigError as exc:
            if not (isinstance(settings, dict) and settings.get("enabled") is False):
                raise
            # a disabled source may lack its credentials (config.example.yaml, .env.example):
            # it is only an error where it is asked for by name
            cfg.unusable[sid] = exc
    for source in cfg.sources.values():
        _check_from_sources(cfg, source, path)
    return cfg


def _valid_http_url(url: str) -> bool:
    """Whether httpx can send to ``url`` (a port that is a number, a host, no spaces)."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in {"http", "https"} and bool(parsed.host)


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("//")
    host, slash, tail = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{tail}" if sep else url


def _parse_source(source_id: str, tree: Any, cfg: Config, path: str) -> SourceConfig:
    loc = ("sources", source_id)
    where = f"{path}: {'.'.join(loc)}"
    if not _SOURCE_ID.match(source_id):
        raise ConfigError(
            f"source id {source_id!r} is not valid", where, "use letters, digits, '-', '_' or '.'"
        )
    if not isinstance(tree, dict):
        raise ConfigError("a source must be a mapping", where)
    kind = tree.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(
            f"unknown source kind {kind!r}", f"{where}.kind", f"use one of: {', '.join(KINDS)}"
        )
    try:
        cls = connector_class(kind)
    except ImportError:
        raise ConfigError(
            f"source kind {kind!r} is not available in this installation", f"{where}.kind"
        ) from None
    unknown = set(tree) - {
        "kind", "base_url", "enabled", "schedule", "timezone", "auth", "options", "http",
        "fail_on_invalid_records", "provision",
    }
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown key {key!r}", f"{where}.{key}", "remove it or check the spelling")
    if not tree.get("base_url"):
        raise ConfigError("base_url is required", f"{where}.base_url", "set the vendor's API URL")
    base_url = str(tree["base_url"])
    if not re.match(r"^https?://[^/\s]+", base_url) or not _valid_http_url(base_url):
        raise ConfigError(
            f"base_url {_without_userinfo(base_url)!r} is not an http(s) URL", f"{where}.base_url",
            "use e.g. https://rest.myabsorb.com",
        )
    if "@" in base_url.split("//", 1)[1].split("/", 1)[0]:
        raise ConfigError("base_url must not carry credentials", f"{where}.base_url",
                          "remove the user:password@ part and put credentials under auth")
    for key in ("auth", "options", "http"):
        if tree.get(key) is not None and not isinstance(tree[key], dict):
            raise ConfigError(f"{key} must be a mapping", f"{where}.{key}",
                              f"write {key}: followed by indented key: value lines")
    auth = _validate(cls.Auth, tree.get("auth") or {}, path, (*loc, "auth"))
    options = _validate(cls.Options, tree.get("options") or {}, path, (*loc, "options"))
    http = _validate(
        HttpSettings, {**cfg.defaults.http.model_dump(), **(tree.get("http") or {})}, path,
        (*loc, "http"),
    )
    source = _validate(
        SourceConfig,
        dict(
            id=source_id, kind=kind, base_url=base_url.rstrip("/"),
            enabled=tree.get("enabled", True), schedule=tree.get("schedule"),
            timezone=tree.get("timezone"), auth=auth, options=options, http=http,
            fail_on_invalid_records=tree.get("fail_on_invalid_records", False),
            provision=_parse_provision(cls, tree.get("provision"), path, loc),
        ),
        path, loc,
    )
    schedule, tz = cfg.schedule_of(source)
    try:
        _validate_tz(tz)
        validate_cron(schedule, tz)
    except ValueError as exc:
        raise ConfigError(str(exc), f"{where}.schedule", "use e.g. '*/30 * * * *'") from None
    return source


def _parse_provision(cls: Any, tree: Any, path: str, loc: tuple[str, ...]) -> ProvisionConfig | None:
    if tree is None:
        return None
    where = f"{path}: {'.'.join(loc)}.provision"
    if not cls.can_provision():
        able = [k for k in KINDS if _can_provision(k)]
        raise ConfigError(f"source kind {cls.kind!r} cannot provision users", where,
                          f"remove the provision block (kinds that can: {', '.join(able)})")
    if not isinstance(tree, dict):
        raise ConfigError("provision must be a mapping", where,
                          "write provision: followed by indented key: value lines")
    block = _validate(ProvisionConfig, tree, path, (*loc, "provision"))
    if block.schedule is not None:
        try:
            validate_cron(block.schedule)
        except ValueError as exc:
            raise ConfigError(str(exc), f"{where}.schedule", "use e.g. '30 6 * * *'") from None
    return block


def _can_provision(kind: str) -> bool:
    try:
        return connector_class(kind).can_provision()
    except ImportError:
        return False


def _check_from_sources(cfg: Config, source: SourceConfig, path: str) -> None:
    names = source.provision.from_sources if source.provision else None
    for i, name in enumerate(names or []):
        where = f"{path}: sources.{source.id}.provision.from_sources.{i}"
        if name == source.id:
            raise ConfigError("a source cannot provision from itself", where,
                              "name the sources whose learners should exist in it")
        if name not in cfg.sources and name not in cfg.unusable:
            raise ConfigError(f"unknown source {name!r}", where,
                              f"use one of: {', '.join(s for s in cfg.sources if s != source.id)}")


def _validate(model: type[BaseModel], data: Any, path: str, loc: tuple[str, ...]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _as_config_error(exc, path, loc) from None


def _as_config_error(exc: ValidationError, path: str, prefix: tuple[str, ...]) -> ConfigError:
    err = exc.errors()[0]
    loc = [*prefix, *(str(p) for p in err["loc"])]
    msg = err["msg"]
    if err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "auth" not in loc:  # never echo what someone typed into a credential
        msg = f"{msg} (got {_short(err.get('input'))})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(msg, f"{path}: {'.'.join(loc)}", "see config.example.yaml for the expected value")


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return type(value).__name__
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _interpolate(node: Any, env: dict[str, str] | os._Environ, path: str, loc: tuple) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, env, path, (*loc, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env, path, (*loc, str(i))) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set",
                f"{path}: {'.'.join(loc)}",
                f"export {name}=... (or write ${{{name}:-default}})",
            )
        return value

    return _VAR.sub(replace, node)

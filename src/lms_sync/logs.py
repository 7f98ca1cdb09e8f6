"""Structured logging (docs/contracts.md, "Logs"): structlog, one JSON object per line on stderr.

Configured once by :func:`configure`. The standard library's loggers (alembic,
httpx, apscheduler, warnings) are routed through the same processors, so every
line has the same format; alembic, httpx and apscheduler only from WARNING up
(``db upgrade`` logs the migrations it applies as ``db.migrated``). A redaction
processor replaces every configured secret value, wherever it hides (any key,
nested, inside a traceback), before the renderer sees the event. Tracebacks are
plain text: no local variables.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

import structlog

REDACTED = "***"
_SENSITIVE_KEYS = {"authorization", "password", "token", "access_token", "api_key", "secret",
                   "client_secret", "privatekey", "private_key", "x-api-key", "cookie"}


class Redactor:
    """A structlog processor that scrubs known secret values and sensitive keys."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            merged = set(self._secrets) | {v for v in values if v and len(v) >= 3}
            # longest first, so a secret containing another is replaced whole
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def clear(self) -> None:
        with self._lock:
            self._secrets = ()

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in _SENSITIVE_KEYS else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set):
            return [self.scrub(v) for v in value]
        if isinstance(value, bytes | bytearray):
            return self.scrub(value.decode("utf-8", "replace"))
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.scrub(str(value))

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return self.scrub(event)


redactor = Redactor()


def one_line(exc: BaseException) -> str:
    """An error as one line to print, log or store: its first line (a database error's own,
    not SQLAlchemy's wrapper of it), else its class name, with every configured secret
    replaced (a vendor's error body can quote the key it refused)."""
    exc = getattr(exc, "orig", None) or exc
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redactor.scrub(text or type(exc).__name__)


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,  # plain traceback text: never locals
        structlog.processors.UnicodeDecoder(),
        redactor,
    ]


def configure(
    fmt: str = "json", level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib logging; safe to call more than once."""
    redactor.add(secrets)
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    else:
        renderer = structlog.processors.JSONRenderer(default=str)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared_processors()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "lms_sync", **bound: Any) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name).bind(**bound)

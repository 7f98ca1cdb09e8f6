"""Auth hooks: static headers, Basic, and single-flight token auth.

Token auth fetches a token once and shares it among every concurrent request
of the source. On 401 the client calls :meth:`TokenAuth.refresh` with the
generation of the token it used: the first caller fetches a new token, the
others (who used the same stale generation) wait on the lock and then reuse
it, so 20 concurrent 401s cause one re-authentication, not 20 (which matters
on Absorb, where a new token invalidates the old one).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from lms_sync.logs import redactor


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float | None = None  # time.monotonic() deadline


class Auth:
    """Base: static credentials that cannot be refreshed."""

    refreshable = False
    rejected_fix = "check the source's auth settings (key, user, secret)"
    """The fix a CredentialsRejected names (a connector whose auth is partly guessed says which)."""

    def headers(self, client: httpx.Client) -> tuple[dict[str, str], int]:
        """Headers to send and the generation of the credential they carry."""
        return {}, 0

    def refresh(self, client: httpx.Client, failed_generation: int) -> None:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        return []


class HeaderAuth(Auth):
    def __init__(self, headers: dict[str, str], rejected_fix: str | None = None) -> None:
        self._headers = dict(headers)
        self.rejected_fix = rejected_fix or self.rejected_fix

    def headers(self, client: httpx.Client) -> tuple[dict[str, str], int]:
        return self._headers, 0

    def secrets(self) -> list[str]:
        return [v for v in self._headers.values() if v]


class BasicAuth(HeaderAuth):
    def __init__(self, username: str, password: str) -> None:
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
        super().__init__({"Authorization": f"Basic {encoded}"})
        self._parts = [password, encoded]

    def secrets(self) -> list[str]:
        return self._parts


class TokenAuth(Auth):
    """A token fetched by ``fetch`` and sent by ``header``, refreshed single-flight.

    ``fetch`` receives a plain httpx client (no auth of ours) and must raise
    :class:`~lms_sync.errors.SourceError` subclasses on failure.
    """

    refreshable = True

    def __init__(
        self,
        fetch: Callable[[httpx.Client], Token],
        header: Callable[[str], dict[str, str]] = lambda t: {"Authorization": f"Bearer {t}"},
        static_headers: dict[str, str] | None = None,
        renew_before_seconds: float = 60.0,
    ) -> None:
        self._fetch = fetch
        self._header = header
        self._static = dict(static_headers or {})
        self._renew_before = renew_before_seconds
        self._lock = threading.Lock()
        self._token: Token | None = None
        self._generation = 0
        self.fetches = 0

    def _expired(self) -> bool:
        tok = self._token
        return tok is None or (
            tok.expires_at is not None and time.monotonic() >= tok.expires_at - self._renew_before
        )

    def headers(self, client: httpx.Client) -> tuple[dict[str, str], int]:
        if self._expired():
            with self._lock:
                if self._expired():
                    self._renew(client)
        tok, gen = self._token, self._generation
        assert tok is not None
        return {**self._static, **self._header(tok.value)}, gen

    def refresh(self, client: httpx.Client, failed_generation: int) -> None:
        with self._lock:
            if self._generation == failed_generation:
                self._renew(client)

    def _renew(self, client: httpx.Client) -> None:
        self.fetches += 1
        self._token = self._fetch(client)
        redactor.add([self._token.value])
        self._generation += 1

    def secrets(self) -> list[str]:
        tok = self._token
        return [v for v in self._static.values() if v] + ([tok.value] if tok else [])

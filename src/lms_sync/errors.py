"""Every error lms-sync raises on purpose, grouped by what the caller should do.

    LmsSyncError
     ├── UserError ............ the person running lms-sync must fix something (exit 2)
     │    └── ConfigError ...... the config file or environment is wrong
     └── SourceError .......... one source failed; the others go on (exit 1)
          ├── RetriableError .. retry the request (429, 502/503/504, transport)
          ├── AuthError ....... re-authenticate once, then give up
          │    └── CredentialsRejected  the fresh credentials were refused too
          ├── RequestRejected . a 4xx that retrying cannot fix: fix the config
          ├── DataError ....... the vendor sent something we cannot parse
          │    └── IncompleteRead  the read is provably short: keep the cursor, delete nothing
          └── RecordError ..... one record is bad: skip it (or fail, if configured)

HTTP responses are turned into these in exactly one place:
:func:`lms_sync.http.errors.classify_response`.

Messages are one line: the source, the problem, the fix. They never carry
secrets: the HTTP layer only ever puts a URL *path* (no query string, no
userinfo) into a message.
"""

from __future__ import annotations


class LmsSyncError(Exception):
    """Base of every deliberate lms-sync error."""


class UserError(LmsSyncError):
    """Something the user must fix; the CLI prints one line and exits 2."""


class ConfigError(UserError):
    """The config file, a key in it, or an environment variable it names is wrong."""

    def __init__(self, what: str, where: str = "", fix: str = "") -> None:
        self.what, self.where, self.fix = what, where, fix
        text = what
        if where:
            text += f", {where}"
        if fix:
            text += f"; {fix}"
        super().__init__(text)


class SourceError(LmsSyncError):
    """A failure of one source; carries what an operator needs to act on it."""

    def __init__(
        self,
        message: str,
        *,
        source: str = "",
        path: str = "",
        status: int | None = None,
        fix: str = "",
    ) -> None:
        self.source, self.path, self.status, self.fix = source, path, status, fix
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.source:
            parts.append(f"source {self.source!r}")
        parts.append(self.message)
        where = []
        if self.status is not None:
            where.append(f"HTTP {self.status}")
        if self.path:
            where.append(self.path)
        text = ": ".join(parts)
        if where:
            text += f" ({' '.join(where)})"
        if self.fix:
            text += f"; {self.fix}"
        return text


class RetriableError(SourceError):
    """Transient: the same request may succeed later (429, 5xx, network)."""

    def __init__(self, *args, retry_after: float | None = None, **kw) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kw)


class AuthError(SourceError):
    """The vendor refused our credentials or token (401): re-authenticate."""


class CredentialsRejected(AuthError):
    """Credentials were refused even after a fresh authentication."""


class RequestRejected(SourceError):
    """A 4xx that retrying cannot fix (400, 403, 404, 422...): fix the config."""


class DataError(SourceError):
    """The vendor's body could not be parsed (bad JSON/XML, wrong shape, paging loop)."""


class IncompleteRead(DataError):
    """The stream read less than the vendor says there is (its own total, or a wave of
    404s). The rows read are kept; nothing is soft-deleted and the stream's cursor goes
    back to where the run started, so the next run reads the same window again."""


class RecordError(SourceError):
    """One record failed validation; it is skipped and counted."""

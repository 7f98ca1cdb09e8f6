"""The matching rules: which keys a learner links by (docs/contracts.md, "Identity").

* email key: trimmed, lower-case; the domain mapped through
  ``identity.email_domain_aliases`` (``jane@corp.example.com`` -> ``jane@example.com``).
  Emails in ``identity.shared_mailboxes`` (training@, hr@...) and empty emails never link.
* HR id key: trimmed and case-folded; an all-digit id also loses its leading zeros
  (``000123`` == ``123``: spreadsheets and HR exports drop or pad them freely), while an id
  with letters keeps them (``E00123`` != ``E123``). Values that mean "none" (``-``, ``n/a``,
  ``none``, ``null``, ``0``...) never link. Only sources in ``identity.hr_id_sources``
  compare HR ids (default: all).
* placeholders (``learners.is_placeholder``: Udemy's "Anonymized User") never link, not even
  by a manual override: each is a person of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LINK, APART = "link", "apart"
"""The two actions of an ``identity_overrides`` row: force together, keep apart."""

Keys = tuple[str | None, str | None]
"""(email key, HR key) of a learner; None where it never links."""

_NULL_HR_IDS = frozenset({"-", "--", "n/a", "na", "none", "null", "nil", "0", "?", "unknown"})


@dataclass(frozen=True)
class Rules:
    """The matching rules of ``identity`` in the config, normalized once."""

    aliases: dict[str, str] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()
    hr_sources: frozenset[str] | None = None

    @classmethod
    def from_config(cls, settings: Any) -> Rules:
        if settings is None:
            return cls()
        aliases = {str(k).strip().lower().lstrip("@"): str(v).strip().lower().lstrip("@")
                   for k, v in (settings.email_domain_aliases or {}).items()}
        plain = cls(aliases=aliases)
        shared = frozenset(k for k in (plain.email_key(m) for m in settings.shared_mailboxes or [])
                           if k)
        hr = settings.hr_id_sources
        return cls(aliases, shared, None if hr is None else frozenset(hr))

    def email_key(self, email: str | None) -> str | None:
        """The normalized email (aliases applied); None for an empty one."""
        value = (email or "").strip().lower()
        if not value:
            return None
        local, at, domain = value.rpartition("@")
        if at and domain in self.aliases:
            value = f"{local}@{self.aliases[domain]}"
        return value

    def hr_key(self, hr_id: str | None) -> str | None:
        return normalize_hr_id(hr_id)

    def keys(self, row: Any) -> Keys:
        """(email key, HR key) a learner row links by; None where it never links."""
        return self.keys_of(row.source_id, row.email, row.hr_id, row.is_placeholder)

    def keys_of(self, source_id: str, email: str | None, hr_id: str | None,
                is_placeholder: bool) -> Keys:
        if is_placeholder:
            return None, None
        ek = self.email_key(email) if email else None
        if ek is not None and (ek in self.shared or len(ek) > 320):  # 320: the column's width
            ek = None
        hk = None
        if hr_id and (self.hr_sources is None or source_id in self.hr_sources):
            hk = normalize_hr_id(hr_id)
            if hk is not None and len(hk) > 255:
                hk = None
        return ek, hk


def normalize_hr_id(value: str | None) -> str | None:
    """Trim and case-fold; all-digit ids lose leading zeros; "none"-like values -> None."""
    if not value:
        return None
    # runs of whitespace -> one space: split() and \s agree on what whitespace is
    key = (value if value.isalnum() else " ".join(value.split())).casefold()
    if key.isdigit():
        key = key.lstrip("0") or "0"
    if not key or key in _NULL_HR_IDS:
        return None
    return key

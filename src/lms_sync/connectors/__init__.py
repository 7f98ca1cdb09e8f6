"""Connector registry: ``kind`` -> connector class, imported lazily.

Adding a vendor is one module in this package plus one line here.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lms_sync.connectors.base import Connector

KINDS: dict[str, str] = {
    "absorb": "lms_sync.connectors.absorb:AbsorbConnector",
    "ispring": "lms_sync.connectors.ispring:IspringConnector",
    "udemy": "lms_sync.connectors.udemy:UdemyConnector",
    "sessions": "lms_sync.connectors.sessions:SessionsConnector",
    "academy": "lms_sync.connectors.academy:AcademyConnector",
}
"""Every kind lms-sync knows. Tests register extra kinds (a test connector) here too."""


def available_kinds() -> list[str]:
    """The kinds whose module is importable in this installation."""
    out = []
    for kind, target in KINDS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(kind)
    return out


def connector_class(kind: str) -> type[Connector]:
    """The connector class for ``kind``; KeyError if the kind is unknown."""
    module_name, _, attr = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)

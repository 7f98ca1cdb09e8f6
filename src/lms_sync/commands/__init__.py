"""Sub-commands beyond the core ones. Every module here is imported by the CLI and
registers itself with ``@command`` (one module per command group)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable

from lms_sync.cli import EXTRA_COMMANDS

Register = Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]


def command(fn: Register) -> Register:
    """Decorator: ``fn(subparsers, common_parent)`` adds a sub-command."""
    EXTRA_COMMANDS.append(fn)
    return fn


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")

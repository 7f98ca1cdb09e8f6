"""Decode the items of a JSON array body one at a time.

A vendor that answers with one bare array whose length grows with the customer
(Sparkwise's completions of a window) would otherwise be held twice over: parsed
Python objects take several times the bytes of their JSON text (3,303 completions:
2.4 MB of text). Holding the text and decoding each item as it is consumed keeps
one item parsed at a time.

Object keys are interned: one ``json.loads`` shares the key strings of all its items,
while items decoded one by one would each bring their own (~1 KB a completion, for
every record in flight).

An item that is not valid JSON raises ``ValueError`` when it is reached, after the
items before it: callers checkpoint after a whole array, so a later run reads it again.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    intern = sys.intern
    return {intern(k): v for k, v in pairs}


_decode = json.JSONDecoder(object_pairs_hook=_object).raw_decode


def is_array(text: str) -> bool:
    """Whether ``text`` starts (after whitespace) like a JSON array."""
    return text[_WS.match(text).end():][:1] == "["


def items(text: str) -> Iterator[Any]:
    """Each item of the JSON array ``text``, decoded when it is reached."""
    skip = _WS.match
    i = skip(text).end()
    if text[i:i + 1] != "[":
        raise ValueError("not a JSON array")
    i = skip(text, i + 1).end()
    if text[i:i + 1] != "]":
        while True:
            try:
                value, i = _decode(text, i)
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON at character {exc.pos}") from None
            yield value
            i = skip(text, i).end()
            sep = text[i:i + 1]
            if sep == "]":
                break
            if sep != ",":
                raise ValueError(f"expected ',' or ']' at character {i}")
            i = skip(text, i + 1).end()
    if skip(text, i + 1).end() != len(text):
        raise ValueError(f"unexpected data after the array at character {i + 1}")

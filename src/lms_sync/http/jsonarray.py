"""Decode the items of a JSON array body one at a time, from text or a stream.

A vendor that answers with one bare array whose length grows with the customer
(Sparkwise's completions of a window) would otherwise be held twice over: parsed
Python objects take several times the bytes of their JSON text (3,303 completions:
2.4 MB of text), and the text itself grows with the customer. The client spools such
a body to a temporary file (:meth:`HttpClient.get_json_array`) and this module reads it
back in chunks, decoding each item as it is consumed: one chunk and one item are held.

Object keys are interned: one ``json.loads`` shares the key strings of all its items,
while items decoded one by one would each bring their own (~1 KB a completion, for
every record in flight).

An item that is not valid JSON raises ``ValueError`` when it is reached, after the
items before it: callers checkpoint after a whole array, so a later run reads it again.
A text that simply stops (a body cut short) raises :class:`Truncated`, a ``ValueError``.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR_END = re.compile(r"[,\]}\s]")
CHUNK = 1 << 16
"""Characters read at a time from a stream."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    intern = sys.intern
    return {intern(k): v for k, v in pairs}


_decode = json.JSONDecoder(object_pairs_hook=_object).raw_decode


class Truncated(ValueError):
    """The JSON text ends before its value does: it was cut short."""


# what may be left where decoding stopped when a text is cut inside a value: nothing, the
# start of a literal or a number, an escape (strings still open are told by the message)
_OPEN_AT_END = re.compile(r"(?:t(?:r(?:u)?)?|f(?:a(?:l(?:s)?)?)?|n(?:u(?:l)?)?"
                          r"|-?\d*(?:\.\d*)?(?:[eE][-+]?\d*)?|\\?u[0-9a-fA-F]{0,4}|\\)\s*")


def is_cut(exc: json.JSONDecodeError) -> bool:
    """Whether a decoding error is the text running out inside a value (a text cut short)
    rather than something wrong within it."""
    return exc.msg.startswith("Unterminated string") or bool(_OPEN_AT_END.fullmatch(exc.doc, exc.pos))


class _Window:
    """The part of a text stream not decoded yet, refilled a chunk at a time."""

    def __init__(self, stream: IO[str], chunk: int) -> None:
        self.stream, self.chunk = stream, max(1, chunk)
        self.text, self.pos, self.base, self.eof = "", 0, 0, False

    def more(self) -> bool:
        """Append a chunk (dropping what was decoded); False at the end of the stream."""
        data = "" if self.eof else self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.base += self.pos
        self.text, self.pos = self.text[self.pos:] + data, 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end), not consumed."""
        while True:
            self.pos = _after_ws(self.text, self.pos)
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def value(self) -> Any:
        """Decode the JSON value at the current position (after ``peek``)."""
        if self.text[self.pos:self.pos + 1] not in ("{", "[", '"', ""):
            # a number or literal: a chunk may end inside it ("-0." of "-0.5") where a
            # shorter prefix decodes, so read on to the character that ends it
            while not _SCALAR_END.search(self.text, self.pos) and self.more():
                pass
        while True:
            try:
                value, end = _decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # only an error at the chunk's end (or a string still open there) can be
                # the cut; one before it is in the body, so the rest is not read for it
                near_end = exc.pos >= len(self.text) - 8 or exc.msg.startswith("Unterminated")
                if near_end and self.more():
                    continue
                error = Truncated if near_end and is_cut(exc) else ValueError
                raise error(f"invalid JSON at character {self.base + exc.pos}") from None
            self.pos = end
            return value

    @property
    def at(self) -> int:
        return self.base + self.pos


def items(source: str | IO[str], chunk: int = CHUNK) -> Iterator[Any]:
    """Each item of the JSON array ``source`` (text, or a text stream read ``chunk``
    characters at a time), decoded when it is reached."""
    w = _Window(io.StringIO(source) if isinstance(source, str) else source, chunk)
    if w.peek() != "[":
        raise ValueError("not a JSON array")
    w.pos += 1
    if w.peek() == "]":
        w.pos += 1
    else:
        while True:
            w.peek()
            yield w.value()
            sep = w.peek()
            if sep == "":
                raise Truncated(f"expected ',' or ']' at character {w.at} (the text ends there)")
            if sep == "]":
                w.pos += 1
                break
            if sep != ",":
                raise ValueError(f"expected ',' or ']' at character {w.at}")
            w.pos += 1
    if w.peek() != "":
        raise ValueError(f"unexpected data after the array at character {w.at}")


def is_array(head: str) -> bool:
    """Whether text starting with ``head`` starts (after whitespace) like a JSON array."""
    return head[_after_ws(head, 0):][:1] == "["


def _after_ws(text: str, pos: int) -> int:
    """Where the whitespace from ``pos`` on ends."""
    found = _WS.match(text, pos)
    return found.end() if found else pos  # "zero or more" matches everywhere: always found

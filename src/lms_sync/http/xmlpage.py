"""XML list pages, read safely (vendor-free; issue #19's shared layer).

A vendor that answers lists in XML (``<response><items><item>…</item></items>
<nextPageToken>…</nextPageToken></response>``) gets its rows from :class:`XmlRows`:
lxml iterparse with entities, DTD loading and the network off, each row cleared once
read; a body that declares a DTD is refused, as is one that is not well-formed (a
DataError naming the source, path and page). :meth:`XmlRows.decoder` is the ``decode``
of :meth:`HttpClient.paginate <lms_sync.http.client.HttpClient.paginate>` for such a
list (``records="rows"``, the paginator's ``token_key="next"``); :func:`xml_text` reads
an XML error body for an error describer.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from lxml import etree

from lms_sync.errors import DataError

SAFE_XML = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class XmlRows:
    """The ``row_tag`` elements of one XML page (``<root><list><row>``) as dicts, streamed;
    ``next_token`` (the text of one of ``token_tags`` directly under the root) is set once
    the rows are exhausted. A child with children is a dict, or a list when its children
    share one tag and there are several or it is their plural (``<fields><field>``); an
    empty element is None. Subclasses set ``token_tags`` and the ``fix``es of a broken page
    and of a DTD."""

    token_tags: tuple[str, ...] = ("nextPageToken",)
    fix = "the vendor sent a broken page; retry later or report it to the vendor"
    dtd_fix = "check that base_url points at the vendor's API"

    def __init__(self, body: bytes, row_tag: str, *, source: str = "", path: str = "",
                 page: int = 1) -> None:
        self.body, self.row_tag, self.source, self.path, self.page = body, row_tag, source, path, page
        self.next_token: str | None = None

    @classmethod
    def decoder(cls, row_tag: str, *, source: str = "", path: str = "",
                ) -> Callable[[httpx.Response], dict[str, Any]]:
        """A ``decode`` for ``HttpClient.paginate``: each page as ``{"rows": [its rows],
        "next": its token}``, the pages numbered from 1 in errors. The page's rows are held
        as a list of dicts (its tree is still never whole)."""
        numbers = itertools.count(1)

        def decode(response: httpx.Response) -> dict[str, Any]:
            rows = cls(response.content, row_tag, source=source, path=path, page=next(numbers))
            return {"rows": list(rows), "next": rows.next_token}

        return decode

    def _error(self, problem: str, fix: str | None = None) -> DataError:
        return DataError(f"page {self.page} of {self.path or 'the response'}: {problem}",
                         source=self.source, fix=fix or self.fix)

    def _refuse_dtd(self, el: Any) -> None:
        if el is not None and el.getroottree().docinfo.doctype:
            raise self._error("the XML declares a DTD/entities; refused", self.dtd_fix)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        tags = (self.row_tag, *self.token_tags)
        events = etree.iterparse(io.BytesIO(self.body), events=("end",), tag=tags, **SAFE_XML)
        first = True
        try:
            for _, el in events:
                if first:
                    self._refuse_dtd(el)
                    first = False
                parent = el.getparent()
                grand = parent.getparent() if parent is not None else None
                if el.tag == self.row_tag:
                    if grand is not None and grand.getparent() is None:  # <response><list><row>
                        yield element_dict(el)
                        el.clear(keep_tail=False)
                        while el.getprevious() is not None:
                            del parent[0]
                elif parent is not None and grand is None:  # a direct child of the root
                    self.next_token = (el.text or "").strip() or self.next_token
            self._refuse_dtd(events.root)
        except etree.XMLSyntaxError as exc:
            detail = (getattr(exc, "msg", None) or str(exc)).splitlines()[0][:200]
            raise self._error(f"the XML is not well-formed ({detail})") from None


def element_dict(el: Any) -> dict[str, Any]:
    """An element's children as a dict (see :class:`XmlRows`)."""
    out: dict[str, Any] = {}
    for child in el:
        if isinstance(child.tag, str):
            out[child.tag] = _element_value(child) if len(child) else (child.text or "").strip() or None
    return out


def _element_value(el: Any) -> Any:
    kids = [c for c in el if isinstance(c.tag, str)]
    if not kids:
        return (el.text or "").strip() or None
    if len({c.tag for c in kids}) == 1 and (len(kids) > 1 or el.tag == kids[0].tag + "s"):
        return [_element_value(c) for c in kids]  # <fields><field>...: a list
    return element_dict(el)


def xml_text(body: bytes, tags: tuple[str, ...]) -> str | None:
    """The texts of the root's ``tags`` children joined by ``: `` (an XML error body such as
    ``<response><code/><message/></response>``); None when it is not XML or declares a DTD."""
    try:
        root = etree.fromstring(body, etree.XMLParser(**SAFE_XML))
    except etree.XMLSyntaxError:
        return None
    if root.getroottree().docinfo.doctype:
        return None
    parts = [(root.findtext(t) or "").strip() for t in tags]
    return ": ".join(p for p in parts if p)[:300] or None

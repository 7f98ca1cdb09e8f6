"""The shared XML page decoder (lms_sync.http.xmlpage), value by value."""

from __future__ import annotations

import httpx
import pytest

from lms_sync.errors import DataError
from lms_sync.http.xmlpage import XmlRows, xml_text

PAGE = (b'<?xml version="1.0"?><response><items><item><id>1</id><name> A </name><empty/>'
        b'<tags><tag>x</tag></tags></item><item><id>2</id></item></items>'
        b'<nextPageToken>t2</nextPageToken></response>')


def test_decoder_gives_the_rows_and_the_token_and_numbers_pages_in_errors():
    decode = XmlRows.decoder("item", source="src", path="/items")
    first = httpx.Response(200, content=PAGE)
    assert decode(first) == {"rows": [{"id": "1", "name": "A", "empty": None, "tags": ["x"]}, {"id": "2"}],
                             "next": "t2"}
    assert first.content == PAGE  # the body stays readable once its stream is dropped
    with pytest.raises(DataError, match="page 2 of /items: the XML is not well-formed"):
        decode(httpx.Response(200, content=PAGE[:60]))


def test_a_last_page_has_no_token_and_a_dtd_is_refused():
    last = XmlRows.decoder("item")(httpx.Response(200, content=b"<r><items/></r>"))
    assert last == {"rows": [], "next": None}
    body = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "x">]><r><items/></r>'
    with pytest.raises(DataError, match="DTD"):
        XmlRows.decoder("item")(httpx.Response(200, content=body))
    assert xml_text(body, ("code",)) is None
    assert xml_text(b"<r><code>E1</code><message> no </message></r>", ("code", "message")) == "E1: no"

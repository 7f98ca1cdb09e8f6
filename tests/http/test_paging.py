"""Paginators, without HTTP."""

from __future__ import annotations

import pytest

from lms_sync.errors import DataError
from lms_sync.http import NextUrlPaginator, PageNumberPaginator, PageTokenPaginator


def test_page_number_from_zero_stops_on_short_page():
    p = PageNumberPaginator("_offset", start=0, page_size=3)
    sent = []
    for count in (3, 3, 1):
        assert p.has_next
        sent.append(p.next_request().params)
        p.update(count=count)
    assert sent == [{"_offset": 0}, {"_offset": 1}, {"_offset": 2}]
    assert not p.has_next and p.pages == 3


def test_page_number_from_one_stops_on_empty_page_or_total_pages():
    p = PageNumberPaginator("page", start=1)
    p.update(count=5)
    assert p.has_next and p.next_request().params == {"page": 2}
    p.update(count=0)
    assert not p.has_next
    q = PageNumberPaginator("page", start=0)
    q.update(count=200, total_pages=2)
    assert q.has_next
    q.update(count=200, total_pages=2)
    assert not q.has_next


def test_page_number_guard_against_endless_full_pages():
    p = PageNumberPaginator("_offset", start=0, page_size=2, max_page=5)
    with pytest.raises(DataError, match="past page 5"):
        for _ in range(10):
            p.update(count=2)


def test_next_url_loop_guard():
    p = NextUrlPaginator()
    assert p.next_request().url is None
    p.update(count=10, next_url="http://h/x?page=2")
    assert p.next_request().url == "http://h/x?page=2"
    p.update(count=10, next_url="http://h/x?page=3")
    with pytest.raises(DataError, match="same next link twice"):
        p.update(count=10, next_url="http://h/x?page=2")
    done = NextUrlPaginator()
    done.update(count=1, next_url=None)
    assert not done.has_next


def test_page_token_loop_guard():
    p = PageTokenPaginator("pageToken")
    assert p.next_request().params == {}
    p.update(count=1, next_token="abc")
    assert p.next_request().params == {"pageToken": "abc"}
    p.update(count=1, next_token="def")
    with pytest.raises(DataError, match="same page token twice"):
        p.update(count=1, next_token="abc")
    p2 = PageTokenPaginator()
    p2.update(count=0, next_token="")
    assert not p2.has_next

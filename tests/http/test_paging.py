"""Paginators, without HTTP."""

from __future__ import annotations

import logging

import pytest

from lms_sync.errors import DataError
from lms_sync.http import (
    NextUrlPaginator,
    PageNumberPaginator,
    PageTokenPaginator,
    SortGuard,
    SortValuePaginator,
)
from lms_sync.logs import get_logger


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


def test_total_pages_decides_over_a_short_page():
    """A vendor serving fewer rows a page than asked: the body's page count is trusted."""
    p = PageNumberPaginator("page", start=0, page_size=200)
    for _ in range(3):
        assert p.has_next
        p.update(count=100, total_pages=3)
    assert not p.has_next and p.pages == 3
    q = PageNumberPaginator("page", start=0, page_size=200)
    q.update(count=0, total_pages=3)  # an empty page still ends it
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


API = "https://acme.udemy.com/api-2.0/organizations/9488/"


def test_next_link_on_another_origin_is_rebased_onto_the_configured_one(caplog):
    caplog.set_level(logging.INFO)
    p = NextUrlPaginator(API, source="u", log=get_logger("test"))
    # Udemy's documented example (docs/vendors/udemy.md, "Paging"): a call to <org>.udemy.com
    # gets its next page on learning.udemy.com
    p.update(count=12, next_url="https://learning.udemy.com/api-2.0/organizations/9488/courses/list/?page=2")
    assert p.next_request().url == "https://acme.udemy.com/api-2.0/organizations/9488/courses/list/?page=2"
    p.update(count=12, next_url="http://user:pw@ACME.udemy.com:443/api-2.0/organizations/9488/"
                                "courses/list/?page=3&page_size=12#frag")
    assert p.next_request().url == (
        "https://acme.udemy.com/api-2.0/organizations/9488/courses/list/?page=3&page_size=12")
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert p.rebased == 2 and len(logged) == 1  # told once, with no userinfo
    assert {k: logged[0][k] for k in ("event", "origin", "to", "path")} == {
        "event": "http.next_rebased", "origin": "https://learning.udemy.com",
        "to": "https://acme.udemy.com", "path": "/api-2.0/organizations/9488/courses/list/"}
    # same origin (default port written out, or a relative link): followed as given
    p.update(count=12, next_url="https://acme.udemy.com:443/api-2.0/organizations/9488/x/?page=4")
    assert p.next_request().url == "https://acme.udemy.com:443/api-2.0/organizations/9488/x/?page=4"
    p.update(count=12, next_url="/api-2.0/organizations/9488/x/?page=5")
    assert p.next_request().url == "https://acme.udemy.com/api-2.0/organizations/9488/x/?page=5"
    assert p.rebased == 2 and p.has_next


def test_next_link_gets_back_the_parameters_it_leaves_out():
    first = {"fields[course]": "@all", "page": 1, "page_size": 100}
    p = NextUrlPaginator(API, params=first)
    p.update(count=100, next_url="https://learning.udemy.com/api-2.0/organizations/9488/courses/list/?page=2")
    assert p.next_request().url == ("https://acme.udemy.com/api-2.0/organizations/9488/courses/list/"
                                    "?fields%5Bcourse%5D=%40all&page=2&page_size=100")
    p.update(count=100, next_url="/api-2.0/organizations/9488/courses/list/?page=3&page_size=50#x")
    assert p.next_request().url == ("https://acme.udemy.com/api-2.0/organizations/9488/courses/list/"
                                    "?fields%5Bcourse%5D=%40all&page=3&page_size=50")  # the link wins


@pytest.mark.parametrize("link", [
    "https://evil.example/collect/?page=2",                                    # outside the API
    "https://learning.udemy.com/api-2.0/organizations/1/courses/list/?page=2",  # another org
    "https://learning.udemy.com/api-2.0/organizations/94880/courses/list/",    # a prefix, not a path
    "https://acme.udemy.com/api-2.0/organizations/9488/../1/courses/list/",    # dot segments
    "https://evil.example/api-2.0/organizations/9488/%2e%2e/%2E%2E/admin/",    # encoded
    "https://evil.example/api-2.0/organizations/9488/..%2f..%2fadmin/",         # encoded slash
    "https://evil.example:99999/api-2.0/organizations/9488/x/",               # not a URL
])
def test_next_link_outside_the_api_path_is_refused(link, caplog):
    caplog.set_level(logging.INFO)
    p = NextUrlPaginator(API, source="u", log=get_logger("test"))
    with pytest.raises(DataError, match="source 'u'") as exc:
        p.update(count=12, next_url=link)
    assert "next link" in str(exc.value) and "\n" not in str(exc.value)
    assert "evil.example" not in str(exc.value)  # the path only, never the host
    assert caplog.records == [] and p.next_request().url is None


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


def _read_by_value(rows: dict[str, int], size: int, edit=None, ignore_offset: bool = False,
                   max_page: int = 65535) -> list[str]:
    """Read ``rows`` (id -> value) as a vendor serves them: sorted by (value, id), filtered
    by value >= bound, paged by page number; ``edit(page_count, rows)`` changes rows between
    pages. Returns the ids the caller keeps, in order."""
    p = SortValuePaginator("_offset", page_size=size, max_page=max_page)
    kept: list[str] = []
    while p.has_next:
        page = p.next_request().params["_offset"]
        listed = sorted(((v, k) for k, v in rows.items() if p.bound is None or v >= p.bound))
        start = 0 if ignore_offset else page * size
        served = [(k, v) for v, k in listed[start:start + size]]
        p.update(count=len(served), keys=served)
        kept += [k for k, _ in served if k not in p.repeated]
        if edit:
            edit(p.pages, rows)
    return kept


def test_sort_value_paging_reads_a_row_edited_meanwhile_and_skips_none():
    rows = {f"r{i:02d}": i for i in range(30)}

    def edit(pages: int, rows: dict[str, int]) -> None:
        if pages == 1:
            rows["r02"] = 100  # read on page 1, edited: it moves to the end of the list

    kept = _read_by_value(dict(rows), 10, edit)
    assert set(kept) == set(rows) and kept.count("r02") == 2 and len(kept) == 31
    # page numbers over the same list lose the row that shifted back across a page edge
    shifted, p, numbered = dict(rows), PageNumberPaginator("_offset", 0, page_size=10), []
    while p.has_next:
        listed = [k for _, k in sorted((v, k) for k, v in shifted.items())]
        page = listed[p.next_request().params["_offset"] * 10:][:10]
        p.update(count=len(page))
        numbered += page
        edit(p.pages, shifted)
    assert "r10" not in numbered


def test_sort_value_paging_walks_a_run_of_one_value_longer_than_a_page():
    rows = {f"a{i}": 1 for i in range(3)} | {f"t{i:02d}": 5 for i in range(12)} | {"z": 9}
    kept = _read_by_value(rows, 5)
    assert sorted(kept) == sorted(rows)  # each once


def test_sort_value_paging_refuses_a_vendor_that_ignores_the_page_number_in_a_run():
    rows = {f"t{i:02d}": 5 for i in range(12)}
    with pytest.raises(DataError, match="paging loop"):
        _read_by_value(rows, 5, ignore_offset=True)
    assert sorted(_read_by_value({f"r{i}": i for i in range(12)}, 5, ignore_offset=True)) == \
        sorted(f"r{i}" for i in range(12))  # distinct values need no page numbers
    with pytest.raises(DataError, match="past page 1"):
        _read_by_value(rows, 5, max_page=1)


def test_sort_guard_within_a_page_and_across_pages():
    g = SortGuard()
    assert g.ordered([1, 1, 2, None, 3]) and g.ordered([3, 4]) and g.ordered([])
    assert not g.ordered([5, 4])  # within a page
    h = SortGuard()
    assert h.ordered([1, 5]) and not h.ordered([4, 6])  # below the last page's last value
    assert SortGuard().ordered([None, 2, None, 2])  # None is not compared
    assert not SortGuard().ordered(["2026-03-02", "2026-03-01"])


# ------------------------------------------------------------- update_state: pages as fetched


def test_paginators_read_their_facts_from_the_page_by_key():
    from lms_sync.http.paging import Page

    numbers = PageNumberPaginator("page", start=0, page_size=10, total_pages_key="data.totalPages")
    numbers.update_state(Page("/u", [{}] * 3, {"data": {"totalPages": 2}}))
    assert numbers.has_next  # a short page, but the body says two pages
    numbers.update_state(Page("/u", [{}] * 3, {"data": {"totalPages": 2}}))
    assert not numbers.has_next

    links = NextUrlPaginator(next_key="links.next")
    links.update_state(Page("/u", [{}], {"links": {"next": "https://x/u?page=2"}}))
    assert links.next_request().url == "https://x/u?page=2"
    links.update_state(Page("/u", [], {"links": {"next": "https://x/u?page=3"}}))
    assert not links.has_next  # an empty page ends the walk whatever its link says

    tokens = PageTokenPaginator("pageToken", token_key=lambda body: body.get("token"))
    tokens.update_state(Page("/u", [{}], {"token": "t1"}))
    assert tokens.next_request().params == {"pageToken": "t1"}
    with pytest.raises(DataError, match="same page token twice"):
        tokens.update_state(Page("/u", [{}], {"token": "t1"}))


def test_sort_value_paginator_sends_its_bound_and_drops_rows_read_before():
    from lms_sync.http.paging import Page

    p = SortValuePaginator("_offset", page_size=2, key=lambda r: (r["id"], r["v"]),
                           where=lambda bound: {"_filter": f"v ge {bound}"})
    assert p.next_request().params == {"_offset": 0}  # no bound yet: the whole list
    first = [{"id": "a", "v": 1}, {"id": "b", "v": 2}]
    p.update_state(Page("/l", first))
    assert p.fresh(first) == first
    assert p.next_request().params == {"_filter": "v ge 2", "_offset": 0}
    again = [{"id": "b", "v": 2}, {"id": "c", "v": 3}]  # b comes back at the head of v >= 2
    p.update_state(Page("/l", again))
    assert p.fresh(again) == [{"id": "c", "v": 3}]

def test_counted_page_numbers_total_pages_then_total_over_size_then_a_null_next():
    from lms_sync.http.paging import CountedPageNumberPaginator, Page

    def walk(bodies, size=2):
        p = CountedPageNumberPaginator(start=0, page_size=size, total_pages_key="data.totalPages",
                                       total_key="data.total", size_key="data.size", next_key="data.next")
        asked = []
        for body in bodies:
            if not p.has_next:
                break
            asked.append(p.next_request().params["page"])
            p.update_state(Page("/u", [{}] * len(body["data"].get("items", [])), body))
        return asked, p.has_next

    full = {"items": [1, 2]}
    # totalPages decides, though next is null on every page
    assert walk([{"data": {**full, "totalPages": 3, "next": None}}] * 5) == ([0, 1, 2], False)
    # else total over the size served (1 a page here, not the 2 asked)
    assert walk([{"data": {"items": [1], "total": 3, "size": 1}}] * 5) == ([0, 1, 2], False)
    # neither count: a null next ends it, a missing one leaves the short-page rule
    assert walk([{"data": {**full, "next": None}}] * 5) == ([0], False)
    assert walk([{"data": full}, {"data": full}, {"data": {"items": [1]}}] * 2) == ([0, 1, 2], False)

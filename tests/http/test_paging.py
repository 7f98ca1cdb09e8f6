"""Paginators, without HTTP."""

from __future__ import annotations

import pytest

from lms_sync.errors import DataError
from lms_sync.http import (
    NextUrlPaginator,
    PageNumberPaginator,
    PageTokenPaginator,
    SortGuard,
    SortValuePaginator,
)


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

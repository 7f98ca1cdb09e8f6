"""The page skim's walk (connectors/skim.py): which pages are skipped, when a walk starts
over, and what a run may save. The pipeline and HTTP side: tests/connectors/test_udemy_skim.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lms_sync.connectors.skim import (
    PageSkim,
    SavedPages,
    Step,
    code_digest,
    page_digest,
    record_code_files,
    skim_base,
)
from lms_sync.logs import get_logger

BASE = skim_base("udemy", "http://vendor.test", {"page_size": 2}, "progress")
BODIES = [b'{"page": 1}', b'{"page": 2}', b'{"page": 3}']


def saved(bodies: list[bytes], path: str = "p/", params: dict | None = None) -> SavedPages:
    """The pages of a clean walk of ``bodies``."""
    walk = PageSkim(BASE, None, get_logger("test"))
    walk.begin(path, params or {"page": 1})
    assert [walk.page(b) for b in bodies] == [Step.KEEP] * len(bodies)
    assert walk.end() is False and walk.usable and not walk.unchanged
    return SavedPages("run-1", walk.fingerprint, bytes(walk.digests), 10, 9, 1)


def walk(bodies: list[bytes], last: SavedPages, caplog) -> tuple[list[Step], bool | None, PageSkim]:
    """Steps of a walk over ``bodies`` until a restart, and ``end()`` if it got there."""
    skim = PageSkim(BASE, last, get_logger("test"))
    skim.begin("p/", {"page": 1})
    steps = []
    with caplog.at_level(logging.INFO):
        for body in bodies:
            steps.append(skim.page(body))
            if steps[-1] is Step.RESTART:
                return steps, None, skim
        return steps, skim.end(), skim


def changed(caplog) -> list[int]:
    return [r.msg["page"] for r in caplog.records
            if isinstance(r.msg, dict) and r.msg.get("event") == "stream.changed"]


def test_the_same_pages_are_all_skipped_and_the_stream_is_unchanged(caplog):
    last = saved(BODIES)
    steps, again, skim = walk(BODIES, last, caplog)
    assert (steps, again, skim.unchanged, skim.usable) == ([Step.SKIP] * 3, False, True, True)
    assert bytes(skim.digests) == last.digests and changed(caplog) == []


@pytest.mark.parametrize(("bodies", "steps", "again", "page"), [
    # the first page differs: read on from there, nothing to walk again
    ([b"x", *BODIES[1:]], [Step.KEEP, Step.KEEP, Step.KEEP], False, 1),
    # a later page differs: walk again from page 1
    ([BODIES[0], b"x", BODIES[2]], [Step.SKIP, Step.RESTART], None, 2),
    # one page more
    ([*BODIES, b"x"], [Step.SKIP] * 3 + [Step.RESTART], None, 4),
    # fewer pages, those there the same: walked again too (their rows were never read)
    (BODIES[:2], [Step.SKIP, Step.SKIP], True, 3),
])
def test_a_difference_is_read_in_order_from_the_first_page(bodies, steps, again, page, caplog):
    got, end, skim = walk(bodies, saved(BODIES), caplog)
    assert (got, end, skim.unchanged) == (steps, again, False)
    assert changed(caplog) == [page]
    skim.restart()  # the walk again: every page kept, and saved
    assert [skim.page(b) for b in bodies] == [Step.KEEP] * len(bodies)
    assert skim.end() is False and skim.usable
    assert bytes(skim.digests) == b"".join(page_digest(b) for b in bodies)


@pytest.mark.parametrize(("path", "params"), [("other/", {"page": 1}), ("p/", {"page": 2})])
def test_another_first_request_skims_nothing(path, params, caplog):
    last = saved(BODIES, path, params)
    steps, again, skim = walk(BODIES, last, caplog)
    assert (steps, again, skim.unchanged, skim.usable) == ([Step.KEEP] * 3, False, False, True)
    assert skim.fingerprint != last.fingerprint


def test_the_fingerprint_follows_kind_base_url_options_and_stream():
    bases = {skim_base("udemy", "http://vendor.test", {"page_size": 2}, "progress"),
             skim_base("absorb", "http://vendor.test", {"page_size": 2}, "progress"),
             skim_base("udemy", "http://other.test", {"page_size": 2}, "progress"),
             skim_base("udemy", "http://vendor.test", {"page_size": 3}, "progress"),
             skim_base("udemy", "http://vendor.test", {"page_size": 2}, "activity")}
    assert len(bases) == 5 and BASE in bases


def test_a_second_walk_in_one_read_is_not_saved(caplog):
    skim = PageSkim(BASE, saved(BODIES), get_logger("test"))
    for path in ("p/", "q/"):
        skim.begin(path, {"page": 1})
        [skim.page(b) for b in BODIES]
        skim.end()
    assert not skim.usable


def test_a_change_to_the_code_that_makes_records_changes_the_fingerprint(tmp_path) -> None:
    """Saved pages describe records made by some code: a normalizer fixed since voids them."""
    files = [tmp_path / "udemy_records.py", tmp_path / "canonical.py"]
    for f in files:
        f.write_text("LIMIT = 1\n")
    before = code_digest(files)
    assert code_digest(list(reversed(files))) == before  # the order they are found in: no matter
    files[0].write_text("LIMIT = 2\n")
    assert code_digest(files) != before
    files[0].rename(tmp_path / "udemy.py")  # the same bytes under another name
    assert code_digest([tmp_path / "udemy.py", files[1]]) not in {before, code_digest(files)}


def test_the_fingerprinted_code_is_every_connector_and_the_canonical_models() -> None:
    import lms_sync.canonical
    import lms_sync.connectors.udemy_records

    names = {p.name for p in record_code_files() if p.exists()}
    assert {"udemy.py", "udemy_records.py", "absorb_records.py", "construct.py", "rest.py",
            "canonical.py"} <= names
    assert Path(lms_sync.canonical.__file__).resolve() in {p.resolve() for p in record_code_files()}
    assert Path(lms_sync.connectors.udemy_records.__file__).resolve() in {
        p.resolve() for p in record_code_files()}

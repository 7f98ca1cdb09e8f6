"""Value tests of the vendor-free helpers of connectors/fields.py (the sorted walks of
connectors/walks.py run against the Absorb fake in test_absorb.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lms_sync.connectors.fields import calls_beside, path_template, percent, second_of, segment


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-03-01T10:20:30.999Z", datetime(2026, 3, 1, 10, 20, 30, tzinfo=UTC)),
    ("2026-03-01T12:20:30+02:00", datetime(2026, 3, 1, 10, 20, 30, tzinfo=UTC)),
    ("2026-03-01T10:20:30", datetime(2026, 3, 1, 10, 20, 30, tzinfo=UTC)),  # naive: UTC
    (None, None), ("", None), ("yesterday", None),
])
def test_second_of(value, expected):
    assert second_of(value) == expected


def test_segment_keeps_an_id_one_path_segment():
    assert segment("c/1 ?x=#%2F") == "c%2F1%20%3Fx%3D%23%252F"


def test_path_template_names_both_placeholders_and_no_other():
    assert path_template("/u/{a}/c/{b}", "a", "b") == "/u/{a}/c/{b}"
    for bad in ("/u/{a}", "u/{a}/{b}", "/u/{a}/{b}/{c}", "/u/{a}/{b}/{"):
        with pytest.raises(ValueError, match=r"from / with \{a\} and \{b\} \(and no other \{\}\)"):
            path_template(bad, "a", "b")


def test_percent_tolerance_is_a_parameter():
    assert percent(101, "score", tolerance=2) == 100
    with pytest.raises(ValueError, match="score 101 is not a percentage"):
        percent(101, "score")


class _Http:
    def map_concurrent(self, fn, items):
        return map(fn, items)


@pytest.mark.parametrize("held", [1, 3, 100])
def test_calls_beside_keeps_every_value_and_each_call_after_its_own(held):
    items = [("a", None), ("b", 1), ("c", None), ("d", None), ("e", 2), ("f", None)]
    out = list(calls_beside(_Http(), items, lambda job: job * 10, lambda got: [f"call{got}"], held))
    assert sorted(out) == sorted(["a", "b", "c", "d", "e", "f", "call10", "call20"])
    assert out.index("call10") > out.index("b") and out.index("call20") > out.index("e")

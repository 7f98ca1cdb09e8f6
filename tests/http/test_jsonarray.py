"""JSON array bodies decoded item by item: the pure decoder, then through the client."""

from __future__ import annotations

import io
import json

import pytest

from lms_sync.errors import DataError
from lms_sync.http import HttpClient
from lms_sync.http.jsonarray import Truncated, is_array, items


@pytest.mark.parametrize("value", [
    [], [1], [{"a": [1, {"b": None}]}, "x, ]", 2.5, True, None],
    [{"id": str(i), "nested": {"list": [i, i + 1]}} for i in range(50)],
])
def test_items_equal_json_loads(value):
    for text in (json.dumps(value), json.dumps(value, indent=2), f" \n{json.dumps(value)}\n "):
        assert list(items(text)) == value


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_items_from_a_stream_cut_anywhere(chunk):
    """Chunk ends fall inside numbers, literals, strings, escapes and whitespace."""
    value = [12345, -0.5e-3, True, None, "a \\\"quoted\\\" ] , text", {"k": [1, 22, 333]},
             "ünïcödé ✓", [], {}, 9007199254740993]
    for text in (json.dumps(value), json.dumps(value, indent=3, ensure_ascii=False)):
        assert list(items(io.StringIO(text), chunk=chunk)) == value


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_malformed_streams_are_refused_like_text(chunk):
    for text, error in [('[1 2]', "expected ',' or ']'"), ('[1,]', "invalid JSON"),
                        ('[1] [2]', "unexpected data after the array"), ('[1', "expected ',' or ']'"),
                        ('[{"id": 1}, {"id": ', "invalid JSON at character 19"), ('  ', "not a JSON array")]:
        with pytest.raises(ValueError, match=error):
            list(items(io.StringIO(text), chunk=chunk))


def test_an_error_mid_stream_is_reported_where_it_is_without_reading_on():
    stream = io.StringIO('[{"id": 1}, {"id": oops}, ' + '{"id": 2}, ' * 50_000 + '{"id": 3}]')
    decoded = items(stream, chunk=64)
    assert next(decoded) == {"id": 1}
    with pytest.raises(ValueError, match="invalid JSON at character 19"):
        next(decoded)
    assert stream.tell() < 1_000  # the ~550 KB after the bad item were not read


def test_items_are_decoded_only_when_reached():
    decoded = items('[{"id": 1}, {"id": 2}, {"id": oops}]')
    assert next(decoded) == {"id": 1}
    assert next(decoded) == {"id": 2}
    with pytest.raises(ValueError, match="invalid JSON at character"):
        next(decoded)


@pytest.mark.parametrize("text, error", [
    ('{"a": 1}', "not a JSON array"),
    ('[1 2]', "expected ',' or ']'"),
    ('[1,]', "invalid JSON"),
    ('[1] [2]', "unexpected data after the array"),
    ('[1', "expected ',' or ']'"),
    ('', "not a JSON array"),
])
def test_malformed_arrays_are_refused(text, error):
    with pytest.raises(ValueError, match=error):
        list(items(text))


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_a_text_cut_short_anywhere_is_told_from_one_broken_before_its_end(chunk):
    """A body cut short (asked for again by the client) raises Truncated wherever the cut
    falls; one broken before its end raises a plain ValueError (a vendor fault)."""
    text = json.dumps([{"id": "aé", "n": -12.5e-3, "ok": True, "x": None}, [1, "two", False]])
    for cut in range(1, len(text)):
        with pytest.raises(Truncated):
            list(items(io.StringIO(text[:cut]), chunk=chunk))
    for broken in ('[{"id": 1} {"id": 2}]', '[1, oops, 3]', '[1] [2]', '[1,]'):
        with pytest.raises(ValueError) as raised:
            list(items(io.StringIO(broken), chunk=chunk))
        assert not isinstance(raised.value, Truncated)


def test_is_array():
    assert is_array(" \n[1]") and is_array("[")
    assert not is_array('{"data": []}') and not is_array("") and not is_array("null")


def test_client_get_json_array(echo):
    api, server = echo
    api.array_body = json.dumps([{"id": i} for i in range(5)])
    with HttpClient("echo", server.url) as http:
        assert list(http.get_json_array("/array")) == [{"id": i} for i in range(5)]
        api.array_body = '{"success": false, "error": {"message": "window too wide"}}'
        with pytest.raises(DataError, match="expected a JSON array") as refused:
            http.get_json_array("/array")
        assert refused.value.source == "echo" and refused.value.path == "/array"
        big = [{"id": i, "note": "x" * 100} for i in range(5_000)]  # ~600 KB: spooled to disk
        api.array_body = "\n" * 5_000 + json.dumps(big)
        assert list(http.get_json_array("/array")) == big
        api.array_body = '[{"id": 1}, {"id": '
        rows = http.get_json_array("/array")
        assert next(rows) == {"id": 1}
        with pytest.raises(DataError, match="the JSON array is malformed"):
            next(rows)


def test_items_share_their_key_strings():
    a, b = items('[{"remoteUserId": "x", "nested": {"k": 1}}, {"remoteUserId": "y", "nested": {"k": 2}}]')
    assert [k for k in a][0] is [k for k in b][0]  # one string for every item's key
    assert next(iter(a["nested"])) is next(iter(b["nested"]))


def test_a_big_body_without_a_usable_temp_dir_stays_in_memory(echo, monkeypatch, tmp_path):
    api, server = echo
    big = [{"id": i, "note": "x" * 100} for i in range(5_000)]
    api.array_body = json.dumps(big)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))  # TemporaryFile fails
    with HttpClient("echo", server.url) as http:
        assert list(http.get_json_array("/array")) == big

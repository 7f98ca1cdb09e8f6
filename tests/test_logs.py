"""No secret reaches a log line, in either format; every line is one JSON object."""

from __future__ import annotations

import io
import json
import logging

import pytest

from lms_sync.logs import configure, get_logger, redactor

SECRET = "pw-7f3a9c1e-very-secret"


@pytest.fixture(params=["json", "console"])
def captured(request):
    out = io.StringIO()
    redactor.clear()
    configure(request.param, "DEBUG", [SECRET], stream=out)
    yield request.param, out
    redactor.clear()
    configure("json", "WARNING")


def _emit_everything():
    log = get_logger("test", source="s1")
    log.info("plain", value=SECRET)
    log.info("nested", data={"deep": [{"x": f"Bearer {SECRET}"}]}, tup=(SECRET,))
    log.info(f"in the event name {SECRET}")
    log.info("sensitive keys", authorization="Basic abc", headers={"X-Api-Key": "k123"})
    token = SECRET  # noqa: F841 - a local that a locals-rendering traceback would show
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("boom")
    logging.getLogger("httpx").warning("stdlib %s", SECRET)
    logging.getLogger("some.lib").error("url https://user:%s@host/x", SECRET)


def test_no_secret_in_any_line(captured):
    fmt, out = captured
    _emit_everything()
    text = out.getvalue()
    assert SECRET not in text
    assert "k123" not in text and "Basic abc" not in text
    assert text.count("***") >= 8
    assert "RuntimeError" in text  # the traceback is there, scrubbed
    if fmt == "json":
        lines = text.splitlines()
        events = [json.loads(line) for line in lines]  # every line is one JSON object
        assert any(e["event"] == "boom" and "exception" in e for e in events)
        assert all("timestamp" in e and "level" in e for e in events)


def test_traceback_shows_no_locals(captured):
    fmt, out = captured
    log = get_logger("test")
    harmless_local = "local-value-should-not-appear"  # noqa: F841
    try:
        raise ValueError("x")
    except ValueError:
        log.exception("err")
    assert "local-value-should-not-appear" not in out.getvalue()

"""The shared stream layer over real HTTP: the README's example connector, run through
the pipeline, and the page loop's refusals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lms_sync.connectors import KINDS
from lms_sync.errors import DataError
from lms_sync.http import HeaderAuth, HttpClient, NextUrlPaginator, PageNumberPaginator
from lms_sync.pipeline import run_source
from lms_sync.sandbox.server import FakeVendor, Request, Response, SandboxServer
from lms_sync.warehouse.tables import learners
from tests.conftest import count_rows, make_config


class FakeAcme(FakeVendor):
    """``/v1/users``: pages of 3 with ``links.next`` and ``meta.total``; ``short`` drops
    a user from the list but not from the total; ``broken`` answers no data list."""

    name = "acme"

    def __init__(self, users: int = 8) -> None:
        super().__init__()
        self.users = [{"id": i, "email": f"u{i}@acme.test", "name": f"User {i}"}
                      for i in range(1, users + 1)]
        self.short = self.broken = False
        self.route("GET", "/v1/users", self._users)

    def _users(self, req: Request, _m) -> Response:
        if req.headers.get("x-api-key") != "k3y":
            return Response.json({"error": {"message": "bad key"}}, 401)
        if self.broken:
            return Response.json({"data": "nope"})
        page = int(req.arg("page") or 1)
        listed = self.users[1:] if self.short else self.users
        rows = listed[(page - 1) * 3: page * 3]
        more = page * 3 < len(listed)
        base = f"http://{req.headers['host']}/v1/users"
        return Response.json({"data": rows, "meta": {"total": len(self.users)},
                              "links": {"next": f"{base}?page={page + 1}" if more else None}})


@pytest.fixture
def acme() -> Iterator[tuple[FakeAcme, SandboxServer]]:
    KINDS["acme"] = "tests.connectors.example_acme:AcmeConnector"
    fake = FakeAcme()
    try:
        with SandboxServer(fake) as server:
            yield fake, server
    finally:
        KINDS.pop("acme", None)


def _config(warehouse, server):
    return make_config(warehouse, {"acme": {"kind": "acme", "base_url": server.url,
                                            "auth": {"api_key": "k3y"}}})


def test_the_readme_example_connector_syncs_every_page_and_reconciles(warehouse, acme):
    fake, server = acme
    cfg = _config(warehouse, server)
    first = run_source(warehouse.engine, cfg, cfg.sources["acme"])
    assert first.ok, first.error
    users = first.streams[0]
    assert (users.read, users.vendor_total, users.distinct_read) == (8, 8, 8)
    assert count_rows(warehouse, learners) == 8
    again = run_source(warehouse.engine, cfg, cfg.sources["acme"])
    assert again.ok and again.streams[0].written == 0  # nothing changed: nothing written


def test_a_list_short_of_its_total_fails_and_deletes_nothing(warehouse, acme):
    fake, server = acme
    cfg = _config(warehouse, server)
    assert run_source(warehouse.engine, cfg, cfg.sources["acme"]).ok
    fake.short = True
    res = run_source(warehouse.engine, cfg, cfg.sources["acme"])
    assert not res.ok and "read 7 distinct learners of the 8" in res.error
    assert count_rows(warehouse, learners, learners.c.deleted_at.is_(None)) == 8


def test_a_page_without_its_rows_is_one_line_naming_the_fix(acme):
    fake, server = acme
    fake.broken = True
    with HttpClient("acme", server.url, auth=HeaderAuth({"X-Api-Key": "k3y"})) as http:
        with pytest.raises(DataError, match="no 'data' list of objects") as err:
            list(http.paginate("v1/users", PageNumberPaginator(), records="data",
                               fix="check base_url"))
    assert err.value.fix == "check base_url" and err.value.source == "acme"


def test_a_vendor_that_ignores_the_page_number_is_stopped(acme):
    fake, server = acme
    fake.users = fake.users[:3]  # one page, whose next link points at itself

    def same(req: Request, _m) -> Response:
        rows = fake.users
        return Response.json({"data": rows, "links": {"next": f"{server.url}/v1/users?page=1"}})

    fake._routes.clear()
    fake.route("GET", "/v1/users", same)
    with HttpClient("acme", server.url, auth=HeaderAuth({"X-Api-Key": "k3y"})) as http:
        pages = http.paginate("v1/users", NextUrlPaginator(next_key="links.next"), records="data")
        with pytest.raises(DataError, match="paging loop"):
            for _ in pages:
                pass

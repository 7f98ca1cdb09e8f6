"""The fakes' page cache (``cache_pages``) over real HTTP: cached bytes equal rendered ones.

Each page is fetched with the cache off, then twice with it on (the first renders and
stores, the second is served from the store): the three responses must be byte-identical,
and distinct pages distinct. A change of the fake's data empties the cache; credentials are
still checked on every request; only 200s are stored.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from lms_sync.sandbox.absorb import FakeAbsorb
from lms_sync.sandbox.population import Population
from lms_sync.sandbox.server import FakeVendor, SandboxServer
from lms_sync.sandbox.udemy import FakeUdemy

UDEMY = "/api-2.0/organizations/8888"


@pytest.fixture
def absorb() -> Iterator[tuple[FakeAbsorb, httpx.Client]]:
    fake = FakeAbsorb(Population(60), courses=3)
    with SandboxServer(fake) as server, httpx.Client(base_url=server.url) as client:
        headers = {"x-api-key": FakeAbsorb.API_KEY, "x-api-version": "2"}
        token = client.post("/authenticate", headers=headers, json={
            "username": FakeAbsorb.USERNAME, "password": FakeAbsorb.PASSWORD,
            "privateKey": FakeAbsorb.API_KEY}).json()
        client.headers.update({**headers, "Authorization": f"Bearer {token}"})
        yield fake, client


@pytest.fixture
def udemy() -> Iterator[tuple[FakeUdemy, httpx.Client]]:
    fake = FakeUdemy(Population(80), courses=30, popular=10)
    basic = base64.b64encode(b"udemy-client-id:udemy-client-secret").decode()
    with SandboxServer(fake) as server, httpx.Client(base_url=server.url) as client:
        client.headers["Authorization"] = f"Basic {basic}"
        yield fake, client


def _get(client: httpx.Client, url: str, **kw: object) -> tuple[int, str | None, bytes]:
    r = client.get(url, **kw)  # type: ignore[arg-type]
    return r.status_code, r.headers.get("content-type"), r.content


def _assert_cached_equal(fake: FakeVendor, client: httpx.Client, urls: list[str]) -> list[bytes]:
    """Every URL: uncached == first cached == second cached, byte for byte; returns the bodies."""
    fake.cache_pages = False
    plain = [_get(client, u) for u in urls]
    assert all(status == 200 for status, _, _ in plain), [p[:2] for p in plain]
    fake.cache_pages = True
    hits = fake.page_hits
    first = [_get(client, u) for u in urls]
    assert fake.page_hits == hits  # rendered and stored, not served from the store yet
    second = [_get(client, u) for u in urls]
    assert fake.page_hits == hits + len(urls)  # every one served from the store
    assert first == plain
    assert second == plain
    bodies = [body for _, _, body in plain]
    assert len(set(bodies)) == len(bodies)  # distinct pages stay distinct (the key sees the query)
    return bodies


def test_absorb_pages_are_byte_identical(absorb):
    fake, client = absorb
    course = fake.courses[0]["id"]
    urls = [f"/users?_limit=25&_offset={n}&_sort=dateEdited" for n in range(3)]
    urls += ["/users?_limit=25&_offset=0", "/users?_limit=25&_offset=0&_sort=-dateEdited",
             "/users?_limit=10&_offset=0&_filter=dateEdited ge datetime'2026-03-01T00:00:00Z'",
             "/courses?_limit=2&_offset=1", "/departments?_limit=100", "/categories?_limit=100",
             f"/courses/{course}/enrollments?_limit=20&_offset=0&_sort=dateEdited",
             f"/courses/{course}/enrollments?_limit=20&_offset=1&_sort=dateEdited"]
    bodies = _assert_cached_equal(fake, client, urls)
    assert b"\\u" not in bodies[0] and "é".encode() in b"".join(bodies)  # unescaped UTF-8 kept


def test_udemy_pages_are_byte_identical_and_links_follow_query_order_and_host(udemy):
    fake, client = udemy
    urls = [f"{UDEMY}/analytics/{report}/?page_size=7&page={n}"
            for report in ("user-course-activity", "user-progress", "user-activity") for n in (1, 2, 3)]
    urls += [f"{UDEMY}/analytics/user-progress/?page=2&page_size=7",  # same page, other query order
             f"{UDEMY}/courses/list/?page_size=5&page=2", f"{UDEMY}/courses/list/?page_size=5&page=2"
             "&fields[course]=@all", f"{UDEMY}/analytics/user-activity/?page_size=7&from_date=2026-11-30"]
    bodies = _assert_cached_equal(fake, client, urls)
    assert b"page_size=7&page=3" in bodies[1] and b"page=3&page_size=7" in bodies[9]
    other_host = {"Host": f"localhost:{client.base_url.port}"}
    status, _, body = _get(client, urls[1], headers=other_host)  # cached for 127.0.0.1 only
    assert status == 200 and body == bodies[1].replace(b"127.0.0.1", b"localhost")
    fake.cache_pages = False
    assert _get(client, urls[1], headers=other_host)[2] == body


def test_a_change_of_the_data_empties_the_cache(absorb, udemy):
    fake, client = absorb
    course = fake.courses[0]["id"]
    url = f"/courses/{course}/enrollments?_limit=100&_offset=0&_sort=dateEdited"
    fake.cache_pages = True
    before = _get(client, url)[2]
    assert fake.change_enrollments(3)
    after = _get(client, url)[2]
    fake.cache_pages = False
    assert after == _get(client, url)[2] != before

    fake_u, client_u = udemy
    url = f"{UDEMY}/analytics/user-course-activity/?page_size=100&page=1"
    fake_u.cache_pages = True
    before = _get(client_u, url)[2]
    assert fake_u.make_progress(2) == 2
    after = _get(client_u, url)[2]
    fake_u.cache_pages = False
    assert after == _get(client_u, url)[2] != before


def test_credentials_are_checked_and_errors_not_stored(absorb, udemy):
    fake, client = absorb
    fake.cache_pages = True
    url = "/users?_limit=10&_offset=0"
    assert _get(client, url)[0] == 200
    assert client.get(url, headers={"Authorization": "Bearer stale"}).status_code == 401
    assert client.get("/users?_limit=5000").status_code == 400
    assert len(fake._pages) == 1

    fake_u, client_u = udemy
    fake_u.cache_pages = True
    url = f"{UDEMY}/analytics/user-progress/?page_size=10&page=1"
    assert _get(client_u, url)[0] == 200
    assert client_u.get(url, headers={"Authorization": "Basic bm9wZTpub3Bl"}).status_code == 401
    assert client_u.get(f"{UDEMY}/analytics/user-progress/?page_size=10&page=999").status_code == 404
    assert len(fake_u._pages) == 1

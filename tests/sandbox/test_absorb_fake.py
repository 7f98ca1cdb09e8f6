"""The fake Absorb API over real HTTP: auth, headers, paging limits, filters, data shape."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from lms_sync.sandbox.absorb import FakeAbsorb
from lms_sync.sandbox.population import Population
from lms_sync.sandbox.server import SandboxServer


def _serve() -> Iterator[tuple[FakeAbsorb, httpx.Client]]:
    fake = FakeAbsorb(Population(30), courses=4)
    with SandboxServer(fake) as server, httpx.Client(base_url=server.url) as client:
        yield fake, client


@pytest.fixture
def absorb() -> Iterator[tuple[FakeAbsorb, httpx.Client]]:
    """A fake of its own, for tests that change it."""
    yield from _serve()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[FakeAbsorb, httpx.Client]]:
    """One fake for the tests that only read."""
    yield from _serve()


def login(client: httpx.Client) -> dict[str, str]:
    headers = {"x-api-key": FakeAbsorb.API_KEY, "x-api-version": "2"}
    resp = client.post("/authenticate", headers=headers, json={
        "username": FakeAbsorb.USERNAME, "password": FakeAbsorb.PASSWORD, "privateKey": FakeAbsorb.API_KEY})
    assert resp.status_code == 200
    token = resp.json()
    assert isinstance(token, str) and token  # a bare JSON string
    return {**headers, "Authorization": f"Bearer {token}"}


def test_a_new_token_invalidates_the_old_one(absorb):
    fake, client = absorb
    old = login(client)
    assert client.get("/users", headers=old).status_code == 200
    new = login(client)
    resp = client.get("/users", headers=old)
    assert resp.status_code == 401 and resp.json()["message"].startswith("Authorization has been denied")
    assert client.get("/users", headers=new).status_code == 200
    assert fake.token_fetches == 2 and fake.rejected == 1


def test_headers_and_credentials_are_checked(shared):
    _, client = shared
    headers = login(client)
    assert client.get("/users", headers={**headers, "x-api-version": "1"}).status_code == 400
    assert client.get("/users", headers={**headers, "x-api-key": "nope"}).status_code == 401
    bad = client.post("/authenticate", headers={"x-api-key": "nope", "x-api-version": "2"},
                      json={"username": FakeAbsorb.USERNAME, "password": FakeAbsorb.PASSWORD,
                            "privateKey": "nope"})
    assert bad.status_code == 401 and bad.json()["message"] == "Invalid API key."
    wrong = client.post("/authenticate", headers={"x-api-key": FakeAbsorb.API_KEY, "x-api-version": "2"},
                        json={"username": FakeAbsorb.USERNAME, "password": "x",
                              "privateKey": FakeAbsorb.API_KEY})
    assert wrong.status_code == 401 and wrong.json()["message"] == "Invalid username or password."


@pytest.mark.parametrize(("params", "status"), [
    ({"_limit": 1000}, 200), ({"_limit": 1001}, 400), ({"_limit": 0}, 400),
    ({"_offset": 65535}, 200), ({"_offset": 65536}, 400), ({"_limit": "ten"}, 400),
])
def test_paging_limits(shared, params, status):
    _, client = shared
    resp = client.get("/users", headers=login(client), params=params)
    assert resp.status_code == status
    if status == 400:
        assert set(resp.json()) == {"validations", "code", "message", "term", "_meta"}


def test_pages_are_page_numbers_from_zero(shared):
    _, client = shared
    headers = login(client)
    pages = [client.get("/users", headers=headers, params={"_limit": 12, "_offset": n}).json()
             for n in range(4)]
    assert [p["returnedItems"] for p in pages] == [12, 12, 6, 0]
    assert {p["totalItems"] for p in pages} == {30}
    assert [p["offset"] for p in pages] == [0, 1, 2, 3] and pages[0]["limit"] == 12
    ids = [u["id"] for p in pages for u in p["users"]]
    assert len(set(ids)) == 30
    assert client.get("/users", headers=headers).json()["returnedItems"] == 20  # default _limit


def test_filter_and_sort_on_date_edited(shared):
    _, client = shared
    headers = login(client)
    rows = client.get("/users", headers=headers,
                      params={"_limit": 100, "_sort": "dateEdited"}).json()["users"]
    dates = [r["dateEdited"] for r in rows]
    assert dates == sorted(dates)
    pivot = dates[10]
    ge = client.get("/users", headers=headers,
                    params={"_limit": 100, "_filter": f"dateEdited ge datetime'{pivot}'"}).json()
    gt = client.get("/users", headers=headers,
                    params={"_limit": 100, "_filter": f"dateEdited gt datetime'{pivot}'"}).json()
    assert ge["totalItems"] == sum(d >= pivot for d in dates)
    assert gt["totalItems"] == sum(d > pivot for d in dates)
    desc = client.get("/users", headers=headers, params={"_limit": 100, "_sort": "-dateEdited"}).json()
    assert [r["dateEdited"] for r in desc["users"]] == sorted(dates, reverse=True)
    assert client.get("/users", headers=headers, params={"_filter": "name eq 'x'"}).status_code == 400
    assert client.get("/users", headers=headers, params={"_sort": "name"}).status_code == 400


def test_enrollments_cover_every_status_history_and_timespans(shared):
    fake, client = shared
    headers = login(client)
    rows = []
    for course in fake.courses:
        body = client.get(f"/courses/{course['id']}/enrollments", headers=headers,
                          params={"_limit": 1000}).json()
        assert body["returnedItems"] == len(body["enrollments"])
        rows += body["enrollments"]
    assert {r["status"] for r in rows} == set(range(13))
    assert any(r["isActive"] is False for r in rows)
    assert all(re.fullmatch(r"(\d+\.)?\d\d:\d\d:\d\d(\.\d)?", r["timeSpent"]) for r in rows)
    assert any("." in r["timeSpent"].split(":")[0] for r in rows)  # some take more than a day
    started = next(r for r in rows if r["isActive"] and r["status"] == 1)
    lessons = client.get(f"/users/{started['userId']}/enrollments/{started['courseId']}/lessons",
                         headers=headers).json()
    assert isinstance(lessons, list) and lessons
    assert {lesson["courseEnrollmentId"] for lesson in lessons} == {started["id"]}
    assert client.get(f"/courses/{'0' * 8}/enrollments", headers=headers).status_code == 404


def test_change_enrollments_moves_date_edited_forward(absorb):
    fake, client = absorb
    headers = login(client)
    latest = max(r["dateEdited"] for rows in fake.enrollments.values() for r in rows)
    changed = fake.change_enrollments(3)
    assert len(changed) == 3
    seen = []
    for course in fake.courses:
        body = client.get(f"/courses/{course['id']}/enrollments", headers=headers,
                          params={"_filter": f"dateEdited gt datetime'{latest}'"}).json()
        seen += [f"{r['userId']}:{r['courseId']}" for r in body["enrollments"] if r["status"] == 3]
    assert sorted(seen) == sorted(changed)


def test_faults_over_http(absorb):
    _, client = absorb
    headers = login(client)
    assert client.post("/_sandbox/faults", json={"fail_next": 1, "fail_status": 429,
                                                  "retry_after": 1}).status_code == 200
    resp = client.get("/users", headers=headers)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert client.get("/users", headers=headers).status_code == 200


def test_users_carry_active_status(shared):
    _, client = shared
    rows = client.get("/users", headers=login(client), params={"_limit": 100}).json()["users"]
    assert {r["activeStatus"] for r in rows} == {0, 1} and not any("isActive" in r for r in rows)


def test_ignore_sort_keeps_the_stored_order_and_still_filters():
    fake = FakeAbsorb(Population(30), courses=4, ignore_sort=True)
    with SandboxServer(fake) as server, httpx.Client(base_url=server.url) as client:
        headers = login(client)
        rows = client.get("/users", headers=headers, params={"_limit": 100, "_sort": "dateEdited"}).json()
        assert [r["id"] for r in rows["users"]] == [u["id"] for u in fake.users]
        dates = [r["dateEdited"] for r in rows["users"]]
        assert dates != sorted(dates)
        pivot = sorted(dates)[10]
        ge = client.get("/users", headers=headers, params={
            "_limit": 100, "_sort": "dateEdited", "_filter": f"dateEdited ge datetime'{pivot}'"}).json()
        assert [r["dateEdited"] for r in ge["users"]] == [d for d in dates if d >= pivot]
        assert ge["totalItems"] == 20


@pytest.mark.parametrize(("shape", "status"), [("paged", 200), ("array", 200), ("404", 404), ("403", 403)])
def test_categories_as(shape, status):
    fake = FakeAbsorb(Population(5), courses=4, categories_as=shape)
    with SandboxServer(fake) as server, httpx.Client(base_url=server.url) as client:
        resp = client.get("/categories", headers=login(client))
    assert resp.status_code == status
    body = resp.json()
    if shape == "paged":
        assert body["totalItems"] == 4 and len(body["categories"]) == 4
    elif shape == "array":
        assert [c["name"] for c in body] == [c["name"] for c in fake.categories]
    else:
        assert set(body) == {"validations", "code", "message", "term", "_meta"}


def test_lesson_path_moves_the_lessons():
    fake = FakeAbsorb(Population(30), courses=4, lesson_path="/lessonEnrollments/{userId}/{courseId}")
    with SandboxServer(fake) as server, httpx.Client(base_url=server.url) as client:
        headers = login(client)
        row = next(r for rows in fake.enrollments.values() for r in rows
                   if r["isActive"] and r["status"] == 1)
        assert client.get(f"/users/{row['userId']}/enrollments/{row['courseId']}/lessons",
                          headers=headers).status_code == 404
        moved = client.get(f"/lessonEnrollments/{row['userId']}/{row['courseId']}", headers=headers)
        assert moved.status_code == 200 and moved.json() == fake.lesson_rows(row)

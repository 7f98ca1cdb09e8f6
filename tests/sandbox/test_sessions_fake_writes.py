"""The fake Sparkwise user writes over real HTTP: batch limits, trusted-domain refusals,
idempotent upserts, deactivation, and the documented error body."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from lms_sync.sandbox.population import Population
from lms_sync.sandbox.server import SandboxServer
from lms_sync.sandbox.sessions import API_KEY, PATHS, FakeSessions

UPSERT, DEACTIVATE = PATHS["upsert_users"], PATHS["deactivate_users"]


@pytest.fixture
def sparkwise() -> Iterator[tuple[FakeSessions, httpx.Client]]:
    fake = FakeSessions(Population(10), empty=True, untrusted=r"@contractor$")
    with SandboxServer(fake) as server, httpx.Client(
            base_url=server.url, headers={"x-api-key": API_KEY}) as client:
        yield fake, client


def template(rid: str, first: str = "Jane", active: bool = True) -> dict:
    return {"firstName": first, "lastName": "Doe", "active": active, "remoteId": rid}


def listed(client: httpx.Client) -> list[dict]:
    return client.get(PATHS["users"]).json()["data"]["items"]


def test_upsert_creates_then_updates_by_remote_id_idempotently(sparkwise):
    _, client = sparkwise
    body = {"users": [template("E1"), template("E2")]}
    first = client.post(UPSERT, json=body).json()
    assert first["success"] is True and first["error"] is None
    made = first["data"]["success"]
    assert [u["remoteId"] for u in made] == ["E1", "E2"] and first["data"]["failed"] == []
    assert all(len(u["id"]) == 64 and int(u["id"], 16) >= 0 for u in made)
    assert client.post(UPSERT, json=body).json()["data"]["success"] == made  # same body, same users
    assert listed(client) == made

    renamed = client.post(UPSERT, json={"users": [template("E1", first="Janet")]}).json()
    assert renamed["data"]["success"][0] == {**made[0], "firstName": "Janet"}
    assert len(listed(client)) == 2


def test_untrusted_users_come_back_in_failed(sparkwise):
    _, client = sparkwise
    answer = client.post(UPSERT, json={"users": [template("E1"), template("x@contractor")]}).json()
    assert [u["remoteId"] for u in answer["data"]["success"]] == ["E1"]
    assert answer["data"]["failed"] == [{"user": template("x@contractor"),
                                         "error": "User is not using a trusted domain"}]
    assert [u["remoteId"] for u in listed(client)] == ["E1"]


@pytest.mark.parametrize("path", [UPSERT, DEACTIVATE])
@pytest.mark.parametrize("n", [0, 201])
def test_batches_of_0_or_over_200_are_400_with_the_documented_body(sparkwise, path, n):
    fake, client = sparkwise
    resp = client.post(path, json={"users": [template(f"E{i}") for i in range(n)]})
    assert resp.status_code == 400
    body = resp.json()
    assert body == {"success": False, "data": None,
                    "error": {"message": "'users' must be an array of 1 to 200 items", "metadata": {}}}
    assert fake.users() == []
    assert client.post(path, json={"users": [template(f"E{i}") for i in range(200)]}).status_code == 200


def test_deactivate_by_remote_id_or_id(sparkwise):
    fake, client = sparkwise
    made = client.post(UPSERT, json={"users": [template("E1"), template("E2")]}).json()
    e2 = made["data"]["success"][1]
    answer = client.post(DEACTIVATE, json={"users": [{"remoteId": "E1"}, {"id": e2["id"]},
                                                    {"remoteId": "NOBODY"}]}).json()
    assert [u["remoteId"] for u in answer["data"]["success"]] == ["E1", "E2"]
    assert answer["data"]["failed"] == [{"user": {"remoteId": "NOBODY"}, "error": "User not found"}]
    assert [u["active"] for u in fake.users()] == [False, False]
    assert fake.writes() == [("POST", UPSERT), ("POST", DEACTIVATE)]


def test_writes_need_the_api_key(sparkwise):
    fake, client = sparkwise
    resp = client.post(UPSERT, json={"users": [template("E1")]}, headers={"x-api-key": "wrong"})
    assert resp.status_code == 401 and resp.json()["success"] is False
    assert fake.users() == []

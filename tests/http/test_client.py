"""HttpClient behaviour over real sockets: retries, auth, budget, origin guard."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from lms_sync.errors import CredentialsRejected, DataError, RequestRejected, RetriableError
from lms_sync.http import HttpClient, Token, TokenAuth
from lms_sync.http.errors import parse_retry_after
from lms_sync.logs import configure


def token_auth(url: str, secret: str = "s3cr3t-value") -> TokenAuth:
    def fetch(http: httpx.Client) -> Token:
        r = http.post(f"{url}/token", data={"secret": secret})
        if r.status_code == 401:
            raise CredentialsRejected("token refused", source="echo", path="/token", status=401)
        return Token(r.json()["token"])

    return TokenAuth(fetch)


def client(url: str, **kw) -> HttpClient:
    kw.setdefault("backoff_base", 0.01)
    return HttpClient("echo", url, **kw)


def test_retry_on_5xx_then_success(echo):
    api, server = echo
    api.faults.update({"fail_next": 2, "fail_status": 503})
    with client(server.url) as http:
        assert http.get_json("/slow") == {"ok": True}
        assert http.stats["retries"] == 2 and http.stats["requests"] == 3


def test_prometheus_counts_requests_as_they_are_sent(echo):
    """/metrics during a long (throttled) run shows its requests and retries so far."""
    from lms_sync import metrics

    def value(name: str) -> float:
        return metrics.registry.get_sample_value(name, {"source": "metrics-echo"}) or 0

    api, server = echo
    before = (value("lms_sync_http_requests_total"), value("lms_sync_http_retries_total"))
    api.faults.update({"fail_next": 1, "fail_status": 503})
    with HttpClient("metrics-echo", server.url, backoff_base=0.01) as http:
        http.get_json("/slow")
        http.get_json("/slow")
        assert (value("lms_sync_http_requests_total"), value("lms_sync_http_retries_total")) == \
            (before[0] + 3, before[1] + 1)


def test_gives_up_after_max_attempts(echo):
    api, server = echo
    api.faults.update({"fail_next": 10, "fail_status": 502})
    with client(server.url, max_attempts=3) as http, pytest.raises(RetriableError) as err:
        http.get("/slow")
    assert err.value.status == 502 and "source 'echo'" in str(err.value) and "/slow" in str(err.value)
    assert http.stats["requests"] == 3


def test_retry_after_is_honoured_and_logged(echo):
    api, server = echo
    api.faults.update({"fail_next": 1, "fail_status": 429, "retry_after": 0.4})
    out = io.StringIO()
    configure("json", "INFO", stream=out)
    try:
        with client(server.url) as http:
            t0 = time.monotonic()
            http.get("/slow")
            elapsed = time.monotonic() - t0
    finally:
        configure("json", "WARNING")
    assert elapsed >= 0.38
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    retry = next(e for e in events if e["event"] == "http.retry")
    assert retry["status"] == 429 and retry["attempt"] == 1 and retry["wait"] == pytest.approx(0.4)
    assert "authorization" not in json.dumps(retry).lower()


def test_retry_after_http_date():
    when = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 < parse_retry_after(format_datetime(when, usegmt=True)) <= 30
    assert parse_retry_after("7") == 7
    assert parse_retry_after("garbage") is None


def test_transport_errors_are_retried_then_reported():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here
    with client(f"http://127.0.0.1:{port}", max_attempts=2) as http, \
            pytest.raises(RetriableError, match="network error"):
        http.get("/x")


def test_4xx_is_not_retried(echo):
    api, server = echo
    api.faults.update({"fail_next": 1, "fail_status": 422})
    with client(server.url) as http, pytest.raises(RequestRejected) as err:
        http.get("/slow")
    assert err.value.status == 422 and http.stats["requests"] == 1


def test_token_fetched_once_and_shared(echo):
    api, server = echo
    with client(server.url, auth=token_auth(server.url), max_concurrency=8) as http:
        results = list(http.map_concurrent(lambda i: http.get_json("/data", params={"q": i}),
                                           range(30)))
    assert [r["q"] for r in results] == [str(i) for i in range(30)]
    assert api.token_fetches == 1


def test_single_flight_reauth_under_concurrency(echo):
    """20 concurrent requests hitting 401 cause one re-authentication, not 20."""
    api, server = echo
    auth = token_auth(server.url)
    with client(server.url, auth=auth, max_concurrency=20) as http:
        http.get("/data")
        assert api.token_fetches == 1
        api.invalidate()  # every request in flight now gets 401
        barrier = threading.Barrier(20)

        def call(i: int):
            barrier.wait()
            return http.get_json("/data", params={"q": i})

        results = list(http.map_concurrent(call, range(20)))
    assert len(results) == 20 and all(r["ok"] for r in results)
    assert api.token_fetches == 2
    assert http.stats["reauth"] >= 1


def test_credentials_rejected_after_fresh_token(echo):
    api, server = echo
    # the token endpoint works, but the API refuses every token
    api._authorized = lambda req: False  # type: ignore[method-assign]
    with client(server.url, auth=token_auth(server.url)) as http, \
            pytest.raises(CredentialsRejected, match="credentials rejected even after re-authenticating"):
        http.get("/data")
    assert api.token_fetches == 2


def test_wrong_secret_is_a_clear_error_without_the_secret(echo):
    api, server = echo
    with client(server.url, auth=token_auth(server.url, secret="wrong-secret-123")) as http, \
            pytest.raises(CredentialsRejected) as err:
        http.get("/data")
    assert "wrong-secret-123" not in str(err.value)


def test_next_url_to_another_origin_is_refused_before_sending(echo):
    api, server = echo
    got = []

    class Trap(threading.Thread):
        def run(self):
            conn, _ = listener.accept()
            got.append(conn.recv(4096))
            conn.close()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(2)
    other = f"http://127.0.0.1:{listener.getsockname()[1]}/page2"
    with client(server.url, auth=token_auth(server.url)) as http:
        upper = other.replace("http://", "HTTP://")
        for bad in (other, upper, other.replace("http://", "Http://"), "//" + other.split("//")[1],
                    server.url.replace("http://", "https://") + "/x",
                    server.url.replace("http://", "http://user:pw@") + "/x"):
            with pytest.raises(DataError, match="another origin"):
                http.get(bad)
        assert http.get_json(server.url + "/slow") == {"ok": True}  # same origin is fine
    listener.close()
    assert got == []


def test_max_concurrency_is_respected(echo):
    api, server = echo
    with client(server.url, max_concurrency=3) as http:
        list(http.map_concurrent(lambda i: http.get("/slow"), range(12)))
    assert api.max_in_flight == 3


def test_requests_per_second_token_bucket(echo):
    api, server = echo
    with client(server.url, max_concurrency=4, requests_per_second=20, burst=1) as http:
        t0 = time.monotonic()
        list(http.map_concurrent(lambda i: http.get("/slow"), range(11)))
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.45  # 10 intervals of 50 ms after the first request


def test_rate_limit_headers_prevent_429(echo):
    api, server = echo
    api.rate_limit = (10, 0.5)
    with client(server.url, max_concurrency=2) as http:
        for _ in range(35):
            http.get("/limited")
    assert api.throttled == 0

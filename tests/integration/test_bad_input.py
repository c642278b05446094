"""Requests a client gets wrong, and models that hang, against both kinds of Bento.

- Fuzzing: schemathesis generates valid and invalid requests for every operation in each
  example Bento's own OpenAPI document (``/docs.json``); none may get a 5xx. The runs are
  derandomized and bounded, so they are fast and the same every time.
- Oversized bodies get a 413 that names the limit: at once when ``Content-Length`` says so,
  and as soon as a chunked body passes it.
- A stuck model meets the service's timeout (BentoML's ``traffic.timeout`` for 1.2+
  services, ``api_server.traffic.timeout`` for runner-based ones) with a 504, and the
  replica is freed: the stuck call is cancelled.

Bad requests are sent with a short client timeout: each must be answered well within it.
"""

from __future__ import annotations

import collections
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from _support import SMALL_BODY_LIMIT

SETOSA = [5.1, 3.5, 1.4, 0.2]

#: How long any bad request may take to be answered (a bound, not a measurement).
BAD_REQUEST_WAIT = 10.0

#: Generated cases per Bento, for each of valid and invalid data; the test draws twice
#: as many from both together.
FUZZ_EXAMPLES = 120


@pytest.fixture(scope="module")
def urls(four_bentos: dict[str, str]) -> dict[str, str]:
    """The four Bentos side by side (``four_bentos`` in conftest: the fixtures have a body
    limit of ``SMALL_BODY_LIMIT`` and the runner-based one a 2 s API-server timeout)."""
    return four_bentos


# --- fuzzing from the services' own OpenAPI documents ------------------------------------


def _fuzz(base_url: str) -> tuple[int, collections.Counter[int], float]:
    """Send generated valid and invalid requests; return how many, their statuses, the slowest."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/docs.json", timeout=30)
    strategy = st.one_of(
        schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE)
    )
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []
    slowest = 0.0
    session = requests.Session()

    @settings(
        max_examples=2 * FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: Any) -> None:
        nonlocal slowest
        start = time.monotonic()
        response = case.call(base_url=base_url, session=session, timeout=BAD_REQUEST_WAIT)
        slowest = max(slowest, time.monotonic() - start)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(
                f"{case.method} {case.formatted_path} {case.headers} {case.body!r:.300} -> "
                f"{response.status_code} {response.text[:300]}"
            )

    send()
    assert not server_errors, "\n".join(server_errors[:10])
    return sum(statuses.values()), statuses, slowest


@pytest.mark.parametrize("bento", ["iris", "review"])
def test_fuzzing_the_openapi_document_finds_no_server_error(
    urls: dict[str, str], bento: str
) -> None:
    count, statuses, slowest = _fuzz(urls[bento])
    print(f"\n{bento}: {count} requests, statuses {dict(sorted(statuses.items()))}, "
          f"slowest {slowest:.3f} s")  # fmt: skip
    assert count >= FUZZ_EXAMPLES
    assert any(400 <= status < 500 for status in statuses), "no invalid request was generated"
    # The service still answers well after the fuzzing.
    if bento == "iris":
        ok = httpx.post(f"{urls[bento]}/classify", json=[SETOSA], timeout=30)
        assert ok.status_code == 200 and ok.json() == [0]
    else:
        ok = httpx.post(f"{urls[bento]}/score", json={"reviews": ["great"]}, timeout=30)
        assert ok.status_code == 200 and ok.json() == [2.0]


# --- oversized bodies ----------------------------------------------------------------------


def _raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers) and ``body`` on a socket; return the answer.

    The socket waits at most BAD_REQUEST_WAIT for each read, so a server that waits for a
    body that never comes fails the test instead of hanging it.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=BAD_REQUEST_WAIT) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


@pytest.mark.parametrize(
    ("bento", "route"), [("iris", "/classify"), ("review", "/score"), ("review", "/docs.json")]
)
def test_a_declared_length_over_the_default_limit_is_refused_before_the_body_is_sent(
    urls: dict[str, str], bento: str, route: str
) -> None:
    url = urls[bento] + route
    path = urlsplit(url).path
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {bentoml_ray_default_limit() + 1}\r\n"
    )
    status, body = _raw_request(url, head)  # no body is ever sent
    assert status == 413
    assert "BENTOML_RAY_MAX_REQUEST_BODY_SIZE" in json.loads(body).__str__()


def bentoml_ray_default_limit() -> int:
    from bentoml_ray._defaults import MAX_BODY_SIZE

    return MAX_BODY_SIZE


@pytest.mark.parametrize("bento", ["slow_service", "slow_runner"])
def test_a_streamed_body_is_counted_and_refused_past_the_limit(
    urls: dict[str, str], bento: str
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"seconds": "'
        for _ in range(4 * SMALL_BODY_LIMIT // 1024):
            yield b"1" * 1024
        yield b'"}'

    # httpx sends a generator with Transfer-Encoding: chunked, no Content-Length.
    response = httpx.post(
        f"{urls[bento]}/sleep",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=BAD_REQUEST_WAIT,
    )
    assert response.status_code == 413
    assert f"({SMALL_BODY_LIMIT} bytes)" in response.text
    assert "BENTOML_RAY_MAX_REQUEST_BODY_SIZE" in response.text
    # A body within the limit still goes through, on the same replica.
    ok = httpx.post(f"{urls[bento]}/sleep", json={"seconds": 0}, timeout=30)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("bento", ["slow_service", "slow_runner"])
def test_a_declared_length_over_a_configured_limit_is_refused(
    urls: dict[str, str], bento: str
) -> None:
    response = httpx.post(
        f"{urls[bento]}/sleep",
        content=b"{" + b" " * SMALL_BODY_LIMIT + b'"seconds": 0}',
        headers={"Content-Type": "application/json"},
        timeout=BAD_REQUEST_WAIT,
    )
    assert response.status_code == 413 and f"({SMALL_BODY_LIMIT} bytes)" in response.text


# --- stuck models -------------------------------------------------------------------------


def _active(url: str) -> int:
    response = httpx.post(f"{url}/active", json={}, timeout=30)
    assert response.status_code == 200, response.text
    return int(response.text)


def test_a_stuck_model_call_of_a_service_times_out_with_504_and_is_cancelled(
    urls: dict[str, str],
) -> None:
    """1.2+: the service's ``traffic.timeout``, applied in the root replica, bounds the call."""
    url = urls["slow_service"]
    # The service's traffic.timeout is 2 s; the call would sleep 60 s.
    response = httpx.post(f"{url}/sleep", json={"seconds": 60}, timeout=30)
    assert response.status_code == 504, response.text
    assert response.json() == {"error": "Not able to process the request in 2 seconds"}
    # The stuck call was cancelled where it ran: nothing is left running in the replica.
    deadline = time.monotonic() + 15
    while _active(url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _active(url) == 0
    ok = httpx.post(f"{url}/sleep", json={"seconds": 0}, timeout=30)
    assert ok.status_code == 200 and ok.text == "awake"


def test_a_stuck_runner_call_times_out_with_504_and_frees_the_api_server(
    urls: dict[str, str],
) -> None:
    """Legacy: the API server applies ``api_server.traffic.timeout`` (2 s here) itself.

    The API function and its runner call are cancelled; the runner's thread, where BentoML
    runs the model, cannot be stopped from outside and finishes its sleep.
    """
    url = urls["slow_runner"]
    response = httpx.post(f"{url}/sleep", json={"seconds": 8}, timeout=30)
    assert response.status_code == 504, response.text
    assert response.json() == {"error": "Not able to process the request in 2 seconds"}
    # The API server's replica is free at once, while the model still sleeps.
    for path in ("/livez", "/readyz", "/docs.json"):
        assert httpx.get(url + path, timeout=BAD_REQUEST_WAIT).status_code == 200
    bad = httpx.post(f"{url}/sleep", content=b"{", timeout=BAD_REQUEST_WAIT)
    assert bad.status_code == 400
    # Once the model returns (BentoML runs one call at a time per runner replica), the
    # runner takes calls again; until then they time out too.
    deadline = time.monotonic() + 30
    while (ok := httpx.post(f"{url}/sleep", json={"seconds": 0}, timeout=30)).status_code == 504:
        assert time.monotonic() < deadline, "the runner never came back"
    assert ok.status_code == 200 and ok.json() == "awake"


# --- where sync code runs -----------------------------------------------------------------


@pytest.mark.parametrize(("bento", "thread"), [("slow_service", "SlowService_0"),
                                               ("slow_runner", "slow_runner_0")])  # fmt: skip
def test_sync_api_functions_run_on_threads_the_replica_keeps(
    urls: dict[str, str], bento: str, thread: str
) -> None:
    """Not a thread per request, as anyio's pool gives on a Ray replica's loop.

    (``SlowService`` declares no ``threads``: one at a time, as BentoML runs it.)
    """
    answers = [httpx.post(f"{urls[bento]}/thread", json={}, timeout=30) for _ in range(5)]
    assert all(answer.status_code == 200 for answer in answers)
    # A runner-based service's JSON output is a JSON string; a 1.2+ str output, plain text.
    assert {answer.text.strip('"') for answer in answers} == {thread}

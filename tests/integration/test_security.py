"""What a client or a neighbour on the network can reach, and what they can learn.

- BentoML's internal media types (``application/vnd.bentoml+pickle`` and friends) are
  refused with 415 on every route of both kinds of Bento, before any route runs.
- Everything works on a ``ray start`` cluster with token authentication on (Ray 2.60's
  default for ``ray start``); a driver with the wrong token is turned away.
- With Serve's default HTTP options the proxy listens on 127.0.0.1 only.
- A secret passed to a deployment's environment appears in no answer (``/docs.json``,
  ``/metrics``, error bodies) and in none of the cluster's log files.
"""

from __future__ import annotations

import json
import pathlib
import secrets
import subprocess
import sys
from typing import Any

import httpx
import pytest
from _checks import driver_was_refused, listening_addresses, loopback_only, secret_leaks
from _support import SECRET, RayCluster, delete_apps

SETOSA = [5.1, 3.5, 1.4, 0.2]
PICKLE = "application/vnd.bentoml+pickle"


@pytest.fixture(scope="module")
def urls(four_bentos: dict[str, str]) -> dict[str, str]:
    """Both examples, and both fixtures under a bentoml-ray ``route_prefix``, each ingress
    replica with ``SECRET`` in its environment (``four_bentos`` in conftest)."""
    return four_bentos


def _routes(url: str) -> list[str]:
    """Every path of the service's OpenAPI document, plus the UI, the document, a stranger."""
    document = httpx.get(f"{url}/docs.json", timeout=30).json()
    paths = [path.replace("{", "").replace("}", "") for path in document["paths"]]
    return sorted({*paths, "/", "/docs.json", "/no/such/route"})


@pytest.mark.parametrize("bento", ["iris", "review", "slow_service", "slow_runner"])
@pytest.mark.parametrize("media_type", [PICKLE, "application/vnd.bentoml.multiple_outputs"])
def test_internal_media_types_are_refused_on_every_route(
    urls: dict[str, str], bento: str, media_type: str
) -> None:
    url = urls[bento]
    routes = _routes(url)
    assert len(routes) >= 6
    for route in routes:
        for method in ("POST", "PUT", "GET"):
            response = httpx.request(
                method,
                url + route,
                content=b"\x80\x04\x95 not really a pickle",
                headers={"Content-Type": f"{media_type}; charset=binary"},
                timeout=10,
            )
            assert response.status_code == 415, (method, route, response.text)
            assert "not accepted from clients" in response.text


def _answers(url: str, api: str, bad_body: dict[str, Any]) -> list[httpx.Response]:
    """The answers that could carry a leak: documents, metrics and every kind of error."""
    answers = [
        httpx.get(f"{url}/docs.json", timeout=30),
        httpx.get(f"{url}/metrics", timeout=30),
        httpx.get(f"{url}/no/such/route", timeout=30),
        httpx.post(f"{url}/{api}", content=b"{not json", timeout=30),
        httpx.post(f"{url}/{api}", json=bad_body, timeout=30),
        httpx.post(f"{url}/{api}", content=b"x", headers={"Content-Type": PICKLE}, timeout=30),
    ]
    if api == "sleep":  # the fixtures' API that raises in user code
        answers.append(httpx.post(f"{url}/fail", json={"name": "SERVICE_API_KEY"}, timeout=30))
    return answers


@pytest.mark.parametrize(
    ("bento", "api", "bad_body"),
    [
        ("iris", "classify", {"not": "an array"}),
        ("review", "score", {"reviews": 3}),
        ("slow_service", "sleep", {"seconds": "soon"}),
        ("slow_runner", "sleep", {"seconds": "soon"}),
    ],
)
def test_a_secret_in_the_environment_never_reaches_an_answer(
    urls: dict[str, str], bento: str, api: str, bad_body: dict[str, Any]
) -> None:
    answers = _answers(urls[bento], api, bad_body)
    statuses = [answer.status_code for answer in answers]
    assert statuses[:3] == [200, 200, 404]
    assert all(400 <= status < 600 for status in statuses[3:6])
    for answer in answers:
        # The fixtures' ``fail`` raises with the secret in its message (test_checks_catch_faults).
        assert not secret_leaks(answer, SECRET), answer.request.url
    if api == "sleep":  # an exception in user code: BentoML's generic 500, no details
        assert statuses[-1] == 500


# --- a ray start cluster with token authentication ----------------------------------------

DRIVER = """
import json, sys
import httpx, ray
from ray import serve
import bentoml_ray

tag, url, secret = sys.argv[1], sys.argv[2], sys.argv[3]
ray.init(log_to_driver=False)  # RAY_ADDRESS and the token come from the environment
app = bentoml_ray.deployment(
    tag, {"ray_actor_options": {"runtime_env": {"env_vars": {"SERVICE_API_KEY": secret}}}}
)
serve.run(app, name="token_auth", route_prefix="/token-auth")
answer = httpx.post(f"{url}/token-auth/classify", json=[[5.1, 3.5, 1.4, 0.2]], timeout=60)
bad = httpx.post(f"{url}/token-auth/classify", content=b"{", timeout=60)
out = {"classify": answer.json(), "status": answer.status_code, "bad": bad.status_code}
print("RESULT " + json.dumps(out), flush=True)
"""

WRONG_TOKEN_DRIVER = """
import ray
try:
    ray.init(log_to_driver=False)
except Exception as exc:
    print("REFUSED", type(exc).__name__, flush=True)
else:
    print("CONNECTED", flush=True)
"""


def test_a_bento_serves_on_a_ray_start_cluster_with_token_authentication(
    ray_cluster: RayCluster, iris_bento: str
) -> None:
    # The session's cluster: two ``ray start`` nodes, token authentication on (conftest).
    # A driver with another token, started alongside. Ray tries a refused connection again
    # for 20 s (2.60, one try a second); 3 tries show it is refused.
    wrong = {
        **ray_cluster.env,
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_gcs_server_port_wait_time_s": "3",
    }
    with subprocess.Popen(
        [sys.executable, "-c", WRONG_TOKEN_DRIVER],
        env=wrong, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as refused:  # fmt: skip
        try:
            done = subprocess.run(
                [sys.executable, "-c", DRIVER, iris_bento, ray_cluster.serve_url, SECRET],
                env=ray_cluster.env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            refused_stdout, _ = refused.communicate(timeout=180)
        finally:
            refused.kill()  # a no-op once it has exited
            delete_apps(ray_cluster, "token_auth")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    output = done.stdout
    result = json.loads(output.split("RESULT ", 1)[1].splitlines()[0])
    assert result == {"classify": [0], "status": 200, "bad": 400}

    # Serve's default HTTP host: the proxy listens on loopback only, as the kernel's table
    # of listening sockets shows.
    assert httpx.get(f"{ray_cluster.serve_url}/-/healthz", timeout=30).status_code == 200
    port = int(ray_cluster.serve_url.rsplit(":", 1)[1])
    addresses = listening_addresses(port)
    assert loopback_only(addresses), addresses

    # The driver with another token was turned away (Ray 2.47 has no token authentication:
    # there it connects).
    if ray_cluster.token_auth:
        assert driver_was_refused(refused_stdout), refused_stdout
    else:
        assert "CONNECTED" in refused_stdout.splitlines(), refused_stdout

    # The secret given to the deployment's environment is in none of the logs: not the
    # replicas', the controller's, the proxy's or the driver's. (Ray's runtime-env agent
    # logs every runtime_env it sets up, env_vars included: that file is Ray's own record.)
    leaks = [
        str(path)
        for path in pathlib.Path(ray_cluster.temp_dir).rglob("*")
        if path.is_file() and not path.name.startswith("runtime_env_agent")
        and SECRET.encode() in path.read_bytes()
    ]  # fmt: skip
    assert not leaks, leaks
    assert SECRET not in output

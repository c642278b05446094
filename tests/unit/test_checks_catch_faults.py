"""The checks of the integration tests (``_checks``) fail on the faults they are there for.

Each is fed a faulty answer or message, and a good one: a check that cannot fail would
pass both.
"""

from __future__ import annotations

import pathlib
import socket
from typing import Any

import httpx
import pytest
from _checks import (
    driver_was_refused,
    listening_addresses,
    loopback_only,
    names_what_was_given,
    parse_listeners,
    secret_leaks,
)
from _support import FIXTURES, SECRET, bentoml_config_restored, cached_bentos, load_module

import bentoml_ray
from bentoml_ray import InvalidDeploymentConfig

# Loading the 1.2+ fixture swaps BentoML's configuration for the 1.2+ form.
_bentoml_config_restored = pytest.fixture(autouse=True, scope="module")(bentoml_config_restored)

# --- test_security: a secret never reaches an answer ----------------------------------------


def test_a_secret_in_an_error_body_or_a_header_is_flagged() -> None:
    assert secret_leaks(httpx.Response(500, text="Internal Server Error"), SECRET) == []
    traceback = f"RuntimeError: the model failed with SERVICE_API_KEY={SECRET}"
    assert secret_leaks(httpx.Response(500, text=traceback), SECRET) == ["body"]
    header = httpx.Response(500, text="error", headers={"X-Debug": SECRET})
    assert secret_leaks(header, SECRET) == ["headers"]


def test_the_fixtures_failures_carry_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """So a server that put exception text in its 500 answer would fail test_security."""
    monkeypatch.setenv("SERVICE_API_KEY", SECRET)
    runner_bento = load_module(FIXTURES / "slow_runner" / "service.py", "slow_runner_fixture")
    with pytest.raises(RuntimeError, match=SECRET):
        runner_bento.fail({"name": "SERVICE_API_KEY"})
    service = load_module(FIXTURES / "slow_service" / "service.py", "slow_service_fixture")
    with pytest.raises(RuntimeError, match=SECRET):
        service.SlowService.inner().fail("SERVICE_API_KEY")


# --- test_security: the wrong-token driver, the proxy's address -----------------------------


def test_a_crashed_or_connected_wrong_token_driver_is_not_refused() -> None:
    assert driver_was_refused("REFUSED AuthenticationError\n")
    assert not driver_was_refused("")  # crashed before printing: an import error, say
    assert not driver_was_refused("CONNECTED\n")
    assert not driver_was_refused("Traceback (most recent call last):\n  REFUSED\n")


def _listening(host: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_a_listener_on_every_address_is_not_loopback_only() -> None:
    with _listening("0.0.0.0") as everywhere, _listening("127.0.0.1") as loopback:
        everywhere_port = everywhere.getsockname()[1]
        loopback_port = loopback.getsockname()[1]
        assert listening_addresses(everywhere_port) == ["0.0.0.0"]
        assert not loopback_only(listening_addresses(everywhere_port))
        assert listening_addresses(loopback_port) == ["127.0.0.1"]
        assert loopback_only(listening_addresses(loopback_port))
    assert not loopback_only(listening_addresses(loopback_port))  # no listener: nothing shown


TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0000000000000000 100 0 0 10 0
"""  # noqa: E501


def test_an_ipv6_listener_on_every_address_is_not_loopback_only() -> None:
    # Port 8080 (1F90): one listener on "::"; 8081's and a connection's lines are not it.
    assert parse_listeners(TCP6, 8080) == ["::"]
    assert not loopback_only(parse_listeners(TCP6, 8080))


# --- test_config_fuzz: the error names the bad value -----------------------------------------

NESTED = {
    "service_deployment_config": {"ray_actor_options": 7, "num_replicas": 1},
    "runner_deployment_config": {"iris_clf": {"max_ongoing_requests": 8}},
    "enable_batching": None,
    "batching_config": None,
}


@pytest.mark.parametrize(
    "message",
    [
        "invalid options",
        "expected a dict, got int",
        "service_deployment_config must be a dict, not int.",  # it is a dict
        "A count must be a whole number >= 1, not 0.",  # 1 was given, and it is fine
        "Unknown option 'x'. Did you mean 'num_replicas'? Allowed options: ray_actor_options.",
    ],
)
def test_a_message_that_names_nothing_given_is_refused(message: str) -> None:
    assert not names_what_was_given(message, NESTED)


@pytest.mark.parametrize(
    ("message", "kwargs"),
    [
        (
            "ray_actor_options of the API-server deployment of 'iris_classifier' must be a "
            "dict, not int.",
            NESTED,
        ),
        ("max_ongoing_requests of runner 'iris_clf' must be a whole number >= 1, not 0.", {
            "runner_deployment_config": {"iris_clf": {"max_ongoing_requests": 0}}
        }),
        ("Unknown option 'num_replica' for runner 'iris_clf'. Did you mean 'num_replicas'?", {
            "runner_deployment_config": {"iris_clf": {"num_replica": 2}}
        }),
        ("enable_batching must be True, False or None, not 0.", {"enable_batching": 0}),
        ("batching_config must be a dict, not list.", {"batching_config": [1]}),
        (
            "Ray rejects the options of runner 'iris_clf': 1 validation error ... "
            "[type=greater_than_equal, input_value=-5, input_type=int]",
            {"runner_deployment_config": {"x": {"graceful_shutdown_timeout_s": -5}}},
        ),
    ],
)  # fmt: skip
def test_a_message_that_quotes_the_culprit_is_accepted(message: str, kwargs: Any) -> None:
    assert names_what_was_given(message, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service_deployment_config": {"ray_actor_options": 7}},
        {"service_deployment_config": ["num_replicas", 2]},
        {"runner_deployment_config": {"iris_clf": {"max_ongoing_requests": 0}}},
        {"batching_config": {"iris_clf": {}}, "enable_batching": False},
    ],
)
def test_the_librarys_own_messages_are_accepted(iris_bento: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidDeploymentConfig) as info:
        bentoml_ray.deployment(iris_bento, **kwargs)
    assert names_what_was_given(str(info.value), kwargs), str(info.value)


# --- the shipping tests: a far node's cache starts empty, and its copy is seen arriving ----


def test_a_cached_bento_is_seen_and_a_half_written_one_is_not(tmp_path: pathlib.Path) -> None:
    """``cached_bentos`` is what ``empty_far_cache``'s tests compare before and after: a
    Bento an earlier test left shows (so the empty start is checked), an unfinished copy
    (no ``bento.yaml`` yet) does not."""
    assert cached_bentos(tmp_path) == set()
    (tmp_path / "bentos" / "iris" / "v1").mkdir(parents=True)
    assert cached_bentos(tmp_path) == set()  # no bento.yaml: not a copy the node serves
    (tmp_path / "bentos" / "iris" / "v1" / "bento.yaml").write_text("service: x\n")
    assert cached_bentos(tmp_path) == {"iris:v1"}

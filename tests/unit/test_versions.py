"""Versions that never mix, without a cluster: the callee's check, the caller's resend, the
hub's record of how each version loaded, and what a source's version is.

The end-to-end proof (an upgrade, a broken version and a rollback under load) is
tests/integration/test_redeploy.py; the figures, benchmarks/rollout.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from bentoml_ray._bento.source import BentoSource
from bentoml_ray._hub.deployment import HubDeployment
from bentoml_ray._replica import calls
from bentoml_ray._replica.calls import (
    CallTarget,
    RetryingCaller,
    call_with_retries,
    stream_with_retries,
)
from bentoml_ray._replica.versions import OtherVersion, VersionGone, check_caller


def test_a_callee_refuses_only_another_version() -> None:
    check_caller("pair:v1", "pair:v1")
    check_caller("pair:v1", None)  # the hub's calls carry no version
    with pytest.raises(OtherVersion, match="runs pair:v1; the call came from pair:v2"):
        check_caller("pair:v1", "pair:v2")


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "OTHER_VERSION_PAUSE_S", 0.0)


def _refused(times: int, wrapped: bool, started: float = 0.0) -> tuple[list[int], Any]:
    """A send that a replica of another version (started at ``started``) refuses ``times``
    times, then answers."""
    sent: list[int] = []

    async def send() -> str:
        sent.append(1)
        if len(sent) <= times:
            error = OtherVersion("this replica runs v2", started)
            raise RayTaskError("call", "tb", error).as_instanceof_cause() if wrapped else error
        return "answer"

    return sent, send


def _refusing_stream(sent: list[int], started: float = 0.0) -> Any:
    """An ``open_stream`` that a replica of another version always refuses; counts in ``sent``."""

    def open_stream() -> AsyncIterator[int]:
        async def chunks() -> AsyncIterator[int]:
            sent.append(1)
            raise OtherVersion("this replica runs v2", started)
            yield 0  # a generator that never yields

        return chunks()

    return open_stream


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_refused_call_is_sent_again_without_spending_the_retry_budget(wrapped: bool) -> None:
    sent, send = _refused(5, wrapped)
    assert asyncio.run(call_with_retries(send, 0, "test")) == "answer"
    assert len(sent) == 6


def test_a_refused_call_waits_within_its_caller_s_deadline() -> None:
    sent, send = _refused(10**9, wrapped=True)

    async def bounded() -> Any:
        return await asyncio.wait_for(call_with_retries(send, 3, "test"), 0.05)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(bounded())
    assert len(sent) > 1


def test_a_call_only_other_versions_refuse_fails_with_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old ingress replica held open after its callees stopped: a 503, not a hang."""
    monkeypatch.setattr(calls, "OTHER_VERSION_WAIT_S", 0.05)
    sent, send = _refused(10**9, wrapped=True)
    open_stream = _refusing_stream(sent)

    async def stream() -> list[int]:
        return [chunk async for chunk in stream_with_retries(open_stream, 3, "test")]

    for refused in (call_with_retries(send, 3, "test"), stream()):
        sent.clear()
        with pytest.raises(VersionGone, match="moved on to another version") as raised:
            asyncio.run(refused)  # type: ignore[arg-type]
        assert raised.value.error_code == 503 and len(sent) > 1


def test_a_call_refused_by_a_newer_replica_fails_with_503_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refusing replica started after the caller: the caller's version was replaced, and
    once its old callees stopped no replica of it will come. One refused by an older replica
    waits longer (a new ingress whose callees are still starting); so does one whose
    caller's start is unknown."""
    monkeypatch.setattr(calls, "REPLACED_VERSION_WAIT_S", 0.0)
    sent, send = _refused(10**9, wrapped=True, started=200.0)
    open_stream = _refusing_stream(sent, started=200.0)

    async def stream(started: float) -> list[int]:
        return [chunk async for chunk in stream_with_retries(open_stream, 3, "test", started)]

    for refused in (call_with_retries(send, 3, "test", started=100.0), stream(100.0)):
        sent.clear()
        with pytest.raises(VersionGone, match="moved on to another version"):
            asyncio.run(refused)  # type: ignore[arg-type]
        assert sent == [1, 1]  # sent again once: the wait is over

    async def bounded(started: float) -> Any:
        return await asyncio.wait_for(call_with_retries(send, 3, "test", started), 0.05)

    for started in (300.0, math.inf):  # older callee, or the caller's start unknown
        sent.clear()
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(bounded(started))
        assert len(sent) > 1


def test_a_refusal_says_when_its_replica_started_on_the_caller_s_side() -> None:
    import pickle

    with pytest.raises(OtherVersion) as raised:
        check_caller("pair:v1", "pair:v2", started=123.5)
    back = pickle.loads(pickle.dumps(raised.value))  # as Ray sends it back
    assert back.started == 123.5 and str(back) == str(raised.value)


def test_a_refused_stream_is_opened_again() -> None:
    opened: list[int] = []

    def open_stream() -> AsyncIterator[int]:
        async def chunks() -> AsyncIterator[int]:
            opened.append(1)
            if len(opened) <= 2:
                raise OtherVersion("this replica runs v2")
            for i in range(3):
                yield i

        return chunks()

    async def collect() -> list[int]:
        return [chunk async for chunk in stream_with_retries(open_stream, 0, "test")]

    assert asyncio.run(collect()) == [0, 1, 2] and len(opened) == 3


class _RecordingHandle:
    """A stand-in DeploymentHandle that records what each call carried."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.call = self.stream = self

    def options(self, **_: Any) -> _RecordingHandle:
        return self

    def remote(self, *args: Any) -> Any:
        self.sent.append(args)

        class Response:
            def __await__(self) -> Any:
                return asyncio.sleep(0, "answer").__await__()

        return Response()


def test_calls_carry_the_caller_s_version_and_the_hub_s_carry_none() -> None:
    handle = _RecordingHandle()
    for version in ("pair:v1", None):
        caller = RetryingCaller(CallTarget(handle, 3, version), "x")  # type: ignore[arg-type]
        assert asyncio.run(caller.call("predict", (1,), {})) == "answer"
    assert handle.sent == [("predict", (1,), {}, "pair:v1"), ("predict", (1,), {})]


def test_a_dead_replica_is_still_retried_within_the_budget() -> None:
    sent: list[int] = []

    async def dies() -> str:
        sent.append(1)
        raise ActorDiedError()

    with pytest.raises(ActorDiedError):
        asyncio.run(call_with_retries(dies, 1, "test"))
    assert len(sent) == 2


def test_the_hub_keeps_how_each_version_loaded() -> None:
    hub = HubDeployment()
    deployments = ["Back", "Other"]
    assert hub.rollout("v2", deployments) == {"Back": None, "Other": None}
    hub.loaded("Back", "v2", "RuntimeError: no model")
    assert hub.rollout("v2", deployments)["Back"] == "RuntimeError: no model"
    hub.loaded("Back", "v2", "")  # a later replica loaded: the version works
    hub.loaded("Back", "v2", "RuntimeError: flaky")  # and a success stays
    hub.loaded("Other", "v1", "")
    assert hub.rollout("v2", deployments) == {"Back": "", "Other": None}


def test_a_bento_s_version_is_its_tag_and_an_import_string_s_its_build() -> None:
    bento = BentoSource("/bentos/pair/abc", None, "pair:abc", tag="pair:abc")
    assert bento.version == "pair:abc"
    first = BentoSource("service:Front", "/src", "service:Front")
    second = BentoSource("service:Front", "/src", "service:Front")
    assert first.version.startswith("service:Front@") and first.version != second.version
    assert first == second  # the build tells deploys apart, not the recipe


def test_the_hub_counts_the_replicas_serving_each_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from bentoml_ray._hub import deployment as hub_module

    now = [1000.0]
    monkeypatch.setattr(hub_module.time, "monotonic", lambda: now[0])
    hub = HubDeployment()
    hub.serving("Front", "pair:v1", "Front#a")
    hub.serving("Front", "pair:v2", "Front#b")
    hub.serving("Back", "pair:v1", "Back#c")
    assert hub.serving_count("Front", "pair:v2") == 1
    assert hub.versions() == {"Front": {"pair:v1": 1, "pair:v2": 1}, "Back": {"pair:v1": 1}}
    now[0] += hub_module.SERVING_LIVE_S + 1  # v1's replicas stopped saying so: gone
    hub.serving("Front", "pair:v2", "Front#b")
    assert hub.versions() == {"Front": {"pair:v2": 1}}

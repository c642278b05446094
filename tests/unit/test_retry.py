"""``max_retries``: checked before anything deploys; and which failures are retried.

The end-to-end proof (a replica killed under load) is in test_faults.py; these check the
option's validation and the retry rules on Ray's own exception types, without a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve import Application
from ray.serve.config import AutoscalingConfig

import bentoml_ray
from bentoml_ray import InvalidDeploymentConfig
from bentoml_ray._layout import _may_scale_to_zero
from bentoml_ray._replica.calls import (
    CallTarget,
    RetryingCaller,
    call_with_retries,
    replica_died,
    stream_with_retries,
)


@pytest.mark.parametrize("value", [-1, 11, 1.5, "3", True])
def test_max_retries_out_of_range_is_refused(iris_bento: str, value: Any) -> None:
    with pytest.raises(InvalidDeploymentConfig, match=r"max_retries of runner 'iris_clf'.*0.*10"):
        bentoml_ray.deployment(iris_bento, None, {"iris_clf": {"max_retries": value}})


def test_max_retries_zero_and_ten_are_accepted(iris_bento: str, review_scorer_bento: str) -> None:
    for value in (0, 10):
        app = bentoml_ray.deployment(iris_bento, None, {"iris_clf": {"max_retries": value}})
        assert isinstance(app, Application)
    app = bentoml_ray.deployment(review_scorer_bento, None, {"Preprocessor": {"max_retries": 0}})
    assert isinstance(app, Application)


def test_max_retries_is_refused_on_the_ingress(iris_bento: str, review_scorer_bento: str) -> None:
    """Nothing calls the API server over a handle; its clients' hop is theirs to retry."""
    for tag in (iris_bento, review_scorer_bento):
        with pytest.raises(InvalidDeploymentConfig, match="Unknown option 'max_retries'"):
            bentoml_ray.deployment(tag, {"max_retries": 0})


def test_only_a_dead_replica_counts() -> None:
    assert replica_died(ActorDiedError())
    assert replica_died(ActorUnavailableError("gone", None))
    # The callee's own callee died (after its own retries): the callee itself is healthy.
    upstream = RayTaskError("call", "traceback", ActorDiedError()).as_instanceof_cause()
    assert isinstance(upstream, ActorDiedError) and not replica_died(upstream)
    assert not replica_died(RayTaskError("call", "traceback", ValueError("bad input")))
    assert not replica_died(asyncio.TimeoutError())


def test_calls_are_retried_within_the_budget_only() -> None:
    attempts = []

    async def dies_twice() -> str:
        attempts.append(1)
        if len(attempts) <= 2:
            raise ActorDiedError()
        return "answer"

    assert asyncio.run(call_with_retries(dies_twice, 2, "test")) == "answer"
    attempts.clear()
    with pytest.raises(ActorDiedError):
        asyncio.run(call_with_retries(dies_twice, 1, "test"))
    assert len(attempts) == 2

    async def user_error() -> str:
        attempts.append(1)
        raise ValueError("bad input")

    attempts.clear()
    with pytest.raises(ValueError):
        asyncio.run(call_with_retries(user_error, 3, "test"))
    assert len(attempts) == 1


def test_a_call_above_grpcs_limit_says_which_setting_raises_it() -> None:
    """What Ray's high-throughput mode raises for a call above 4 MiB (its text, verbatim).

    The real one is met by the benchmark smoke run's 2 MB PNG workload, with the limit raised.
    """
    attempts = []

    async def too_large() -> str:
        attempts.append(1)
        raise RuntimeError(
            "<AioRpcError of RPC that terminated with: status = StatusCode.RESOURCE_EXHAUSTED "
            'details = "SERVER: Received message larger than max (14746383 vs. 4194304)">'
        )

    with pytest.raises(bentoml_ray.BentoRayError, match="RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE"):
        asyncio.run(call_with_retries(too_large, 3, "service 'PixelModel'"))
    assert len(attempts) == 1  # not retried: it would fail the same way


def test_a_stream_is_retried_only_before_its_first_chunk() -> None:
    opened = []

    def stream(die_after: int) -> AsyncIterator[int]:
        async def chunks() -> AsyncIterator[int]:
            opened.append(1)
            for i in range(3):
                if i == die_after and len(opened) == 1:
                    raise ActorDiedError()
                yield i

        return chunks()

    async def collect(die_after: int) -> list[int]:
        return [c async for c in stream_with_retries(lambda: stream(die_after), 3, "test")]

    assert asyncio.run(collect(0)) == [0, 1, 2] and len(opened) == 2
    opened.clear()
    with pytest.raises(ActorDiedError):
        asyncio.run(collect(1))  # chunk 0 was delivered: not repeated, not retried
    assert len(opened) == 1


class _FailingHandle:
    """A stand-in DeploymentHandle whose callee raised ``error``, as Ray reports it."""

    def __init__(self, error: BaseException) -> None:
        self.wrapped = RayTaskError("call", "traceback", error).as_instanceof_cause()
        self.call = self.stream = self

    def options(self, **_: Any) -> _FailingHandle:
        return self

    def remote(self, *_: Any) -> Any:
        wrapped = self.wrapped

        class Response:
            def __await__(self) -> Any:
                raise wrapped
                yield

            def __aiter__(self) -> Response:
                return self

            async def __anext__(self) -> Any:
                raise wrapped

        return Response()


def test_a_callee_s_own_exception_reaches_the_caller_unwrapped() -> None:
    """For runner calls and dependency calls alike: ``RetryingCaller`` serves both."""
    error = ValueError("bad input")
    caller = RetryingCaller(CallTarget(_FailingHandle(error), 3), "runner 'r'")  # type: ignore[arg-type]

    async def call() -> Any:
        return await caller.call("predict", (), {})

    async def stream() -> list[Any]:
        return [chunk async for chunk in caller.stream("predict", (), {})]

    for run in (call, stream):
        with pytest.raises(ValueError) as raised:
            asyncio.run(run())
        assert raised.value is error and not isinstance(raised.value, RayTaskError)


class _CountingHandle:
    """Counts ``options()``: the call that makes a real handle's router."""

    def __init__(self) -> None:
        self.made = 0

    def options(self, **_: Any) -> _CountingHandle:
        self.made += 1
        return self


def test_a_callee_that_may_be_at_zero_replicas_gets_its_handle_on_the_first_call() -> None:
    """Ray pushes a waiting call's metrics at once only from a router made after the
    caller's constructor; any other callee's router is made there, to know its replicas
    (and where each multiplexed model is) before the first call. On Ray: the from-zero
    test of test_redeploy.py and the model loads of test_multiplexing.py."""
    for at_zero, made_at_start in ((False, 1), (True, 0)):
        handle = _CountingHandle()
        RetryingCaller(CallTarget(handle, 3, None, at_zero), "x")  # type: ignore[arg-type]
        assert handle.made == made_at_start
    zero = {"min_replicas": 0, "max_replicas": 2}
    assert _may_scale_to_zero({"autoscaling_config": zero})
    assert _may_scale_to_zero({"autoscaling_config": AutoscalingConfig(**zero)})
    assert not _may_scale_to_zero({"autoscaling_config": {"max_replicas": 2}})
    assert not _may_scale_to_zero({"num_replicas": 1})

"""The batch gate: calls that arrive while a batch runs form one next batch, not many.

Real ``serve.batch`` in a real replica (``serve.batch`` works only inside one): a probe
deployment starts one call, lets ten more trickle in while its batch runs, and reports
the batch sizes it saw.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray import serve

from bentoml_ray._ray_compat import RAY_BATCH_OPTIONS
from bentoml_ray._replica.batch_gate import gated_batch

# The probe is defined here, so replicas get it by value rather than importing this file.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@serve.deployment
class GateProbe:
    async def batch_sizes(self, gated: bool, options: dict[str, Any]) -> list[int]:
        sizes: list[int] = []

        async def slow_model(calls: list[int]) -> list[int]:
            sizes.append(len(calls))
            await asyncio.sleep(0.2)
            return calls

        batcher = gated_batch(options, slow_model) if gated else serve.batch(**options)(slow_model)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.sleep(0.05)  # the first call's batch is running now
        later = []
        for i in range(1, 11):  # ten calls trickle in while it runs
            later.append(asyncio.ensure_future(batcher(i)))
            await asyncio.sleep(0.005)
        assert await asyncio.gather(first, *later) == list(range(11))
        return sizes


OPTIONS = {"max_batch_size": 64, "batch_wait_timeout_s": 0.0}

needs_concurrent_batches = pytest.mark.skipif(
    "max_concurrent_batches" not in RAY_BATCH_OPTIONS,
    reason="Ray 2.47's serve.batch runs one batch at a time (max_concurrent_batches: Ray 2.48+)",
)


@pytest.fixture(scope="module")
def probe(serve_url: str) -> Iterator[Any]:
    handle = serve.run(GateProbe.bind(), name="gate-probe", route_prefix=None)
    yield handle
    serve.delete("gate-probe")


def test_calls_arriving_during_a_batch_join_one_next_batch(probe: Any) -> None:
    assert probe.batch_sizes.remote(True, OPTIONS).result(timeout_s=60) == [1, 10]


@needs_concurrent_batches
def test_without_the_gate_ray_closes_a_batch_per_arrival(probe: Any) -> None:
    # Why the gate exists: Ray closes a batch before the model is free to run it.
    assert probe.batch_sizes.remote(False, OPTIONS).result(timeout_s=60) == [1] * 11


@needs_concurrent_batches
def test_concurrent_batches_go_straight_to_ray(probe: Any) -> None:
    options = {**OPTIONS, "max_concurrent_batches": 4}
    sizes = probe.batch_sizes.remote(True, options).result(timeout_s=60)
    assert sum(sizes) == 11 and len(sizes) > 2

"""The batch gate: calls that arrive while a batch runs form one next batch, not many.

Real ``serve.batch`` in a real replica (``serve.batch`` works only inside one): a probe
deployment starts one call, whose batch then holds the model until the probe lets it go;
meanwhile ten more calls arrive one by one, each after the event loop has had time to
take it in (queue it behind the gate, or let Ray's batcher close a batch for it). Then the
probe releases the first batch and reports the batch sizes the model saw. Nothing waits on
the clock: the order of events alone decides the batches.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from _support import delete_in_background
from ray import serve

from bentoml_ray._ray_compat import RAY_BATCH_OPTIONS
from bentoml_ray._replica.batch_gate import gated_batch

#: What Ray's serve.batch does differs between releases (max_concurrent_batches: 2.48+):
#: every Ray leg of the compatibility suite runs this file (BentoML plays no part in it).
pytestmark = [pytest.mark.compat, pytest.mark.ray_behaviour]

# The probe is defined here, so replicas get it by value rather than importing this file.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Event-loop turns after each arrival: Ray's batcher needs a handful to take a call from
#: its queue and close a batch with it (batch_wait_timeout_s 0: no timer runs out later).
TURNS = 50


async def _let_the_loop_run() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


@serve.deployment
class GateProbe:
    async def batch_sizes(self, gated: bool, options: dict[str, Any]) -> list[int]:
        sizes: list[int] = []
        running, release = asyncio.Event(), asyncio.Event()

        async def model(calls: list[int]) -> list[int]:
            sizes.append(len(calls))
            if len(sizes) == 1:  # the first batch holds the model until released
                running.set()
                await release.wait()
            return calls

        batcher = gated_batch(options, model, "probe") if gated else serve.batch(**options)(model)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.wait_for(running.wait(), timeout=30)
        later = []
        for i in range(1, 11):  # ten calls arrive one by one while the first batch runs
            later.append(asyncio.ensure_future(batcher(i)))
            await _let_the_loop_run()
        release.set()
        answers = await asyncio.wait_for(asyncio.gather(first, *later), timeout=30)
        assert answers == list(range(11))
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
    delete_in_background("gate-probe", None)


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

"""After a batch, the gate waits a little for the callers it answered (no Ray: ``BatchGate``
is plain asyncio; ``integration/test_batch_gate`` runs it under ``serve.batch``)."""

from __future__ import annotations

import asyncio

from bentoml_ray._replica.batch_gate import REFILL_MAX_S, REFILL_SHARE, BatchGate

RUN_S = 0.08  # a batch's run time: the longest hold is REFILL_SHARE of it


async def _batch(seconds: float = RUN_S) -> list[int]:
    await asyncio.sleep(seconds)
    return []


def test_two_cohorts_merge_into_one_batch() -> None:
    """4 calls ran, 4 waited: the gate opens when the 4 answered come back, not before."""

    async def scenario() -> None:
        gate = BatchGate(max_batch_size=8)
        running = asyncio.ensure_future(gate.execute(_batch(), 4))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(gate.admit()) for _ in range(4)]
        await running
        await asyncio.sleep(0.005)
        assert not any(call.done() for call in waiting)  # held: 4 of 8 are there
        back = [asyncio.ensure_future(gate.admit()) for _ in range(4)]
        await asyncio.wait_for(asyncio.gather(*waiting, *back), timeout=1)  # the 8th opened it

    asyncio.run(scenario())


def test_a_hold_ends_after_its_share_of_the_batch_run_time() -> None:
    async def scenario() -> None:
        gate = BatchGate(max_batch_size=8)
        running = asyncio.ensure_future(gate.execute(_batch(), 4))
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(gate.admit())
        await running
        loop = asyncio.get_running_loop()
        held_from = loop.time()
        await asyncio.wait_for(waiting, timeout=1)  # nobody else comes: the timer opens it
        held = loop.time() - held_from
        assert held <= min(RUN_S * REFILL_SHARE, REFILL_MAX_S) + 0.05, held

    asyncio.run(scenario())


def test_a_lone_caller_is_not_held() -> None:
    """Light load: the batch of one ends with no one waiting; its caller, back, enters."""

    async def scenario() -> None:
        gate = BatchGate(max_batch_size=8)
        await gate.execute(_batch(0.01), 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await gate.admit()
        assert loop.time() - started < 0.005
        # A full batch ends with the gate open: there is no one more to wait for.
        await gate.execute(_batch(0.01), 8)
        await asyncio.wait_for(gate.admit(), timeout=0.005)

    asyncio.run(scenario())

"""The API server's traffic timeout, on a plain asyncio loop (served through Ray, with a
stuck runner, in ``test_bad_input``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from bentoml_ray._ingress.frame import IngressFrame
from bentoml_ray._ingress.timeout import GRANULARITY_S


def _timed(app: Any, timeout: float) -> IngressFrame:
    """The ingress's frame keeping only the timeout (no request metrics)."""
    return IngressFrame(app, timeout=timeout, metrics=None, metrics_path="/metrics")


TIMEOUT = 0.3


class Sleeper:
    """An ASGI app that sleeps, before or after starting its answer; notes a cancel."""

    def __init__(self, seconds: float, answer_first: bool = False) -> None:
        self.seconds = seconds
        self.answer_first = answer_first
        self.cancelled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.answer_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if not self.answer_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


async def _request(app: Any) -> tuple[list[Message], float]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    loop = asyncio.get_running_loop()
    start = loop.time()
    await app({"type": "http", "method": "POST", "path": "/", "headers": []}, receive, send)
    return sent, loop.time() - start


def test_a_request_past_its_timeout_gets_504_and_its_work_is_cancelled() -> None:
    async def scenario() -> None:
        stuck = Sleeper(30)
        fast = Sleeper(0)
        timeout = _timed(stuck, TIMEOUT)
        (sent, elapsed), (fast_sent, _) = await asyncio.gather(
            _request(timeout), _request(_timed(fast, TIMEOUT))
        )
        assert sent[0]["status"] == 504 and b"in 0.3 seconds" in sent[1]["body"]
        assert stuck.cancelled
        assert TIMEOUT <= elapsed < TIMEOUT + GRANULARITY_S + 0.5
        assert fast_sent[0]["status"] == 200
        # The app serves on; a later request has its own deadline.
        stuck.seconds = 0
        sent, _ = await _request(timeout)
        deadlines = timeout.deadlines
        assert deadlines is not None
        assert sent[0]["status"] == 200 and not deadlines.timed_out
        assert not any(tasks for due in deadlines._waiting.values() for tasks in due.values())

    asyncio.run(scenario())


def test_an_answer_under_way_is_not_cut_off() -> None:
    async def scenario() -> None:
        slow_body = Sleeper(TIMEOUT + GRANULARITY_S + 0.2, answer_first=True)
        sent, _ = await _request(_timed(slow_body, TIMEOUT))
        assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"done"

    asyncio.run(scenario())


def test_a_client_that_leaves_cancels_the_work_and_gets_no_504() -> None:
    async def scenario() -> None:
        stuck = Sleeper(30)
        call = asyncio.ensure_future(_request(_timed(stuck, 60)))
        await asyncio.sleep(0.05)
        call.cancel()
        try:
            await call
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancel was swallowed")
        assert stuck.cancelled

    asyncio.run(scenario())


class Converter(Sleeper):
    """Turns the cancel into an error answer, as an API's error handling would."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"cancelled"})


def test_an_answer_begun_after_the_timeout_gives_way_to_the_504() -> None:
    async def scenario() -> None:
        task = asyncio.current_task()
        assert task is not None
        sent, _ = await _request(_timed(Converter(30), TIMEOUT))
        assert [m.get("status") for m in sent] == [504, None]
        if sys.version_info >= (3, 11):  # Python 3.10's tasks count no cancels
            assert task.cancelling() == 0  # the timeout's cancel was taken back

    asyncio.run(scenario())


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Python 3.10's tasks count no cancels (Task.uncancel is 3.11+): a client that leaves "
    "in the same turn of the loop as its timeout fires ends with the 504, not its cancel",
)
def test_a_client_leaving_as_the_timeout_fires_still_ends_the_task() -> None:
    async def scenario() -> None:
        timeout = _timed(Sleeper(30), TIMEOUT)
        call = asyncio.ensure_future(_request(timeout))
        await asyncio.sleep(0)  # the request starts, and waits for its deadline
        loop = asyncio.get_running_loop()
        assert timeout.deadlines is not None
        (deadline,) = timeout.deadlines._waiting[loop]
        # The client leaves in the same turn of the loop as the timer fires: both cancels
        # reach the task before it runs again.
        loop.call_at(deadline, call.cancel)
        try:
            await call
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the client's cancel was swallowed")

    asyncio.run(scenario())

"""``HubDeployment``: the hub's one replica (its options: ``_defaults.HUB_OPTIONS``)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from .exposition import Family
from .metrics_board import MetricsBoard
from .task_board import TaskBoard


def hub_deployment_name(service: str) -> str:
    """The hub's deployment name in the application of ``service``."""
    return f"{service}.hub"


class HubDeployment:
    """Answers the replicas' links (``_replica.hub_link``) by method name."""

    #: What a replica may call, through ``call(name, args, kwargs)`` as any callee.
    METHODS = frozenset(
        {"poll", "report", "scrape", "new_task", "task_status", "task_result",
         "set_task_result", "cancel_task"}
    )  # fmt: skip

    def __init__(self) -> None:
        #: This hub's own ID: rounds count again from 0 in a replacement hub.
        self.id = uuid.uuid4().hex
        self.metrics = MetricsBoard()
        self.tasks = TaskBoard()
        self._wake: dict[str, asyncio.Event] = {}
        self._cancels: dict[str, list[str]] = {}

    async def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name not in self.METHODS:
            raise AttributeError(f"the hub has no method {name!r}")
        result = getattr(self, name)(*args, **kwargs)
        return await result if asyncio.iscoroutine(result) else result

    async def poll(
        self, replica: str, seen: tuple[str, int] | None, wait_s: float
    ) -> dict[str, Any]:
        """What ``replica`` is asked to do: report for a new round, stop tasks; else wait.

        ``seen`` is the last (hub, round) it answered: a replica that last answered
        another hub (this one replaced it) reports at once, whatever the round.
        """
        self.metrics.seen(replica)
        wake = self._wake.setdefault(replica, asyncio.Event())
        if seen == (self.id, self.metrics.round) and not self._cancels.get(replica):
            with contextlib.suppress(asyncio.TimeoutError):  # no news: answer as is
                await asyncio.wait_for(wake.wait(), wait_s)
        wake.clear()
        self.metrics.seen(replica)
        return {
            "round": (self.id, self.metrics.round),
            "cancel": self._cancels.pop(replica, []),
        }

    def report(self, replica: str, round: int, families: list[Family]) -> None:
        self.metrics.report(replica, round, families)

    async def scrape(self) -> bytes:
        round = self.metrics.next_round()
        live = self.metrics.live()
        for replica in list(self._wake):
            if replica in live:
                self._wake[replica].set()
            else:  # gone: its counts stay on the board, its wake-up goes
                del self._wake[replica]
        return await self.metrics.collect(round)

    def new_task(self, name: str, input: bytes, replica: str) -> str:
        return self.tasks.new_entry(name, input, replica)

    def task_status(self, task_id: str) -> dict[str, Any]:
        return self.tasks.status(task_id)

    def task_result(self, task_id: str) -> tuple[dict[str, Any], bytes, bytes]:
        return self.tasks.get(task_id)

    def set_task_result(self, task_id: str, result: bytes, status: str) -> None:
        self.tasks.set_result(task_id, result, status)

    def cancel_task(self, task_id: str) -> dict[str, Any]:
        row, replica = self.tasks.cancel(task_id)
        if replica is not None:
            self._cancels.setdefault(replica, []).append(task_id)
            self._wake.setdefault(replica, asyncio.Event()).set()
        return row

"""``HubDeployment``: the hub's one replica (its options: ``_defaults.HUB_OPTIONS``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

from .exposition import Family
from .metrics_board import MetricsBoard
from .task_board import TaskBoard

#: A replica that has not said it serves for this long is taken for gone
#: (``_replica.versions.SERVING_EVERY_S`` is how often it says so).
SERVING_LIVE_S = 15.0


def hub_deployment_name(service: str) -> str:
    """The hub's deployment name in the application of ``service``."""
    return f"{service}.hub"


class HubDeployment:
    """Answers the replicas' links (``_replica.hub_link``) by method name."""

    #: What a replica may call, through ``call(name, args, kwargs)`` as any callee.
    METHODS = frozenset(
        {"poll", "report", "scrape", "new_task", "task_status", "task_result",
         "set_task_result", "cancel_task", "loaded", "rollout", "serving", "serving_count",
         "versions"}
    )  # fmt: skip

    def __init__(self) -> None:
        #: This hub's own ID: rounds count again from 0 in a replacement hub.
        self.id = uuid.uuid4().hex
        self.metrics = MetricsBoard()
        self.tasks = TaskBoard()
        #: How loading went, by (deployment, Bento version): "" loaded, else the error.
        self.loads: dict[tuple[str, str], str] = {}
        #: When each replica taking traffic last said so, by (deployment, Bento version).
        self._serving: dict[tuple[str, str], dict[str, float]] = {}
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

    def loaded(self, deployment: str, version: str, error: str) -> None:
        """A replica of ``deployment`` at ``version`` loaded ("") or failed to (``error``).

        A success stays: a later replica's failure (a flaky load) does not undo it.
        """
        if self.loads.get((deployment, version)) != "":
            self.loads[(deployment, version)] = error

    def rollout(self, version: str, deployments: list[str]) -> dict[str, str | None]:
        """How loading went at ``version`` for each of ``deployments`` (None: no word yet)."""
        return {name: self.loads.get((name, version)) for name in deployments}

    def serving(self, deployment: str, version: str, replica: str) -> None:
        """``replica`` of ``deployment`` serves ``version`` (said every few seconds)."""
        self._serving.setdefault((deployment, version), {})[replica] = time.monotonic()

    def serving_count(self, deployment: str, version: str) -> int:
        """How many replicas of ``deployment`` at ``version`` said so lately."""
        heard = self._serving.get((deployment, version), {})
        since = time.monotonic() - SERVING_LIVE_S
        for replica in [r for r, at in heard.items() if at < since]:
            del heard[replica]
        return len(heard)

    def versions(self) -> dict[str, dict[str, int]]:
        """Replicas serving, by deployment, then by Bento version (``bentoml-ray status``)."""
        counts: dict[str, dict[str, int]] = {}
        for deployment, version in list(self._serving):
            count = self.serving_count(deployment, version)
            if count:
                counts.setdefault(deployment, {})[version] = count
        return counts

"""A replica's link to its application's hub (``_hub``): metrics reports, task results.

Every deployment of the application is bound with the hub's handle, and each replica
keeps one poll waiting at the hub (``POLL_S`` at most, then again). The hub answers it
when a scrape starts a round (the replica then reports its Prometheus registry)
or when a task this replica runs is cancelled elsewhere. So a scrape through any replica
reads every replica's metrics, a cancel through any replica reaches the task, and
serving requests sends the hub nothing. The link also mirrors the registry into Ray's
metrics pipeline (``ray_metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from ray import serve

from .._defaults import HUB_POLL_S
from .._hub.exposition import report
from .calls import CallTarget, RetryingCaller
from .ray_metrics import RayMetricsMirror

logger = logging.getLogger("bentoml_ray")

#: The longest a poll waits at the hub before it is sent again (``_defaults``).
POLL_S = HUB_POLL_S
#: The pause after a failed poll (the hub restarting, say) before the next.
RETRY_S = 1.0


class HubLink:
    """This replica's side of the hub. Made in a deployment's constructor, on its loop."""

    def __init__(self, target: CallTarget) -> None:
        deployment = serve.get_replica_context().deployment
        #: How this replica is named in the hub: its deployment, and an ID of its own.
        self.replica = f"{deployment}#{uuid.uuid4().hex[:8]}"
        self._hub = RetryingCaller(target, "the application's hub")
        self._running: dict[str, asyncio.Future[Any]] = {}
        self._cancelled: set[str] = set()
        loop = asyncio.get_running_loop()
        self._tasks = (
            loop.create_task(self._answer_polls()),
            loop.create_task(RayMetricsMirror().run()),
        )

    async def call(self, name: str, *args: Any) -> Any:
        """Call hub method ``name`` (``_hub.deployment.HubDeployment.METHODS``)."""
        return await self._hub.call(name, args, {})

    async def scrape(self) -> bytes:
        """The application's metrics: every replica's, merged (``_hub.exposition``)."""
        text: bytes = await self.call("scrape")
        return text

    def running(self, task_id: str, future: asyncio.Future[Any]) -> None:
        """``future`` runs task ``task_id`` here: a cancel from the hub cancels it."""
        self._running[task_id] = future
        future.add_done_callback(lambda _: self._running.pop(task_id, None))

    def was_cancelled(self, task_id: str) -> bool:
        """Whether the hub cancelled task ``task_id`` here (asked once, when it stops)."""
        if task_id in self._cancelled:
            self._cancelled.discard(task_id)
            return True
        return False

    async def _answer_polls(self) -> None:
        seen: tuple[str, int] | None = None  # the last (hub, round) reported for
        while True:
            try:
                order = await self.call("poll", self.replica, seen, POLL_S)
                for task_id in order["cancel"]:
                    future = self._running.get(task_id)
                    if future is not None:
                        self._cancelled.add(task_id)
                        future.cancel()
                if tuple(order["round"]) != seen:  # a new round, or a new hub
                    seen = tuple(order["round"])
                    await self.call("report", self.replica, seen[1], report())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the hub restarting, a node lost: poll again
                logger.debug("Poll of the application's hub failed (%s); polling again.", exc)
                await asyncio.sleep(RETRY_S)

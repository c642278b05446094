"""``@bentoml.task`` results in the application's hub, as BentoML's result store.

BentoML's app for a service keeps task results in a ``ResultStore`` (a SQLite file that
``bentoml serve``'s workers share). Here the store is the hub's ``TaskBoard``, reached over
the replica's hub link, so every replica on every node sees every task. Requests and
answers cross as BentoML's own JSON serialisation of them.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .._bentoml_internals import (
    CompletedResultRow,
    JSONSerde,
    ResultRow,
    ResultStatus,
    ResultStore,
)

if TYPE_CHECKING:
    from .._replica.hub_link import HubLink


def _row(row: dict[str, Any]) -> dict[str, Any]:
    def when(value: str | None) -> datetime.datetime | None:
        return None if value is None else datetime.datetime.fromisoformat(value)

    return {
        "task_id": row["task_id"],
        "name": row["name"],
        "status": ResultStatus(row["status"]),
        "created_at": when(row["created_at"]),
        "executed_at": when(row["executed_at"]),
    }


class HubResultStore(ResultStore):  # type: ignore[misc]
    def __init__(self, hub: HubLink) -> None:
        self._hub = hub
        self._serde = JSONSerde()

    async def __aenter__(self) -> HubResultStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        """BentoML closes its store when the service stops; the hub's outlives the replica."""

    async def get_status(self, task_id: str) -> Any:
        return ResultRow(**_row(await self._hub.call("task_status", task_id)))

    async def get(self, task_id: str) -> Any:
        row, input, result = await self._hub.call("task_result", task_id)
        completed = row["completed_at"]
        return CompletedResultRow(
            **_row(row),
            input=await self._serde.deserialize_request(input),
            result=await self._serde.deserialize_response(result),
            completed_at=None if completed is None else datetime.datetime.fromisoformat(completed),
        )

    async def new_entry(self, name: str, input: Request) -> str:
        data = await self._serde.serialize_request(input)
        task_id: str = await self._hub.call("new_task", name, data, self._hub.replica)
        return task_id

    async def set_result(self, task_id: str, result: Response, status: Any) -> None:
        data = await self._serde.serialize_response(result)
        await self._hub.call("set_task_result", task_id, data, ResultStatus(status).value)

    async def set_status(self, task_id: str, status: Any) -> None:
        if ResultStatus(status) is ResultStatus.CANCELED:
            await self._hub.call("cancel_task", task_id)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel the task wherever it runs; its row afterwards (``KeyError``: no such task)."""
        row: dict[str, Any] = await self._hub.call("cancel_task", task_id)
        return row

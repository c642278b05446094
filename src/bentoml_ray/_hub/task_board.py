"""The results of ``@bentoml.task`` calls, for every replica of the application.

``bentoml serve`` keeps them in a SQLite file that its workers share, on one machine. On
Ray the replica that ran a task may be on another node, or gone, when a client polls for
it through another; so results live here, in the hub, and any replica reaches them over
its handle. As in BentoML: a task is ``in_progress`` until its API answers, then
``completed`` (an answer below 400) or ``failed``; its stored request and answer are kept
for ``RESULT_RETENTION_S`` after it ends, and expired results are dropped whenever a task
ends. Unlike BentoML, cancelling reaches the task: the replica that runs it is told
(``cancel`` names it), and a cancelled task stays ``canceled``.
"""

from __future__ import annotations

import datetime
import time
import uuid
from dataclasses import dataclass
from typing import Any

#: BentoML's own retention of a finished task's result: a day.
RESULT_RETENTION_S = 24 * 60 * 60

IN_PROGRESS, CANCELED = "in_progress", "canceled"


@dataclass
class _Task:
    name: str
    replica: str
    input: bytes
    status: str = IN_PROGRESS
    created_at: str = ""
    executed_at: str | None = None
    completed_at: str | None = None
    result: bytes | None = None
    ended: float | None = None  # monotonic: when it ended, for the retention


def _now() -> str:
    # The form BentoML's SQLite store answers with: UTC, to the second, without a zone.
    return (
        datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()
    )


class TaskBoard:
    def __init__(self) -> None:
        self._tasks: dict[str, _Task] = {}

    def new_entry(self, name: str, input: bytes, replica: str) -> str:
        task_id = uuid.uuid4().hex
        now = _now()
        self._tasks[task_id] = _Task(name, replica, input, created_at=now, executed_at=now)
        return task_id

    def status(self, task_id: str) -> dict[str, Any]:
        """The task's row, as BentoML's store has it; ``KeyError`` if there is none."""
        task = self._tasks[task_id]
        return {
            "task_id": task_id,
            "name": task.name,
            "status": task.status,
            "created_at": task.created_at,
            "executed_at": task.executed_at,
            "completed_at": task.completed_at,
        }

    def get(self, task_id: str) -> tuple[dict[str, Any], bytes, bytes]:
        """Row, request and answer of an ended task; ``RuntimeError`` while it has none."""
        task = self._tasks[task_id]
        if task.result is None:
            raise RuntimeError(f"task {task_id} is not completed yet")
        return self.status(task_id), task.input, task.result

    def set_result(self, task_id: str, result: bytes, status: str) -> None:
        task = self._tasks.get(task_id)
        if task is not None and task.status == IN_PROGRESS:  # a cancelled task stays so
            task.status, task.result = status, result
            task.completed_at, task.ended = _now(), time.monotonic()
        self._expire()

    def cancel(self, task_id: str) -> tuple[dict[str, Any], str | None]:
        """Mark the task cancelled; its row, and the replica to stop it (None: it had ended)."""
        task = self._tasks[task_id]
        if task.status != IN_PROGRESS:
            return self.status(task_id), None
        task.status, task.ended = CANCELED, time.monotonic()
        return self.status(task_id), task.replica

    def _expire(self) -> None:
        cutoff = time.monotonic() - RESULT_RETENTION_S
        expired = [
            i for i, task in self._tasks.items() if task.ended is not None and task.ended < cutoff
        ]
        for task_id in expired:
            del self._tasks[task_id]

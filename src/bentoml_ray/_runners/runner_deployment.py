"""The deployment that hosts one BentoML runner.

Each replica loads the service once, at start, and runs the runner's model in-process
through a ``LocalRunnerHandle`` (its model is loaded then, not per request; batched
methods go through ``serve.batch``). Calls arrive from the API server over a
``DeploymentHandle`` as ``call(method, args, kwargs, caller)`` or ``stream(...)``; a call
from a replica of another Bento version is refused (``_replica.versions``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from .._bento.source import BentoSource
from .._replica.calls import CallTarget
from .._replica.hub_link import HubLink
from .._replica.versions import (
    IngressRollout,
    callee_loaded,
    check_caller,
    report_load,
)
from .call_placement import Placement
from .local_runner import LocalRunnerHandle
from .service import load_service


class RunnerDeployment:
    async def __init__(  # type: ignore[misc]
        self,
        source: BentoSource,
        calls: dict[str, CallTarget],  # a runner calls no other deployment: empty
        hub: CallTarget | None,
        runner_name: str,
        batching: dict[str, dict[str, Any]],
        placement: Placement,
        rollout: IngressRollout | None = None,
    ) -> None:
        # The model's own metrics reach /metrics and Ray's (None: served outside Ray).
        self.hub = HubLink(hub) if hub is not None else None
        self.version = source.version
        self.started = time.time()  # said in refusals (``check_caller``)
        try:
            svc = load_service(source)
            self.runner = next(r for r in svc.runners if r.name == runner_name)
            self.runner.init_client(LocalRunnerHandle, batching, placement)
        except Exception as exc:
            await report_load(self.hub, self.version, exc)
            raise
        await callee_loaded(rollout, f"runner {runner_name!r}", self.hub, self.version)

    async def wake(self) -> None:
        """An API server starting from zero replicas started this one (``calls.wake_callees``)."""

    async def call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], caller: str | None = None
    ) -> Any:
        check_caller(self.version, caller, self.started)
        return await getattr(self.runner, method).async_run(*args, **kwargs)

    async def stream(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        caller: str | None = None,
    ) -> AsyncGenerator[Any, None]:
        check_caller(self.version, caller, self.started)
        async for chunk in getattr(self.runner, method).async_stream(*args, **kwargs):
            yield chunk

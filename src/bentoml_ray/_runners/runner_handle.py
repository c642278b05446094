"""The API server's side of a runner: BentoML runner calls sent over a Ray DeploymentHandle.

BentoML lets a runner's transport be swapped (``Runner.init_client(handle_class, ...)``);
this is the transport that turns ``runner.predict.async_run(x)`` in the user's API function
into one ``DeploymentHandle`` call to the runner's deployment: Ray carries the arguments in
its object store, no HTTP and no BentoML payload encoding inside the cluster. A call whose
runner replica dies is sent again to another replica (``_replica.calls``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .._bentoml_internals import Runner, RunnerHandle, RunnerMethod
from .._replica.calls import CallTarget, RetryingCaller
from .._replica.loop_bridge import LoopBridge

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")
R = TypeVar("R")


class RayRunnerHandle(RunnerHandle):
    def __init__(self, runner: Runner, target: CallTarget) -> None:
        self._caller = RetryingCaller(target, f"runner {runner.name!r}")
        self._bridge = LoopBridge()  # made in the API server's constructor, on its loop

    async def is_ready(self, timeout: int) -> bool:
        # Ray Serve only routes to replicas whose constructor finished, so a handle is ready.
        return True

    def run_method(
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        # Called from the thread a sync API function runs in; blocks that thread only.
        return self._bridge.wait(lambda: self.async_run_method(method, *args, **kwargs))

    async def async_run_method(
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return cast(R, await self._caller.call(method.name, args, kwargs))

    async def async_stream_method(  # type: ignore[override]
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[R, None]:
        async for chunk in self._caller.stream(method.name, args, kwargs):
            yield chunk

"""The API server's side of a runner: BentoML runner calls sent over a Ray DeploymentHandle.

BentoML lets a runner's transport be swapped (``Runner.init_client(handle_class, ...)``);
this is the transport that turns ``runner.predict.async_run(x)`` in the user's API function
into one ``DeploymentHandle`` call to the runner's deployment: Ray carries the arguments in
its object store, no HTTP and no BentoML payload encoding inside the cluster. A call whose
runner replica dies is sent again to another replica (``_replica_retry``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ray.serve.handle import DeploymentResponse, DeploymentResponseGenerator

from ._bentoml_internals import Runner, RunnerHandle, RunnerMethod
from ._loop_bridge import LoopBridge
from ._replica_retry import (
    CallTarget,
    await_response,
    call_with_retries,
    stream_with_retries,
)

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")
else:
    P = TypeVar("P")
R = TypeVar("R")


class RayRunnerHandle(RunnerHandle):
    def __init__(self, runner: Runner, target: CallTarget) -> None:
        self._handle = target.handle
        self._stream_handle = target.handle.options(stream=True)
        self._max_retries = target.max_retries
        self._what = f"runner {runner.name!r}"
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
        async def send() -> R:
            response = cast(
                DeploymentResponse[R], self._handle.call.remote(method.name, args, kwargs)
            )
            return await await_response(response)

        return await call_with_retries(send, self._max_retries, self._what)

    async def async_stream_method(  # type: ignore[override]
        self, method: RunnerMethod[Any, P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncGenerator[R, None]:
        def open_stream() -> DeploymentResponseGenerator[R]:
            return cast(
                DeploymentResponseGenerator[R],
                self._stream_handle.stream.remote(method.name, args, kwargs),
            )

        async for chunk in stream_with_retries(open_stream, self._max_retries, self._what):
            yield chunk

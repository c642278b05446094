"""Calls to a runner or dependency deployment: retried when the replica serving it dies.

Ray Serve's router already re-routes a call whose replica is gone *before* the replica
took it. A call the replica had accepted, though, fails with ``ActorDiedError`` (or
``ActorUnavailableError`` while Ray cannot tell yet) when the replica dies under it: a
crash, an out-of-memory kill, a node lost, ``ray.kill``. Inference calls are idempotent,
so such a call is sent again; Ray has by then taken the dead replica out of rotation, so
it goes to another one (or waits for the replacement). The retry is bounded
(``max_retries`` in the callee's options, default ``_defaults.MAX_RETRIES``; 0 turns it
off), and only a replica's death is retried: an exception the user's code raised, a
timeout or a cancellation reaches the caller at once, as the exception the callee raised
(not Ray's ``RayTaskError`` around it), for runner calls and dependency calls alike.

A call refused because the callee runs another Bento version (``versions.OtherVersion``,
during a rollout) is sent again after ``OTHER_VERSION_PAUSE_S``: the caller's own deadline
bounds it, and Ray's router meanwhile learns of new replicas. A new ingress's calls wait so
for their callees (older replicas) a fraction of a second. A call refused by a replica that
started after its caller comes from an old ingress replica whose version was replaced
(Ray's high-throughput proxy keeps sending it requests for a while): once its old callees
stopped, no replica of its version will come, so after ``REPLACED_VERSION_WAIT_S`` it fails
with 503 (``versions.VersionGone``) rather than hang until the replica stops and its
connections close. ``OTHER_VERSION_WAIT_S`` bounds the rest, where the start times do not
tell (another node's clock, say).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ray.exceptions import RayActorError, RayTaskError
from ray.serve import Application
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

from .._defaults import MAX_RETRIES, ROUTED_HANDLES_KEPT
from .._errors import BentoRayError
from .._multiplexing import routing_signals
from .._ray_compat import handle_routing_options
from .versions import OtherVersion, VersionGone

logger = logging.getLogger("bentoml_ray")

T = TypeVar("T")

#: Pause before retry ``n`` is ``BACKOFF_S * 2 ** (n - 1)``, capped at ``MAX_BACKOFF_S``.
BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
#: Pause before a call refused by a replica of another version is sent again.
OTHER_VERSION_PAUSE_S = 0.05
#: How long a call may be refused by replicas of other versions only before it fails.
OTHER_VERSION_WAIT_S = 15.0
#: The same, when the refusing replica started after the caller: the caller's version was
#: replaced. Not at once: its old callees may still take the calls of its last requests
#: for a moment, until Ray stops them.
REPLACED_VERSION_WAIT_S = 1.0


@dataclass(frozen=True)
class CallTarget:
    """A runner's or dependency's deployment handle, with its retry budget.

    Bound into the caller's deployment in place of the bare handle (Ray swaps the bound
    application inside it for a ``DeploymentHandle``, wherever it sits in the arguments).
    """

    handle: DeploymentHandle[Any]
    max_retries: int = MAX_RETRIES
    #: The Bento version of the caller, stamped on its calls; None: unstamped (the hub).
    version: str | None = None
    #: The callee may be at zero replicas (``min_replicas: 0``): its handle is made on the
    #: first call, not in the caller's constructor. A router Ray made there missed its
    #: at-once scale-from-zero push (the callee then started up to 10 s later, at the
    #: next periodic push); one made before the first call knows the callee's replicas,
    #: and where each multiplexed model is, when the first calls come.
    at_zero: bool = False
    #: The caller may be at zero replicas as well: each of its replicas starts for a request
    #: that will likely call this callee, so it wakes the callee first thing
    #: (``wake_callees``), and the two start side by side rather than one after the other.
    wake: bool = False


def wake_callees(targets: Iterable[CallTarget]) -> None:
    """Send a ``wake`` call to each callee of ``targets`` that asks for one, not awaited.

    A waiting call is what makes Ray start a deployment at zero replicas; the callee's
    ``wake`` does nothing, and the caller does not wait for it.
    """
    for target in targets:
        if target.wake:
            target.handle.options(method_name="wake").remote()


def replica_died(exc: BaseException) -> bool:
    """Whether ``exc`` means the callee's replica died, rather than the call itself failing.

    ``RayTaskError`` is excluded although Ray makes its wrapper of an ``ActorDiedError``
    an instance of it: that is the callee reporting that *its* callee died (after its own
    retries), and the callee itself is healthy.
    """
    return isinstance(exc, RayActorError) and not isinstance(exc, RayTaskError)


def refusal(exc: BaseException) -> OtherVersion | None:
    """The callee's refusal of a call from another version, if that is what ``exc`` is."""
    cause = unwrap(exc) if isinstance(exc, RayTaskError) else exc
    return cause if isinstance(cause, OtherVersion) else None


async def await_response(response: DeploymentResponse[T]) -> T:
    """The call's result; if the caller is cancelled (a timeout, a client gone), so is the call.

    Ray cancels a call it has not yet sent to a replica, but not one a replica is running
    when only the task awaiting it is cancelled: a timed-out call would keep its replica
    busy. ``response.cancel()`` stops it there too.
    """
    try:
        return await response
    except asyncio.CancelledError:
        response.cancel()  # type: ignore[no-untyped-call]
        raise


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_S * 2 ** (attempt - 1), MAX_BACKOFF_S))


def _log_retry(what: str, exc: BaseException, attempt: int, max_retries: int) -> None:
    logger.warning(
        "Call to %s failed because its replica died (%s); retry %d of %d on another replica.",
        what,
        type(exc).__name__,
        attempt,
        max_retries,
    )


#: What gRPC says of a message above its limit (Ray's high-throughput mode calls over it).
_GRPC_TOO_LARGE = "Received message larger than max"


def _too_large(exc: BaseException, what: str) -> BentoRayError:
    return BentoRayError(
        f"A call to {what} carried more than Ray's limit for calls between deployments in "
        "its high-throughput mode (gRPC; 4 MiB unless RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH "
        f"says, in bytes, in the environment of the Ray processes): {exc}"
    )


def _refused_since(
    since: float | None, what: str, exc: BaseException, by: OtherVersion, started: float
) -> float:
    """When the run of refusals by other versions began; raise once the caller's version
    is gone: refused ``by`` a replica that started after the caller (``started``), or for
    too long."""
    now = time.monotonic()
    if since is None:
        return now
    bound = REPLACED_VERSION_WAIT_S if by.started > started else OTHER_VERSION_WAIT_S
    if now - since >= bound:
        raise VersionGone(
            f"No replica of this version is left to take the call to {what}: the application "
            "moved on to another version. Send the request again."
        ) from exc
    return since


async def call_with_retries(
    send: Callable[[], Awaitable[T]], max_retries: int, what: str, started: float = math.inf
) -> T:
    """``await send()``, sending again up to ``max_retries`` times if the replica died;
    ``started``: when the calling replica started (unknown: never older than a callee)."""
    attempt = 0
    refused: float | None = None
    while True:
        try:
            return await send()
        except Exception as exc:
            if _GRPC_TOO_LARGE in str(exc):
                raise _too_large(exc, what) from exc
            if (by := refusal(exc)) is not None:
                refused = _refused_since(refused, what, exc, by, started)
                await asyncio.sleep(OTHER_VERSION_PAUSE_S)
                continue
            if attempt >= max_retries or not replica_died(exc):
                raise
            attempt += 1
            _log_retry(what, exc, attempt, max_retries)
            await asyncio.sleep(_backoff(attempt))


async def stream_with_retries(
    open_stream: Callable[[], AsyncIterator[T]],
    max_retries: int,
    what: str,
    started: float = math.inf,
) -> AsyncIterator[T]:
    """Yield ``open_stream()``'s chunks; reopen it if the replica died before the first one.

    Once a chunk reached the caller, a retry would repeat it, so a death after that is
    the caller's error. Refusals are as for ``call_with_retries``.
    """
    attempt = 0
    refused: float | None = None
    while True:
        delivered = False
        try:
            async for chunk in open_stream():
                delivered = True
                yield chunk
            return
        except Exception as exc:
            if not delivered and _GRPC_TOO_LARGE in str(exc):
                raise _too_large(exc, what) from exc
            if not delivered and (by := refusal(exc)) is not None:
                refused = _refused_since(refused, what, exc, by, started)
                await asyncio.sleep(OTHER_VERSION_PAUSE_S)
                continue
            if delivered or attempt >= max_retries or not replica_died(exc):
                raise
            attempt += 1
            _log_retry(what, exc, attempt, max_retries)
            await asyncio.sleep(_backoff(attempt))


def unwrap(exc: RayTaskError) -> BaseException:
    """The exception the callee raised, rather than Ray's wrapper of it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RetryingCaller:
    """Calls a runner's or dependency's deployment by method name, retried as above.

    The deployment's ``call`` method returns a result and its ``stream`` method yields
    chunks (``RunnerDeployment`` and the dependency services' deployments both have them);
    ``what`` names the callee in the retry warnings.
    """

    def __init__(self, target: CallTarget, what: str) -> None:
        self._handle = target.handle
        #: ``options()`` makes the handle's router: now, or on first use (``at_zero``).
        self._stream_handle: DeploymentHandle[Any] | None = None
        if not target.at_zero:
            self._streaming()
        self._max_retries = target.max_retries
        self._what = what
        #: When this replica started, as its callees' refusals say theirs (``time.time()``).
        self._started = time.time()
        #: The caller's version, as the callee's ``call`` and ``stream`` take it last.
        self._stamp = () if target.version is None else (target.version,)
        #: Handles that carry a model id or session id, by (stream, model id, session id).
        self._routed: dict[tuple[bool, str, str], DeploymentHandle[Any]] = {}

    def _streaming(self) -> DeploymentHandle[Any]:
        if self._stream_handle is None:
            self._stream_handle = self._handle.options(stream=True)
        return self._stream_handle

    def _handle_now(self, stream: bool) -> DeploymentHandle[Any]:
        """The handle for a call made now: with the request's routing signals, if it has any.

        Ray's routers (model multiplexing, session affinity) see only what a handle carries.
        """
        base = self._streaming() if stream else self._handle
        model_id, session_id = routing_signals()
        if not model_id and not session_id:
            return base
        key = (stream, model_id, session_id)
        handle = self._routed.get(key)
        if handle is None:
            if len(self._routed) >= ROUTED_HANDLES_KEPT:
                self._routed.clear()  # many sessions: start again rather than grow
            options: dict[str, Any] = handle_routing_options(model_id, session_id)
            handle = self._routed[key] = base.options(**options)
        return handle

    async def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        handle = self._handle_now(stream=False)

        async def send() -> Any:
            response = cast(
                "DeploymentResponse[Any]", handle.call.remote(name, args, kwargs, *self._stamp)
            )
            return await await_response(response)

        try:
            return await call_with_retries(send, self._max_retries, self._what, self._started)
        except RayTaskError as exc:  # unwrapped after the retries, which must see Ray's type
            raise unwrap(exc) from None

    async def stream(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        handle = self._handle_now(stream=True)

        def open_stream() -> DeploymentResponseGenerator[Any]:
            return cast(
                "DeploymentResponseGenerator[Any]",
                handle.stream.remote(name, args, kwargs, *self._stamp),
            )

        try:
            chunks = stream_with_retries(open_stream, self._max_retries, self._what, self._started)
            async for chunk in chunks:
                yield chunk
        except RayTaskError as exc:
            raise unwrap(exc) from None


def bound_target(
    app: Application,
    max_retries: int,
    version: str | None = None,
    at_zero: bool = False,
    wake: bool = False,
) -> CallTarget:
    """What to bind into the caller: ``app``, which Ray turns into its handle, the budget,
    the caller's version to stamp its calls with, whether the callee may be at zero
    replicas, and whether the caller wakes it as it starts."""
    return CallTarget(cast("DeploymentHandle[Any]", app), max_retries, version, at_zero, wake)

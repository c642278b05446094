"""Versions that never mix: how an application moves from one Bento version to the next.

Ray replaces an application's deployments one by one, each on its own schedule, so during a
rollout an old root replica may meet a new dependency replica, or the reverse, and a new
root may come up in front of a dependency that cannot load. bentoml-ray adds three rules,
with public Ray APIs only:

- **Every call carries its caller's version**, and a callee of another version refuses it
  (``OtherVersion``) before running anything. The caller sends it again after a short pause
  (``_replica.calls``) until a replica of its own version takes it, within the call's own
  deadline: an answer never combines versions. (All supported Rays.) A call refused for a
  second by replicas that started after its caller (or for ``OTHER_VERSION_WAIT_S`` by
  any) fails with 503 (``VersionGone``): its caller is an old ingress replica that Ray's
  proxy still sends requests to after its callees stopped.
- **The ingress of a new version takes traffic only once its callees of that version have
  loaded** (``wait_for_callees``): each callee replica tells the application's hub how its
  loading went, and a failure there fails the new ingress, naming it.
- **A callee of a new version takes calls only once every ingress replica that takes
  traffic runs that version** (``wait_for_ingress``). Where Ray keeps old replicas serving
  until new ones are ready (``max_surge_percent``, Ray 2.60+), old callees so outlive the
  last old root that gets requests, and a broken version leaves the old one serving, whole.

The order is therefore: callees load, the new ingress takes traffic, the old ingress stops
taking it, then the new callees take calls and the old ones stop. The new ingress's calls
wait (refused by old callees) only for the moments between. (So a root whose startup hook
calls a dependency cannot start during an upgrade: that call waits for the new dependency,
which waits for the root. The call times out and the old version keeps serving.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bentoml.exceptions import ServiceUnavailable
from ray import serve

from .._errors import BentoRayError

if TYPE_CHECKING:
    from .hub_link import HubLink

logger = logging.getLogger("bentoml_ray")

#: How often a replica waiting on a rollout asks Ray (and the hub) how it goes.
POLL_S = 0.25
#: How often a replica tells the hub it serves (``SERVING_LIVE_S`` there).
SERVING_EVERY_S = 5.0
#: How long a replica waits for the hub's answer before it goes on without (the hub
#: may be starting, or replaced in the same rollout).
HUB_WAIT_S = 1.0


class OtherVersion(Exception):
    """Raised by a callee for a call from a replica of another Bento version.

    ``started`` is when the refusing replica started (``time.time()``; 0: unknown): a
    caller that started before it is a replica of a version that has been replaced.
    """

    def __init__(self, message: str, started: float = 0.0) -> None:
        super().__init__(message, started)  # both in ``args``: it pickles back to the caller
        self.started = started

    def __str__(self) -> str:
        return str(self.args[0])


class VersionGone(ServiceUnavailable, BentoRayError):
    """A call that only replicas of other versions would take: the caller's version is gone.

    A BentoML ``ServiceUnavailable``, so the caller answers 503, a status a client may send
    the request again on, rather than hold the request until its replica stops.
    """


def check_caller(own: str, caller: str | None, started: float = 0.0) -> None:
    """Refuse a call whose caller runs another version (None: an unversioned caller);
    ``started`` is when this replica started."""
    if caller is not None and caller != own:
        raise OtherVersion(f"this replica runs {own}; the call came from {caller}", started)


@dataclass(frozen=True)
class IngressRollout:
    """What a callee waits for after it loaded: the application's ingress deployment."""

    ingress: str


@dataclass(frozen=True)
class CalleeRollout:
    """What an ingress waits for before it takes traffic: its callees' deployments."""

    callees: tuple[str, ...]


def state_name(state: object) -> str:
    """An enum member's value (Ray's states are ``str`` enums), else the object as text."""
    return str(getattr(state, "value", state))


@dataclass(frozen=True)
class _State:
    """A deployment as ``serve.status()`` shows it."""

    status: str = ""
    replicas: dict[str, int] = field(default_factory=dict)
    message: str = ""


def _deployment_states(names: tuple[str, ...]) -> dict[str, _State]:
    """Each deployment's status, its replicas by state, and Ray's message about it."""
    app = serve.status().applications.get(serve.get_replica_context().app_name)
    states = {}
    for name in names:
        overview = None if app is None else app.deployments.get(name)
        if overview is not None:
            replicas = {
                state_name(state): count for state, count in overview.replica_states.items()
            }
            states[name] = _State(state_name(overview.status), replicas, overview.message)
    return states


async def report_load(
    hub: HubLink | None, version: str, error: BaseException | None = None
) -> None:
    """Tell the hub that this replica loaded ``version`` (or failed to, with ``error``).

    A success is told in the background: a constructor does not wait for a hub that is
    still starting (the ingress then reads Ray's status). A failure is waited for, briefly,
    since the replica is about to end.
    """
    if hub is None:
        return
    deployment = serve.get_replica_context().deployment
    text = "" if error is None else f"{type(error).__name__}: {error}"
    told = _ask(hub, "loaded", deployment, version, text)
    if error is None:
        _in_background(told)
    else:
        await told


async def _ask(hub: HubLink, method: str, *args: Any) -> Any:
    """Hub method ``method``'s answer; None if the hub does not answer soon (restarting)."""
    try:
        return await asyncio.wait_for(hub.call(method, *args), HUB_WAIT_S)
    except Exception as exc:
        logger.debug("The hub did not answer %s (%s).", method, exc)
        return None


def _in_background(work: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


#: The hub calls running in the background (the loop keeps only weak references).
_BACKGROUND: set[asyncio.Task[Any]] = set()


async def wait_for_ingress(
    rollout: IngressRollout, what: str, hub: HubLink | None, version: str
) -> None:
    """Return once the ingress's replicas that take traffic all run ``version``; raise if the
    ingress of ``version`` failed.

    Called by a callee's replica after it loaded, before its constructor returns. Nothing
    is waited for when the ingress runs no replica yet (a first deploy) or is not rolling
    out (a callee replica replaced or added later). An old ingress replica that Ray is
    stopping takes no new requests, though it may be held open a while (30 s in Ray's
    high-throughput mode, for load balancers): the ingress replicas of ``version`` say
    they take traffic to the hub (``announce_serving``), and once they are all that Ray
    reports running, the wait is over. The load is told to the hub again on each round, in
    case the hub itself was replaced meanwhile.
    """
    waited = False
    while True:
        states = await asyncio.to_thread(_deployment_states, (rollout.ingress,))
        state = states.get(rollout.ingress, _State())
        if state.status == "DEPLOY_FAILED":
            raise BentoRayError(
                f"{what} of this version will not take calls: the application's ingress "
                f"{rollout.ingress!r} failed to deploy, and the previous version keeps "
                f"serving. Ray says: {state.message}"
            )
        running = state.replicas.get("RUNNING", 0)
        if (
            running == 0
            or state.status != "UPDATING"
            or (
                not state.replicas.get("STARTING")
                and await _serving_count(hub, rollout.ingress, version) >= running
            )
        ):
            if waited:
                logger.info("%s: the ingress runs this version only; taking calls.", what)
            return
        if not waited:
            logger.info("%s: loaded; waiting for the ingress to run this version.", what)
            waited = True
        await asyncio.sleep(POLL_S)
        await report_load(hub, version)  # again, in case the hub was replaced meanwhile


async def _serving_count(hub: HubLink | None, ingress: str, version: str) -> int:
    """How many replicas of ``ingress`` at ``version`` serve, as the hub heard (0: no word)."""
    count = None if hub is None else await _ask(hub, "serving_count", ingress, version)
    return int(count or 0)


async def _announce_serving(hub: HubLink, version: str) -> None:
    deployment = serve.get_replica_context().deployment
    while True:
        await _ask(hub, "serving", deployment, version, hub.replica)
        await asyncio.sleep(SERVING_EVERY_S)


def announce_serving(hub: HubLink | None, version: str) -> None:
    """From now on, tell the hub every ``SERVING_EVERY_S`` that this replica serves
    ``version``: the callees' wait on the ingress counts these, and ``bentoml-ray status``
    shows them."""
    if hub is not None:
        _in_background(_announce_serving(hub, version))


async def callee_loaded(
    rollout: IngressRollout | None, what: str, hub: HubLink | None, version: str
) -> None:
    """What a callee's replica does once it loaded, before its constructor returns: tell
    the hub, wait for the ingress in a rollout, then say it serves from then on."""
    await report_load(hub, version)
    if rollout is not None:
        await wait_for_ingress(rollout, what, hub, version)
    announce_serving(hub, version)


async def ingress_ready(rollout: CalleeRollout | None, hub: HubLink | None, version: str) -> None:
    """What an ingress replica awaits before it takes traffic (its lifespan's ``ready``):
    its callees of ``version`` loaded; then it says it serves, from then on."""
    if rollout is not None:
        await wait_for_callees(rollout, hub, version)
    announce_serving(hub, version)


async def wait_for_callees(rollout: CalleeRollout, hub: HubLink | None, version: str) -> None:
    """Return once every callee loaded ``version``; raise, naming it, if one failed to.

    A callee counts as loaded when Ray says its deployment is not rolling out (a first
    deploy's callees once they run, or a replica added later), or when the hub heard that
    it loaded ``version`` (in a rollout, where a loaded callee waits for this ingress).
    """
    while rollout.callees:
        states = await asyncio.to_thread(_deployment_states, rollout.callees)
        failed = {name: s.message for name, s in states.items() if s.status == "DEPLOY_FAILED"}
        pending = [
            name
            for name in rollout.callees
            if name not in failed and states.get(name, _State()).status in ("UPDATING", "")
        ]
        if pending and hub is not None and not failed:
            reports = await _ask(hub, "rollout", version, pending) or {}
            failed.update({name: error for name, error in reports.items() if error})
            pending = [name for name in pending if reports.get(name) != ""]
        if failed:
            which = "; ".join(f"deployment {name!r}: {error}" for name, error in failed.items())
            raise BentoRayError(
                f"This version's ingress will not take traffic, since a deployment it calls "
                f"failed to load ({which}). The previous version, if one runs, keeps serving."
            )
        if not pending:
            return
        await asyncio.sleep(POLL_S)

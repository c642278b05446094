"""Checking the per-deployment options of ``deployment()`` against the installed Ray.

The allowed set is read from ``serve.deployment``'s own signature, so a Ray release that
adds an option makes it usable here without a bentoml-ray release. Values get the few
checks Ray itself leaves loose (it accepts ``num_replicas=0``, for instance); everything
else Ray validates when the deployment is declared, still before anything deploys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._defaults import MAX_RETRIES, MAX_RETRIES_LIMIT, RUNNER_PLACEMENT
from ._errors import InvalidArgument, did_you_mean
from ._ray_compat import RAY_DEPLOYMENT_OPTIONS, newer_ray_hint
from ._runners.call_placement import PLACEMENTS, Placement

#: Options bentoml-ray takes for the API-server deployment on top of Ray's.
API_SERVER_OPTIONS: frozenset[str] = frozenset({"route_prefix"})

#: Options bentoml-ray takes for runner and dependency-service deployments on top of Ray's.
CALLEE_OPTIONS: frozenset[str] = frozenset({"max_retries"})

#: Options bentoml-ray takes for runners on top of ``CALLEE_OPTIONS``.
RUNNER_OPTIONS: frozenset[str] = CALLEE_OPTIONS | {"embedded", "placement"}


def check_mapping(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} must be a dict, not {type(value).__name__}.")
    for key in value:
        if not isinstance(key, str):
            raise InvalidArgument(f"{what} has a key {key!r} that is not a string.")
    return value


def is_int(value: object) -> bool:
    """A whole number, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_deployment_options(
    options: object,
    *,
    what: str,
    extra: frozenset[str] = frozenset(),
    argument: str | None = None,
) -> dict[str, Any]:
    """Return a copy of ``options`` once every key and the loose values are known good.

    ``what`` names the deployment in messages ("the API-server deployment", ...);
    ``argument``, the argument of ``deployment()`` that ``options`` is, when it is one
    (a runner's options are named by the runner's key instead).
    """
    described = f"The options of {what}" if argument is None else f"{argument} ({what})"
    checked = dict(check_mapping(options, described))
    allowed = RAY_DEPLOYMENT_OPTIONS | extra
    for key in checked:
        if key not in allowed:
            raise InvalidArgument(
                f"Unknown option {key!r} for {what}."
                f"{newer_ray_hint(key) or did_you_mean(key, allowed)}"
                f" Allowed options: {', '.join(sorted(allowed))}."
            )

    replicas = checked.get("num_replicas")
    if replicas is not None and replicas != "auto" and not (is_int(replicas) and replicas >= 1):
        raise InvalidArgument(
            f"num_replicas of {what} must be a whole number >= 1 or 'auto', not {replicas!r}."
        )
    if "num_replicas" in checked and "autoscaling_config" in checked and replicas != "auto":
        raise InvalidArgument(
            f"{what} sets both num_replicas and autoscaling_config; give one of them "
            "(or num_replicas='auto' with an autoscaling_config that refines it)."
        )
    for key in ("max_ongoing_requests", "max_replicas_per_node"):
        value = checked.get(key)
        if value is not None and not (is_int(value) and value >= 1):
            raise InvalidArgument(f"{key} of {what} must be a whole number >= 1, not {value!r}.")
    check_mapping(checked.get("ray_actor_options"), f"ray_actor_options of {what}")
    return checked


def check_route_prefix(value: object) -> str:
    """Normalise ``route_prefix`` to ``"/"`` or ``"/a/b"`` (no trailing ``/``)."""
    if value is None:
        return "/"
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidArgument(
            f"route_prefix must be a string starting with '/', such as '/classify', not {value!r}."
        )
    if any(char in value for char in "{}?#"):
        raise InvalidArgument(
            f"route_prefix {value!r} may not contain path parameters, a query or a fragment."
        )
    return value.rstrip("/") or "/"


def check_max_retries(value: object, what: str) -> int:
    """How often a call to ``what`` is sent again when its replica dies (0: never)."""
    if value is None:
        return MAX_RETRIES
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES_LIMIT:
        raise InvalidArgument(
            f"max_retries of {what} must be a whole number from 0 (never retry a call whose "
            f"replica died) to {MAX_RETRIES_LIMIT}, not {value!r}; "
            f"unset, calls are retried {MAX_RETRIES} times."
        )
    return value


def check_embedded(value: object, declared: bool, what: str) -> bool:
    """Whether ``what`` runs inside the API server's replica; unset, as the Bento declares."""
    if value is None:
        return declared
    if not isinstance(value, bool):
        raise InvalidArgument(
            f"embedded of {what} must be true (run the model inside the API server's replica) "
            f"or false (a deployment of its own), not {value!r}; unset, as the Bento declares "
            f"(here: {str(declared).lower()})."
        )
    return value


def check_placement(value: object, what: str) -> Placement:
    """Where ``what``'s sync model calls run; unset, bentoml-ray's rule decides per call."""
    if value is None:
        return RUNNER_PLACEMENT
    if value not in PLACEMENTS:
        raise InvalidArgument(
            f"placement of {what} must be 'inline' (every model call on the replica's event "
            "loop: for a model known to be short), 'thread' (every call in the runner's "
            "worker thread, as BentoML does) or 'auto' (by what recent calls cost), "
            f"not {value!r}; unset, {RUNNER_PLACEMENT!r}."
        )
    return value

"""Which methods Ray Serve batches, with what settings: decided once, in the driver.

A ``BatchingPlan`` comes from the Bento's batchable methods (a runner's methods, or a 1.2+
service's APIs) and the user's ``enable_batching`` / ``batching_config``; each deployment
receives only its own part, and its replicas batch with it (``_replica.batch_gate``,
``_replica.batch_merge``).

Ray counts a batch in calls, not rows (``max_batch_size=8`` is at most 8 requests, however
many rows each carries); a ``batch_size_fn`` in ``batching_config`` changes that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray import serve

from ._errors import InvalidArgument, did_you_mean
from ._options import check_mapping, is_int
from ._ray_compat import RAY_BATCH_DEFAULTS, RAY_BATCH_OPTIONS, newer_ray_hint


@dataclass(frozen=True)
class MethodInfo:
    """What batching needs to know of one runner method or service API."""

    batchable: bool
    #: ``serve.batch`` options the Bento itself implies (a 1.2+ API's ``max_batch_size``);
    #: ``batching_config`` overrides them.
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingPlan:
    """``serve.batch`` keyword arguments per owner (runner or service), then per method."""

    by_owner: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def options_for(self, owner: str) -> dict[str, dict[str, Any]]:
        return {method: dict(opts) for method, opts in self.by_owner.get(owner, {}).items()}

    def calls_to_fill(self, owner: str) -> int | None:
        """How many concurrent calls a replica of ``owner`` must accept to fill its batches.

        Ray Serve warns, and never forms a full batch, when a replica's
        ``max_ongoing_requests`` is below ``max_batch_size * max_concurrent_batches``.
        """
        methods = self.by_owner.get(owner)
        if not methods:
            return None
        filled = ({**RAY_BATCH_DEFAULTS, **options} for options in methods.values())
        return max(int(o["max_batch_size"] * o["max_concurrent_batches"]) for o in filled)

    @classmethod
    def build(
        cls,
        methods: Mapping[str, Mapping[str, MethodInfo]],
        enable_batching: bool,
        batching_config: object,
        kind: str = "runner",
    ) -> BatchingPlan:
        """Check ``batching_config`` against the Bento's methods and the installed Ray.

        ``methods`` maps owner (a runner, or a service when ``kind`` is ``"service"``) ->
        method name -> info. Raises ``InvalidArgument`` naming the culprit and what
        is allowed.
        """
        declare_batchable = (
            "save the model with signatures={...: {'batchable': True}}"
            if kind == "runner"
            else "declare it with @bentoml.api(batchable=True)"
        )
        config = check_mapping(batching_config, "batching_config")
        if config and not enable_batching:
            raise InvalidArgument(
                f"batching_config names {', '.join(map(repr, config))} but enable_batching "
                "is False, so it would have no effect; pass enable_batching=True to batch "
                "on Ray Serve."
            )
        for runner, per_method in config.items():
            if runner not in methods:
                raise InvalidArgument(
                    f"batching_config names {kind} {runner!r}, which this Bento does not have."
                    f"{did_you_mean(runner, methods)} "
                    f"{kind.capitalize()}s: {', '.join(sorted(methods))}."
                )
            batchable = sorted(m for m, info in methods[runner].items() if info.batchable)
            for method, options in check_mapping(
                per_method, f"batching_config[{runner!r}]"
            ).items():
                if method not in methods[runner]:
                    raise InvalidArgument(
                        f"batching_config[{runner!r}] names method {method!r}, which {kind} "
                        f"{runner!r} does not have.{did_you_mean(method, methods[runner])} "
                        f"Its batchable methods: {', '.join(batchable) or 'none'}."
                    )
                if not methods[runner][method].batchable:
                    raise InvalidArgument(
                        f"batching_config[{runner!r}][{method!r}]: the method is not batchable "
                        f"({declare_batchable}). "
                        f"Batchable methods of {runner!r}: {', '.join(batchable) or 'none'}."
                    )
                _check_batch_options(options, f"batching_config[{runner!r}][{method!r}]")

        if not enable_batching:
            return cls()
        plan = {
            runner: {
                method: {**info.defaults, **(config.get(runner, {}).get(method) or {})}
                for method, info in per_runner.items()
                if info.batchable
            }
            for runner, per_runner in methods.items()
        }
        return cls({runner: per for runner, per in plan.items() if per})


def _check_batch_options(options: object, what: str) -> None:
    checked = check_mapping(options, what)
    for key, value in checked.items():
        if key not in RAY_BATCH_OPTIONS:
            raise InvalidArgument(
                f"Unknown batching option {key!r} in {what}."
                f"{newer_ray_hint(key) or did_you_mean(key, RAY_BATCH_OPTIONS)}"
                f" Allowed options: {', '.join(sorted(RAY_BATCH_OPTIONS))}."
            )
        whole = is_int(value)
        is_number = (whole or isinstance(value, float)) and math.isfinite(value)
        if key in ("max_batch_size", "max_concurrent_batches") and not (whole and value >= 1):
            raise InvalidArgument(f"{key} in {what} must be a whole number >= 1, not {value!r}.")
        if key == "batch_wait_timeout_s" and not (is_number and value >= 0):
            raise InvalidArgument(
                f"batch_wait_timeout_s in {what} must be a number of seconds >= 0, not {value!r}."
            )
        if key == "batch_size_fn" and value is not None and not callable(value):
            raise InvalidArgument(f"batch_size_fn in {what} must be callable.")
    try:
        serve.batch(**checked)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"Ray rejects the batching options in {what}: {exc}") from exc

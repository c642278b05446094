"""A 1.2+ API called in a Ray Data actor: BentoML's own app for the service, no HTTP.

The root service is loaded as its Serve replica loads it and run in the same
``RayServiceAppFactory``, its lifespan entered (``__init__`` and the startup hooks run);
each call goes through ``call_api``, as a dependent service's call would. Each row's
parameters are validated by the API's own input model first, so a row it rejects fails
as its HTTP request would. Dependencies are instances in this actor, unless handles to
the deployments of a running application are given.

Runs in a Ray Data actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._bento.source import BentoSource
from .._services.app_factory import RayServiceAppFactory
from .._services.loading import load_service
from .columns import cell, joined, split_rows, values
from .plan import ApiPlan

if TYPE_CHECKING:
    from .._replica.calls import CallTarget


class ServiceApiCalls:
    def __init__(
        self,
        source: BentoSource,
        plan: ApiPlan,
        service_name: str,
        dependencies: Mapping[str, CallTarget],
    ) -> None:
        self.plan = plan
        service = load_service(source, service_name, dependencies)
        # Sync API functions run inline, unless their blocking handle calls need the loop free.
        self.factory = RayServiceAppFactory(
            service, is_main=False, batching={}, sync_inline=not dependencies
        )
        self.method = service.apis[plan.api]
        fields = self.method.input_spec.model_fields
        self._fields = [key for key in fields if key != self.method.ctx_param]
        self._arrays = {key: _wants_array(fields[key].annotation) for key in self._fields}
        self._lifespan = contextlib.AsyncExitStack()

    async def start(self) -> None:
        app = self.factory()
        await self._lifespan.enter_async_context(app.router.lifespan_context(app))

    async def call_batch(
        self, batch: Mapping[str, np.ndarray], start: int, stop: int
    ) -> np.ndarray | list[Any]:
        """A batchable API on rows ``start:stop``: the column's values are its batch."""
        ((parameter, column),) = self.plan.inputs
        batch_values = values(batch[column][start:stop], self._arrays[parameter])
        in_dim = self.method.batch_dim[0]
        if isinstance(batch_values, np.ndarray) and in_dim:  # rows along the API's batch axis
            batch_values = np.moveaxis(batch_values, 0, in_dim)
        kwargs = self._validated({parameter: batch_values})
        result = await self.factory.call_api(self.plan.api, (), kwargs)
        return split_rows(result, stop - start, self.method.batch_dim[1])

    async def call_row(self, batch: Mapping[str, np.ndarray], row: int) -> Any:
        kwargs = self._validated(
            {key: cell(batch[column], row, self._arrays[key]) for key, column in self.plan.inputs}
        )
        if self.method.is_stream:
            return joined(
                [chunk async for chunk in self.factory.stream_api(self.plan.api, (), kwargs)]
            )
        return await self.factory.call_api(self.plan.api, (), kwargs)

    def _validated(self, given: dict[str, Any]) -> dict[str, Any]:
        """The API's arguments, as its input model makes them from the row (or raises)."""
        model = self.method.input_spec.model_validate(given)
        return {key: getattr(model, key) for key in self._fields}


def _wants_array(annotation: Any) -> bool:
    """Whether a parameter takes an array (numpy, or a tensor), not a Python list."""
    module = getattr(annotation, "__module__", "") or ""
    return annotation is np.ndarray or module.split(".")[0] in ("numpy", "torch", "tensorflow")

"""Many models behind one API: a small classifier per tenant, loaded when first asked for.

A client names its tenant in the header ``serve_multiplexed_model_id``. ``Tenants`` holds
the models: ``get_model`` is a multiplexed loader, so each replica keeps at most two, and
on Ray a request goes to a replica that already holds its tenant's model.
``TenantGateway`` is the HTTP root: ``/predict`` asks ``Tenants`` (on Ray the request's
model id travels with the call; ``/predict_for`` names the tenant in the body instead),
``/predict_here`` serves from a loader of its own, and
``/classify`` batches rows across requests, one tenant's at a time.

Each answer names the model that made it and the process that served it. A tenant's
model is trained on the iris data with labels of its own, in a few milliseconds; a real
service would load it, for example with ``bentoml.models.get(model_id)``.
"""

import os
from typing import Any

import bentoml
import numpy as np

import bentoml_ray


class TenantModel:
    """One tenant's classifier."""

    def __init__(self, tenant: str) -> None:
        from sklearn.datasets import load_iris
        from sklearn.tree import DecisionTreeClassifier

        features, labels = load_iris(return_X_y=True)
        self.tenant = tenant
        self.shift = sum(tenant.encode()) % 3  # each tenant labels the flowers its own way
        self.classifier = DecisionTreeClassifier(random_state=0)
        self.classifier.fit(features, (labels + self.shift) % 3)

    def predict(self, rows: list[list[float]]) -> dict[str, Any]:
        labels = self.classifier.predict(np.asarray(rows)).tolist()
        return {"model": self.tenant, "labels": labels, "pid": os.getpid()}


@bentoml.service
class Tenants:
    @bentoml_ray.multiplexed(max_models_per_replica=2)
    async def get_model(self, model_id: str) -> TenantModel:
        return TenantModel(model_id)

    @bentoml.api
    async def predict(self, x: list[list[float]]) -> dict[str, Any]:
        model = await self.get_model(bentoml_ray.model_id())
        return model.predict(x)


@bentoml.service
class TenantGateway:
    tenants = bentoml.depends(Tenants)

    @bentoml_ray.multiplexed(max_models_per_replica=2)
    async def get_model(self, model_id: str) -> TenantModel:
        return TenantModel(model_id)

    @bentoml.api
    async def predict(self, x: list[list[float]]) -> dict[str, Any]:
        """The tenant's answer from ``Tenants``."""
        answer: dict[str, Any] = await self.tenants.predict(x)
        return answer

    @bentoml.api
    async def predict_for(self, x: list[list[float]], tenant: str) -> dict[str, Any]:
        """The answer of the tenant named in the body, whatever the header says."""
        with bentoml_ray.for_model(tenant):
            answer: dict[str, Any] = await self.tenants.predict(x)
        return answer

    @bentoml.api
    async def predict_here(self, x: list[list[float]]) -> dict[str, Any]:
        """The tenant's answer from this service's own models."""
        model = await self.get_model(bentoml_ray.model_id())
        return model.predict(x)

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=50)
    async def classify(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        """Rows of many requests in one batch; on Ray a batch holds one tenant's rows."""
        model = await self.get_model(bentoml_ray.model_id())
        answer = model.predict(rows)
        return [
            {"model": answer["model"], "label": label, "batch": len(rows)}
            for label in answer["labels"]
        ]

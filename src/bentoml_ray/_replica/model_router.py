"""Ray's routing by model id, with a memory of where this caller sent each new model.

Ray routes a call that names a model to a replica that reports holding it, and a model that
no replica reports to a replica holding the fewest. A replica reports its models about every
0.1 s, so in the moment after a model's first call no replica reports it yet: its next calls
go to any replica with the fewest models and load it there again, and with the replicas
full each extra load evicts another model, which then loads again elsewhere. The tenants
benchmark (``benchmarks/multiplex.py``: four models, two replicas of two) saw 10 loads in
Ray's default mode and 81 in its high-throughput mode, where four would do.

``ModelAffinityRouter`` is Ray's power-of-two-choices routing by model id, except for a
model that no replica reports: that one goes where this caller sent it last, and a model
new to this caller to the replica with the fewest models, counting those this caller has
just sent it (4 loads in that benchmark, in both modes). It runs in the caller's process
(a root service's replica), as Ray's own routers do. bentoml-ray sets it on a dependency
service with a ``multiplexed`` loader, where the installed Ray takes request routers and
the user chose none (``_defaults.MULTIPLEXED_REQUEST_ROUTER``, ``_services.layout``).
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

#: Models remembered per caller; past this many the memory starts again.
REMEMBERED_MODELS = 4096


class ModelAffinityRouter(  # type: ignore[misc]
    FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter
):
    """Ray's routing by model id; a model no replica reports yet, where it was sent."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._sent: dict[str, ReplicaID] = {}

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        model = pending_request.metadata.multiplexed_model_id if pending_request else ""
        if not model or any(model in r.multiplexed_model_ids for r in candidate_replicas):
            ids = (
                self.apply_multiplex_routing(pending_request=pending_request)
                if model
                else self.apply_locality_routing(pending_request=pending_request)
            )
            routable = [r for r in candidate_replicas if r.replica_id in ids]
            return [_two_of(routable)] if routable else []
        sent = self._sent.get(model)
        chosen = next((r for r in candidate_replicas if r.replica_id == sent), None)
        if chosen is None:
            chosen = self._least_loaded(candidate_replicas)
            if len(self._sent) >= REMEMBERED_MODELS:
                self._sent.clear()
            self._sent[model] = chosen.replica_id
        others = [replica for replica in candidate_replicas if replica is not chosen]
        return [[chosen], _two_of(others)] if others else [[chosen]]

    def _least_loaded(self, replicas: list[RunningReplica]) -> RunningReplica:
        """A replica with the fewest models: those it reports, and those sent it since."""
        sent_to: dict[ReplicaID, set[str]] = {}
        for model, replica_id in self._sent.items():
            sent_to.setdefault(replica_id, set()).add(model)
        counts = [
            len(set(r.multiplexed_model_ids) | sent_to.get(r.replica_id, set())) for r in replicas
        ]
        fewest = min(counts)
        return random.choice([r for r, n in zip(replicas, counts, strict=True) if n == fewest])


def _two_of(replicas: list[RunningReplica]) -> list[RunningReplica]:
    """Two of ``replicas`` at random (or what there is): the power of two choices."""
    return random.sample(replicas, min(2, len(replicas)))

"""Every default that bentoml-ray chooses where Ray or BentoML would choose otherwise.

One table, each value with its reason (a ``#:`` comment); the docs' defaults page
(docs/concepts/defaults.md) is generated from it, beside the rest of what bentoml-ray
decides. A user's option always wins over these.
"""

from __future__ import annotations

from typing import Any, Final

#: ``max_ongoing_requests`` of every deployment: the API server or root service, which
#: mostly awaits runners and dependencies, and runners and dependencies, which queue calls
#: to their model themselves. Ray's default of 5 queues requests at the proxy and adds
#: router backoff (at 32 connections it halved the iris example's requests/s); BentoML's
#: own API server sets no limit. A runner's batching may need more to fill its batches,
#: and a 1.2+ service's ``max_concurrency`` sets its own.
MAX_ONGOING_REQUESTS = 100

#: How often a call to a runner or dependency is sent again when its replica died, unless
#: the callee's ``max_retries`` says; and the most it may say (a retry storm is worse than
#: a failed call).
MAX_RETRIES = 3
MAX_RETRIES_LIMIT = 10

#: The request router of a dependency service with a ``multiplexed`` loader, where the
#: installed Ray takes request routers and the user's options name none: Ray's routing by
#: model id, but a model no replica reports yet goes where its caller sent it before. With
#: Ray's own router, the tenants benchmark loaded four models 10 times in default mode and
#: 81 times in high-throughput mode while the replicas filled; with this one, 4 times.
MULTIPLEXED_REQUEST_ROUTER = "bentoml_ray._replica.model_router.ModelAffinityRouter"

#: Handles kept per callee for calls that carry a model id or a session id: one per
#: model (and session) in use; past this many, sessions come and go, and they are
#: rebuilt rather than kept for ever.
ROUTED_HANDLES_KEPT = 1024

#: The request body limit, unless ``MAX_BODY_SIZE_ENV`` sets one (0: none). 100 MiB: room
#: for large batches and images, far below a replica's memory.
MAX_BODY_SIZE = 100 * 1024 * 1024
MAX_BODY_SIZE_ENV = "BENTOML_RAY_MAX_REQUEST_BODY_SIZE"

#: Sync API functions of a runner-based service running at once: as many as
#: ``bentoml serve`` (anyio's default) runs.
API_THREADS = 40

#: How long a call to a 1.2+ dependency may take when its service sets no
#: ``traffic.timeout``: BentoML's own client default.
DEPENDENCY_TIMEOUT_S = 60.0

#: How long a call to a dependency may wait for a replica to take it (one starting from
#: zero, or one of its caller's version during a rollout), on top of the dependency's own
#: timeout, which starts when a replica takes the call. The request that makes the call
#: is bounded by its own timeout all the same.
CALLEE_START_WAIT_S = 120.0

#: Extra replicas a deployment may start while it rolls out a new version, in percent of
#: its replicas (Ray 2.60+; older Rays stop an old replica before its replacement starts):
#: a whole second set, so the old version serves until the new one is ready. Ray's own
#: default, 0, leaves a one-replica deployment with none while its new replica loads.
MAX_SURGE_PERCENT = 100

#: How long a 1.2+ API's batch waits to fill: not at all. Ray's wait is fixed and paid by
#: every request at light load (two batched hops at Ray's 10 ms cut the composed example's
#: requests/s at one connection by two thirds); a batch takes what queued while the
#: previous one ran (``_services.service_options.api_methods``).
SERVICE_BATCH_WAIT_S = 0.0

#: Model calls of a runner shorter than this (its thread's CPU time) run inline on the
#: replica's event loop: the hop to a worker thread costs about this much on a busy
#: 2-core machine (``_runners.call_placement``).
INLINE_BELOW_S = 0.001

#: Where a runner's sync model calls run unless its ``placement`` option says: ``auto``,
#: inline or in the worker thread by what recent calls cost (``_runners.call_placement``).
#: BentoML always uses the thread (``thread``); ``inline`` suits a model known to be short.
RUNNER_PLACEMENT: Final = "auto"

#: The application's hub (``_hub``): one replica, since its state is in memory; no CPU of
#: its own, since it only answers small calls; room for every replica's waiting poll; and
#: no wait for those polls when it stops.
HUB_OPTIONS: dict[str, Any] = {
    "num_replicas": 1,
    "max_ongoing_requests": 100_000,
    "graceful_shutdown_timeout_s": 1,
    "ray_actor_options": {"num_cpus": 0},
}

#: On Rays older than 2.51, how long a replica keeps sending its answers to a replica that
#: died before it gives up (Ray's ``core_worker_rpc_server_reconnect_timeout_s``, 60 s by
#: default there). While it tries, the replica answers no one: when an ingress replica was
#: killed under load on Ray 2.47, its callees and the hub stalled for 60 s, and the other
#: ingress replicas' requests with them (42 of 152 failed). Newer Rays give up at once.
DEAD_CALLER_WAIT_S = 5

#: The longest a replica's poll waits at the hub before it is sent again; a replica not
#: heard from for ``HUB_LIVE_S`` is taken for gone (its gauges leave ``/metrics``).
HUB_POLL_S = 30.0
HUB_LIVE_S = 75.0

#: How long a read of ``/metrics`` waits for the replicas' reports before it answers with
#: the last report of those that have not: a replica stuck in a long sync call, or gone.
METRICS_REPORT_WAIT_S = 2.0

#: How often a replica mirrors its Prometheus registry into Ray's metrics; Ray's agents
#: export every 10 s by default, so a mirror twice as often loses nothing.
RAY_METRICS_MIRROR_S = 5.0

#: Ray Data actors ``map_api`` starts unless ``concurrency`` (or ``compute``) says: each
#: loads the Bento's models, and one fits any machine. Ray Data's own default differs by
#: release (2.47 requires the option; 2.60 grows a pool without bound).
OFFLINE_CONCURRENCY = 1

#: Rows of a batch that ``map_api`` has in flight at once for an API called row by row
#: (an ``async`` one overlaps them): as many as a replica's ``max_ongoing_requests``
#: would take, not a whole Ray Data block of calls to a model or a dependency at once.
OFFLINE_ROWS_AT_ONCE = 100

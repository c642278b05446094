"""Every default that bentoml-ray chooses where Ray or BentoML would choose otherwise.

One table, each value with its reason; README's "Defaults bentoml-ray chooses" lists
them among the rest of what bentoml-ray decides. A user's option always wins over these.
"""

from __future__ import annotations

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

#: How long a 1.2+ API's batch waits to fill: not at all. Ray's wait is fixed and paid by
#: every request at light load (two batched hops at Ray's 10 ms cut the composed example's
#: requests/s at one connection by two thirds); a batch takes what queued while the
#: previous one ran (``_services.service_options.api_methods``).
SERVICE_BATCH_WAIT_S = 0.0

#: Model calls of a runner shorter than this (its thread's CPU time) run inline on the
#: replica's event loop: the hop to a worker thread costs about this much on a busy
#: 2-core machine (``_runners.call_placement``).
INLINE_BELOW_S = 0.001

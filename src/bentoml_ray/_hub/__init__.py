"""The application's hub: one replica per application that every other replica links to.

It holds what must be one for the whole application, wherever its replicas run: the
metrics of every replica, merged when ``/metrics`` is read (``metrics_board``,
``exposition``), the results of ``@bentoml.task`` calls (``task_board``), and during a
rollout which deployments loaded the new Bento version and which ingress replicas serve it
(``_replica.versions``). Runs in its own replica; each replica's side of the link is
``_replica.hub_link``.
"""

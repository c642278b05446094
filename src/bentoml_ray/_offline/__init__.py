"""Offline inference: a Bento's API over a Ray Dataset, in a pool of Ray Data actors.

``map_api`` and ``plan`` run in the driver; ``actor`` and the calls it makes
(``runner_calls`` for runner-based Bentos, ``service_calls`` for 1.2+ ones) in the actors.
"""

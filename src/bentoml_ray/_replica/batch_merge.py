"""Merging the calls of a batch into one model call, and cutting its result back.

Inside a replica, ``serve.batch`` gathers concurrent calls; ``merge_calls`` concatenates
them along the method's input ``batch_dim`` with BentoML's own containers (numpy, pandas,
lists, ...) and ``split_result`` cuts the output back along the output ``batch_dim``, so
the model sees one call and each caller gets its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._bentoml_internals import AutoContainer

#: One runner-method call as it travels: positional and keyword arguments.
Call = tuple[tuple[Any, ...], dict[str, Any]]


def merge_values(values: Sequence[Any], batch_dim: int) -> tuple[Any, list[int]]:
    """Concatenate the batches of several callers; return it and where each one's rows are."""
    merged, indices = AutoContainer.batches_to_batch(values, batch_dim)
    return merged, list(indices)


def merge_calls(calls: Sequence[Call], batch_dim: int) -> tuple[Call, list[int]] | None:
    """Concatenate calls of the same shape into one; None when their shapes differ.

    Returns the merged call and the offsets at which each caller's rows start and end.
    """
    first_args, first_kwargs = calls[0]
    if any(len(a) != len(first_args) or k.keys() != first_kwargs.keys() for a, k in calls):
        return None
    offsets: list[int] | None = None

    def merge(values: list[Any]) -> Any:
        nonlocal offsets
        merged, indices = merge_values(values, batch_dim)
        if offsets is None:
            offsets = indices
        elif indices != offsets:
            raise ValueError("All batchable arguments of a call must have the same batch size.")
        return merged

    args = tuple(merge([a[i] for a, _ in calls]) for i in range(len(first_args)))
    kwargs = {key: merge([k[key] for _, k in calls]) for key in first_kwargs}
    if offsets is None:  # a method called without arguments has nothing to merge
        return None
    return (args, kwargs), offsets


def split_result(result: Any, offsets: list[int], batch_dim: int) -> list[Any]:
    """Cut a merged result back into one result per caller."""
    if isinstance(result, tuple):
        parts = [split_result(item, offsets, batch_dim) for item in result]
        return [tuple(row) for row in zip(*parts, strict=True)]
    return list(AutoContainer.batch_to_batches(result, offsets, batch_dim))

"""Merging a batch's calls into one model call and cutting the result back, along batch_dim."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bentoml_ray._replica.batch_merge import merge_calls, split_result


def test_merge_and_split_numpy_along_batch_dim_1() -> None:
    calls = [((np.ones((2, 1)),), {}), ((np.zeros((2, 3)),), {})]
    merged = merge_calls(calls, batch_dim=1)
    assert merged is not None
    (args, kwargs), offsets = merged
    assert args[0].shape == (2, 4) and kwargs == {} and offsets == [0, 1, 4]
    parts = split_result(args[0], offsets, batch_dim=1)
    assert [p.shape for p in parts] == [(2, 1), (2, 3)]


def test_merge_and_split_keyword_frames_and_tuple_results() -> None:
    calls = [((), {"df": pd.DataFrame({"v": [1]})}), ((), {"df": pd.DataFrame({"v": [2, 3]})})]
    merged = merge_calls(calls, batch_dim=0)
    assert merged is not None
    (_, kwargs), offsets = merged
    assert kwargs["df"]["v"].tolist() == [1, 2, 3]
    first, second = split_result((kwargs["df"], [10, 20, 30]), offsets, batch_dim=0)
    assert first[0]["v"].tolist() == [1] and first[1] == [10]
    assert second[0]["v"].tolist() == [2, 3] and second[1] == [20, 30]


def test_calls_of_different_shapes_are_not_merged() -> None:
    assert merge_calls([((np.ones(1),), {}), ((np.ones(1), np.ones(1)), {})], 0) is None
    assert merge_calls([((), {}), ((), {})], 0) is None

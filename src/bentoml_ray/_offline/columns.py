"""Between Ray Data's column batches (``dict[str, np.ndarray]``) and an API's values.

A row's value leaves the batch as the plain Python value it stands for (a numpy scalar
becomes ``int``, ``float``, ``str``...), except a tensor cell, which stays an array when the
API wants one. Results go back as columns: a mapping's keys (a dict, a pydantic model, a
DataFrame's row) become columns of their own; anything else fills the output column.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np


def batch_length(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def cell(column: np.ndarray, row: int, keep_array: bool = False) -> Any:
    """Row ``row`` of ``column`` as a Python value (a tensor cell as an array if asked)."""
    value = column[row]
    if isinstance(value, np.ndarray):
        return value if keep_array else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def values(column: np.ndarray, keep_array: bool = False) -> Any:
    """A whole column as the API's batch: an array (a copy: Ray Data's may be read-only)
    if asked, else a list of Python values."""
    if keep_array:
        return np.array(column) if column.dtype != object else np.stack(list(column))
    return column.tolist()


def split_rows(result: Any, rows: int, axis: int = 0) -> np.ndarray | list[Any]:
    """A per-batch call's result, one item per row (an array stays one, rows first); an
    error if it has another length."""
    items: np.ndarray | list[Any]
    if hasattr(result, "to_dict") and hasattr(result, "columns"):  # a pandas DataFrame
        items = result.to_dict("records")
    elif isinstance(result, np.ndarray) and result.ndim:
        items = np.moveaxis(result, axis, 0)
    elif hasattr(result, "to_numpy"):  # a pandas Series
        items = list(result.to_numpy())
    elif isinstance(result, tuple) and result and all(_rows_of(part, rows) for part in result):
        items = list(zip(*result, strict=True))  # (labels, scores): one tuple per row
    elif isinstance(result, list | tuple):
        items = list(result)
    else:
        raise TypeError(
            f"a batch of {rows} rows gave one {type(result).__name__}, not one value per row"
        )
    if len(items) != rows:
        raise ValueError(f"a batch of {rows} rows gave {len(items)} values, not one per row")
    return items


def _rows_of(part: Any, rows: int) -> bool:
    """Whether ``part`` of a tuple result holds one value per row (an array or a list)."""
    sized = isinstance(part, list) or (isinstance(part, np.ndarray) and part.ndim > 0)
    return sized and len(part) == rows


async def collected(result: Any) -> Any:
    """A result whole: a streamed one (a generator) read to its end, and joined."""
    if inspect.isasyncgen(result):
        return joined([chunk async for chunk in result])
    if inspect.isgenerator(result):
        return joined(list(result))
    return result


def joined(chunks: list[Any]) -> Any:
    """A streamed answer whole: text or bytes joined, anything else as the list of chunks."""
    if chunks and all(isinstance(chunk, str) for chunk in chunks):
        return "".join(chunks)
    if chunks and all(isinstance(chunk, bytes) for chunk in chunks):
        return b"".join(chunks)
    return [plain(chunk) for chunk in chunks]


def plain(value: Any) -> Any:
    """A result as a column value: a pydantic model as its dict, an image as its array."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "getdata") and hasattr(value, "mode"):  # a PIL image
        return np.asarray(value)
    return value


#: Result types that are column values as they are (no pydantic model or image to unwrap).
_PLAIN = frozenset({int, float, bool, str, bytes, type(None), np.float64, np.float32,
                    np.int64, np.int32, np.bool_})  # fmt: skip


def result_columns(results: np.ndarray | list[Any], output_column: str) -> dict[str, np.ndarray]:
    """A batch's results, one per row, as columns (None where a row failed).

    An array result is the column as it is, with no look at each row.
    """
    if isinstance(results, np.ndarray) and results.dtype != object:
        return {output_column: results}
    done = list(results)
    if not _PLAIN.issuperset(map(type, done)):
        done = [plain(value) for value in done]
    present = [value for value in done if value is not None]
    if present and all(isinstance(value, Mapping) for value in present):
        keys = list(dict.fromkeys(key for value in present for key in value))
        return {
            str(key): column_of([None if v is None else v.get(key) for v in done]) for key in keys
        }
    return {output_column: column_of(done)}


def column_of(items: list[Any]) -> np.ndarray:
    """One column from one value per row, typed where numpy can type it."""
    if items and all(item is not None for item in items):
        try:
            array = np.asarray(items)
        except ValueError:  # ragged
            pass
        else:
            # Text stays objects: numpy's fixed-width strings pad every row to the longest,
            # and drop a bytes value's trailing NULs.
            if array.dtype.kind not in "OUS" and len(array) == len(items):
                return array
    column = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):
        column[index] = item
    return column

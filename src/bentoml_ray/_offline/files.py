"""Reading and writing the files ``bentoml-ray batch`` scores, through Ray Data.

Parquet, CSV and JSON Lines, at any path or URI Ray Data reads and writes (a local file
or folder, ``s3://``, ``gs://``...). The format comes from the name's suffix unless given;
answers are written as Ray Data writes them: a folder of files, one per block.

Runs in the driver.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._errors import InvalidArgument

if TYPE_CHECKING:
    from ray.data import Dataset

#: File formats, by the suffixes that name them.
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json",
           ".jsonl": "json", ".ndjson": "json"}  # fmt: skip


def file_format(path: str, given: str | None, what: str) -> str:
    """``given``, else the format ``path``'s suffix (or, for a folder, its files') names."""
    if given is not None:
        return given
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if not suffix and os.path.isdir(path):
        suffixes = {os.path.splitext(name)[1].lower() for name in os.listdir(path)}
        known = suffixes & set(FORMATS)
        suffix = known.pop() if len(known) == 1 else ""
    if suffix not in FORMATS:
        raise InvalidArgument(
            f"Cannot tell the format of {what} {path!r} from its name; give it "
            f"(parquet, csv or json), or name it with one of {', '.join(FORMATS)}."
        )
    return FORMATS[suffix]


def read_rows(path: str, fmt: str) -> Dataset:
    import ray.data

    readers = {"parquet": ray.data.read_parquet, "csv": ray.data.read_csv,
               "json": ray.data.read_json}  # fmt: skip
    return readers[fmt](path)


def write_rows(dataset: Dataset, path: str, fmt: str) -> None:
    writers = {"parquet": dataset.write_parquet, "csv": dataset.write_csv,
               "json": dataset.write_json}  # fmt: skip
    writers[fmt](path)

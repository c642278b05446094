"""``RowFailed``: the API failed on a row of ``map_api``'s Dataset, and failed rows fail the job.

It is raised in a Ray Data actor and caught in the driver, where a Dataset is consumed
(``take_all()``, ``write_parquet()``...). It crosses that boundary whole: the actor asks
Ray Data (``DataContext.raise_original_map_exception``, for this one task) not to wrap it,
and Ray then raises an exception that is an instance of both ``ray.exceptions.RayTaskError``
and ``RowFailed``, whose attributes read the actor's. Its base ``UserCodeException`` is
how Ray Data tells an error in user code from one of its own (the latter it reports as a
Ray bug).

The exception the API raised travels as it is when it survives pickling; otherwise a
``RuntimeError`` with its type and text stands in for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import cloudpickle
from ray.exceptions import UserCodeException

from .._errors import BentoRayError

#: The advice that ends ``RowFailed``'s message (from Python; the CLI gives its own).
KEEP_GOING = "(on_error='column' keeps going and puts each failed row's error in a column.)"


class RowFailed(BentoRayError, UserCodeException):
    """``map_api``: the API raised on a row (or its input model rejected the row), and
    ``on_error="raise"``: the job stops there.

    Caught in the driver where the Dataset is consumed; from Ray it comes as an instance of
    both ``ray.exceptions.RayTaskError`` and this class, with these attributes (Ray's own
    ``cause`` attribute is this exception, so the API's is named ``error``).
    ``ApiFailedOnRow`` is another name for this class.

    Attributes:
        api: the API's name.
        row: the row, column name -> value.
        error: the exception the API raised on it (or a ``RuntimeError`` with its type and
            text, where that one could not be carried from the actor).
        summary: one line: the API, the row (shortened) and the error.
    """

    def __init__(
        self,
        api: str,
        row: Mapping[str, Any],
        error: BaseException,
        error_text: str | None = None,
    ) -> None:
        self.api = api
        self.row = dict(row)
        self.error = error
        self._error_text = error_text or f"{type(error).__name__}: {error}"
        self.summary = (
            f"API {api!r} failed on the row {describe_row(self.row)}: {self._error_text}."
        )
        super().__init__(f"{self.summary} {KEEP_GOING}")
        self.__cause__ = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.api, self.row, self.error, self._error_text))


#: ``RowFailed``'s earlier name (it was not exported then); the same class.
ApiFailedOnRow = RowFailed


def row_failed(api: str, row: Mapping[str, Any], error: BaseException) -> RowFailed:
    """A ``RowFailed`` that Ray can carry to the driver: ``error`` replaced by a stand-in
    if it does not survive pickling (Ray would otherwise drop the whole exception)."""
    text = f"{type(error).__name__}: {error}"
    try:
        cloudpickle.loads(cloudpickle.dumps(error))  # type: ignore[no-untyped-call]
    except Exception:
        error = RuntimeError(text)
    return RowFailed(api, row, error, text)


def describe_row(row: Mapping[str, Any]) -> str:
    """A row, short enough for an error message."""
    text = repr(
        {name: value.tolist() if hasattr(value, "tolist") else value for name, value in row.items()}
    )
    return text if len(text) <= 300 else text[:297] + "..."

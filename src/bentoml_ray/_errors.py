"""The exceptions bentoml-ray raises, named for what went wrong, and their spelling hints.

Every one is a ``BentoRayError``::

    BentoRayError
    ├── InvalidArgument (ValueError)         a bad argument, option or options file
    │   ├── InvalidBentoTag                   a tag BentoML cannot parse
    │   └── MissingColumn                     map_api: a column the Dataset lacks
    ├── BentoNotFound (LookupError,           a well-formed tag that no store holds
    │                  bentoml.exceptions.NotFound)
    ├── RowFailed (ray.exceptions.UserCodeException)
    │                                         map_api: the API failed on a row
    ├── NoModelId (bentoml.exceptions.BadInput)
    │                                         a multiplexed API's request named no model
    └── UnsupportedEnvironment (RuntimeError) something to install first
        └── MissingExtra (ImportError)        an optional extra that is not installed

Why the extra bases: code written for BentoML's original ``bentoml.ray`` may catch
BentoML's ``NotFound``, which the original raised for a Bento missing from the store, or
the builtins a caller reaches for (``ValueError``, ``LookupError``); ``RowFailed`` is what
Ray Data treats as an error in user code; a ``BadInput`` is what BentoML answers 400.
``RowFailed`` lives in ``_offline.errors`` (its base needs Ray).

Old names stay as they were caught: ``InvalidDeploymentConfig`` is ``InvalidArgument``,
``ApiFailedOnRow`` is ``RowFailed``, and ``InvalidBentoTag`` also derives from
``BentoNotFound``, which earlier releases raised for a malformed tag, so that ``except
BentoNotFound`` still catches one (and, as a side effect, ``except
bentoml.exceptions.NotFound`` does too).

Nearly all are raised before anything is deployed or any row is read; in a replica, only
a call to a runner or dependency that Ray cannot carry (``_replica.calls``) raises
``BentoRayError`` itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from bentoml.exceptions import BadInput, NotFound


class BentoRayError(Exception):
    """Base class of bentoml-ray's own errors."""


class InvalidArgument(BentoRayError, ValueError):
    """An argument, option or options file names something that does not exist or is out
    of range.

    The message names the culprit and what is allowed instead. ``InvalidDeploymentConfig``
    is another name for this class.
    """


#: ``InvalidArgument``'s earlier name; the same class.
InvalidDeploymentConfig = InvalidArgument


class BentoNotFound(BentoRayError, NotFound, LookupError):
    """A Bento that the BentoML store this process reads (or ``bento_uri``) does not hold.

    Also a ``bentoml.exceptions.NotFound``, which BentoML's original integration raised.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message  # as BentoML's own exceptions carry it


class InvalidBentoTag(InvalidArgument, BentoNotFound):
    """A Bento tag that BentoML cannot parse, such as ``"Not A Tag!"``.

    A bad argument first; it also derives from ``BentoNotFound`` only because earlier
    releases raised that for it. Catch ``InvalidBentoTag`` or ``InvalidArgument`` in new
    code.
    """


class MissingColumn(InvalidArgument):
    """``map_api``: the Dataset lacks a column the API's input is read from.

    Attributes:
        missing: the names of the columns it lacks.
    """

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.missing))


class NoModelId(BentoRayError, BadInput):  # type: ignore[misc]
    """A ``multiplexed`` loader was asked for a model, and the request named none.

    Raised in the service's code while it serves the request; BentoML answers it 400 with
    the message, which names the header to send.
    """


class UnsupportedEnvironment(BentoRayError, RuntimeError):
    """Something in this Python environment must be installed or changed first; the message
    says what to install (such as ``pip install 'protobuf<7'``)."""


class MissingExtra(UnsupportedEnvironment, ImportError):
    """An optional part of bentoml-ray is used without its extra installed; the message
    names it (such as ``pip install 'bentoml-ray[data]'``)."""


def did_you_mean(name: str, allowed: Iterable[str]) -> str:
    """A short hint naming the closest allowed spelling, or nothing."""
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""

"""``map_api()``: a Bento's API over a Ray Dataset, every check done before the job runs.

The Bento is resolved as ``deployment()`` resolves it (``_bento.source``), so it reaches
the actors' nodes the same way: shipped from the driver's store, or fetched from
``bento_uri``. The API and its columns are checked against the loaded service
(``plan``), Ray Data's options against ``Dataset.map_batches``' own signature, and the
result is the lazy Dataset ``map_batches`` returns: nothing runs until it is consumed.

Runs in the driver.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import ray

from .._bento.runtime_env import merge_runtime_env
from .._bento.source import resolve_target
from .._bentoml_internals import LegacyService
from .._defaults import OFFLINE_CONCURRENCY
from .._errors import InvalidArgument, MissingExtra, did_you_mean
from .._services.service_options import service_env_vars
from .actor import BentoApiActor
from .plan import plan_api

# Without the data extra (pyarrow), map_api() refuses when called, saying what to install.
with contextlib.suppress(ImportError):
    from ray.data import Dataset

#: ``map_batches`` arguments that ``map_api`` sets itself.
_OWN_ARGUMENTS = frozenset(
    {
        "fn", "fn_args", "fn_kwargs", "fn_constructor_args", "fn_constructor_kwargs",
        "batch_format", "zero_copy_batch", "udf_modifying_row_count",
    }
)  # fmt: skip

#: Ray actor options ``map_batches`` passes on (its ``**ray_remote_args``), on every Ray.
_ACTOR_OPTIONS = frozenset(
    {
        "accelerator_type", "label_selector", "max_restarts", "max_task_retries", "memory",
        "num_cpus", "num_gpus", "object_store_memory", "resources", "runtime_env",
        "scheduling_strategy",
    }
)  # fmt: skip


def require_ray_data(what: str = "bentoml_ray.map_api") -> None:
    """Refuse, saying what to install, where Ray Data cannot be imported.

    ``ray[serve]`` alone lacks Ray Data's dependencies (pyarrow); the ``data`` extra brings
    them.
    """
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(
            f"{what} needs Ray Data, which cannot be imported here ({exc}): "
            "pip install 'bentoml-ray[data]'."
        ) from exc


@functools.cache
def _map_batches_parameters() -> Mapping[str, inspect.Parameter]:
    from ray.data import Dataset

    return MappingProxyType(dict(inspect.signature(Dataset.map_batches).parameters))


def map_api(
    dataset: Dataset,
    target: Any,
    api: str,
    *,
    input_columns: Sequence[str] | None = None,
    output_column: str = "output",
    on_error: str = "raise",
    error_column: str = "error",
    dependencies_from: str | None = None,
    bento_uri: str | None = None,
    install_requirements: bool = False,
    **ray_data_options: Any,
) -> Dataset:
    """Run a Bento's API over every row of ``dataset``; a Dataset of its answers.

    One pool of Ray Data actors loads the Bento once each (its models, and a runner-based
    Bento's runners, in the actor; a 1.2+ Bento's root service and its dependencies too,
    or the dependencies of a running application over handles). A batchable API, and a
    runner-based API that takes an array or a DataFrame, is called once per batch; any
    other API once per row. The answer keeps the input columns and adds the result: a
    dict-like result's keys as columns, any other in ``output_column``.

    Args:
        dataset: the rows to score. A 1.2+ API takes each parameter from the column of the
            same name; a runner-based API its input from the column named like its
            parameter, the only column, or ``input_columns``.
        target: a Bento, as ``deployment()`` takes it (a tag, a ``bentoml.Bento``, a
            loaded service).
        api: the API's name.
        input_columns: for a runner-based API, the column(s) its input is made of (scalar
            columns side by side make a ``NumpyNdarray``'s rows; a DataFrame's columns).
        output_column: where a result that is not dict-like goes.
        on_error: ``"raise"``: the first row the API rejects or raises on fails the job,
            naming the row; ``"column"``: such a row gets its error in ``error_column``
            (None elsewhere) and no result, and the job goes on.
        error_column: see ``on_error``.
        dependencies_from: the name of a Serve application serving this Bento (deployed
            with bentoml-ray): the root service's dependencies are called over handles to
            its deployments instead of running in each actor.
        bento_uri, install_requirements: as for ``deployment()``.
        **ray_data_options: passed to ``Dataset.map_batches``: ``batch_size``,
            ``concurrency`` (default 1 actor), ``num_cpus``, ``num_gpus``, ``memory``,
            ``resources``, ``runtime_env`` and the rest of its options.

    Returns:
        The lazy Dataset of the answers: nothing runs until it is consumed
        (``take_all()``, ``write_parquet()``, ``iter_batches()``...). Where it is
        consumed, a row the API fails on raises ``RowFailed`` (with
        ``on_error="raise"``).

    Raises:
        InvalidArgument: an unknown API, an input offline inference cannot build, or an
            option ``map_batches`` does not take; nothing has run.
        MissingColumn: a column the API's input is read from is not in the Dataset (an
            ``InvalidArgument`` too).
        BentoNotFound: the tag is not in the BentoML store (or at ``bento_uri``).
        InvalidBentoTag: the tag is malformed.
        MissingExtra: Ray Data is not installed (``pip install 'bentoml-ray[data]'``).
    """
    require_ray_data()
    if not isinstance(dataset, Dataset):
        raise InvalidArgument(
            f"map_api takes a ray.data.Dataset (ray.data.read_parquet(...), from_items(...)), "
            f"not {type(dataset).__name__}."
        )
    options = _check_ray_data_options(ray_data_options)
    if not isinstance(install_requirements, bool):
        raise InvalidArgument(
            f"install_requirements must be True or False, not {install_requirements!r}."
        )
    if isinstance(input_columns, str):
        input_columns = [input_columns]
    source, svc = resolve_target(target, bento_uri, install_requirements)
    plan = plan_api(
        svc,
        api,
        list(dataset.columns() or []),
        input_columns=input_columns,
        output_column=output_column,
        on_error=on_error,
        error_column=error_column,
    )
    dependencies: dict[str, str] = {}
    env_vars: dict[str, str] = {}
    if not isinstance(svc, LegacyService):
        user_env = options.get("runtime_env")
        given = user_env.get("env_vars") if isinstance(user_env, Mapping) else None
        # The dependencies run in the actor unless they are the application's.
        graph = [svc] if dependencies_from else list(svc.all_services(exclude_urls=True).values())
        for service in graph:
            env_vars.update(service_env_vars(service, "the Bento", given, os.environ))
        if dependencies_from is not None:
            dependencies = _application_deployments(svc, dependencies_from)
    elif dependencies_from is not None:
        raise InvalidArgument(
            "dependencies_from is for 1.2+ Bentos; a runner-based Bento's runners run in "
            "each actor."
        )
    runtime_env = merge_runtime_env(
        source.runtime_env, options.pop("runtime_env", None), "map_api's actors", env_vars
    )
    if runtime_env:
        options["runtime_env"] = runtime_env
    if plan.default_batch_size is not None:
        options.setdefault("batch_size", plan.default_batch_size)
    if "concurrency" not in options and "compute" not in options:
        options.update(actor_pool(OFFLINE_CONCURRENCY))
    if "udf_modifying_row_count" in _map_batches_parameters():  # Ray 2.5x: one row out per row in
        options["udf_modifying_row_count"] = False
    try:
        return dataset.map_batches(
            BentoApiActor,
            fn_constructor_args=(source, plan, str(svc.name), dependencies, dependencies_from),
            batch_format="numpy",
            zero_copy_batch=True,  # on every Ray; the API is handed copies (``columns``)
            **options,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"Ray Data rejects map_api's options: {exc}") from exc


#: ``map_api``'s own keyword arguments (``bentoml-ray batch --config`` takes them).
MAP_API_KEYWORDS: frozenset[str] = frozenset(
    name
    for name, parameter in inspect.signature(map_api).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)


def actor_pool(size: int) -> dict[str, Any]:
    """``map_batches``' option for a pool of ``size`` actors, as the installed Ray wants it
    said: ``concurrency`` until Ray 2.51 deprecated it for ``compute``, and after."""
    major, minor = (int(part) for part in ray.__version__.split(".")[:2])
    if (major, minor) >= (2, 51):
        from ray.data import ActorPoolStrategy

        return {"compute": ActorPoolStrategy(size=size)}
    return {"concurrency": size}


def ray_data_options() -> frozenset[str]:
    """The options ``map_api`` passes on to ``Dataset.map_batches`` (Ray Data's keyword
    arguments but those it sets itself, and Ray's actor options)."""
    named = {
        name
        for name, parameter in _map_batches_parameters().items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _OWN_ARGUMENTS
    }
    return frozenset(named | _ACTOR_OPTIONS)


def _check_ray_data_options(options: Mapping[str, Any]) -> dict[str, Any]:
    allowed = ray_data_options()
    for key in options:
        if key in _OWN_ARGUMENTS:
            raise InvalidArgument(
                f"map_api sets {key!r} itself (its actors take numpy batches and call the "
                "Bento's API); leave it out."
            )
        if key not in allowed:
            raise InvalidArgument(
                f"Unknown option {key!r} for map_api's Dataset.map_batches."
                f"{did_you_mean(key, allowed)}"
                f" Allowed options: {', '.join(sorted(allowed))}."
            )
    size = options.get("batch_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InvalidArgument(
            f"batch_size must be a whole number >= 1 (or None: Ray Data's), not {size!r}."
        )
    return dict(options)


def _application_deployments(root: Any, application: str) -> dict[str, str]:
    """Each dependency of ``root`` -> its deployment in the running ``application``."""
    from ray import serve

    from .._services.layout import service_deployment_name

    try:
        running = serve.status().applications.get(application)
    except Exception as exc:  # no Serve on this cluster, no cluster at all
        raise InvalidArgument(
            f"dependencies_from={application!r}: Ray Serve's status cannot be read ({exc})."
        ) from exc
    if running is None:
        raise InvalidArgument(
            f"dependencies_from names the Serve application {application!r}, which is not "
            "running; deploy the Bento there first (serve.run(bentoml_ray.deployment(...), "
            f"name={application!r}))."
        )
    wanted = {
        name: service_deployment_name(name)
        for name in root.all_services(exclude_urls=True)
        if name != root.name
    }
    missing = [
        deployment for deployment in wanted.values() if deployment not in running.deployments
    ]
    if missing:
        raise InvalidArgument(
            f"The Serve application {application!r} has no deployment {missing[0]!r}; its "
            f"deployments: {', '.join(running.deployments)}. Is it this Bento's application?"
        )
    return wanted

"""``bentoml-ray``: serve, deploy and export a Bento on Ray Serve from the shell.

``serve run module:app`` needs a Python file per Bento and a driver that stays up; this
CLI takes the Bento tag and an options file (``deployment()``'s keywords in YAML) instead:

- ``serve``: a local Ray (or a running cluster's), in the foreground, until Ctrl-C;
- ``deploy``: onto a running cluster, returning once the application runs;
- ``status`` / ``delete``: what Serve runs on a cluster, and removing an application;
- ``build``: a Serve config for ``serve deploy``, or a KubeRay ``RayService``;
- ``batch``: an API over files (Parquet, CSV, JSON Lines) with Ray Data, answers to files.

``--address`` means what it means to ``ray start``, ``ray status`` and ``serve run``: the
address ``ray.init()`` connects to (the head's GCS address, ``auto`` or ``ray://``), also
read from ``RAY_ADDRESS``. Ray's ``serve deploy`` and ``serve status`` take the dashboard's
URL instead; given here, it is refused naming the address to give.

Errors that are the user's (a bad option, a missing Bento, an unreachable cluster, an
extra or a package to install) are one line on stderr and exit status 1, not a traceback.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from .. import __version__
from .._errors import BentoRayError, InvalidArgument
from .._ray_compat import check_environment, ray_version
from .._replica.versions import state_name as _name
from .kuberay import manifest_yaml, rayservice_manifest
from .options_file import read_map_api_options, read_options_file
from .serve_config import config_of_plan, config_yaml, plan_application

F = TypeVar("F", bound=Callable[..., Any])

_ADDRESS_HELP = (
    "The Ray cluster to connect to, as ray.init() and `serve run --address` take it: the "
    "head's GCS address (<head>:6379), 'auto' (the cluster `ray start` started on this "
    "machine) or ray://<head>:10001 (Ray Client); not the dashboard URL "
    "(http://<head>:8265) that `serve deploy` takes."
)


def _address_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--address",
        envvar="RAY_ADDRESS",
        show_envvar=True,
        help=f"{_ADDRESS_HELP} [default: {default}]",
    )


class _Stopped(Exception):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _user_errors(command: F) -> F:
    """One line on stderr and exit status 1 for errors that are the user's to fix."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (BentoRayError, ConnectionError) as exc:
            _fail(str(exc))

    return wrapper  # type: ignore[return-value]


def _fail(message: str) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    raise SystemExit(1)


def _options(config_file: str | None) -> dict[str, Any]:
    return read_options_file(config_file) if config_file else {}


def _connect(address: str | None) -> None:
    """Connect to a running cluster; Ray's own connection errors become one line.

    A dashboard URL is refused, naming the address to give instead. A ``host:port`` that
    nothing answers on is refused at once: ``ray.init`` would retry it for minutes.
    """
    import ray

    address = address or "auto"
    if address.startswith(("http://", "https://")):
        raise InvalidArgument(
            f"{_address_origin()} is {address}, a Ray dashboard URL (what `serve deploy` and "
            "`ray job submit` take); bentoml-ray connects as ray.init() does, so give the "
            "head's GCS address, <head>:6379 (or 'auto' on a node of the cluster)."
        )
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise ConnectionError(
                f"Cannot reach a Ray cluster at {address}: {exc.strerror or exc}."
            ) from exc
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise ConnectionError(f"Cannot connect to a Ray cluster at {address}: {exc}") from exc


def _address_origin() -> str:
    """Where ``--address`` came from, for messages: the option or ``RAY_ADDRESS``."""
    context = click.get_current_context(silent=True)
    source = context.get_parameter_source("address") if context is not None else None
    return "RAY_ADDRESS" if source is ParameterSource.ENVIRONMENT else "--address"


_VERSIONS = (
    f"%(prog)s %(version)s (Ray {ray_version()}, BentoML {importlib.metadata.version('bentoml')}, "
    f"Python {platform.python_version()})"
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="bentoml-ray", message=_VERSIONS)
def main() -> None:
    """Run BentoML Bentos on Ray Serve.

    TAG is a Bento tag from the local BentoML store (BENTOML_HOME), such as
    iris_classifier:latest; it is resolved to its exact version. --config FILE is a YAML
    file whose keys are bentoml_ray.deployment()'s keyword arguments (map_api()'s for
    batch).

    --address is the Ray cluster's address as ray.init(), `ray start --address` and
    `serve run --address` take it (<head>:6379, 'auto', ray://<head>:10001), also read
    from RAY_ADDRESS; Ray's `serve deploy` and `serve status` take the dashboard's URL
    instead.
    """


@main.command("serve")
@click.argument("tag")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Options file: deployment() keyword arguments in YAML.",
)
@click.option("--name", help="Application name [default: the service's name].")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP host to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="HTTP port.")
@_address_option("a local Ray started for this command")
@click.option(
    "--num-cpus",
    type=click.IntRange(min=1),
    help="CPUs of the local Ray started here [default: the machine's]; not with --address.",
)
@_user_errors
def serve_command(
    tag: str,
    config_file: str | None,
    name: str | None,
    host: str,
    port: int,
    address: str | None,
    num_cpus: int | None,
) -> None:
    """Serve TAG until Ctrl-C (or SIGTERM), on a local Ray or a running cluster.

    Without --address (or RAY_ADDRESS), starts a local Ray and stops it on exit; with
    one, joins that cluster, and on exit removes only this application, not Serve.
    """
    if address and num_cpus is not None:
        raise InvalidArgument(
            f"--num-cpus sizes the local Ray that serve starts; with {_address_origin()} "
            "the cluster's own CPUs are used. Leave out one of them."
        )
    check_environment()
    plan = plan_application(tag, _options(config_file), environ=os.environ)
    app = plan.application()
    app_name = name or plan.service_name

    import ray
    from ray import serve

    # Ctrl-C must stop us even when the shell started us with SIGINT ignored (a
    # background job of a script), which Python would otherwise keep.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    serving = False
    failed: str | None = None
    try:
        if address:
            _connect(address)
        else:
            ray.init(address="local", num_cpus=num_cpus)
        signal.signal(signal.SIGTERM, _raise_stopped)  # after ray.init, which sets its own
        serve.start(http_options={"host": host, "port": port})
        serving = True
        try:
            serve.run(app, name=app_name, route_prefix=plan.route_prefix)
        except RuntimeError as exc:  # the application failed to deploy; Serve says why
            failed = str(exc)
        else:
            click.echo(f"Serving {plan.tag} at http://{host}:{port}{plan.route_prefix}")
            click.echo("Press Ctrl-C to stop.")
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, _Stopped):
        click.echo("Stopping.", err=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one clean shutdown, not two
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if serving:
            if address:
                serve.delete(app_name)
            else:
                serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    if failed is not None:
        _fail(failed)


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


@main.command("deploy")
@click.argument("tag")
@_address_option("auto")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Options file: deployment() keyword arguments in YAML.",
)
@click.option("--name", help="Application name [default: the service's name].")
@click.option(
    "--timeout",
    default=900.0,
    show_default=True,
    type=float,
    help="Seconds to wait for the application to run.",
)
@_user_errors
def deploy_command(
    tag: str, address: str | None, config_file: str | None, name: str | None, timeout: float
) -> None:
    """Deploy TAG to a running Ray cluster and wait until it runs.

    Prints each deployment's state as it changes; exits 0 once the application is
    RUNNING, 1 if it fails (with Serve's message) or is not running after --timeout.
    """
    check_environment()
    plan = plan_application(tag, _options(config_file), environ=os.environ)
    app = plan.application()
    app_name = name or plan.service_name
    _connect(address)
    from ray import serve

    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(app, name=app_name, route_prefix=plan.route_prefix)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    click.echo(f"Deploying {plan.tag} as {app_name!r} at {plan.route_prefix} ...")
    runner = threading.Thread(target=run, name="serve-run", daemon=True)
    runner.start()
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    while runner.is_alive() and time.monotonic() < deadline:
        _show_progress(serve.status().applications.get(app_name), shown)
        runner.join(timeout=1.0)
    if runner.is_alive():
        _fail(
            f"{app_name!r} is not RUNNING after {timeout:g} s; it is still deploying. "
            "Watch it with `bentoml-ray status`."
        )
    if failure:
        _fail(str(failure[0]))
    _show_progress(serve.status().applications.get(app_name), shown)
    click.echo(f"{app_name!r} is RUNNING ({plan.tag}, route {plan.route_prefix}).")


def _show_progress(app: Any, shown: dict[str, str]) -> None:
    """Print the application's and its deployments' states where they changed."""
    if app is None:
        return
    lines = {"": f"application: {_name(app.status)}"}
    for name, status in app.deployments.items():
        lines[name] = f"  {name}: {_name(status.status)} ({_replicas(status.replica_states)})"
    for key, line in lines.items():
        if shown.get(key) != line:
            shown[key] = line
            click.echo(line)


@main.command("status")
@_address_option("auto")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@_user_errors
def status_command(address: str | None, as_json: bool) -> None:
    """Print each Serve application's status, its deployments' and their replicas, and
    which Bento version those replicas serve."""
    _connect(address)
    from ray import serve

    applications: dict[str, dict[str, Any]] = {}
    for name, overview in serve.status().applications.items():
        versions = _replica_versions(name, list(overview.deployments))
        applications[name] = {
            "status": _name(overview.status),
            "message": overview.message,
            "deployments": {
                dep_name: {
                    "status": _name(dep.status),
                    "message": dep.message,
                    "replicas": {_name(state): n for state, n in dep.replica_states.items()},
                    "versions": versions.get(dep_name, {}),
                }
                for dep_name, dep in overview.deployments.items()
            },
        }
    if as_json:
        click.echo(json.dumps({"applications": applications}, indent=2))
        return
    if not applications:
        click.echo("No Serve applications are running.")
    for name, app in applications.items():
        click.echo(f"{name}: {app['status']}" + (f" - {app['message']}" if app["message"] else ""))
        for dep_name, dep in app["deployments"].items():
            replicas = ", ".join(f"{n} {state}" for state, n in dep["replicas"].items())
            serving = ", ".join(f"{version} ({n})" for version, n in dep["versions"].items())
            click.echo(
                f"  {dep_name}: {dep['status']} ({replicas or 'no replicas'})"
                + (f" serving {serving}" if serving else "")
                + (f" - {dep['message']}" if dep["message"] else "")
            )


def _replica_versions(app: str, deployments: list[str]) -> dict[str, dict[str, int]]:
    """The Bento versions an application's replicas serve, by deployment, as its hub heard
    them; empty for an application that has no hub (not bentoml-ray's) or does not answer."""
    from ray import serve

    hubs = [name for name in deployments if name.endswith(".hub")]
    if len(hubs) != 1:
        return {}
    try:
        handle = serve.get_deployment_handle(hubs[0], app_name=app)
        versions: dict[str, dict[str, int]] = handle.call.remote("versions", (), {}).result(
            timeout_s=10
        )
    except Exception:  # the hub restarting, or another application's deployment
        return {}
    return versions


@main.command("delete")
@click.argument("name")
@_address_option("auto")
@_user_errors
def delete_command(name: str, address: str | None) -> None:
    """Delete the Serve application NAME and its deployments."""
    _connect(address)
    from ray import serve

    applications = sorted(serve.status().applications)
    if name not in applications:
        _fail(
            f"There is no Serve application named {name!r}. "
            f"Applications: {', '.join(applications) or 'none'}."
        )
    serve.delete(name)
    click.echo(f"Deleted {name!r}.")


@main.command("build")
@click.argument("tag")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Options file: deployment() keyword arguments in YAML.",
)
@click.option(
    "--bento-uri",
    help="Where every node imports the Bento from (s3://, gs://, file://...); "
    "default: export it next to the output as a file:// URI.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="File to write [default: serve_config.yaml, or rayservice.yaml with --kuberay].",
)
@click.option("--name", help="Application name [default: the service's name].")
@click.option("--host", help="Serve's HTTP host (http_options; default: Serve's).")
@click.option("--port", type=int, help="Serve's HTTP port (http_options; default: Serve's).")
@click.option("--kuberay", is_flag=True, help="Write a KubeRay RayService embedding the config.")
@click.option(
    "--image",
    help="Container image for --kuberay [default: rayproject/ray:<ray "
    "version>-py<python>]; it must have bentoml-ray installed.",
)
@_user_errors
def build_command(
    tag: str,
    config_file: str | None,
    bento_uri: str | None,
    output: str | None,
    name: str | None,
    host: str | None,
    port: int | None,
    kuberay: bool,
    image: str | None,
) -> None:
    """Write a Ray Serve config (or KubeRay RayService) that serves TAG.

    The config names the exact Bento version; `serve deploy FILE` (or `kubectl apply`)
    deploys it, with no driver left running.
    """
    import bentoml

    out = Path(output or ("rayservice.yaml" if kuberay else "serve_config.yaml")).resolve()
    options = _options(config_file)
    if bento_uri:
        options["bento_uri"] = bento_uri
    plan = plan_application(tag, options)
    if "bento_uri" not in plan.options:
        out.parent.mkdir(parents=True, exist_ok=True)
        exported = Path(bentoml.export_bento(plan.tag, str(out.parent))).resolve()
        plan = plan.with_bento_uri(exported.as_uri())
        click.echo(
            f"Exported {plan.tag} to {exported}. The config reads it from {exported.as_uri()}, "
            "which only this machine has: for a real cluster, upload it where every node "
            "reaches it (s3://, gs://, ...) and pass that URI as --bento-uri.",
            err=True,
        )
    http_options = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    config = config_of_plan(plan, name=name, http_options=http_options)
    if kuberay:
        text = manifest_yaml(rayservice_manifest(config, name, image), plan.tag)
    else:
        text = config_yaml(config, plan.tag)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(f"Wrote {out}")


@main.command("batch")
@click.argument("tag")
@click.option("--api", required=True, help="The API to run on every row.")
@click.option(
    "--input",
    "input_path",
    required=True,
    help="File or folder to read (any path or URI Ray Data reads).",
)
@click.option("--output", "output_path", required=True, help="Folder to write the answers to.")
@click.option(
    "--input-format",
    type=click.Choice(["parquet", "csv", "json"]),
    help="[default: from --input's suffix]",
)
@click.option(
    "--output-format",
    type=click.Choice(["parquet", "csv", "json"]),
    help="[default: from --output's suffix, else --input's format]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Options file: map_api() keyword arguments in YAML, Ray Data's options among them "
    "(resources, runtime_env, accelerator_type...); the options below win over it.",
)
@click.option(
    "--input-columns", help="Runner-based APIs: the comma-separated columns the input is made of."
)
@click.option(
    "--output-column", help="Where a result that is not dict-like goes [default: output]."
)
@click.option(
    "--on-error",
    type=click.Choice(["raise", "column"]),
    help="A failed row fails the job, or gets its error in --error-column [default: raise].",
)
@click.option(
    "--error-column",
    help="With --on-error column: where a failed row's error goes [default: error].",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows per batch (Ray Data's).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Actors, each with the Bento loaded [default: 1].",
)
@click.option("--num-cpus", type=click.FloatRange(min=0), help="CPUs each actor reserves.")
@click.option("--num-gpus", type=click.FloatRange(min=0), help="GPUs each actor reserves.")
@click.option("--memory", type=click.IntRange(min=1), help="Bytes of memory each actor reserves.")
@click.option(
    "--dependencies-from",
    metavar="APP",
    help="A Serve application serving this 1.2+ Bento (deployed with bentoml-ray): the root "
    "service's dependencies are called there instead of running in each actor.",
)
@click.option(
    "--bento-uri",
    help="Where the actors' nodes fetch the Bento from (s3://, gs://, file://...) "
    "[default: shipped from this machine's store].",
)
@click.option(
    "--install-requirements",
    is_flag=True,
    default=None,
    help="Install the Bento's Python requirements in every actor (runtime_env pip).",
)
@_address_option("a local Ray started for this command")
@_user_errors
def batch_command(
    tag: str,
    api: str,
    input_path: str,
    output_path: str,
    input_format: str | None,
    output_format: str | None,
    config_file: str | None,
    input_columns: str | None,
    output_column: str | None,
    on_error: str | None,
    error_column: str | None,
    batch_size: int | None,
    concurrency: int | None,
    num_cpus: float | None,
    num_gpus: float | None,
    memory: int | None,
    dependencies_from: str | None,
    bento_uri: str | None,
    install_requirements: bool | None,
    address: str | None,
) -> None:
    """Run TAG's API on every row of --input; write the rows with its answers to --output.

    A 1.2+ API takes each parameter from the column of the same name. The options are
    bentoml_ray.map_api()'s. Ray Data shows its progress as it goes; the Bento is shipped
    to the cluster's nodes from this machine unless --bento-uri says where they fetch it.
    Needs the data extra: pip install 'bentoml-ray[data]'.
    """
    from .._offline.map_api import require_ray_data

    require_ray_data("bentoml-ray batch")
    import ray

    from .._offline.errors import RowFailed
    from .._offline.files import file_format, read_rows, write_rows
    from .._offline.map_api import actor_pool, map_api

    source_format = file_format(input_path, input_format, "--input")
    try:
        target_format = file_format(output_path, output_format, "--output")
    except BentoRayError:
        target_format = source_format  # a folder name with no suffix: as the input
    options = read_map_api_options(config_file) if config_file else {}
    given: dict[str, Any] = {
        "output_column": output_column,
        "on_error": on_error,
        "error_column": error_column,
        "batch_size": batch_size,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "memory": memory,
        "dependencies_from": dependencies_from,
        "bento_uri": bento_uri,
        "install_requirements": install_requirements,
    }
    options.update({key: value for key, value in given.items() if value is not None})
    if input_columns:
        options["input_columns"] = [name.strip() for name in input_columns.split(",")]
    if concurrency is not None:
        options.pop("concurrency", None)
        options.pop("compute", None)
        options.update(actor_pool(concurrency))
    if address:
        _connect(address)
    else:
        ray.init(address="local", log_to_driver=False)
    try:
        answers = map_api(read_rows(input_path, source_format), tag, api, **options)
        write_rows(answers, output_path, target_format)
    except RowFailed as failed:
        _fail(f"{failed.summary} (--on-error column keeps going.) {output_path} is incomplete.")
    finally:
        ray.shutdown()
    click.echo(f"Wrote the answers of {api!r} to {output_path} ({target_format}).")


def _replicas(states: dict[Any, int]) -> str:
    return ", ".join(f"{n} {_name(state)}" for state, n in states.items()) or "no replicas"

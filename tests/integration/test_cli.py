"""The ``bentoml-ray`` CLI, the options file, the Serve config and the KubeRay manifest.

Cheap checks run in-process (click's runner, no Ray): every command's ``--help``, the
options file's errors, and ``build``'s output against Ray's own ``ServeDeploySchema``.
The rest are real processes: ``bentoml-ray serve`` on its own local Ray until SIGINT, and
on the session's ``ray start`` cluster a ``serve deploy`` of a built config (replicas
pinned to the node whose BentoML store is empty, so the Bento can only come from the
config's ``bento_uri``), a ``bentoml-ray deploy``, ``status`` and ``delete``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import bentoml
import httpx
import pytest
import ray
import yaml
from _support import (
    BIN,
    RayCluster,
    cached_bentos,
    free_port,
    own_ray_env,
    stop_process_group,
)
from click.testing import CliRunner
from ray.serve.schema import ServeDeploySchema

import bentoml_ray
from bentoml_ray import InvalidDeploymentConfig, _ray_compat
from bentoml_ray._deploy.cli import main
from bentoml_ray._deploy.kuberay import rayservice_name
from bentoml_ray._deploy.options_file import read_options_file
from bentoml_ray._deploy.serve_config import config_of_plan, plan_application

VIRGINICA = [[5.9, 3.0, 5.1, 1.8]]
CLI = str(BIN / "bentoml-ray")


def _write(path: pathlib.Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _options(path: pathlib.Path, options: dict[str, Any]) -> str:
    return _write(path, yaml.safe_dump(options))


# --- cheap: no Ray -------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["deploy"], ["status"], ["delete"], ["build"], ["batch"]]
)
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ") and "--help" in result.output


def test_version() -> None:
    assert bentoml_ray.__version__ == importlib.metadata.version("bentoml-ray")
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(main, [flag])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(
            f"bentoml-ray {bentoml_ray.__version__} (Ray {ray.__version__}"
        )


def test_address_options_say_what_they_take() -> None:
    """``--address`` is ray.init()'s, as for ``ray start`` and ``serve run``; RAY_ADDRESS
    gives it, so no command shows it as required."""
    for command in ("serve", "deploy", "status", "delete", "batch"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        address = " ".join(text[text.index("  --address") :].split("\n  --")[0].split())
        assert "<head>:6379" in address and "not the dashboard URL" in address, address
        assert "env var: RAY_ADDRESS" in address and "required" not in address, address
    serve = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "--name" in serve


def test_batch_takes_every_option_of_map_api() -> None:
    text = CliRunner().invoke(main, ["batch", "--help"]).output
    named = inspect.signature(bentoml_ray.map_api).parameters.values()
    for parameter in named:
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            assert f"--{parameter.name.replace('_', '-')}" in text, parameter.name
    for ray_data in ("--batch-size", "--concurrency", "--num-cpus", "--num-gpus", "--memory"):
        assert ray_data in text
    assert "--config" in text  # the rest of Ray Data's options, in a file


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    return str(result.stderr)


def test_a_dashboard_url_as_address_is_refused_naming_what_to_give() -> None:
    given = CliRunner().invoke(main, ["status", "--address", "http://127.0.0.1:8265"])
    message = _one_line_error(given)
    assert "--address is http://127.0.0.1:8265" in message and "<head>:6379" in message
    from_env = CliRunner(env={"RAY_ADDRESS": "http://head:8265"}).invoke(main, ["delete", "x"])
    assert "RAY_ADDRESS is http://head:8265, a Ray dashboard URL" in _one_line_error(from_env)


def test_serve_sizes_only_the_local_ray_it_starts() -> None:
    result = CliRunner().invoke(main, ["serve", "x:y", "--address", "auto", "--num-cpus", "2"])
    assert "--num-cpus sizes the local Ray" in _one_line_error(result)


def test_a_known_bad_environment_is_refused_before_anything_deploys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_ray_compat, "ray_version", lambda: "2.50.0")
    monkeypatch.setattr(_ray_compat, "protobuf_has_field_label", lambda: False)
    for command in (["serve", "x:y"], ["deploy", "x:y"]):
        message = _one_line_error(CliRunner().invoke(main, command))
        assert "Ray 2.50.0" in message and "pip install 'protobuf<7'" in message


def test_batch_without_ray_data_says_what_to_install(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray.data", None)  # as if pyarrow were missing
    data = _write(tmp_path / "rows.csv", "a\n1\n")
    result = CliRunner().invoke(
        main, ["batch", "x:y", "--api", "f", "--input", data, "--output", str(tmp_path / "o")]
    )
    assert "pip install 'bentoml-ray[data]'" in _one_line_error(result)
    assert "Traceback" not in result.output


def test_batch_options_file_errors_name_the_key(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "rows.csv", "a\n1\n")
    options = _write(tmp_path / "batch.yaml", "batch_sise: 4\n")
    args = ["batch", "x:y", "--api", "f", "--input", data, "--output", str(tmp_path / "o")]
    message = _one_line_error(CliRunner().invoke(main, [*args, "--config", options]))
    assert "'batch_sise'" in message and "Did you mean 'batch_size'?" in message
    assert "resources" in message and "dependencies_from" in message  # the allowed keys
    _write(tmp_path / "batch.yaml", "api: other\n")
    message = _one_line_error(CliRunner().invoke(main, [*args, "--config", options]))
    assert "sets 'api', which comes from the command line" in message


def test_batch_gives_map_api_its_options_the_command_lines_over_the_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bentoml_ray._offline import files
    from bentoml_ray._offline import map_api as map_api_module

    calls: dict[str, Any] = {}

    def fake_map_api(dataset: Any, tag: str, api: str, **options: Any) -> str:
        calls["map_api"] = (dataset, tag, api, options)
        return "answers"

    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.setdefault("init", kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(files, "read_rows", lambda path, fmt: f"rows of {fmt}")
    monkeypatch.setattr(files, "write_rows", lambda *args: calls.setdefault("write", args))
    monkeypatch.setattr(map_api_module, "map_api", fake_map_api)
    data = _write(tmp_path / "rows.csv", "a\n1\n")
    options = _write(
        tmp_path / "batch.yaml", "batch_size: 8\nresources: {far: 1}\noutput_column: from_file\n"
    )
    out = str(tmp_path / "out.parquet")
    args = ["batch", "x:y", "--api", "f", "--input", data, "--output", out]
    runner = CliRunner(env={"RAY_ADDRESS": None})
    given = [
        "--config", options, "--output-column", "answer", "--on-error", "column",
        "--error-column", "why", "--memory", "1000", "--dependencies-from", "app",
        "--bento-uri", "s3://b/x.bento", "--install-requirements", "--num-gpus", "0.5",
    ]  # fmt: skip
    result = runner.invoke(main, [*args, *given])
    assert result.exit_code == 0, result.output
    assert calls["init"] == {"address": "local", "log_to_driver": False}
    assert calls["map_api"] == ("rows of csv", "x:y", "f", {
        "batch_size": 8, "resources": {"far": 1}, "output_column": "answer",
        "on_error": "column", "error_column": "why", "memory": 1000, "num_gpus": 0.5,
        "dependencies_from": "app", "bento_uri": "s3://b/x.bento", "install_requirements": True,
    })  # fmt: skip
    assert calls["write"] == ("answers", out, "parquet")
    # Options not given are map_api's own defaults, not the command's.
    assert runner.invoke(main, args).exit_code == 0
    assert calls["map_api"][3] == {}

    # A failed row (as Ray delivers it: test_offline's failed-row test) ends the job with
    # one line naming the row, as --on-error raise says.
    def failing_map_api(*args: Any, **options: Any) -> str:
        raise bentoml_ray.RowFailed("f", {"reviews": None}, ValueError("no text"))

    monkeypatch.setattr(map_api_module, "map_api", failing_map_api)
    failed = runner.invoke(main, args)
    assert failed.exit_code == 1
    assert _one_line_error(failed).startswith(
        "Error: API 'f' failed on the row {'reviews': None}: ValueError: no text."
    ), failed.output


def test_batch_names_a_file_format_it_cannot_tell(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "rows.txt", "a\n")
    result = CliRunner().invoke(
        main, ["batch", "iris_classifier:latest", "--api", "classify", "--input", data,
               "--output", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Cannot tell the format of --input" in result.output and ".parquet" in result.output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("enable_batchng: true\n", ["'enable_batchng'", "Did you mean 'enable_batching'?"]),
        ("- service_deployment_config\n", ["must be a mapping", "not list"]),
        ("service_deployment_config: {num_replicas: 1\n", ["is not valid YAML", "line"]),
        ("target: iris_classifier:latest\n", ["'target'", "from the command line"]),
    ],
    ids=["unknown-key", "not-a-mapping", "yaml-syntax", "target"],
)
def test_options_file_errors(tmp_path: pathlib.Path, content: str, expected: list[str]) -> None:
    """Each bad file is refused naming the file, the culprit and every allowed key."""
    path = _write(tmp_path / "options.yaml", content)
    with pytest.raises(InvalidDeploymentConfig) as info:
        read_options_file(path)
    message = str(info.value)
    assert path in message
    for part in expected:
        assert part in message, message
    if "YAML" not in message:  # the allowed keys come from deployment()'s signature
        for key in ("service_deployment_config", "bento_uri", "install_requirements"):
            assert key in message, message

    # The CLI says the same in one line on stderr, exit status 1, no traceback.
    result = CliRunner().invoke(main, ["build", "any:tag", "--config", path])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_application_builder_checks_args() -> None:
    with pytest.raises(InvalidDeploymentConfig, match="need 'target'"):
        bentoml_ray.application_builder({"enable_batching": True})
    with pytest.raises(InvalidDeploymentConfig, match="unknown key 'num_replicas'"):
        bentoml_ray.application_builder({"target": "x:y", "num_replicas": 2})


def test_missing_bento_is_one_line(bentoml_home: str) -> None:
    result = CliRunner().invoke(main, ["build", "no_such_bento:latest"])
    assert result.exit_code == 1
    assert "no_such_bento" in result.stderr and result.stderr.count("\n") == 1


OPTIONS = {
    "service_deployment_config": {"route_prefix": "/iris", "num_replicas": 2},
    "runner_deployment_config": {"iris_clf": {"max_ongoing_requests": 7}},
    "install_requirements": True,
}


def _validate_serve_config(config: dict[str, Any]) -> None:
    """Check ``config`` against Ray's own schema (pydantic 1's API in Ray 2.47, 2's later)."""
    validate = getattr(ServeDeploySchema, "model_validate", None) or ServeDeploySchema.parse_obj
    validate(config)


@pytest.mark.compat
def test_build_serve_config_and_rayservice(iris_bento: str, tmp_path: pathlib.Path) -> None:
    """``build`` writes what ``serve deploy`` accepts; ``--kuberay`` embeds the same config."""
    options = _options(tmp_path / "options.yaml", OPTIONS)
    runner = CliRunner()
    out = tmp_path / "out" / "serve_config.yaml"
    result = runner.invoke(main, ["build", iris_bento, "--config", options, "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    _validate_serve_config(config)
    [app] = config["applications"]
    name, version = iris_bento.split(":")
    exported = out.parent / f"{name}-{version}.bento"
    assert exported.is_file() and "upload it" in result.stderr
    assert app["args"] == {
        "target": iris_bento,  # the exact version, never :latest
        "service_deployment_config": {"num_replicas": 2},
        "runner_deployment_config": {"iris_clf": {"max_ongoing_requests": 7}},
        "install_requirements": True,
        "bento_uri": exported.as_uri(),
    }
    assert app["name"] == "iris_classifier" and app["route_prefix"] == "/iris"
    assert app["import_path"] == "bentoml_ray:application_builder"
    assert "scikit-learn" in app["runtime_env"]["pip"]
    assert app["deployments"] == [
        {"name": "iris_classifier", "num_replicas": 2},
        {"name": "iris_classifier.runner.iris_clf", "max_ongoing_requests": 7},
    ]
    assert "http_options" not in config

    manifest_path = tmp_path / "rayservice.yaml"
    latest_before = str(bentoml.get("iris_classifier:latest").tag)
    result = runner.invoke(
        main,
        ["build", "iris_classifier:latest", "--config", options, "--kuberay",
         "--bento-uri", "s3://bucket/iris.bento", "-o", str(manifest_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = manifest_path.read_text()
    assert text.startswith("#") and "bentoml-ray installed" in text
    assert "serveConfigV2: |\n    applications:" in text  # a block operators can read
    manifest = yaml.safe_load(text)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    assert manifest["metadata"] == {"name": "iris-classifier"}
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    # ``:latest`` is written as the exact version it was (the session builds a second iris
    # in the background, which may become the latest meanwhile).
    latest = {latest_before, str(bentoml.get("iris_classifier:latest").tag)}
    [embedded_app] = embedded["applications"]
    assert embedded_app["args"]["target"] in latest, (embedded_app["args"], latest)
    assert embedded == {**config, "applications": [{**app, "args": {
        **app["args"], "target": embedded_app["args"]["target"],
        "bento_uri": "s3://bucket/iris.bento"}}]}  # fmt: skip
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"] == {"dashboard-host": "0.0.0.0"}
    [head_container] = head["template"]["spec"]["containers"]
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert head_container["name"] == "ray-head"
    assert head_container["image"] == f"rayproject/ray:{ray.__version__}-{python}"
    assert {(p["name"], p["containerPort"]) for p in head_container["ports"]} == {
        ("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("serve", 8000)
    }  # fmt: skip
    assert set(head_container["resources"]) == {"limits", "requests"}
    [workers] = cluster["workerGroupSpecs"]
    assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams"} <= set(workers)
    [worker_container] = workers["template"]["spec"]["containers"]
    assert worker_container["name"] == "ray-worker"

    # KubeRay takes a DNS-1035 label of at most 47 characters.
    names = ["ReviewScorer", "iris_classifier", "_a.B", "9lives", "x" * 60, "--"]
    assert [rayservice_name(name) for name in names] == [
        "review-scorer", "iris-classifier", "a-b", "lives", "x" * 47, "bento"
    ]  # fmt: skip


def test_embedded_runners_are_not_listed_as_deployments(probe_bento: str) -> None:
    runners = {"small_batches": {"embedded": True},
               "large_batches": {"embedded": False, "num_replicas": 2}}  # fmt: skip
    config = config_of_plan(plan_application(probe_bento, {"runner_deployment_config": runners}))
    _validate_serve_config(config)
    [app] = config["applications"]
    assert app["deployments"] == [{"name": "batch_probe.runner.large_batches", "num_replicas": 2}]
    assert app["args"]["runner_deployment_config"] == runners


# --- real processes --------------------------------------------------------------------


@pytest.mark.ray  # a process of its own starts Ray
def test_serve_until_sigint(iris_bento: str, tmp_path: pathlib.Path) -> None:
    """``serve`` starts its own Ray, prints the URL, answers, and exits 0 on Ctrl-C."""
    options = _options(tmp_path / "options.yaml", {"service_deployment_config": {}})
    port = free_port()
    process = subprocess.Popen(
        [CLI, "serve", iris_bento, "--config", options, "--num-cpus", "4", "--port", str(port),
         "--name", "iris_cli"],
        env=own_ray_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        start = time.monotonic()
        line = _line_starting(process, "Serving ", timeout=180)
        print(f"serving after {time.monotonic() - start:.1f} s")
        assert line == f"Serving {iris_bento} at http://127.0.0.1:{port}/\n"
        answer = httpx.post(f"http://127.0.0.1:{port}/classify", json=VIRGINICA, timeout=30)
        assert answer.status_code == 200 and answer.json() == [2], answer.text

        os.kill(process.pid, signal.SIGINT)
        start = time.monotonic()
        assert process.wait(timeout=30) == 0
        print(f"stopped {time.monotonic() - start:.1f} s after SIGINT")
    finally:
        if process.poll() is None:
            stop_process_group(process, timeout=10)


def _line_starting(process: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    """The first line of ``process``'s stdout that starts with ``prefix`` (Ray's log lines
    from replicas may come first)."""
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(prefix):
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"no line starting with {prefix!r} after {timeout} s (exit {process.poll()})"
    return found[0]


def _cli(cluster: RayCluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, *args], env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _wait_for_200(url: str, deadline: float) -> None:
    while (answer := httpx.post(url, json=VIRGINICA, timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, (url, answer.status_code, answer.text)
        time.sleep(1)
    assert answer.json() == [2], answer.text


@pytest.mark.ray_dashboard  # serve deploy talks to the cluster's dashboard
def test_deploy_status_delete_on_a_cluster(
    ray_cluster: RayCluster, empty_far_cache: pathlib.Path, iris_bento: str, tmp_path: pathlib.Path
) -> None:
    """``serve deploy`` of a built config and ``bentoml-ray deploy``, side by side."""
    far = {"ray_actor_options": {"num_cpus": 0.1, "resources": {ray_cluster.far_resource: 1}}}
    config_options = _options(
        tmp_path / "config.yaml",
        {
            "service_deployment_config": {"route_prefix": "/cli_cfg", **far},
            "runner_deployment_config": {"iris_clf": far},
        },
    )
    # On the head only: its replicas on the far node would bring the Bento there first.
    small = {"ray_actor_options": {"num_cpus": 0.1, "resources": {ray_cluster.head_resource: 1}}}
    deploy_options = _options(
        tmp_path / "deploy.yaml",
        {
            "service_deployment_config": {"route_prefix": "/cli_deploy", **small},
            "runner_deployment_config": {"iris_clf": small},
        },
    )
    config = tmp_path / "serve_config.yaml"
    apps = ("cli_cfg", "cli_deploy")
    try:
        # The CLI deploys one application (and waits for it) while Serve builds the other
        # from its config: they overlap, as they would for two operators.
        start = time.monotonic()
        deploy = _cli(ray_cluster, "deploy", iris_bento, "--address", ray_cluster.address,
                      "--config", deploy_options, "--name", "cli_deploy")  # fmt: skip
        build = ["build", iris_bento, "--config", config_options, "--name", "cli_cfg"]
        result = CliRunner().invoke(main, [*build, "-o", str(config)])  # no Ray needed
        assert result.exit_code == 0, result.output
        serve_deploy = subprocess.run(
            [str(BIN / "serve"), "deploy", str(config), "--address", ray_cluster.dashboard_url],
            env=ray_cluster.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert serve_deploy.returncode == 0, serve_deploy.stderr[-3000:]

        code, out, err = _finish(deploy)
        assert code == 0, out[-3000:] + err[-3000:]
        print(f"bentoml-ray deploy returned after {time.monotonic() - start:.1f} s:\n{out}")
        assert "iris_classifier.runner.iris_clf: HEALTHY (1 RUNNING)" in out, out
        assert out.rstrip().endswith(f"'cli_deploy' is RUNNING ({iris_bento}, route /cli_deploy).")
        _wait_for_200(f"{ray_cluster.serve_url}/cli_deploy/classify", deadline=start + 60)
        _wait_for_200(f"{ray_cluster.serve_url}/cli_cfg/classify", deadline=start + 240)
        print(f"both answer after {time.monotonic() - start:.1f} s")
        # The far node had it from the config's bento_uri, not from an earlier test.
        assert cached_bentos(empty_far_cache) == {iris_bento}

        (code, text, err), (json_code, as_json, json_err) = map(
            _finish, [_cli(ray_cluster, "status"), _cli(ray_cluster, "status", "--json")]
        )
        assert code == 0 and json_code == 0, err[-3000:] + json_err[-3000:]
        lines = text.splitlines()
        for app in apps:
            assert f"{app}: RUNNING" in lines, text
        # Each replica says which Bento version it serves (the hub is no Bento's).
        runner_line = (
            f"  iris_classifier.runner.iris_clf: HEALTHY (1 RUNNING) serving {iris_bento} (1)"
        )
        assert runner_line in lines, text
        assert any(line.endswith(".hub: HEALTHY (1 RUNNING)") for line in lines), text
        status = json.loads(as_json)["applications"]["cli_cfg"]
        assert status["status"] == "RUNNING", status
        assert status["deployments"]["iris_classifier"] == {
            "status": "HEALTHY", "message": "", "replicas": {"RUNNING": 1},
            "versions": {iris_bento: 1},
        }  # fmt: skip

        deletes = [_cli(ray_cluster, "delete", name) for name in (*apps, "no_such_app")]
        results = [_finish(process) for process in deletes]
        for (code, out, err), app in zip(results[:2], apps, strict=True):
            assert code == 0 and out == f"Deleted {app!r}.\n", err[-3000:]
        code, out, err = results[2]
        assert code == 1 and "no_such_app" in err and "Applications:" in err, err[-3000:]
        assert "Traceback" not in err
        apps = ()
    finally:
        for app in apps:  # only after a failure above
            _finish(_cli(ray_cluster, "delete", app))

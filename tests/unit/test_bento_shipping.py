"""The Bento's way to the nodes and its runtime_env, checked without a cluster.

The two-node cluster in test_cluster.py proves the whole path; these pin down the pieces
and every way it can be given wrong input, each raising before anything deploys.
"""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Iterator

import bentoml
import pytest

import bentoml_ray
from bentoml_ray import BentoNotFound, InvalidDeploymentConfig
from bentoml_ray._bento.runtime_env import merge_runtime_env
from bentoml_ray._bento.shipping import fetch_bento, package_for_shipping
from bentoml_ray._bento.source import resolve_target


@pytest.fixture(scope="module")
def exported_iris(iris_bento: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("exported")
    return bentoml.export_bento(iris_bento, str(folder / "iris.bento"))


@pytest.fixture
def node_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    monkeypatch.setenv("BENTOML_RAY_CACHE_DIR", str(tmp_path))
    yield tmp_path


def test_the_shipped_package_is_the_bento_with_its_models_hard_linked(
    iris_bento: str, node_cache: pathlib.Path
) -> None:
    bento = bentoml.get(iris_bento)
    package = package_for_shipping(bento)
    assert (package / "bento.yaml").is_file()
    model = bentoml.models.get("iris_clf:latest")
    shipped = package / "models" / "iris_clf" / str(model.tag.version) / "model.yaml"
    assert shipped.is_file()
    assert shipped.stat().st_ino == pathlib.Path(model.path, "model.yaml").stat().st_ino
    assert package_for_shipping(bento) == package  # once per version
    # A replica loads it as BentoML's containers do: models from inside the folder.
    svc = bentoml.load(str(package), reload=True)  # another test may have loaded a service.py
    assert svc.name == "iris_classifier"


def test_a_uri_is_fetched_once_into_the_node_cache(
    exported_iris: str, iris_bento: str, node_cache: pathlib.Path
) -> None:
    tag = bentoml.Tag.from_taglike(iris_bento)
    first = fetch_bento(pathlib.Path(exported_iris).as_uri(), tag)
    assert first == node_cache / "bentos" / tag.name / str(tag.version)
    assert fetch_bento("file:///nowhere/else.bento", tag) == first  # cached: URI not read
    staged = [path for path in (node_cache / "downloads").iterdir() if path.is_dir()]
    assert not staged  # no staging folder left behind (the lock files stay)


def test_the_source_pickles_without_its_runtime_env(iris_bento: str) -> None:
    source, _ = resolve_target(iris_bento, install_requirements=True)
    assert source.runtime_env["pip"] == ["scikit-learn", f"bentoml=={bentoml.__version__}"]
    copy = pickle.loads(pickle.dumps(source))
    assert copy.package == source.package and copy.runtime_env == {}


def test_bento_uri_that_does_not_exist(iris_bento: str, node_cache: pathlib.Path) -> None:
    with pytest.raises(BentoNotFound, match="no such archive"):
        bentoml_ray.deployment(iris_bento, bento_uri="file:///nowhere/iris.bento")


def test_bento_uri_holding_another_bento(exported_iris: str, node_cache: pathlib.Path) -> None:
    with pytest.raises(BentoNotFound, match=r"holds Bento iris_classifier:.*not review_scorer"):
        bentoml_ray.deployment("review_scorer", bento_uri=exported_iris)


def test_bento_uri_that_is_not_an_archive(tmp_path: pathlib.Path, node_cache: pathlib.Path) -> None:
    junk = tmp_path / "junk.bento"
    junk.write_bytes(b"not an archive")
    with pytest.raises(InvalidDeploymentConfig, match="not an archive made by `bentoml export`"):
        bentoml_ray.deployment("iris_classifier", bento_uri=str(junk))


def test_bento_uri_with_an_unknown_protocol(node_cache: pathlib.Path) -> None:
    with pytest.raises(InvalidDeploymentConfig, match="cannot be read here"):
        bentoml_ray.deployment("iris_classifier", bento_uri="nosuchproto://bucket/iris.bento")


def test_bento_uri_needs_a_tag(exported_iris: str) -> None:
    with pytest.raises(InvalidDeploymentConfig, match="the target is the Bento's tag"):
        bentoml_ray.deployment(42, bento_uri=exported_iris)


def test_install_requirements_must_be_a_bool(iris_bento: str) -> None:
    with pytest.raises(InvalidDeploymentConfig, match="install_requirements must be True or"):
        bentoml_ray.deployment(iris_bento, install_requirements="yes")  # type: ignore[arg-type]


def test_install_requirements_against_the_users_own_pip(iris_bento: str) -> None:
    mine = {"ray_actor_options": {"runtime_env": {"conda": {"dependencies": ["numpy"]}}}}
    with pytest.raises(InvalidDeploymentConfig, match="already sets 'conda'"):
        bentoml_ray.deployment(iris_bento, mine, install_requirements=True)


def test_the_users_env_vars_win_over_the_bentos() -> None:
    derived = {"env_vars": {"A": "bento", "B": "bento"}, "pip": ["x"]}
    user = {"env_vars": {"A": "user"}, "working_dir": "s3://b/w.zip"}
    merged = merge_runtime_env(derived, user, "the API server")
    assert merged == {
        "env_vars": {"A": "user", "B": "bento"},
        "working_dir": "s3://b/w.zip",
        "pip": ["x"],
    }
    with pytest.raises(InvalidDeploymentConfig, match="must be a mapping"):
        merge_runtime_env(derived, ["pip"], "the API server")
    with pytest.raises(InvalidDeploymentConfig, match="env_vars of the API server must map"):
        merge_runtime_env(derived, {"env_vars": ["A=1"]}, "the API server")

"""Examples the docs include that need no Ray: the options files, read as the CLI reads
them, and the original integration's spelling; ``deployment()`` makes every check of
them against the session's Bentos."""

from __future__ import annotations

import pathlib

from _support import EXAMPLES, load_module
from ray.serve import Application

import bentoml_ray
from bentoml_ray._deploy.options_file import read_options_file


def _accepted(path: pathlib.Path, bento: str) -> None:
    options = read_options_file(path)
    assert options, f"{path} holds no options"
    assert isinstance(bentoml_ray.deployment(bento, **options), Application)


def test_iris_options_file(iris_bento: str) -> None:
    _accepted(EXAMPLES / "iris_classifier" / "options.yaml", iris_bento)


def test_review_scorer_autoscaling_file(review_scorer_bento: str) -> None:
    _accepted(EXAMPLES / "review_scorer" / "autoscaling.yaml", review_scorer_bento)


def test_code_for_the_original_integration(iris_bento: str) -> None:
    example = load_module(EXAMPLES / "iris_classifier" / "bento_ray_original.py")
    assert isinstance(example.classifier, Application)

"""Train the example model and save it to the BentoML model store as ``iris_clf``.

scikit-learn ships the iris data set, so this needs no network. ``predict`` is saved
as batchable along dimension 0, which is what lets bentoml-ray batch it on Ray Serve.
"""

from __future__ import annotations

import bentoml
from sklearn import datasets, svm


def train() -> bentoml.Model:
    iris = datasets.load_iris()
    clf = svm.SVC(gamma="scale")
    clf.fit(iris.data, iris.target)
    return bentoml.sklearn.save_model(
        "iris_clf",
        clf,
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
    )


if __name__ == "__main__":
    print(f"Saved {train().tag}")

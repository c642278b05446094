"""Score a table of reviews with the review scorer Bento: no server, no HTTP.

    python examples/review_scorer/offline.py

Run it after ``quickstart.py`` (or ``bentoml build``) put the Bento in the store. Needs
Ray Data: ``pip install 'bentoml-ray[data]'``.
"""

from __future__ import annotations

import ray
import ray.data

import bentoml_ray


def score_reviews(
    reviews: ray.data.Dataset, bento: str = "review_scorer:latest"
) -> ray.data.Dataset:
    """The rows of ``reviews`` with each one's score in a new column, ``output``.

    ``score`` takes a parameter named ``reviews``, so each row's ``reviews`` column feeds
    it; the API is batchable, so Ray Data's batches go to it whole. One actor loads the
    Bento (both services) and scores every batch; ``concurrency`` would add actors.
    """
    return bentoml_ray.map_api(reviews, bento, "score")


def main() -> None:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        texts = ["Great phone, love it", "Slow and broken", "Fine, I guess"]
        reviews = ray.data.from_items([{"id": i, "reviews": text} for i, text in enumerate(texts)])
        for row in sorted(score_reviews(reviews).take_all(), key=lambda row: row["id"]):
            print(f"{row['output']:+.1f}  {row['reviews']}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

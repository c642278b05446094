"""Ask the tenants example for one tenant's answer with BentoML's own HTTP client.

python client.py http://127.0.0.1:8000 tenant-a
"""

import sys
from typing import Any

import bentoml

MODEL_ID_HEADER = "serve_multiplexed_model_id"


def predict_for(url: str, tenant: str, rows: list[list[float]]) -> dict[str, Any]:
    with bentoml.SyncHTTPClient(url) as client:
        # BentoML's client takes no per-call headers: set it on the HTTP client it holds.
        client.client.headers[MODEL_ID_HEADER] = tenant
        answer: dict[str, Any] = client.predict(x=rows)
        return answer


if __name__ == "__main__":
    print(predict_for(sys.argv[1], sys.argv[2], [[5.9, 3.0, 5.1, 1.8]]))

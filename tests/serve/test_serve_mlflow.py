"""``mlflow models serve -m <model folder> --env-manager local`` serves our model for real."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_helpers import ServerProcess, assert_probs, b64, free_port
from visionauto.packaging.predictor import load_predictor


@pytest.mark.slow
def test_mlflow_models_serve_scores_a_dataframe_split_body(
    run_dir: Path, images: list[bytes], tmp_path: Path
) -> None:
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    server = ServerProcess(
        [
            sys.executable, "-m", "mlflow", "models", "serve", "-m", str(run_dir / "model"),
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
        ],
        tmp_path / "mlflow-serve.log",
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        server.wait_http(f"{base}/ping", timeout=120)
        body = {"dataframe_split": {"columns": ["image"], "data": [[b64(i)] for i in images]}}
        response = httpx.post(f"{base}/invocations", json=body, timeout=60)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert_probs(predictions, load_predictor(run_dir).predict(images))
        # Per-request settings travel as MLflow params (declared in the model signature).
        body["params"] = {"valid_crop_size": 32}
        response = httpx.post(f"{base}/invocations", json=body, timeout=60)
        assert response.status_code == 200, response.text
        expected = load_predictor(run_dir).predict(images, overrides={"valid_crop_size": 32})
        assert_probs(response.json()["predictions"], expected)
    finally:
        server.stop()

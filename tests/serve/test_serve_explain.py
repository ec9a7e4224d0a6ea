"""Explanations through the endpoint (spec §4.3): Azure's cell form and the top-level form, the
response schema, bypassing the micro-batcher, 4xx for bad parameters or unsupported models, 504
after ``--explain-timeout``."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.serve.serve_helpers import CLASS_NAMES, ThreadServer, azure_body, b64, wait_until
from visionauto.models.registry import create_model
from visionauto.packaging.predictor import Predictor
from visionauto.packaging.settings import build_settings
from visionauto.serve.app import Limits, create_app
from visionauto.serve.deployments import DeploymentSet, DeploymentSpec

CROP = 64  # the serve fixtures' model: valid_crop_size 64


def xai_body(images: list[bytes], **xai: Any) -> dict:
    """Azure's form: each cell a JSON string with the image and the explanation flags."""
    cells = [
        json.dumps(
            {"image_base64": b64(image), "model_explainability": True, "xai_parameters": xai}
        )
        for image in images
    ]
    return {"input_data": {"columns": ["image"], "data": cells}}


def png_shape(text: str) -> tuple[int, ...]:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    assert image.format == "PNG"
    return np.asarray(image).shape


@pytest.fixture(scope="module")
def served(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``python -m visionauto.serve`` process serving the tiny multiclass model."""
    from tests.serve.serve_helpers import ServerProcess, free_port, serve_command

    port = free_port()
    process = ServerProcess(
        serve_command("--model", str(run_dir), "--host", "127.0.0.1", "--port", str(port)),
        tmp_path_factory.mktemp("explain-log") / "server.log",
        env={"OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{base}/health/ready")
        yield base
    finally:
        process.stop()


def test_azure_cell_form_returns_scores_and_explanations(served: str, images: list[bytes]) -> None:
    with httpx.Client(base_url=served, timeout=120) as client:
        plain = client.post("/score", json=azure_body(images[:2])).json()
        stats = client.get("/deployments").json()["deployments"][0]["stats"]
        body = xai_body(images[:2], xai_algorithm="guided_backprop", attributions=True)
        response = client.post("/score", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["azureml-model-deployment"] == "default"
        # Explanations skip the micro-batcher: its counters did not move.
        assert client.get("/deployments").json()["deployments"][0]["stats"] == stats
        xrai = client.post("/score", json=xai_body(images[:1], n_steps=4, xrai_fast=False))
    answers = response.json()
    assert [list(a) for a in answers] == [["probs", "labels", "visualizations", "attributions"]] * 2
    for answer, scored in zip(answers, plain, strict=True):
        assert answer["labels"] == CLASS_NAMES
        assert answer["probs"] == pytest.approx(scored["probs"], abs=1e-5)
        assert np.asarray(answer["attributions"]).shape == (3, CROP, CROP)
        assert png_shape(answer["visualizations"]) == (2 * CROP, 2 * CROP, 3)
    assert xrai.status_code == 200, xrai.text
    assert list(xrai.json()[0]) == ["probs", "labels", "visualizations"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lambda i: xai_body(i, n_steps=1), "n_steps=1 is invalid: expected a whole number >= 2"),
        (lambda i: xai_body(i, xai_algorithm="shap"), "xai_algorithm='shap' is unknown"),
        (lambda i: xai_body(i, steps=3), r"xai_parameters has unknown key\(s\) \['steps'\]"),
        (lambda i: {**xai_body(i), "model_explainability": True},
         "given both in input_data.data\\[0\\] and at the top of the body"),
        (lambda i: {**azure_body(i), "model_explainability": "yes"},
         "model_explainability in the body is 'yes': expected true or false"),
        (lambda i: {**azure_body(i), "model_explainability": True, "xai_parameters": [1]},
         "xai_parameters in the body must be an object"),
    ],
)  # fmt: skip
def test_bad_explanation_requests_get_400(served: str, images: list[bytes], body, message) -> None:  # noqa: ANN001
    response = httpx.post(f"{served}/score", json=body(images[:1]), timeout=60)
    assert response.status_code == 400
    assert re.search(message, response.json()["error"]), response.json()


@contextmanager
def app_serving(predictor: Any, **limits: Any) -> Iterator[httpx.Client]:
    """An in-process endpoint around ``predictor`` (no model folder, no subprocess)."""
    deployments = DeploymentSet(
        [DeploymentSpec("default", "in-memory")], {"default": 100}, loader=lambda spec: predictor
    )
    app = create_app(deployments, limits=Limits(**limits))
    with ThreadServer(app) as server, httpx.Client(base_url=server.base, timeout=60) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "ready")
        yield client


def tiny_predictor(task: str, name: str = "test_resnet", **kw: Any) -> Predictor:
    torch.manual_seed(0)
    model = create_model(task, name, num_classes=len(CLASS_NAMES), **kw)
    settings = build_settings(
        task=task,
        model_name=name,
        class_names=CLASS_NAMES,
        inference={"valid_resize_size": 40, "valid_crop_size": 32},
    )
    return Predictor(model, settings)


def test_multilabel_top_level_form_returns_lists(images: list[bytes]) -> None:
    body = azure_body(images[:1], model_explainability=True)
    body["xai_parameters"] = {
        "xai_algorithm": "guided_gradcam",
        "attributions": True,
        "confidence_score_threshold_multilabel": 0.0,
    }
    with app_serving(tiny_predictor("multilabel")) as client:
        response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    (answer,) = response.json()
    assert len(answer["visualizations"]) == len(CLASS_NAMES)
    assert np.asarray(answer["attributions"]).shape == (len(CLASS_NAMES), 3, 32, 32)


def test_guided_methods_on_a_vit_get_400_naming_the_methods_that_work(
    images: list[bytes],
) -> None:
    vit = tiny_predictor("classification", "test_vit", img_size=32)
    with app_serving(vit) as client:
        refused = client.post("/score", json=xai_body(images[:1], xai_algorithm="guided_gradcam"))
        ig = client.post("/score", json=xai_body(images[:1], xai_algorithm="integrated_gradients"))
    assert refused.status_code == 400
    assert "does not work for model 'test_vit'" in refused.json()["error"]
    assert "Use xai_algorithm='xrai' or 'integrated_gradients'" in refused.json()["error"]
    assert ig.status_code == 200


def test_detection_models_answer_not_supported(images: list[bytes]) -> None:
    detector = SimpleNamespace(task="detection", settings={"task": "detection"})
    with app_serving(detector) as client:
        response = client.post("/score", json=xai_body(images[:1]))
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "model_explainability is not supported for task=detection: explanations exist for "
        "classification and multilabel"
    )


def test_a_slow_explanation_gets_504_and_the_endpoint_keeps_serving(images: list[bytes]) -> None:
    with app_serving(tiny_predictor("classification"), explain_timeout_s=0.01) as client:
        slow = client.post("/score", json=xai_body(images[:4], n_steps=200))
        plain = client.post("/score", json=azure_body(images[:1]))
    assert slow.status_code == 504
    assert slow.json()["error"].startswith("the explanation took longer than 0.01 s")
    assert "--explain-timeout" in slow.json()["error"]
    assert plain.status_code == 200

"""``python -m visionauto.serve`` as a real process on 127.0.0.1, called with httpx."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_helpers import (
    AUTH_KEY,
    CLASS_NAMES,
    ServerProcess,
    assert_probs,
    azure_body,
    b64,
    free_port,
    serve_command,
    wait_until,
)
from visionauto.packaging.predictor import load_predictor
from visionauto.serve.__main__ import main as serve_main

AUTH = {"Authorization": f"Bearer {AUTH_KEY}"}
MAX_BYTES = 120_000
MAX_IMAGES = 6


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One endpoint for the module; ``ready_seen`` lists the readiness codes seen while loading."""
    key_file = tmp_path_factory.mktemp("key") / "key.txt"
    key_file.write_text(AUTH_KEY + "\n")
    port = free_port()
    process = ServerProcess(
        serve_command(
            "--model", str(run_dir), "--auth-key-file", str(key_file),
            "--host", "127.0.0.1", "--port", str(port),
            "--max-request-bytes", str(MAX_BYTES), "--max-images-per-request", str(MAX_IMAGES),
            "--max-batch-size", "16", "--max-wait-ms", "200",
        ),
        tmp_path_factory.mktemp("log") / "server.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    process.wait_http(f"{base}/health/live")
    codes: list[int] = []

    def ready() -> bool:
        codes.append(httpx.get(f"{base}/health/ready").status_code)
        return codes[-1] == 200

    wait_until(ready, 90, "readiness")
    try:
        yield {"base": base, "ready_seen": codes, "process": process}
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: dict) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server["base"], headers=AUTH, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(run_dir: Path):  # noqa: ANN201
    return load_predictor(run_dir)


def test_probes_answer_without_a_key(server: dict) -> None:
    assert httpx.get(f"{server['base']}/health/live").json() == {"status": "alive"}
    ready = httpx.get(f"{server['base']}/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "deployments": {"default": "ready"}}
    # Readiness said 503 ("loading") until the model was in memory, then 200.
    assert server["ready_seen"][-1] == 200
    assert set(server["ready_seen"][:-1]) <= {503}


def test_azure_body_gives_the_predictor_answers_in_order(
    client: httpx.Client, images: list[bytes], predictor
) -> None:
    response = client.post("/score", json=azure_body(images))
    assert response.status_code == 200
    assert response.headers["azureml-model-deployment"] == "default"
    body = response.json()
    assert [row["labels"] for row in body] == [CLASS_NAMES] * 4
    assert_probs(body, predictor.predict(images))
    assert [sum(row["probs"]) for row in body] == pytest.approx([1.0] * 4, abs=1e-5)


def test_base64_with_newlines_and_the_mlflow_body(
    client: httpx.Client, images: list[bytes], predictor
) -> None:
    expected = predictor.predict(images[:2])
    with_newlines = [base64.encodebytes(image).decode("ascii") for image in images[:2]]
    azure = client.post(
        "/score", json={"input_data": {"columns": ["image"], "data": with_newlines}}
    )
    mlflow = client.post(
        "/score",
        json={"dataframe_split": {"columns": ["image"], "data": [[b64(i)] for i in images[:2]]}},
    )
    for response in (azure, mlflow):
        assert response.status_code == 200
        assert_probs(response.json(), expected)


def test_xai_cell_form_scores_and_explains(
    client: httpx.Client, images: list[bytes], predictor
) -> None:
    cell = json.dumps({"image_base64": b64(images[0]), "model_explainability": False})
    response = client.post("/score", json={"input_data": {"columns": ["image"], "data": [cell]}})
    assert response.status_code == 200
    assert_probs(response.json(), predictor.predict(images[:1]))
    cell = json.dumps(
        {
            "image_base64": b64(images[0]),
            "model_explainability": True,
            "xai_parameters": {"xai_algorithm": "guided_backprop"},
        }
    )
    response = client.post("/score", json={"input_data": {"columns": ["image"], "data": [cell]}})
    assert response.status_code == 200
    assert list(response.json()[0]) == ["probs", "labels", "visualizations"]
    assert_probs(response.json(), predictor.predict(images[:1]), atol=1e-5)


@pytest.mark.parametrize("key", ["settings", "params"])
def test_per_request_settings(
    client: httpx.Client, images: list[bytes], predictor, key: str
) -> None:
    response = client.post("/score", json=azure_body(images[:2], **{key: {"valid_crop_size": 32}}))
    assert response.status_code == 200
    expected = predictor.predict(images[:2], overrides={"valid_crop_size": 32})
    assert_probs(response.json(), expected)
    default = predictor.predict(images[:2])
    assert expected[0]["probs"] != pytest.approx(default[0]["probs"], abs=1e-6)


def test_key_auth(server: dict, images: list[bytes]) -> None:
    url = f"{server['base']}/score"
    body = azure_body(images[:1])
    for headers in ({}, {"Authorization": "Bearer wrong-key-123"}, {"Authorization": AUTH_KEY}):
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {
            "error": "missing or wrong key: send the header 'Authorization: Bearer <key>'."
        }
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server['base']}/deployments").status_code == 401


def _bad_requests(images: list[bytes]) -> list[tuple[str, dict, int, str]]:
    good = b64(images[0])
    columns = {"columns": ["image"]}
    return [
        ("malformed json", {"content": b'{"input_data": '}, 400, "not valid JSON"),
        ("empty body", {"content": b""}, 400, "the request body is empty"),
        ("deep nesting", {"content": b"[" * 100_000}, 400, "nests JSON too deeply"),
        ("not an object", {"json": [good]}, 400, "the body is a JSON list"),
        ("wrong key", {"json": {"inputs": [good]}}, 400, "the body has keys \\['inputs'\\]"),
        ("bad base64", {"json": {"input_data": {**columns, "data": [good, "@@@"]}}}, 400,
         "row 1 of column 'image' is not valid base64"),
        ("not an image", {"json": azure_body([b"plain text, no image"])}, 422,
         "input image #0 \\(0-based\\) cannot be decoded"),
        ("empty list", {"json": {"input_data": {**columns, "data": []}}}, 400,
         "input_data.data is empty"),
        ("wrong column", {"json": {"input_data": {"columns": ["img"], "data": [good]}}}, 400,
         "columns is \\['img'\\]"),
        ("too many images", {"json": azure_body(images[:1] * (MAX_IMAGES + 1))}, 413,
         f"has {MAX_IMAGES + 1} images, over the limit of {MAX_IMAGES}"),
        ("too large", {"json": azure_body([b"x" * MAX_BYTES])}, 413,
         f"over the limit of {MAX_BYTES} bytes"),
        ("unknown setting", {"json": azure_body(images[:1], settings={"crop": 3})}, 400,
         "unknown inference setting 'crop'"),
        ("bad setting value", {"json": azure_body(images[:1], settings={"valid_crop_size": 999})},
         400, "valid_crop_size=999 is larger than valid_resize_size=72"),
        ("settings not a dict", {"json": azure_body(images[:1], params=[1])}, 400,
         "'params' must be an object"),
    ]  # fmt: skip


def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(
    client: httpx.Client, images: list[bytes]
) -> None:
    import re

    for name, kwargs, status, message in _bad_requests(images):
        response = client.post("/score", **kwargs)
        assert response.status_code == status, (name, response.text)
        assert re.search(message, response.json()["error"]), (name, response.json())
        assert client.post("/score", json=azure_body(images[:1])).status_code == 200, name


def test_chunked_body_over_the_limit_is_cut_off_with_413(
    client: httpx.Client, images: list[bytes]
) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is checked while reading
        yield b'{"input_data": {"columns": ["image"], "data": ["'
        for _ in range(20):
            yield b"A" * 10_000
        yield b'"]}}'

    response = client.post("/score", content=chunks())
    assert response.status_code == 413
    assert "at least" in response.json()["error"]
    assert client.post("/score", json=azure_body(images[:1])).status_code == 200


def test_unknown_pinned_deployment_and_unknown_route(client: httpx.Client, images) -> None:
    response = client.post(
        "/score", json=azure_body(images[:1]), headers={"azureml-model-deployment": "green"}
    )
    assert response.status_code == 404
    assert "no deployment named 'green' (deployments: default)" in response.json()["error"]
    assert client.get("/nowhere").json() == {"error": "Not Found"}


def test_concurrent_requests_are_micro_batched(
    server: dict, client: httpx.Client, images: list[bytes]
) -> None:
    before = client.get("/deployments").json()["deployments"][0]["stats"]
    barrier = threading.Barrier(16)
    codes: list[int] = []

    def call(i: int) -> None:
        barrier.wait()
        response = httpx.post(
            f"{server['base']}/score", json=azure_body([images[i % 4]]), headers=AUTH, timeout=30
        )
        codes.append(response.status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = client.get("/deployments").json()["deployments"][0]["stats"]
    assert codes == [200] * 16
    assert after["images"] - before["images"] == 16
    assert after["forward_calls"] - before["forward_calls"] < 16
    assert after["max_images_per_call"] >= 2


def test_bad_model_reference_exits_with_code_2(tmp_path: Path, capsys) -> None:
    code = serve_main(["--model", str(tmp_path / "missing"), "--port", "1"])
    assert code == 2
    assert "no model found at" in capsys.readouterr().err
    assert serve_main(["--model", str(tmp_path), "--deployment", "a=b:100"]) == 2
    assert "give the model(s) one way" in capsys.readouterr().err

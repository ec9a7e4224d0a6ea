"""The MLflow pyfunc model folder: layout, Azure request forms, results equal to the Predictor."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
import torch

from visionauto import __version__
from visionauto.data.images import load_image
from visionauto.data.transforms import build_classification_transforms
from visionauto.errors import ConfigError, DataError, ModelError
from visionauto.packaging.predictor import Predictor
from visionauto.packaging.pyfunc import images_from_input, save_model

NAMES = ["can", "carton", "milk_bottle"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _expected_probs(model: torch.nn.Module, images: list[bytes], multilabel: bool) -> torch.Tensor:
    """What the saved network gives on validation-preprocessed images: f32[N, 3]."""
    transform = build_classification_transforms(
        train=False,
        augment=False,
        training_crop_size=48,
        validation_resize_size=64,
        validation_crop_size=48,
    )
    batch = torch.stack([transform(load_image(data)) for data in images])
    with torch.inference_mode():
        logits = model.eval()(batch)
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def test_model_folder_layout(classification_model: tuple[Path, torch.nn.Module]) -> None:
    model_dir, _ = classification_model
    for name in (
        "MLmodel",
        "settings.json",
        "artifacts/settings.json",
        "artifacts/weights.pt",
        "requirements.txt",
        "visionauto_model.py",
        "input_example.json",
    ):
        assert (model_dir / name).is_file(), name
    assert not (model_dir / "python_model.pkl").exists()  # loaded from code, not unpickled
    top = json.loads((model_dir / "settings.json").read_text())
    assert top == json.loads((model_dir / "artifacts/settings.json").read_text())
    assert top["class_names"] == NAMES and top["valid_crop_size"] == 48
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    assert f"visionauto=={__version__}" in requirements
    assert any(line.startswith("torch==") for line in requirements)
    mlmodel = (model_dir / "MLmodel").read_text()
    assert '"name": "image"' in mlmodel and '"name": "valid_crop_size"' in mlmodel


def test_pyfunc_multiclass_matches_network(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir, network = classification_model
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    out = loaded.predict(pd.DataFrame({"image": [_b64(data) for data in image_bytes]}))
    assert list(out.columns) == ["probs", "labels"]
    assert len(out) == len(image_bytes)
    assert all(labels == NAMES for labels in out["labels"])
    probs = torch.tensor(out["probs"].tolist())
    assert probs.sum(dim=1).tolist() == pytest.approx([1.0] * len(image_bytes), abs=1e-5)
    expected = _expected_probs(network, image_bytes, multilabel=False)
    assert torch.allclose(probs, expected, atol=1e-5)
    # Same path as the Predictor: identical numbers.
    direct = Predictor.from_folder(model_dir).predict(image_bytes)
    assert [row["probs"] for row in direct] == out["probs"].tolist()


def test_pyfunc_multilabel_uses_sigmoid(
    multilabel_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir, network = multilabel_model
    out = mlflow.pyfunc.load_model(str(model_dir)).predict(
        pd.DataFrame({"image": [_b64(data) for data in image_bytes]})
    )
    probs = torch.tensor(out["probs"].tolist())
    expected = _expected_probs(network, image_bytes, multilabel=True)
    assert torch.allclose(probs, expected, atol=1e-5)
    assert not torch.allclose(probs.sum(dim=1), torch.ones(len(image_bytes)), atol=1e-3)
    assert out["labels"].tolist() == [NAMES] * len(image_bytes)


def test_bytes_and_encodebytes_cells_give_the_same_result(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    loaded = mlflow.pyfunc.load_model(str(classification_model[0]))
    plain = loaded.predict(pd.DataFrame({"image": [_b64(d) for d in image_bytes]}))
    with_newlines = [base64.encodebytes(d).decode("ascii") for d in image_bytes]
    assert "\n" in with_newlines[1]
    for cells in (with_newlines, list(image_bytes), [_b64(d).encode() for d in image_bytes]):
        out = loaded.predict(pd.DataFrame({"image": cells}))
        assert out["probs"].tolist() == plain["probs"].tolist()


def test_azure_input_data_dict_and_params(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir, _ = classification_model
    python_model = mlflow.pyfunc.load_model(str(model_dir)).unwrap_python_model()
    body = {"input_data": {"columns": ["image"], "data": [_b64(d) for d in image_bytes[:2]]}}
    out = python_model.predict(None, body)
    predictor = Predictor.from_folder(model_dir)
    assert out["probs"].tolist() == [r["probs"] for r in predictor.predict(image_bytes[:2])]
    # Per-call overrides, Azure long names included, equal the Predictor's.
    changed = python_model.predict(None, body, params={"validation_crop_size": 32})
    expected = predictor.predict(image_bytes[:2], overrides={"valid_crop_size": 32})
    assert changed["probs"].tolist() == [r["probs"] for r in expected]
    assert changed["probs"].tolist() != out["probs"].tolist()
    with pytest.raises(ConfigError, match=r"unknown inference setting 'nms_iou_thresh'"):
        python_model.predict(None, body, params={"nms_iou_thresh": 0.4})


def test_pyfunc_params_through_mlflow(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir, _ = classification_model
    df = pd.DataFrame({"image": [_b64(image_bytes[1])]})
    out = mlflow.pyfunc.load_model(str(model_dir)).predict(df, params={"valid_crop_size": 32})
    expected = Predictor.from_folder(model_dir).predict(
        [image_bytes[1]], overrides={"valid_crop_size": 32}
    )
    assert out["probs"].tolist() == [expected[0]["probs"]]


def test_load_time_model_config(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir, _ = classification_model
    loaded = mlflow.pyfunc.load_model(str(model_dir), model_config={"valid_crop_size": 32})
    out = loaded.predict(pd.DataFrame({"image": [_b64(image_bytes[1])]}))
    expected = Predictor.from_folder(model_dir, settings_overrides={"valid_crop_size": 32})
    assert out["probs"].tolist() == [expected.predict([image_bytes[1]])[0]["probs"]]


def test_dataframe_split_rows_are_accepted(image_bytes: list[bytes]) -> None:
    body = {"dataframe_split": {"columns": ["image"], "data": [[_b64(image_bytes[0])]]}}
    assert images_from_input(body) == [image_bytes[0]]


@pytest.mark.parametrize(
    ("model_input", "error", "message"),
    [
        (
            pd.DataFrame({"img": ["x"]}),
            DataError,
            r"the input has columns \['img'\]: expected one column named 'image'",
        ),
        (
            {"input_data": {"columns": ["a", "image"], "data": []}},
            DataError,
            r"input_data.columns is \['a', 'image'\]: expected exactly \['image'\]",
        ),
        ({"data": []}, DataError, r"the request has keys \['data'\]: expected \{'input_data'"),
        (
            pd.DataFrame({"image": ["not base64!"]}),
            DataError,
            r"row 0 of column 'image' is not valid base64",
        ),
        (pd.DataFrame({"image": [None]}), DataError, r"row 0 of column 'image' is a NoneType"),
        (pd.DataFrame({"image": [""]}), DataError, r"row 0 of column 'image' is empty"),
    ],
)
def test_bad_requests(model_input: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        images_from_input(model_input)


def test_corrupt_image_names_its_row(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    loaded = mlflow.pyfunc.load_model(str(classification_model[0]))
    df = pd.DataFrame({"image": [_b64(image_bytes[0]), _b64(b"\x89PNG\r\n\x1a\n-truncated")]})
    with pytest.raises(
        DataError,
        match=r"input image #1 \(0-based\) cannot be decoded: image "
        r"<18 bytes> cannot be decoded",
    ):
        loaded.predict(df)


def test_save_model_refuses_non_empty_folder(
    tmp_path: Path, classification_model: tuple[Path, torch.nn.Module]
) -> None:
    model_dir, network = classification_model
    settings = json.loads((model_dir / "settings.json").read_text())
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("x")
    with pytest.raises(
        ModelError,
        match=r"model already exists and is not empty: choose another "
        r"folder, delete it, or pass overwrite=True",
    ):
        save_model(target, state_dict=network.state_dict(), settings=settings)
    save_model(target, state_dict=network.state_dict(), settings=settings, overwrite=True)
    assert not (target / "old.txt").exists() and (target / "MLmodel").is_file()
    with pytest.raises(ModelError, match=r"cannot package task 'pose'"):
        save_model(tmp_path / "pose", state_dict={}, settings=settings | {"task": "pose"})


@pytest.mark.slow
def test_load_in_fresh_process(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes], tmp_path: Path
) -> None:
    """No Hydra, no state from this process: only the folder."""
    model_dir, _ = classification_model
    request = tmp_path / "request.json"
    request.write_text(json.dumps([base64.encodebytes(d).decode() for d in image_bytes]))
    code = (
        "import json, sys, pandas as pd, mlflow.pyfunc\n"
        "cells = json.load(open(sys.argv[2]))\n"
        "out = mlflow.pyfunc.load_model(sys.argv[1]).predict(pd.DataFrame({'image': cells}))\n"
        "print(json.dumps(out.to_dict(orient='records')))\n"
        "print('hydra' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(request)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    records_line, hydra_line = proc.stdout.strip().splitlines()[-2:]
    expected = Predictor.from_folder(model_dir).predict(image_bytes)
    records = json.loads(records_line)
    assert [r["labels"] for r in records] == [NAMES] * len(image_bytes)
    for got, want in zip(records, expected, strict=True):
        assert got["probs"] == pytest.approx(want["probs"], abs=1e-6)
    assert hydra_line == "False"

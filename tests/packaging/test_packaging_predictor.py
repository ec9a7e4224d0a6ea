"""Predictor and load_predictor: model/run/sweep folders, overrides, batching, bad weights."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from visionauto.errors import ConfigError, DataError, ModelError
from visionauto.packaging.predictor import Predictor, load_predictor

NAMES = ["can", "carton", "milk_bottle"]


def _probs(results: list[dict]) -> list[list[float]]:
    return [row["probs"] for row in results]


def test_load_predictor_from_model_run_and_sweep_folders(
    tmp_path: Path, classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir, _ = classification_model
    sweep = tmp_path / "sweep"
    shutil.copytree(model_dir, sweep / "best" / "model")
    expected = Predictor.from_folder(model_dir).predict(image_bytes)
    for ref in (model_dir, model_dir.parent, sweep, str(sweep)):
        predictor = load_predictor(ref)
        assert (predictor.task, predictor.class_names) == ("classification", NAMES)
        assert predictor.predict(image_bytes) == expected


def test_load_predictor_not_found_lists_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError,
        match=(
            rf"no model found at {tmp_path}: looked for MLmodel and settings.json in {tmp_path}, "
            rf"{tmp_path}/model, {tmp_path}/best/model\. Pass a model folder"
        ),
    ):
        load_predictor(tmp_path)


def test_pil_and_bytes_inputs_agree(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    predictor = Predictor.from_folder(classification_model[0])
    pngs = image_bytes[:3]  # lossless, so decoding again gives the same pixels
    pil = [Image.open(io.BytesIO(data)) for data in pngs]
    gray = Image.open(io.BytesIO(pngs[1])).convert("L")  # grayscale input is converted to RGB
    assert predictor.predict(pil) == predictor.predict(pngs)
    assert predictor.predict([gray]) == predictor.predict([pngs[1]])


def test_batch_size_does_not_change_results(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    predictor = Predictor.from_folder(classification_model[0])
    one_by_one = _probs(predictor.predict(image_bytes, batch_size=1))
    together = _probs(predictor.predict(image_bytes))
    for a, b in zip(one_by_one, together, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert predictor.predict([]) == []
    with pytest.raises(ConfigError, match=r"batch_size=-1 is invalid"):
        predictor.predict(image_bytes, batch_size=-1)


def test_load_time_overrides(
    classification_model: tuple[Path, torch.nn.Module], image_bytes: list[bytes]
) -> None:
    model_dir = classification_model[0]
    changed = Predictor.from_folder(model_dir, settings_overrides={"validation_crop_size": 32})
    assert changed.settings["valid_crop_size"] == 32
    assert changed.preprocess(image_bytes[:2]).shape == (2, 3, 32, 32)
    default = Predictor.from_folder(model_dir)
    assert changed.predict(image_bytes) == default.predict(
        image_bytes, overrides={"valid_crop_size": 32}
    )
    with pytest.raises(ConfigError, match=r"unknown inference setting 'img_size'"):
        Predictor.from_folder(model_dir, settings_overrides={"image_size": 640})


def test_unsupported_input_type(classification_model: tuple[Path, torch.nn.Module]) -> None:
    predictor = Predictor.from_folder(classification_model[0])
    with pytest.raises(
        DataError,
        match=r"input image #0 \(0-based\) is a str: expected the bytes "
        r"of an image file or a PIL image",
    ):
        predictor.predict(["cat.jpg"])  # type: ignore[list-item]


def test_weights_that_do_not_fit_the_settings(
    tmp_path: Path, classification_model: tuple[Path, torch.nn.Module]
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(classification_model[0], model_dir)
    for path in (model_dir / "settings.json", model_dir / "artifacts" / "settings.json"):
        settings = json.loads(path.read_text())
        path.write_text(json.dumps(settings | {"class_names": NAMES + ["water_bottle"]}))
    with pytest.raises(
        ModelError,
        match=r"weights.pt does not fit model 'test_resnet' with 4 "
        r"classes: .*shape mismatches \['fc.bias', 'fc.weight'\]",
    ):
        Predictor.from_folder(model_dir)
    (model_dir / "artifacts" / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"weights.pt cannot be read as a torch state_dict"):
        Predictor.from_folder(model_dir)


def test_edited_top_level_settings_warns(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    classification_model: tuple[Path, torch.nn.Module],
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(classification_model[0], model_dir)
    top = model_dir / "settings.json"
    top.write_text(json.dumps(json.loads(top.read_text()) | {"valid_crop_size": 40}))
    with caplog.at_level(logging.WARNING, logger="visionauto.packaging.predictor"):
        predictor = Predictor.from_folder(model_dir)
    assert predictor.settings["valid_crop_size"] == 48  # artifacts/settings.json is what loads
    assert "differs from" in caplog.text and "artifacts/settings.json" in caplog.text

"""ONNX export (spec §4.5): names, dynamic batch, labels.json, ONNX Runtime == PyTorch."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch

from visionauto.errors import ConfigError, ModelError
from visionauto.model import main as model_main
from visionauto.packaging.onnx_export import compare_with_onnxruntime, export_onnx
from visionauto.packaging.predictor import load_predictor


@pytest.fixture(scope="module")
def exported(classification_model, tmp_path_factory: pytest.TempPathFactory) -> dict:
    model_dir, _ = classification_model
    predictor = load_predictor(model_dir)
    result = export_onnx(predictor, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return {"predictor": predictor, "result": result}


def test_layout_names_and_dynamic_batch(exported: dict) -> None:
    result = exported["result"]
    assert result.model_path.is_file()
    assert result.labels_path == result.model_path.parent / "labels.json"
    assert json.loads(result.labels_path.read_text()) == ["can", "carton", "milk_bottle"]
    assert result.input_shape == (-1, 3, 48, 48)
    session = onnxruntime.InferenceSession(str(result.model_path))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape[1:], inp.type) == ("input1", [3, 48, 48], "tensor(float)")
    assert isinstance(inp.shape[0], str)  # symbolic: any batch size
    assert (out.name, out.shape[1:]) == ("output1", [3])


@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_pytorch(exported: dict, batch: int) -> None:
    inputs = torch.randn(batch, 3, 48, 48, generator=torch.Generator().manual_seed(batch))
    diff = compare_with_onnxruntime(exported["predictor"], exported["result"].model_path, inputs)
    assert diff < 1e-4


def test_logits_with_azure_preprocessing_give_the_predictor_probabilities(
    exported: dict, image_bytes: list[bytes]
) -> None:
    predictor = exported["predictor"]
    session = onnxruntime.InferenceSession(str(exported["result"].model_path))
    batch = predictor.preprocess(image_bytes).numpy()
    (logits,) = session.run(["output1"], {"input1": batch})
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = np.array([row["probs"] for row in predictor.predict(image_bytes)])
    np.testing.assert_allclose(softmax, expected, atol=1e-5, rtol=0)


def test_multilabel_exports_logits_too(multilabel_model, tmp_path: Path) -> None:
    predictor = load_predictor(multilabel_model[0])
    result = export_onnx(predictor, tmp_path / "ml.onnx")
    inputs = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert compare_with_onnxruntime(predictor, result.model_path, inputs) < 1e-4


def test_tasks_without_an_exporter_and_bad_output_names(exported: dict, tmp_path: Path) -> None:
    detector = SimpleNamespace(task="detection")
    with pytest.raises(ModelError, match="ONNX export of task 'detection' is not available"):
        export_onnx(detector, tmp_path / "d.onnx")
    with pytest.raises(ConfigError, match="must end with .onnx"):
        export_onnx(exported["predictor"], tmp_path / "model.bin")


def test_cli_export_with_a_setting(classification_model, tmp_path: Path, capsys) -> None:
    output = tmp_path / "out" / "m.onnx"
    code = model_main(
        ["export-onnx", str(classification_model[0]), "--output", str(output),
         "--setting", "valid_crop_size=32"]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {output} (input (-1, 3, 32, 32)) and {output.parent / 'labels.json'}"
    assert lines[1].startswith("ONNX Runtime vs PyTorch: max abs difference")
    assert float(lines[1].split()[7]) < 1e-4
    code = model_main(["export-onnx", str(tmp_path / "none"), "--output", str(output)])
    assert code == 2
    assert "no model found at" in capsys.readouterr().err

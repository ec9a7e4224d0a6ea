"""ONNX export of a packaged model, in Azure's layout (spec §4.5): ``model.onnx`` + ``labels.json``.

Classification (multiclass and multilabel): input ``input1`` f32[B, 3, crop, crop] (RGB, resized,
center-cropped, /255, ImageNet-normalized), output ``output1`` f32[B, C] logits (no softmax or
sigmoid), dynamic batch. ``labels.json`` lists the class names: class id i is ``labels[i]``.

Each task has one exporter in :data:`EXPORTERS`; detection plugs in there.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from visionauto.errors import ConfigError, ModelError
from visionauto.packaging.predictor import Predictor

log = logging.getLogger(__name__)

INPUT_NAME = "input1"
OUTPUT_NAME = "output1"
LABELS_FILENAME = "labels.json"
DEFAULT_OPSET = 18
_MAX_DYNAMIC_BATCH = 4096


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        model_path: the ``.onnx`` file.
        labels_path: ``labels.json`` beside it.
        input_shape: the input shape with ``-1`` for the dynamic batch, e.g. ``(-1, 3, 224, 224)``.
    """

    model_path: Path
    labels_path: Path
    input_shape: tuple[int, ...]


def export_onnx(
    predictor: Predictor, output: str | Path, *, opset: int = DEFAULT_OPSET
) -> OnnxExport:
    """Exports ``predictor``'s network to ONNX and writes ``labels.json`` beside it.

    Args:
        predictor: a loaded model (its effective settings fix the crop size).
        output: the ``.onnx`` file to write (parent folders are created).
        opset: the ONNX opset version.

    Returns:
        The written paths and the input shape.

    Raises:
        ModelError: the task has no ONNX exporter in this version, or the export fails.
    """
    exporter = EXPORTERS.get(predictor.task)
    if exporter is None:
        raise ModelError(
            f"ONNX export of task {predictor.task!r} is not available in this version of "
            f"visionauto (available: {', '.join(EXPORTERS)}). Serve the MLflow model instead."
        )
    output = Path(output).expanduser().resolve()
    if output.suffix != ".onnx":
        raise ConfigError(f"--output {output} must end with .onnx (e.g. model.onnx).")
    output.parent.mkdir(parents=True, exist_ok=True)
    shape = exporter(predictor, output, opset)
    labels_path = output.parent / LABELS_FILENAME
    labels_path.write_text(json.dumps(predictor.class_names) + "\n", encoding="utf-8")
    return OnnxExport(model_path=output, labels_path=labels_path, input_shape=shape)


def _export_classification(predictor: Predictor, output: Path, opset: int) -> tuple[int, ...]:
    """Traces the classifier with torch.export (the maintained exporter) and a dynamic batch."""
    crop = int(predictor.settings["valid_crop_size"])
    model = predictor.model.float().eval().to("cpu")
    example = torch.zeros(2, 3, crop, crop)
    batch = torch.export.Dim("batch", min=1, max=_MAX_DYNAMIC_BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export prints several internal FutureWarnings
            torch.onnx.export(
                model,
                (example,),
                str(output),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # torch.export raises many unrelated types for unsupported ops
        raise ModelError(
            f"ONNX export of {predictor.settings['model_name']!r} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        predictor.model.to(predictor.device)
    return (-1, 3, crop, crop)


EXPORTERS: dict[str, Callable[[Predictor, Path, int], tuple[int, ...]]] = {
    "classification": _export_classification,
    "multilabel": _export_classification,
}


def compare_with_onnxruntime(
    predictor: Predictor, model_path: str | Path, inputs: torch.Tensor
) -> float:
    """Runs ``inputs`` through ONNX Runtime and the PyTorch model; returns the max abs difference.

    Args:
        predictor: the model that was exported.
        model_path: the exported ``.onnx`` file.
        inputs: f32[B, 3, crop, crop] preprocessed images (e.g. ``predictor.preprocess(images)``).

    Raises:
        ModelError: onnxruntime is not installed (``pip install visionauto[onnx]``) or the shapes
            differ.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ModelError(
            "onnxruntime is not installed: pip install 'visionauto[onnx]' to check the export."
        ) from err
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = inputs.detach().float().cpu()
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    with torch.inference_mode():
        torch_out = predictor.model(inputs.to(predictor.device)).float().cpu().numpy()
    if onnx_out.shape != torch_out.shape:
        raise ModelError(
            f"{model_path} gives outputs of shape {onnx_out.shape}, PyTorch {torch_out.shape}: "
            "the export is wrong; report it as a bug."
        )
    return float(abs(onnx_out - torch_out).max())

"""The MLflow pyfunc model: ``mlflow.pyfunc.load_model(model_dir).predict(df)`` scores images.

Input: a DataFrame with one column ``image`` whose cells are base64 strings (``base64.b64encode``
or ``base64.encodebytes``, i.e. with newlines) or raw image bytes (spec §4.1). Called directly,
``predict`` also takes Azure's body ``{"input_data": {"columns": ["image"], "data": [...]}}``.
Output: one row per image, in input order, with the task's response columns (spec §4.2).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import torch
from PIL import Image

from visionauto.errors import DataError, ModelError
from visionauto.packaging.predictor import (
    ARTIFACTS_DIRNAME,
    WEIGHTS_FILENAME,
    Predictor,
)
from visionauto.packaging.settings import SETTINGS_FILENAME, inference_keys

INPUT_COLUMN = "image"
MODEL_CODE_FILENAME = "visionauto_model.py"
_MODEL_CODE = """\
# Loaded by mlflow.pyfunc.load_model: the model is visionauto's class, rebuilt from artifacts/.
from mlflow.models import set_model

from visionauto.packaging.pyfunc import VisionAutoPythonModel

set_model(VisionAutoPythonModel())
"""
OUTPUT_COLUMNS: dict[str, list[str]] = {
    "classification": ["probs", "labels"],
    "multilabel": ["probs", "labels"],
    "detection": ["boxes"],
    "instance_segmentation": ["boxes"],
}
# Third-party packages the model needs at load time, pinned to the versions it was saved with.
_RUNTIME_PACKAGES = ("torch", "torchvision", "timm", "pillow", "pandas", "numpy")
# Raw image files hold bytes outside the base64 alphabet within their first bytes.
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


class VisionAutoPythonModel(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around :class:`visionauto.packaging.predictor.Predictor`.

    The device is ``$VISIONAUTO_DEVICE`` if set, else ``cuda`` when available, else ``cpu``.
    ``mlflow.pyfunc.load_model(path, model_config={"valid_crop_size": 256})`` (short names only)
    overrides inference settings for the whole load.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuilds the model from ``context.artifacts["settings"]`` and ``["weights"]``."""
        device = os.environ.get("VISIONAUTO_DEVICE") or (
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.predictor = Predictor.from_files(
            context.artifacts["settings"],
            context.artifacts["weights"],
            settings_overrides={
                key: value
                for key, value in (getattr(context, "model_config", None) or {}).items()
                if value is not None
            },
            device=device,
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Scores the images of ``model_input``; one output row per image, same order.

        Args:
            context: MLflow's model context (unused; the model is loaded in ``load_context``).
            model_input: DataFrame with column ``image`` (base64 str or bytes cells), or a dict
                ``{"input_data": {"columns": ["image"], "data": [...]}}``.
            params: inference overrides for this call, e.g. ``{"valid_crop_size": 256}``.

        Returns:
            DataFrame with columns ``probs`` and ``labels`` (classification/multilabel).

        Raises:
            DataError: bad input shape, bad base64 or an undecodable image (names the row).
            ConfigError: an unknown override key or an invalid value.
        """
        predictor = getattr(self, "predictor", None)
        if predictor is None:
            raise ModelError(
                "the model is not loaded: use mlflow.pyfunc.load_model(model_dir) "
                "or visionauto.packaging.load_predictor(model_dir)."
            )
        images = images_from_input(model_input)
        overrides = {key: value for key, value in (params or {}).items() if value is not None}
        results = predictor.predict(images, overrides=overrides)
        return pd.DataFrame(results, columns=OUTPUT_COLUMNS[predictor.task])


def images_from_input(model_input: Any) -> list[bytes]:
    """Extracts the encoded image files of a scoring request.

    Args:
        model_input: a DataFrame with column ``image``; a dict ``{"input_data": {...}}`` or
            ``{"dataframe_split": {...}}`` with ``columns`` and ``data``; or a list of cells.

    Returns:
        The image files' bytes, in row order.

    Raises:
        DataError: the request has no ``image`` column, or a cell is not base64 / bytes.
    """
    if isinstance(model_input, dict):
        cells = _cells_from_dict(model_input)
    elif isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN not in model_input.columns:
            raise DataError(
                f"the input has columns {list(model_input.columns)}: expected one "
                f"column named {INPUT_COLUMN!r} with base64-encoded images."
            )
        cells = model_input[INPUT_COLUMN].tolist()
    elif isinstance(model_input, (list, tuple)):
        cells = list(model_input)
    else:
        raise DataError(
            f"the input is a {type(model_input).__name__}: expected a DataFrame with "
            f"column {INPUT_COLUMN!r} or {{'input_data': {{'columns': ['image'], "
            "'data': [...]}}."
        )
    return [decode_cell(cell, row=i) for i, cell in enumerate(cells)]


def _cells_from_dict(body: dict) -> list[Any]:
    key = next((k for k in ("input_data", "dataframe_split") if k in body), None)
    inner = body.get(key) if key else None
    if not isinstance(inner, dict) or "data" not in inner:
        raise DataError(
            f"the request has keys {sorted(body)}: expected {{'input_data': "
            "{'columns': ['image'], 'data': ['<base64>', ...]}}."
        )
    columns = list(inner.get("columns") or [INPUT_COLUMN])
    if columns != [INPUT_COLUMN]:
        raise DataError(f"{key}.columns is {columns}: expected exactly [{INPUT_COLUMN!r}].")
    # Azure sends a flat list of cells; MLflow's dataframe_split sends one-element rows.
    return [
        row[0] if isinstance(row, (list, tuple)) and len(row) == 1 else row for row in inner["data"]
    ]


def decode_cell(cell: Any, *, row: int = 0) -> bytes:
    """One ``image`` cell -> the image file's bytes (base64 text is decoded, raw bytes kept).

    Raises:
        DataError: the cell is empty, not base64, or of another type; the message names ``row``.
    """
    if isinstance(cell, (bytes, bytearray)):
        if not cell:
            raise DataError(f"row {row} of column {INPUT_COLUMN!r} is empty.")
        if not _BASE64_TEXT.fullmatch(bytes(cell[:512])):
            return bytes(cell)
        cell = bytes(cell).decode("ascii")
    if not isinstance(cell, str):
        raise DataError(
            f"row {row} of column {INPUT_COLUMN!r} is a {type(cell).__name__}: "
            "expected a base64 string or the bytes of an image file."
        )
    text = "".join(_DATA_URL.sub("", cell.strip()).split())
    if not text:
        raise DataError(f"row {row} of column {INPUT_COLUMN!r} is empty.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DataError(
            f"row {row} of column {INPUT_COLUMN!r} is not valid base64 ({err}): send "
            "base64.b64encode(image_bytes).decode('ascii')."
        ) from err


def build_signature(settings: dict[str, Any]) -> mlflow.models.ModelSignature:
    """Input: string column ``image``; output: the task's columns; params: the inference keys."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        Array,
        ColSpec,
        DataType,
        Object,
        ParamSchema,
        ParamSpec,
        Property,
        Schema,
    )

    corners = Object([Property(k, DataType.double) for k in ("topX", "topY", "bottomX", "bottomY")])
    box = [Property("box", corners), Property("label", DataType.string),
           Property("score", DataType.double)]
    if settings.get("task") == "instance_segmentation":
        box.append(Property("polygon", Array(Array(DataType.double)), required=False))
        box.append(Property("mask", DataType.string, required=False))  # with export_as_image
    outputs = {
        "probs": ColSpec(Array(DataType.double), "probs"),
        "labels": ColSpec(Array(DataType.string), "labels"),
        "boxes": ColSpec(Array(Object(box)), "boxes"),
    }
    # A None default keeps settings.json authoritative: unset params are dropped in predict.
    dtypes = {
        bool: DataType.boolean,
        int: DataType.long,
        float: DataType.double,
        str: DataType.string,
    }
    params = [
        ParamSpec(key, dtypes[type(settings[key])], None)
        for key in inference_keys(settings)
        if type(settings.get(key)) in dtypes
    ]
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, INPUT_COLUMN)]),
        outputs=Schema([outputs[name] for name in OUTPUT_COLUMNS[settings["task"]]]),
        params=ParamSchema(params) if params else None,
    )


def pip_requirements() -> list[str]:
    """The explicit requirement list (never let MLflow infer it: slow and may use the network)."""
    from visionauto import __version__

    pins = [f"visionauto=={__version__}"]
    for name in _RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def save_model(
    model_dir: Path,
    *,
    state_dict: dict,
    settings: dict,
    input_example_image: bytes | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes an MLflow pyfunc model folder: MLmodel, settings.json, artifacts/weights.pt.

    Args:
        model_dir: the folder to create (e.g. ``<run>/model``); must be absent or empty unless
            ``overwrite``.
        state_dict: the trained network's ``state_dict()`` (tensors are moved to the CPU).
        settings: from :func:`visionauto.packaging.settings.build_settings`.
        input_example_image: an encoded image stored as the model's input example (default: a
            small gray PNG).
        overwrite: replace an existing non-empty ``model_dir``.

    Returns:
        ``model_dir`` as an absolute path.

    Raises:
        ModelError: ``model_dir`` is not empty and ``overwrite`` is False, or settings are
            incomplete.
    """
    model_dir = Path(model_dir).expanduser().resolve()
    missing = [key for key in ("task", "model_name", "class_names") if key not in settings]
    if missing or settings.get("task") not in OUTPUT_COLUMNS:
        raise ModelError(
            f"cannot package task {settings.get('task')!r} (missing keys {missing}): "
            "pass settings from visionauto.packaging.build_settings for "
            f"one of {', '.join(OUTPUT_COLUMNS)}."
        )
    if model_dir.is_dir() and any(model_dir.iterdir()):
        if not overwrite:
            raise ModelError(
                f"{model_dir} already exists and is not empty: choose another folder, "
                "delete it, or pass overwrite=True."
            )
        shutil.rmtree(model_dir)
    example = input_example_image if input_example_image is not None else _gray_png()
    with tempfile.TemporaryDirectory(prefix="visionauto-model-") as tmp:
        settings_path = Path(tmp) / SETTINGS_FILENAME
        settings_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        weights_path = Path(tmp) / WEIGHTS_FILENAME
        torch.save(
            {
                key: value.detach().cpu() if torch.is_tensor(value) else value
                for key, value in state_dict.items()
            },
            weights_path,
        )
        # Models-from-code: loading imports our class by name instead of unpickling an object.
        code_path = Path(tmp) / MODEL_CODE_FILENAME
        code_path.write_text(_MODEL_CODE, encoding="utf-8")
        mlflow.pyfunc.save_model(
            path=str(model_dir),
            python_model=str(code_path),
            artifacts={"settings": str(settings_path), "weights": str(weights_path)},
            signature=build_signature(settings),
            input_example=pd.DataFrame({INPUT_COLUMN: [base64.b64encode(example).decode("ascii")]}),
            pip_requirements=pip_requirements(),
            # Declares which keys load_model(model_config=...) may override; None = keep the file's.
            model_config={key: None for key in inference_keys(settings)},
        )
    # The copy users find at model/settings.json; artifacts/settings.json is what loads.
    shutil.copyfile(
        model_dir / ARTIFACTS_DIRNAME / SETTINGS_FILENAME, model_dir / SETTINGS_FILENAME
    )
    return model_dir


def _gray_png(size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()

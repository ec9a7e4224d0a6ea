"""The one inference path: a loaded model plus its settings, used by pyfunc, the endpoint and batch.

A model folder (written by :func:`visionauto.packaging.pyfunc.save_model`) looks like::

    model/
      MLmodel  python_model.pkl  requirements.txt ...   MLflow's files
      settings.json                                     copy of artifacts/settings.json
      artifacts/settings.json  artifacts/weights.pt     what the model is loaded from

``weights.pt`` is a plain ``state_dict``; the network is rebuilt with
``create_model(task, model_name, num_classes=len(class_names), pretrained=False, **model_kwargs)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch import nn

from visionauto.errors import ConfigError, DataError, ModelError
from visionauto.packaging.settings import SETTINGS_FILENAME, apply_overrides, load_settings

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = "weights.pt"
MLMODEL_FILENAME = "MLmodel"
ARTIFACTS_DIRNAME = "artifacts"
DEFAULT_BATCH_SIZE = 16
CLASSIFICATION_TASKS = ("classification", "multilabel")
OBJECT_TASKS = ("detection", "instance_segmentation")
SUPPORTED_TASKS = CLASSIFICATION_TASKS + OBJECT_TASKS
# Images per forward pass when the caller gives none (Azure: R-CNN 2, yolov5 16).
YOLO_BATCH_SIZE = 16
OBJECT_DEFAULT_BATCH_SIZE = 2
# Settings the detector applies itself (the tile_* ones go to the tiling wrapper).
DETECTOR_SETTINGS = ("min_size", "max_size", "img_size", "box_score_thresh", "nms_iou_thresh",
                     "box_detections_per_img")

ImageInput = bytes | bytearray | Image.Image


class Predictor:
    """Loaded model + settings; the one inference path used by pyfunc, the endpoint and batch scoring.

    Attributes:
        task: the model's task (one of :data:`SUPPORTED_TASKS`).
        class_names: class names in training order.
        settings: the effective settings (file values with the load-time overrides applied).
        model: the network in eval mode on ``device``.
        device: the torch device the model runs on.
    """

    def __init__(self, model: nn.Module, settings: dict[str, Any], *, device: str = "cpu") -> None:
        task = settings["task"]
        if task not in SUPPORTED_TASKS:
            raise ModelError(
                f"task {task!r} cannot be served by this version of visionauto "
                f"(supported: {', '.join(SUPPORTED_TASKS)}). Upgrade visionauto."
            )
        self.task: str = task
        self.class_names: list[str] = list(settings["class_names"])
        self.settings: dict[str, Any] = dict(settings)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._transforms: dict[tuple[int, int], Callable[[Image.Image], torch.Tensor]] = {}

    @classmethod
    def from_files(
        cls,
        settings_path: str | Path,
        weights_path: str | Path,
        *,
        settings_overrides: dict | None = None,
        device: str = "cpu",
    ) -> Predictor:
        """Rebuilds the model from a ``settings.json`` and a ``weights.pt`` (a state_dict).

        Raises:
            ModelError: a file is missing or unreadable, or the weights do not fit the model.
            ConfigError: an override key is unknown or its value is invalid.
        """
        settings = apply_overrides(load_settings(Path(settings_path)), settings_overrides)
        model = build_model(settings)
        model.load_state_dict(_load_state_dict(Path(weights_path), settings, model))
        return cls(model, settings, device=device)

    @classmethod
    def from_folder(
        cls, model_dir: str | Path, *, settings_overrides: dict | None = None, device: str = "cpu"
    ) -> Predictor:
        """Loads a model folder written by :func:`visionauto.packaging.pyfunc.save_model`.

        Args:
            model_dir: the folder holding ``MLmodel`` and ``settings.json``.
            settings_overrides: inference settings to change for this load (short or Azure names).
            device: torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        """
        settings_path, weights_path = find_model_files(Path(model_dir))
        return cls.from_files(
            settings_path, weights_path, settings_overrides=settings_overrides, device=device
        )

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        overrides: dict | None = None,
        batch_size: int | None = None,
    ) -> list[dict]:
        """Scores images; one response dict per image, in input order (spec §4.2).

        Args:
            images: encoded image files (bytes) or PIL images.
            overrides: inference settings for this call only (e.g. ``{"valid_crop_size": 256}``).
            batch_size: images per forward pass (default 16).

        Returns:
            Classification: ``{"probs": [p_0, ..., p_{C-1}], "labels": class_names}`` with softmax
            (multiclass) or independent sigmoid (multilabel) probabilities. Detection:
            ``{"boxes": [{"box": {"topX", "topY", "bottomX", "bottomY"}, "label", "score"}]}``
            (normalized); instance segmentation adds ``"polygon"`` to each box.

        Raises:
            DataError: an image cannot be decoded (the message gives its 0-based index).
            ConfigError: an override key is unknown or its value is invalid.
        """
        settings = apply_overrides(self.settings, overrides)
        images = list(images)
        size = batch_size or self.default_batch_size
        if size < 1:
            raise ConfigError(f"batch_size={batch_size} is invalid: expected an integer >= 1.")
        results: list[dict] = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            if self.task in OBJECT_TASKS:
                results.extend(self._predict_objects(chunk, settings, first_index=start))
                continue
            batch = self.preprocess(chunk, settings, first_index=start)
            results.extend(self._predict_classification(batch))
        return results

    @property
    def default_batch_size(self) -> int:
        if self.task in OBJECT_TASKS:
            from visionauto.models.registry import is_yolo

            yolo = is_yolo(self.settings["model_name"])
            return YOLO_BATCH_SIZE if yolo else OBJECT_DEFAULT_BATCH_SIZE
        return DEFAULT_BATCH_SIZE

    def detector_for(self, settings: dict[str, Any]) -> nn.Module:
        """The detector configured for ``settings`` (wrapped for tiling when a grid is set)."""
        self.model.set_inference_settings(
            **{k: settings[k] for k in DETECTOR_SETTINGS if settings.get(k) is not None})
        grid = settings.get("tile_grid_size")
        if not grid:
            return self.model
        from visionauto.data.tiling import parse_tile_grid_size
        from visionauto.models.tiled import TiledDetector

        tiled = TiledDetector(self.model).eval()
        tiled.set_inference_settings(
            tile_grid_size=parse_tile_grid_size(grid),
            tile_overlap_ratio=settings["tile_overlap_ratio"],
            tile_predictions_nms_thresh=settings["tile_predictions_nms_thresh"])
        return tiled

    def _predict_objects(
        self, images: Sequence[ImageInput], settings: dict[str, Any], *, first_index: int = 0
    ) -> list[dict]:
        """Boxes (and polygons) in Azure's response form, normalized by each image's size."""
        from torchvision.transforms.v2.functional import pil_to_tensor

        from visionauto.packaging.segmentation_output import boxes_to_response, masks_to_response

        pil = [decode_image(image, index=first_index + i) for i, image in enumerate(images)]
        tensors = [pil_to_tensor(p).to(self.device).float().div_(255) for p in pil]
        with torch.inference_mode():
            outputs = self.detector_for(settings)(tensors)
        results = []
        for out, image in zip(outputs, pil, strict=True):
            out = {k: v.cpu() for k, v in out.items()}
            width, height = image.size
            if self.task == "instance_segmentation":
                boxes = masks_to_response(
                    out["masks"], out["boxes"], out["scores"], out["labels"], self.class_names,
                    width=width, height=height,
                    mask_pixel_score_threshold=settings["mask_pixel_score_threshold"],
                    max_number_of_polygon_points=settings["max_number_of_polygon_points"],
                    export_as_image=settings["export_as_image"],
                    image_type=settings["image_type"])
            else:
                boxes = boxes_to_response(out["boxes"], out["scores"], out["labels"],
                                          self.class_names, width=width, height=height)
            results.append({"boxes": boxes})
        return results

    def preprocess(
        self,
        images: Sequence[ImageInput],
        settings: dict[str, Any] | None = None,
        *,
        first_index: int = 0,
    ) -> torch.Tensor:
        """Decodes, resizes, center-crops and normalizes images as in validation.

        Args:
            images: encoded image files (bytes) or PIL images.
            settings: effective settings (default: this predictor's).
            first_index: index of ``images[0]`` in the caller's list, for error messages.

        Returns:
            f32[B, 3, valid_crop_size, valid_crop_size] on the model's device.
        """
        transform = self.transform(settings or self.settings)
        tensors = [
            transform(decode_image(image, index=first_index + i)) for i, image in enumerate(images)
        ]
        return torch.stack(tensors).to(self.device)

    def transform(
        self, settings: dict[str, Any] | None = None
    ) -> Callable[[Image.Image], torch.Tensor]:
        """The validation transform for ``settings`` (PIL RGB image -> f32[3, crop, crop])."""
        from visionauto.data.transforms import build_classification_transforms

        settings = settings or self.settings
        key = (int(settings["valid_resize_size"]), int(settings["valid_crop_size"]))
        if key not in self._transforms:
            self._transforms[key] = build_classification_transforms(
                train=False,
                augment=False,
                training_crop_size=key[1],
                validation_resize_size=key[0],
                validation_crop_size=key[1],
            )
        return self._transforms[key]

    def _predict_classification(self, batch: torch.Tensor) -> list[dict]:
        """batch: f32[B, 3, H, W] -> one ``{"probs", "labels"}`` dict per image."""
        with torch.inference_mode():
            logits = self.model(batch).float()  # [B, C]
        if self.task == "multilabel":
            probs = torch.sigmoid(logits)
        else:
            probs = torch.softmax(logits, dim=1)
        return [{"probs": row, "labels": list(self.class_names)} for row in probs.cpu().tolist()]


def decode_image(image: ImageInput, *, index: int = 0) -> Image.Image:
    """Turns encoded bytes or a PIL image into an EXIF-upright RGB PIL image.

    Raises:
        DataError: the bytes are not a readable image; the message names input ``index``.
    """
    from visionauto.data.images import load_image, to_rgb

    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    if not isinstance(image, (bytes, bytearray)):
        raise DataError(
            f"input image #{index} (0-based) is a {type(image).__name__}: expected "
            "the bytes of an image file or a PIL image."
        )
    try:
        return load_image(bytes(image))
    except DataError as err:
        raise DataError(f"input image #{index} (0-based) cannot be decoded: {err}") from err


def build_model(settings: dict[str, Any]) -> nn.Module:
    """Builds the untrained network described by ``settings`` (no download: pretrained=False)."""
    from visionauto.models.registry import create_model

    return create_model(
        settings["task"],
        settings["model_name"],
        num_classes=len(settings["class_names"]),
        pretrained=False,
        **settings.get("model_kwargs", {}),
    )


def _load_state_dict(path: Path, settings: dict[str, Any], model: nn.Module) -> dict:
    if not path.is_file():
        raise ModelError(
            f"{path} not found: a model folder needs {WEIGHTS_FILENAME} "
            "(written by visionauto.packaging.save_model)."
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise ModelError(
            f"{path} cannot be read as a torch state_dict: {err}. Re-export the model."
        ) from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        key
        for key in set(expected) & set(state_dict)
        if tuple(expected[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or shapes:
        raise ModelError(
            f"{path} does not fit model {settings['model_name']!r} with "
            f"{len(settings['class_names'])} classes: missing keys {missing[:3]}, unexpected keys "
            f"{unexpected[:3]}, shape mismatches {shapes[:3]}. Check model_name, model_kwargs and "
            f"class_names in {SETTINGS_FILENAME}."
        )
    return state_dict


def find_model_files(model_dir: Path) -> tuple[Path, Path]:
    """Returns (settings.json, weights.pt) of a model folder; the ``artifacts/`` copies win.

    MLflow loads ``artifacts/``; the top-level ``settings.json`` is a copy for people to read.
    If the two differ, the artifact one is used and a warning names both.
    """
    artifacts = model_dir / ARTIFACTS_DIRNAME
    settings_path = artifacts / SETTINGS_FILENAME
    top_settings = model_dir / SETTINGS_FILENAME
    if not settings_path.is_file():
        settings_path = top_settings
    elif top_settings.is_file() and _read_json(top_settings) != _read_json(settings_path):
        log.warning(
            "%s differs from %s; using %s (the file MLflow loads). Edit both or pass "
            "settings_overrides.",
            top_settings,
            settings_path,
            settings_path,
        )
    weights_path = artifacts / WEIGHTS_FILENAME
    if not weights_path.is_file():
        weights_path = model_dir / WEIGHTS_FILENAME
    return settings_path, weights_path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def resolve_model_dir(ref: str | Path) -> Path:
    """Finds the model folder behind ``ref``: a model, run (``model/``) or sweep (``best/model/``).

    Raises:
        ModelError: none of the candidate folders holds a model; the message lists them.
    """
    root = Path(ref).expanduser()
    candidates = [root, root / "model", root / "best" / "model"]
    for candidate in candidates:
        if (candidate / MLMODEL_FILENAME).is_file() and (
            (candidate / SETTINGS_FILENAME).is_file()
            or (candidate / ARTIFACTS_DIRNAME / SETTINGS_FILENAME).is_file()
        ):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ModelError(
        f"no model found at {ref}: looked for {MLMODEL_FILENAME} and "
        f"{SETTINGS_FILENAME} in {looked}. Pass a model folder, a run folder "
        "(with model/) or a sweep folder (with best/model/)."
    )


def load_predictor(ref: str | Path, *, tracking_uri: str | None = None, **kw: Any) -> Predictor:
    """Loads a :class:`Predictor` from a folder or the MLflow model registry.

    Args:
        ref: a model folder (``MLmodel`` + ``settings.json``), a run folder (``model/``), a
            sweep folder (``best/model/``), or a registered model ``models:/NAME@alias`` /
            ``models:/NAME/VERSION`` (see :mod:`visionauto.packaging.registry`).
        tracking_uri: the registry of ``models:/`` refs (default ``$MLFLOW_TRACKING_URI``, else
            ``outputs/mlflow.db`` under the current folder); ignored for folders.
        **kw: passed to :meth:`Predictor.from_folder` (``settings_overrides``, ``device``).

    Raises:
        ModelError: nothing loadable at ``ref``.
    """
    if isinstance(ref, str) and ref.startswith("models:/"):
        from visionauto.packaging.registry import load_registered_predictor

        return load_registered_predictor(ref, tracking_uri=tracking_uri, **kw)
    return Predictor.from_folder(resolve_model_dir(ref), **kw)


def parse_setting_pairs(pairs: list[str] | None) -> dict[str, str]:
    """``["valid_crop_size=256", ...]`` -> ``{"valid_crop_size": "256"}`` (values converted later).

    Raises:
        ConfigError: an item has no ``=`` or an empty key.
    """
    settings: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--setting {pair!r} is invalid: write KEY=VALUE, e.g. --setting valid_crop_size=256."
            )
        settings[key.strip()] = value.strip()
    return settings

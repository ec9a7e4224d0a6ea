"""``settings.json``: the task, class names and inference settings stored beside a model's weights.

The file is flat JSON (spec §4.4), e.g. for classification::

    {"task": "classification", "model_name": "resnet18", "class_names": ["can", "carton"],
     "visionauto_version": "0.1.0", "model_kwargs": {},
     "valid_resize_size": 256, "valid_crop_size": 224}

Inference keys use Azure's runtime short names (``valid_crop_size``, ``box_score_thresh``, ...).
Overrides, per load or per request, may use the job-API long names too (spec §1.6); they are
mapped to the short names here, so every other module sees only short names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from visionauto.config.schema import TASKS
from visionauto.errors import ConfigError, ModelError

SETTINGS_FILENAME = "settings.json"

# Keys that describe the model rather than how to run it; everything else is an inference key.
META_KEYS = ("task", "model_name", "class_names", "visionauto_version", "model_kwargs")

_CLASSIFICATION_DEFAULTS: dict[str, Any] = {"valid_resize_size": 256, "valid_crop_size": 224}

# Spec §1.3 / §1.4 / §6; ``box_score_thresh`` is 0.1 for yolov5 (set from training at save time).
_DETECTION_DEFAULTS: dict[str, Any] = {
    "min_size": 600,
    "max_size": 1333,
    "img_size": 640,
    "box_score_thresh": 0.3,
    "nms_iou_thresh": 0.5,
    "box_detections_per_img": 100,
    "tile_grid_size": None,
    "tile_overlap_ratio": 0.25,
    "tile_predictions_nms_thresh": 0.25,
}
_SEGMENTATION_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in _DETECTION_DEFAULTS.items() if not k.startswith("tile_")},
    "mask_pixel_score_threshold": 0.5,
    "max_number_of_polygon_points": 100,
    "export_as_image": False,
    "image_type": "JPG",
}

INFERENCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "classification": dict(_CLASSIFICATION_DEFAULTS),
    "multilabel": dict(_CLASSIFICATION_DEFAULTS),
    "detection": dict(_DETECTION_DEFAULTS),
    "instance_segmentation": dict(_SEGMENTATION_DEFAULTS),
}

# Azure job-API name -> runtime short name (spec §1.6).
LONG_TO_SHORT: dict[str, str] = {
    "validation_crop_size": "valid_crop_size",
    "validation_resize_size": "valid_resize_size",
    "box_score_threshold": "box_score_thresh",
    "nms_iou_threshold": "nms_iou_thresh",
    "box_detections_per_image": "box_detections_per_img",
    "image_size": "img_size",
    "tile_predictions_nms_threshold": "tile_predictions_nms_thresh",
}

# Value checks by key; keys not listed here are stored as given.
_POSITIVE_INT_KEYS = frozenset(
    {
        "valid_resize_size",
        "valid_crop_size",
        "min_size",
        "max_size",
        "img_size",
        "box_detections_per_img",
        "max_number_of_polygon_points",
    }
)
_UNIT_INTERVAL_KEYS = frozenset(
    {
        "box_score_thresh",
        "nms_iou_thresh",
        "mask_pixel_score_threshold",
        "tile_overlap_ratio",
        "tile_predictions_nms_thresh",
    }
)


def build_settings(
    *,
    task: str,
    model_name: str,
    class_names: list[str],
    inference: dict[str, Any],
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Builds the ``settings.json`` content of a trained model.

    Args:
        task: one of ``classification``, ``multilabel``, ``detection``, ``instance_segmentation``.
        model_name: the name given to ``create_model`` (registry key or timm name).
        class_names: class names in training order (index i of the model output is class i).
        inference: inference settings under short or long names; missing keys take the task's
            defaults from :data:`INFERENCE_DEFAULTS`.
        model_kwargs: extra keyword arguments ``create_model`` needs to rebuild the model.

    Returns:
        The flat settings dict (JSON-serializable).

    Raises:
        ConfigError: unknown task, empty or duplicate class names, unknown inference key, or a
            value out of range.
    """
    from visionauto import __version__

    if task not in TASKS:
        raise ConfigError(f"task={task!r} is invalid: expected one of {', '.join(TASKS)}.")
    names = [str(name) for name in class_names]
    if not names:
        raise ConfigError("class_names is empty: a model needs at least one class.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            f"class_names has duplicates {duplicates}: every class needs a unique name."
        )
    defaults = INFERENCE_DEFAULTS.get(task, {})
    values = _to_short_names(inference)
    # Tasks whose defaults are not defined yet accept any inference key the caller gives.
    if defaults:
        _check_known(values, set(defaults), what=f"inference setting for task {task!r}")
    settings: dict[str, Any] = {
        "task": task,
        "model_name": model_name,
        "class_names": names,
        "visionauto_version": __version__,
        "model_kwargs": dict(model_kwargs or {}),
        **defaults,
        **{key: _coerce(key, value, defaults.get(key)) for key, value in values.items()},
    }
    _validate_values(settings)
    try:
        json.dumps(settings)
    except TypeError as err:
        raise ConfigError(
            f"settings for model {model_name!r} are not JSON-serializable: {err}. "
            "Pass plain numbers, strings, lists and dicts."
        ) from err
    return settings


def inference_keys(settings: dict[str, Any]) -> list[str]:
    """The inference keys of ``settings`` (its own plus the task's defaults), sorted."""
    keys = {key for key in settings if key not in META_KEYS}
    keys |= set(INFERENCE_DEFAULTS.get(settings.get("task", ""), {}))
    return sorted(keys)


def load_settings(path: Path) -> dict[str, Any]:
    """Reads ``settings.json`` (``path`` may be the file or the folder holding it).

    Missing inference keys take the task's defaults, so older files keep working.

    Raises:
        ModelError: the file is missing, is not valid JSON, or lacks task/model_name/class_names.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SETTINGS_FILENAME
    if not path.is_file():
        raise ModelError(
            f"{path} not found: a model folder needs {SETTINGS_FILENAME} "
            "(written by visionauto.packaging.save_model)."
        )
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(
            f"{path} cannot be read as JSON: {err}. Fix the file or re-export the model."
        ) from err
    if not isinstance(settings, dict):
        raise ModelError(f"{path} must hold a JSON object, got {type(settings).__name__}.")
    missing = [key for key in ("task", "model_name", "class_names") if key not in settings]
    if missing:
        raise ModelError(
            f"{path} lacks {', '.join(missing)}: the model cannot be rebuilt. "
            "Re-export the model with visionauto.packaging.save_model."
        )
    if settings["task"] not in TASKS:
        raise ModelError(
            f"{path}: task={settings['task']!r} is invalid: expected one of {', '.join(TASKS)}."
        )
    settings.setdefault("model_kwargs", {})
    for key, value in INFERENCE_DEFAULTS.get(settings["task"], {}).items():
        settings.setdefault(key, value)
    try:
        _validate_values(settings)
    except ConfigError as err:
        raise ModelError(f"{path}: {err}") from err
    return settings


def apply_overrides(settings: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Returns a copy of ``settings`` with some inference keys replaced.

    Args:
        settings: a dict from :func:`build_settings` or :func:`load_settings`.
        overrides: inference keys under short or Azure long names (``validation_crop_size`` →
            ``valid_crop_size``); strings such as ``"288"`` are converted to the stored type.
            ``None`` or ``{}`` returns an unchanged copy.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones) or an invalid value.
    """
    result = dict(settings)
    if not overrides:
        return result
    values = _to_short_names(overrides)
    _check_known(values, set(inference_keys(settings)), what="inference setting")
    for key, value in values.items():
        like = settings.get(key, INFERENCE_DEFAULTS.get(settings.get("task", ""), {}).get(key))
        result[key] = _coerce(key, value, like)
    _validate_values(result)
    return result


def _to_short_names(values: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(
            f"inference settings must be a mapping of name to value, got {type(values).__name__}."
        )
    result: dict[str, Any] = {}
    for key, value in values.items():
        short = LONG_TO_SHORT.get(str(key), str(key))
        if short in result and result[short] != value:
            raise ConfigError(
                f"inference setting {short!r} is given twice with different values "
                f"({result[short]!r} and {value!r}, once as {key!r}); give it once."
            )
        result[short] = value
    return result


def _check_known(values: dict[str, Any], valid: set[str], *, what: str) -> None:
    unknown = sorted(set(values) - valid)
    if not unknown:
        return
    long_names = sorted(long for long, short in LONG_TO_SHORT.items() if short in valid)
    accepted = ", ".join(sorted(valid)) or "(none)"
    also = f" (or the Azure names {', '.join(long_names)})" if long_names else ""
    raise ConfigError(
        f"unknown {what} {', '.join(map(repr, unknown))}: valid keys are {accepted}{also}."
    )


def _coerce(key: str, value: Any, like: Any) -> Any:
    """Converts request strings ("288", "0.5", "true") to the type of the stored value."""
    if not isinstance(value, str) or like is None or isinstance(like, str):
        return value
    text = value.strip()
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
    except ValueError as err:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[type(like)]
        raise ConfigError(f"{key}={value!r} is invalid: expected {kind} like {like!r}.") from err
    return value


def _validate_values(settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        if key in _POSITIVE_INT_KEYS and value is not None:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if not ok:
                raise ConfigError(f"{key}={value!r} is invalid: expected an integer > 0.")
        if key in _UNIT_INTERVAL_KEYS and value is not None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or math.isnan(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}={value!r} is invalid: expected a number in [0, 1].")
    image_type = settings.get("image_type")
    if image_type is not None and str(image_type).upper() not in ("JPG", "PNG", "BMP"):
        raise ConfigError(f"image_type={image_type!r} is invalid: expected JPG, PNG or BMP.")
    grid = settings.get("tile_grid_size")
    if grid is not None:
        from visionauto.data.tiling import parse_tile_grid_size

        parse_tile_grid_size(grid)  # raises a ConfigError naming the accepted forms
    crop, resize = settings.get("valid_crop_size"), settings.get("valid_resize_size")
    if crop is not None and resize is not None and crop > resize:
        raise ConfigError(
            f"valid_crop_size={crop} is larger than valid_resize_size={resize}: the "
            "center crop must fit inside the resized image. Raise valid_resize_size "
            "or lower valid_crop_size."
        )

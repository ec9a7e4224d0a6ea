"""One labeled image (:class:`ImageRecord`) and the parsing of task labels from Azure JSONL.

Label forms (spec §3.1): multiclass ``"can"``; multilabel ``["can", "carton"]``; detection
``[{"label": "can", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6, "isCrowd": 0}]``;
instance segmentation adds ``"polygon": [[x1, y1, x2, y2, ...], ...]``. Azure's docs show the
numbers as strings (``"topX": "0.1"``, ``"isCrowd": "true"``), so parsing accepts both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CLASSIFICATION_TASKS = ("classification", "multilabel")
OBJECT_TASKS = ("detection", "instance_segmentation")
BOX_KEYS = ("topX", "topY", "bottomX", "bottomY")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


@dataclass(frozen=True)
class ImageRecord:
    """One labeled image.

    Attributes:
        image: resolved reference: an absolute local path, or an ``http(s)://`` URL.
        label: multiclass ``str``; multilabel ``list[str]``; detection / instance segmentation
            ``list[dict]`` in Azure form with numbers parsed (see :func:`parse_object_label`).
        source: where the record came from, e.g. ``"/abs/train.jsonl:42"``.
        width: image width in pixels (EXIF-corrected) when known.
        height: image height in pixels (EXIF-corrected) when known.
        image_format: e.g. ``"jpg"`` or ``"png"`` when known.
    """

    image: str
    label: Any
    source: str
    width: int | None = None
    height: int | None = None
    image_format: str | None = None


def record_classes(record: ImageRecord, task: str) -> list[str]:
    """The class names one record mentions (empty when its label has an unexpected form)."""
    label = record.label
    if task == "classification":
        return [label] if isinstance(label, str) and label.strip() else []
    if not isinstance(label, list):
        return []
    if task == "multilabel":
        return [name for name in label if isinstance(name, str) and name.strip()]
    return [
        obj["label"] for obj in label if isinstance(obj, dict) and isinstance(obj.get("label"), str)
    ]


def _parse_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key}={value!r} is not a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{key}={value!r} is not a finite number")
    return number


def _parse_crowd(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return int(value.strip().lower() in _TRUE)
    raise ValueError(f"isCrowd={value!r} is not a boolean (use 0/1 or true/false)")


def _parse_polygon(value: Any) -> list[list[float]]:
    if not isinstance(value, list) or not value:
        raise ValueError("polygon must be a non-empty list of segments [[x1, y1, x2, y2, ...]]")
    # A single flat segment [x1, y1, ...] is common in hand-written files: wrap it.
    segments = [value] if not isinstance(value[0], list) else value
    parsed = []
    for segment in segments:
        if not isinstance(segment, list):
            raise ValueError("polygon segments must be lists of alternating x, y numbers")
        parsed.append([_parse_float(v, "polygon coordinate") for v in segment])
    return parsed


def parse_object(obj: Any, *, task: str) -> dict[str, Any]:
    """Parse one detection / segmentation object into Azure form with numbers.

    Args:
        obj: one element of the label list as read from JSON.
        task: ``"detection"`` or ``"instance_segmentation"``.

    Returns:
        ``{"label": str, "topX"...: float, "isCrowd": 0|1}`` and, for segmentation, ``"polygon"``
        (list of lists of floats). Box keys are optional for segmentation (derived from the
        polygon later); unknown keys are kept unchanged.

    Raises:
        ValueError: the object is not a dict, has no label, or a value is not a number.
    """
    if not isinstance(obj, dict):
        raise ValueError(f'object {obj!r} is not a JSON object like {{"label": ..., "topX": ...}}')
    name = obj.get("label")
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'object {obj!r} has no "label" (class name)')
    parsed = dict(obj)
    parsed["label"] = name
    has_box = any(key in obj for key in BOX_KEYS)
    if task == "detection" or has_box:
        missing = [key for key in BOX_KEYS if key not in obj]
        if missing:
            raise ValueError(f"object {name!r} lacks {', '.join(missing)}")
        for key in BOX_KEYS:
            parsed[key] = _parse_float(obj[key], key)
    parsed["isCrowd"] = _parse_crowd(obj.get("isCrowd", 0))
    if task == "instance_segmentation":
        if "polygon" not in obj:
            raise ValueError(f'object {name!r} has no "polygon" (instance segmentation)')
        parsed["polygon"] = _parse_polygon(obj["polygon"])
    return parsed


def parse_object_label(label: Any, *, task: str) -> list[dict[str, Any]]:
    """Parse a detection / segmentation label (a list of objects); see :func:`parse_object`.

    Raises:
        ValueError: the label is not a list, or one of its objects is malformed (the message
            names the object's index).
    """
    if not isinstance(label, list):
        raise ValueError(f"label must be a list of objects, got {type(label).__name__}")
    parsed = []
    for index, obj in enumerate(label):
        try:
            parsed.append(parse_object(obj, task=task))
        except ValueError as err:
            raise ValueError(f"object {index}: {err}") from None
    return parsed


def parse_class_label(label: Any, *, task: str) -> Any:
    """Normalise a classification label: numbers become strings; anything else is kept as is.

    Validation (not parsing) decides whether the result is acceptable, so a bad label is
    reported with the other problems instead of stopping the reading.
    """

    def as_name(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return value.strip() if isinstance(value, str) else value

    if task == "multilabel" and isinstance(label, list):
        return [as_name(v) for v in label]
    return as_name(label)

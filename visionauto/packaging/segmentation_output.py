"""Detector outputs -> Azure's detection / instance segmentation response entries (spec §4.2).

One entry per detected object, best score first::

    {"box": {"topX": 0.224, "topY": 0.285, "bottomX": 0.399, "bottomY": 0.62},
     "label": "milk_bottle", "score": 0.93712,
     "polygon": [[x1, y1, x2, y2, ...], ...]}        # instance segmentation only

Coordinates are normalized by the image width / height, clipped to [0, 1] and, like scores,
rounded to 5 decimals. Polygons come from the thresholded mask (``mask_pixel_score_threshold``)
through :func:`visionauto.data.polygons.mask_to_polygons`, at most
``max_number_of_polygon_points`` points per segment; a detection whose mask is empty after
thresholding keeps its box with ``"polygon": []``.

``export_as_image=True`` adds ``"mask"``: the instance's binary mask (the image's size, 255 =
object, 0 = background) as a base64 ``image_type`` file (JPG, PNG or BMP). The spec names the
setting but not the response field; ``"mask"`` is our name for it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from visionauto.data.polygons import mask_to_polygons
from visionauto.errors import ConfigError, ModelError

DECIMALS = 5
_PIL_FORMATS = {"JPG": "JPEG", "JPEG": "JPEG", "PNG": "PNG", "BMP": "BMP"}


def boxes_to_response(
    boxes: Any,
    scores: Any,
    labels: Any,
    class_names: Sequence[str],
    *,
    width: int,
    height: int,
) -> list[dict[str, Any]]:
    """Detection response entries for one image.

    Args:
        boxes: f32[K, 4] XYXY in pixels of the ``width`` x ``height`` image (tensor or array).
        scores: f32[K].
        labels: i64[K], 0-based indices into ``class_names``.
        class_names: the model's class order.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        ``[{"box": {"topX", "topY", "bottomX", "bottomY"}, "label", "score"}, ...]`` sorted by
        score, highest first.

    Raises:
        ModelError: a label index has no class name (labels file and model disagree).
    """
    box_array = _as_numpy(boxes).reshape(-1, 4).astype(np.float64)
    score_array = _as_numpy(scores).reshape(-1).astype(np.float64)
    label_array = _as_numpy(labels).reshape(-1).astype(np.int64)
    names = _class_names_of(label_array, class_names)
    entries = []
    for index in _by_score(score_array):
        entries.append(
            {
                "box": _normalized_box(box_array[index], width, height),
                "label": names[index],
                "score": round(float(score_array[index]), DECIMALS),
            }
        )
    return entries


def masks_to_response(
    masks: Any,
    boxes: Any,
    scores: Any,
    labels: Any,
    class_names: Sequence[str],
    *,
    width: int,
    height: int,
    mask_pixel_score_threshold: float = 0.5,
    max_number_of_polygon_points: int = 100,
    export_as_image: bool = False,
    image_type: str = "JPG",
) -> list[dict[str, Any]]:
    """Instance segmentation response entries for one image.

    Args:
        masks: f32[K, 1, H, W] (or f32[K, H, W]) per-pixel scores, or bool[K, H, W], covering the
            whole image; polygons are normalized by the mask's own W and H.
        boxes: f32[K, 4] XYXY in pixels of the ``width`` x ``height`` image.
        scores: f32[K].
        labels: i64[K], 0-based indices into ``class_names``.
        class_names: the model's class order.
        width: image width in pixels.
        height: image height in pixels.
        mask_pixel_score_threshold: a pixel belongs to the object when its score exceeds this.
        max_number_of_polygon_points: at most this many points per polygon segment.
        export_as_image: add ``"mask"``, the binary mask as a base64 image file.
        image_type: ``JPG``, ``PNG`` or ``BMP`` (case-insensitive) for ``"mask"``.

    Returns:
        :func:`boxes_to_response` entries with ``"polygon"`` (list of normalized segments) and,
        with ``export_as_image``, ``"mask"`` (base64 str); highest score first.

    Raises:
        ModelError: a label index has no class name.
        ConfigError: ``image_type`` is not JPG, PNG or BMP.
    """
    pil_format = _PIL_FORMATS.get(str(image_type).upper())
    if export_as_image and pil_format is None:
        raise ConfigError(f"image_type={image_type!r} is invalid: expected JPG, PNG or BMP.")
    mask_array = _as_numpy(masks)
    if mask_array.ndim == 4:
        mask_array = mask_array[:, 0]
    if mask_array.dtype != np.bool_:
        mask_array = mask_array > mask_pixel_score_threshold
    entries = boxes_to_response(boxes, scores, labels, class_names, width=width, height=height)
    order = _by_score(_as_numpy(scores).reshape(-1).astype(np.float64))
    if len(order) != len(mask_array):
        raise ValueError(f"{len(mask_array)} masks for {len(order)} boxes")
    for entry, index in zip(entries, order, strict=True):
        polygons = mask_to_polygons(mask_array[index], max_points=max_number_of_polygon_points)
        entry["polygon"] = [[round(v, DECIMALS) for v in segment] for segment in polygons]
        if export_as_image:
            entry["mask"] = encode_mask(mask_array[index], pil_format)
    return entries


def encode_mask(mask: np.ndarray, pil_format: str) -> str:
    """Base64 text of a bool[H, W] mask saved as an 8-bit grayscale image (255 = object).

    Args:
        mask: bool[H, W].
        pil_format: a Pillow format name, e.g. ``"PNG"``, ``"JPEG"``, ``"BMP"``.
    """
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format=pil_format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _by_score(scores: np.ndarray) -> list[int]:
    # Stable, so equal scores keep the detector's order.
    return np.argsort(-scores, kind="stable").tolist()


def _class_names_of(labels: np.ndarray, class_names: Sequence[str]) -> list[str]:
    bad = sorted({int(v) for v in labels if not 0 <= v < len(class_names)})
    if bad:
        raise ModelError(
            f"the model predicted class index {bad} but has {len(class_names)} class name(s) "
            f"{list(class_names)}: the labels file does not belong to these weights; export the "
            "model again with its own labels."
        )
    return [class_names[int(v)] for v in labels]


def _normalized_box(box: np.ndarray, width: int, height: int) -> dict[str, float]:
    scale = np.array([width, height, width, height], dtype=np.float64)
    x0, y0, x1, y1 = np.clip(box / scale, 0.0, 1.0).tolist()
    return {
        "topX": round(x0, DECIMALS),
        "topY": round(y0, DECIMALS),
        "bottomX": round(x1, DECIMALS),
        "bottomY": round(y1, DECIMALS),
    }

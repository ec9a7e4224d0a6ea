"""Tiling for small-object detection (spec §6): grid parsing, tile geometry, tiled training data.

With ``tile_grid_size="<nx>x<ny>"`` every image is also cut into ``nx`` tiles along its width and
``ny`` along its height; neighbouring tiles overlap by ``tile_overlap_ratio`` of a tile's size.
Training feeds the full image and all its tiles to the model (:class:`TiledDataset`); inference
merges the predictions of both (:func:`visionauto.models.tiled.predict_tiled`).

Geometry (spec §6) for an image ``W x H`` and overlap ``r``::

    tile_w = W / (r + (1 - r) * nx)        tile_h = H / (r + (1 - r) * ny)
    x0_k = k * (1 - r) * tile_w            x1_k = x0_k + tile_w        (k = 0 .. nx-1)

corners rounded to whole pixels, so the last tile ends exactly at ``W`` (and ``H``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visionauto.errors import ConfigError

Window = tuple[int, int, int, int]
GRID_KEY = "training.tile_grid_size"
OVERLAP_KEY = "training.tile_overlap_ratio"
NMS_KEY = "training.tile_predictions_nms_threshold"
DEFAULT_OVERLAP = 0.25
DEFAULT_NMS_THRESH = 0.25
# A box cut by a tile border is kept in that tile when at least this fraction of its area is
# visible. The spec leaves clipping undocumented; 0.25 drops slivers that no longer look like the
# object (training on them as positives teaches the model to fire on fragments), while the
# tile overlap usually puts such an object whole, or mostly whole, into the neighbouring tile.
DEFAULT_MIN_VISIBLE = 0.25

_GRID_RE = re.compile(r"^\(?\s*([+-]?\d+)\s*[xX,]\s*([+-]?\d+)\s*\)?$")
_NONE_STRINGS = ("", "none", "null")
_FORMS = "'<nx>x<ny>' such as '3x2' (also accepted: '3X2', '(3, 2)', '3,2')"


def _check_grid(nx: int, ny: int, value: Any, key: str) -> tuple[int, int]:
    if nx <= 0 or ny <= 0:
        raise ConfigError(
            f"{key}={value!r} is invalid: both tile counts must be positive integers, e.g. '3x2'."
        )
    if nx == 1 and ny == 1:
        raise ConfigError(
            f"{key}={value!r} is invalid: a 1x1 grid is just the full image; use at least two "
            f"tiles (e.g. '2x1' or '3x2'), or leave it unset (null) to turn tiling off."
        )
    return nx, ny


def parse_tile_grid_size(
    value: str | Sequence[int] | None, *, key: str = GRID_KEY
) -> tuple[int, int] | None:
    """Parse ``tile_grid_size`` into ``(nx, ny)`` tiles along width and height.

    Args:
        value: ``"3x2"``, ``"3X2"``, ``"(3, 2)"``, ``"3,2"`` (spaces allowed), a pair of ints
            (as YAML or JSON may give), or ``None`` / ``""`` / ``"none"`` (tiling off).
        key: the setting's name used in error messages (e.g. ``"settings.json: tile_grid_size"``).

    Returns:
        ``(nx, ny)`` or ``None`` when tiling is off.

    Raises:
        ConfigError: not two integers, a count <= 0, or the grid ``1x1``.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_STRINGS):
        return None
    if isinstance(value, str):
        match = _GRID_RE.match(value.strip())
        if match is None:
            raise ConfigError(f"{key}={value!r} is invalid: expected {_FORMS}.")
        return _check_grid(int(match.group(1)), int(match.group(2)), value, key)
    is_pair = isinstance(value, (list, tuple)) and len(value) == 2
    if not is_pair or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{key}={value!r} is invalid: expected {_FORMS}.")
    return _check_grid(int(value[0]), int(value[1]), value, key)


def format_tile_grid_size(grid: tuple[int, int] | None) -> str | None:
    """``(3, 2)`` -> ``"3x2"`` (the form Azure stores in settings.json); ``None`` stays ``None``."""
    return None if grid is None else f"{grid[0]}x{grid[1]}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_tiling(
    grid: tuple[int, int] | None,
    overlap: float,
    nms: float,
    *,
    keys: tuple[str, str, str] = (GRID_KEY, OVERLAP_KEY, NMS_KEY),
) -> None:
    """Check tiling settings together (spec §1.3, §6).

    Args:
        grid: ``(nx, ny)`` from :func:`parse_tile_grid_size`, or ``None`` (tiling off; the other
            two values are still checked, since they may be switched on at inference).
        overlap: ``tile_overlap_ratio``, must be in ``[0, 1)``.
        nms: ``tile_predictions_nms_thresh``, must be in ``[0, 1]``.
        keys: setting names for messages (grid, overlap, nms).

    Raises:
        ConfigError: a value out of range, naming the setting.
    """
    if grid is not None:
        parse_tile_grid_size(tuple(grid), key=keys[0])
    if not _is_number(overlap) or not 0.0 <= overlap < 1.0:
        raise ConfigError(
            f"{keys[1]}={overlap!r} is invalid: expected a number in [0, 1), the fraction of a "
            f"tile shared with its neighbour (default {DEFAULT_OVERLAP})."
        )
    if not _is_number(nms) or not 0.0 <= nms <= 1.0:
        raise ConfigError(
            f"{keys[2]}={nms!r} is invalid: expected a number in [0, 1], the IoU above which "
            f"merged tile predictions are suppressed (default {DEFAULT_NMS_THRESH})."
        )


def _round(value: float) -> int:
    return math.floor(value + 0.5)  # half up: Python's round() is half-to-even


def _axis_spans(length: int, count: int, overlap: float) -> list[tuple[int, int]]:
    tile = length / (overlap + (1.0 - overlap) * count)
    spans = []
    for k in range(count):
        start = _round(k * (1.0 - overlap) * tile)
        end = length if k == count - 1 else _round(k * (1.0 - overlap) * tile + tile)
        # Only images narrower than the grid reach this: keep every tile at least 1 px wide.
        start = min(start, length - 1)
        spans.append((start, max(end, start + 1)))
    return spans


def tile_windows(width: int, height: int, grid: tuple[int, int], overlap: float) -> list[Window]:
    """Pixel windows of the tiles of a ``width x height`` image (spec §6).

    Args:
        width: image width ``W`` in pixels.
        height: image height ``H`` in pixels.
        grid: ``(nx, ny)`` tiles along width and height.
        overlap: ``tile_overlap_ratio`` ``r`` in ``[0, 1)``.

    Returns:
        ``nx * ny`` windows ``(x0, y0, x1, y1)`` (``x1``/``y1`` exclusive, so a tile is
        ``image[:, y0:y1, x0:x1]``), row by row: top row left to right first. The first tile
        starts at ``(0, 0)``, the last ends at ``(W, H)``; together they cover the image.

    Raises:
        ConfigError: invalid grid or overlap.
    """
    validate_tiling(grid, overlap, DEFAULT_NMS_THRESH)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    xs = _axis_spans(int(width), grid[0], overlap)
    ys = _axis_spans(int(height), grid[1], overlap)
    return [(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]


def crop_target(
    target: dict[str, Any], window: Window, *, min_visible: float = DEFAULT_MIN_VISIBLE
) -> dict[str, Any]:
    """Cut one sample's target to a tile window.

    Boxes are clipped to the window and shifted into its pixel frame. A box is dropped when its
    visible (clipped) area is below ``min_visible`` of its full area, or when nothing of it is
    left (zero width or height). Masks, when present, are cropped and filtered the same way.

    Args:
        target: ``{"boxes": BoundingBoxes | f32[N,4] XYXY, "labels": i64[N], "iscrowd": i64[N],
            "masks": Mask u8[N,H,W] (optional), "image_id": int, ...}``; other keys are copied.
        window: ``(x0, y0, x1, y1)`` from :func:`tile_windows`.
        min_visible: visible-area fraction in ``[0, 1]`` a box needs to stay.

    Returns:
        A new target of the same layout for the tile: boxes ``BoundingBoxes f32[M,4]`` with
        ``canvas_size=(y1 - y0, x1 - x0)``, labels/iscrowd ``[M]``, masks ``Mask u8[M,h,w]``.
    """
    x0, y0, x1, y1 = window
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    lo = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    hi = torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
    clipped = torch.minimum(torch.maximum(boxes, lo), hi)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (cw > 0) & (ch > 0) & (cw * ch >= min_visible * area)
    out = dict(target)
    out["boxes"] = tv_tensors.BoundingBoxes(
        (clipped[keep] - lo).contiguous(),
        format=tv_tensors.BoundingBoxFormat.XYXY,
        canvas_size=(y1 - y0, x1 - x0),
    )
    for key in ("labels", "iscrowd"):
        if key in target:
            out[key] = torch.as_tensor(target[key])[keep]
    if "masks" in target:
        out["masks"] = tv_tensors.Mask(torch.as_tensor(target["masks"])[keep, y0:y1, x0:x1])
    return out


def crop_image(image: torch.Tensor, window: Window) -> tv_tensors.Image:
    """``image[..., y0:y1, x0:x1]`` kept as a ``tv_tensors.Image`` (``[3, h, w]``)."""
    x0, y0, x1, y1 = window
    return tv_tensors.Image(image[..., y0:y1, x0:x1].contiguous())


class DetectionSource(Protocol):
    """What :class:`TiledDataset` needs from a ``DetectionDataset``."""

    transform: Callable[..., Any] | None

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]: ...


class TiledDataset(Dataset):
    """Training data with tiling: each image of ``base`` followed by all its tiles.

    Item ``i * (nx * ny + 1)`` is ``base[i]`` (the full image); the next ``nx * ny`` items are its
    tiles in :func:`tile_windows` order. Each tile is cut from ``base.load(i)`` (uint8 image and
    target before transforms), its boxes cut with :func:`crop_target`, then run through
    ``base.transform`` like a full image (so it is resized per ``min_size``/``max_size`` later;
    a ``None`` transform returns the cut uint8 image and target, as ``base[i]`` would).
    Tiles keep the ``image_id`` of their image. Windows are computed from the decoded image
    itself, which is EXIF-upright and always right (the records' sizes may be missing or stale).
    """

    def __init__(
        self,
        base: DetectionSource,
        grid: tuple[int, int],
        overlap: float = DEFAULT_OVERLAP,
        *,
        min_visible: float = DEFAULT_MIN_VISIBLE,
    ) -> None:
        """Wrap ``base``.

        Args:
            base: a ``DetectionDataset`` (``load``, ``transform``, ``__len__``).
            grid: ``(nx, ny)`` from :func:`parse_tile_grid_size`.
            overlap: ``tile_overlap_ratio`` in ``[0, 1)``.
            min_visible: see :func:`crop_target`.

        Raises:
            ConfigError: invalid grid or overlap.
        """
        validate_tiling(grid, overlap, DEFAULT_NMS_THRESH)
        self.base = base
        self.grid = (int(grid[0]), int(grid[1]))
        self.overlap = float(overlap)
        self.min_visible = float(min_visible)
        self.items_per_image = self.grid[0] * self.grid[1] + 1

    def __len__(self) -> int:
        return len(self.base) * self.items_per_image

    def locate(self, index: int) -> tuple[int, int]:
        """Item index -> ``(image index, tile)``; tile ``0`` is the full image, ``t`` tile t-1."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return divmod(index, self.items_per_image)

    def __getitem__(self, index: int) -> Any:
        image_index, tile = self.locate(index)
        image, target = self.base.load(image_index)
        if tile > 0:
            height, width = image.shape[-2:]
            window = tile_windows(width, height, self.grid, self.overlap)[tile - 1]
            image = crop_image(image, window)
            target = crop_target(target, window, min_visible=self.min_visible)
        if self.base.transform is None:
            return image, target
        return self.base.transform(image, target)

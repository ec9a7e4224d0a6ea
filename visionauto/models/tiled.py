"""Tiled inference for small-object detection (spec §6).

The full image and each of its tiles go through the detector; tile boxes are shifted back into
image coordinates and everything is merged with class-wise NMS at ``tile_predictions_nms_thresh``
(IoU above it: the lower-scored box goes), keeping the highest scores. Object detection only:
Azure does not tile instance segmentation, and neither do we.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.ops import batched_nms

from visionauto.data.tiling import (
    DEFAULT_NMS_THRESH,
    DEFAULT_OVERLAP,
    format_tile_grid_size,
    parse_tile_grid_size,
    tile_windows,
    validate_tiling,
)
from visionauto.errors import ModelError
from visionauto.models.detectors import Detector

DEFAULT_DETECTIONS_PER_IMG = 100
TILE_KEYS = ("tile_grid_size", "tile_overlap_ratio", "tile_predictions_nms_thresh")
# Settings come from settings.json / the endpoint under runtime names; the job-API long name of
# the NMS threshold is accepted too (spec §1.6).
_LONG_NMS_KEY = "tile_predictions_nms_threshold"


def _detections_cap(detector: nn.Module) -> int:
    getter = getattr(detector, "inference_settings", None)
    settings = getter() if callable(getter) else {}
    cap = settings.get("box_detections_per_img")
    return int(cap) if cap is not None else DEFAULT_DETECTIONS_PER_IMG


def _merge(
    outputs: list[dict[str, torch.Tensor]],
    offsets: list[tuple[int, int]],
    nms_thresh: float,
    cap: int,
) -> dict[str, torch.Tensor]:
    """Shift each output by its tile offset, then class-wise NMS over all of them."""
    boxes, scores, labels = [], [], []
    for out, (dx, dy) in zip(outputs, offsets, strict=True):
        if "masks" in out:
            raise ModelError(
                "tile_grid_size is set but the model predicts masks (instance segmentation): "
                "tiling is supported for object detection only (spec §6). Unset "
                "tile_grid_size (training.tile_grid_size, or in settings.json) for this model."
            )
        shift = torch.tensor([dx, dy, dx, dy], dtype=out["boxes"].dtype, device=out["boxes"].device)
        boxes.append(out["boxes"].reshape(-1, 4) + shift)
        scores.append(out["scores"].reshape(-1))
        labels.append(out["labels"].reshape(-1))
    all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    # batched_nms returns the kept indices by decreasing score, so the cap keeps the best.
    keep = batched_nms(all_boxes.float(), all_scores.float(), all_labels, nms_thresh)[:cap]
    return {"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]}


def predict_tiled(
    detector: nn.Module,
    images: list[torch.Tensor],
    *,
    grid: tuple[int, int],
    overlap: float = DEFAULT_OVERLAP,
    nms_thresh: float = DEFAULT_NMS_THRESH,
    max_detections: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Detect on each image and on each of its tiles, and merge the predictions.

    For every image the full image and its ``nx * ny`` tiles are given to ``detector`` in one
    call (one batch per image, so memory stays that of ``nx * ny + 1`` images).

    Args:
        detector: a ``Detector`` in eval mode: ``detector(list of f32[3,h,w])`` returns one
            ``{"boxes": f32[K,4] XYXY input pixels, "scores": f32[K], "labels": i64[K]}`` per input.
        images: ``f32[3,H,W]`` images in ``[0, 1]``.
        grid: ``(nx, ny)`` tiles along width and height.
        overlap: ``tile_overlap_ratio`` in ``[0, 1)``.
        nms_thresh: ``tile_predictions_nms_thresh``: IoU above which the lower-scored of two
            same-class boxes is dropped when merging.
        max_detections: boxes kept per image; default the detector's ``box_detections_per_img``
            (from ``detector.inference_settings()``), else 100.

    Returns:
        One ``{"boxes": f32[K,4] XYXY image pixels, "scores": f32[K], "labels": i64[K]}`` per
        image, by decreasing score.

    Raises:
        ModelError: the detector predicts masks (tiling is for object detection only).
        ConfigError: invalid grid, overlap or threshold.
    """
    validate_tiling(grid, overlap, nms_thresh)
    if detector.training:
        raise ValueError("predict_tiled needs the detector in eval mode (call detector.eval())")
    cap = max_detections if max_detections is not None else _detections_cap(detector)
    results = []
    for image in images:
        height, width = image.shape[-2:]
        windows = tile_windows(width, height, grid, overlap)
        inputs = [image] + [image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in windows]
        outputs = detector(inputs)
        offsets = [(0, 0)] + [(x0, y0) for x0, y0, _, _ in windows]
        results.append(_merge(outputs, offsets, nms_thresh, cap))
    return results


class TiledDetector(Detector):
    """A detector that predicts with tiling in eval mode when a tile grid is set.

    Training (``self.training``) and eval without a grid pass straight through to the wrapped
    detector. The wrapped detector is the submodule ``detector``, so this module's state-dict keys
    carry a ``detector.`` prefix: save and load weights through ``tiled.detector``.
    """

    def __init__(
        self,
        detector: nn.Module,
        *,
        tile_grid_size: str | tuple[int, int] | None = None,
        tile_overlap_ratio: float = DEFAULT_OVERLAP,
        tile_predictions_nms_thresh: float = DEFAULT_NMS_THRESH,
    ) -> None:
        """Wrap ``detector``.

        Args:
            detector: any ``Detector``.
            tile_grid_size: ``"3x2"`` etc. (see ``parse_tile_grid_size``) or ``None`` (off).
            tile_overlap_ratio: overlap of neighbouring tiles in ``[0, 1)``.
            tile_predictions_nms_thresh: merge NMS IoU threshold in ``[0, 1]``.

        Raises:
            ConfigError: invalid tiling settings.
        """
        super().__init__()
        self.detector = detector
        if hasattr(detector, "num_classes"):
            self.num_classes = int(detector.num_classes)
        self.tile_grid: tuple[int, int] | None = None
        self.tile_overlap_ratio = DEFAULT_OVERLAP
        self.tile_predictions_nms_thresh = DEFAULT_NMS_THRESH
        self.set_inference_settings(
            tile_grid_size=tile_grid_size,
            tile_overlap_ratio=tile_overlap_ratio,
            tile_predictions_nms_thresh=tile_predictions_nms_thresh,
        )

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, Any]] | None = None
    ) -> Any:
        """Losses in train mode; in eval mode tiled predictions when a grid is set.

        Args:
            images: ``f32[3,H,W]`` images in ``[0, 1]``.
            targets: training targets (train mode only).

        Returns:
            As the wrapped detector: ``dict[str, Tensor]`` of losses in train mode, one
            ``{"boxes", "scores", "labels"}`` dict per image in eval mode.
        """
        if self.training or self.tile_grid is None:
            return self.detector(images, targets)
        return predict_tiled(
            self.detector,
            images,
            grid=self.tile_grid,
            overlap=self.tile_overlap_ratio,
            nms_thresh=self.tile_predictions_nms_thresh,
        )

    def set_inference_settings(self, **settings: Any) -> None:
        """Apply ``tile_grid_size``, ``tile_overlap_ratio``, ``tile_predictions_nms_thresh``
        (or ``tile_predictions_nms_threshold``); forward every other setting to the wrapped
        detector. Settings not given keep their current values.

        Raises:
            ConfigError: an invalid tiling value (nothing is changed then).
        """
        if _LONG_NMS_KEY in settings:
            settings["tile_predictions_nms_thresh"] = settings.pop(_LONG_NMS_KEY)
        grid = self.tile_grid
        if "tile_grid_size" in settings:
            grid = parse_tile_grid_size(settings.pop("tile_grid_size"), key="tile_grid_size")
        overlap = settings.pop("tile_overlap_ratio", self.tile_overlap_ratio)
        nms = settings.pop("tile_predictions_nms_thresh", self.tile_predictions_nms_thresh)
        validate_tiling(grid, overlap, nms, keys=TILE_KEYS)
        self.tile_grid = grid
        self.tile_overlap_ratio = float(overlap)
        self.tile_predictions_nms_thresh = float(nms)
        if settings:
            self.detector.set_inference_settings(**settings)

    def inference_settings(self) -> dict[str, Any]:
        """The wrapped detector's settings plus the three tiling settings (grid as ``"3x2"``)."""
        getter = getattr(self.detector, "inference_settings", None)
        inner = dict(getter()) if callable(getter) else {}
        return {
            **inner,
            "tile_grid_size": format_tile_grid_size(self.tile_grid),
            "tile_overlap_ratio": self.tile_overlap_ratio,
            "tile_predictions_nms_thresh": self.tile_predictions_nms_thresh,
        }

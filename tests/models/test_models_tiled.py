"""Tiled inference (spec §6): full image + tiles, shifted back, merged with class-wise NMS."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from visionauto.data.tiling import tile_windows
from visionauto.errors import ConfigError, ModelError
from visionauto.models.tiled import TiledDetector, predict_tiled


def _empty() -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


class SmallBlindDetector(nn.Module):
    """Finds bright blobs, but like an R-CNN it first resizes its input so the shorter side is
    ``min_size``: blobs narrower than ``min_px`` pixels after that resize are missed.

    Score = brightest value of the blob (after resizing); class 0. Train mode returns a loss.
    """

    def __init__(self, min_size: int = 64, min_px: int = 3, detections_per_img: int = 100) -> None:
        super().__init__()
        self.min_size, self.min_px = min_size, min_px
        self.settings: dict[str, Any] = {"box_detections_per_img": detections_per_img}
        self.calls: list[list[tuple[int, ...]]] = []

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> Any:
        self.calls.append([tuple(image.shape) for image in images])
        if self.training:
            return {"loss_blob": torch.tensor(float(len(images)))}
        return [self._detect(image) for image in images]

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = image.shape[-2:]
        scale = self.min_size / min(height, width)
        small = F.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True)[0]
        gray = small.mean(0)
        sy, sx = height / gray.shape[0], width / gray.shape[1]
        labeled, _ = ndimage.label((gray > 0.5).numpy())
        boxes, scores = [], []
        for ys, xs in ndimage.find_objects(labeled):
            if min(ys.stop - ys.start, xs.stop - xs.start) >= self.min_px:
                boxes.append([xs.start * sx, ys.start * sy, xs.stop * sx, ys.stop * sy])
                scores.append(float(gray[ys, xs].max()))
        if not boxes:
            return _empty()
        return {
            "boxes": torch.tensor(boxes),
            "scores": torch.tensor(scores),
            "labels": torch.zeros(len(boxes), dtype=torch.int64),
        }

    def set_inference_settings(self, **settings: Any) -> None:
        self.settings.update(settings)

    def inference_settings(self) -> dict[str, Any]:
        return dict(self.settings)


class ScriptedDetector(nn.Module):
    """Returns fixed predictions: ``outputs[i]`` for the i-th input of each call."""

    def __init__(self, outputs: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.outputs = outputs
        self.inputs: list[torch.Tensor] = []

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None) -> list:
        assert len(images) == len(self.outputs)
        self.inputs = list(images)
        return [dict(out) for out in self.outputs]


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


# Five white 8x8 squares on black, 256x256. Shrunk 4x for the full image (256 -> 64) they are
# 2 px: missed. A 2x2 grid with r=0.25 gives 146 px tiles, shrunk 2.3x: 3.5 px, found.
# The square at x=120 lies in the overlap of the two top tiles (x 110..146), found twice.
_SQUARES = [(20, 20), (60, 180), (200, 40), (180, 200), (120, 20)]


def _squares_image() -> torch.Tensor:
    image = torch.zeros(3, 256, 256)
    for x, y in _SQUARES:
        image[:, y : y + 8, x : x + 8] = 1.0
    return image


def _matches(boxes: torch.Tensor) -> list[int]:
    """For each ground-truth square, how many predicted boxes overlap it with IoU >= 0.5."""
    truth = [[x, y, x + 8, y + 8] for x, y in _SQUARES]
    return [sum(_iou(box, gt) >= 0.5 for box in boxes.tolist()) for gt in truth]


def test_tiling_finds_small_objects_the_full_image_misses() -> None:
    detector = SmallBlindDetector().eval()
    image = _squares_image()
    assert detector([image])[0]["boxes"].shape == (0, 4)
    result = predict_tiled(detector, [image], grid=(2, 2), overlap=0.25, nms_thresh=0.25)[0]
    assert _matches(result["boxes"]) == [1, 1, 1, 1, 1]
    assert result["boxes"].shape == (5, 4) and result["labels"].tolist() == [0] * 5
    # One detector call per image: the full image then the four tiles.
    assert detector.calls[-1] == [(3, 256, 256)] + [(3, 146, 146)] * 4


def test_duplicates_in_overlapping_tiles_are_merged() -> None:
    detector = SmallBlindDetector().eval()
    image = _squares_image()
    # Threshold 1.0 suppresses nothing: the square in the overlap comes back twice.
    unmerged = predict_tiled(detector, [image], grid=(2, 2), overlap=0.25, nms_thresh=1.0)[0]
    assert _matches(unmerged["boxes"]) == [1, 1, 1, 1, 2]
    merged = predict_tiled(detector, [image], grid=(2, 2), overlap=0.25, nms_thresh=0.25)[0]
    assert _matches(merged["boxes"]) == [1, 1, 1, 1, 1]


def test_several_images_of_different_sizes() -> None:
    detector = SmallBlindDetector().eval()
    wide = torch.zeros(3, 128, 384)
    wide[:, 60:68, 300:308] = 1.0
    results = predict_tiled(detector, [_squares_image(), wide], grid=(3, 1), overlap=0.25)
    assert len(results) == 2
    assert len(detector.calls) == 2 and len(detector.calls[1]) == 4
    assert results[1]["boxes"].shape == (1, 4)
    assert _iou(results[1]["boxes"][0].tolist(), [300, 60, 308, 68]) >= 0.5


def test_merge_shifts_boxes_and_keeps_best_scores_per_class() -> None:
    image = torch.rand(3, 400, 600)
    windows = tile_windows(600, 400, (3, 2), 0.25)  # tile 1 at (180, 0), tile 4 at (180, 171)
    outputs = [_empty() for _ in range(7)]
    outputs[0] = _pred([[200, 10, 260, 50], [500, 300, 540, 340]], [0.6, 0.5], [1, 2])
    # Same object as the full image's class-1 box, seen better by tile 1: it wins.
    outputs[2] = _pred([[21, 11, 81, 51], [21, 11, 81, 51]], [0.9, 0.4], [1, 0])
    # Tile 4 repeats the class-2 box with a lower score: dropped.
    outputs[5] = _pred([[320, 129, 360, 169]], [0.3], [2])
    detector = ScriptedDetector(outputs).eval()
    result = predict_tiled(detector, [image], grid=(3, 2), overlap=0.25, nms_thresh=0.25)[0]
    torch.testing.assert_close(
        result["boxes"],
        torch.tensor([[201.0, 11, 261, 51], [500, 300, 540, 340], [201, 11, 261, 51]]),
    )
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.5, 0.4]))
    assert result["labels"].tolist() == [1, 2, 0]  # another class is never suppressed
    # The detector got the full image and the exact tile crops.
    assert torch.equal(detector.inputs[0], image)
    for tile_input, (x0, y0, x1, y1) in zip(detector.inputs[1:], windows, strict=True):
        assert torch.equal(tile_input, image[:, y0:y1, x0:x1])


def test_cap_from_detector_settings_or_argument() -> None:
    detector = SmallBlindDetector(detections_per_img=2).eval()
    image = torch.zeros(3, 256, 256)
    for value, (x, y) in zip([0.7, 0.95, 0.6, 0.85], _SQUARES, strict=False):
        image[:, y : y + 12, x : x + 12] = value
    result = predict_tiled(detector, [image], grid=(2, 2), overlap=0.25)[0]
    assert result["scores"].shape == (2,)
    assert result["scores"][0] > result["scores"][1] > 0.8  # the two brightest squares
    assert predict_tiled(detector, [image], grid=(2, 2), overlap=0.25, max_detections=3)[0][
        "scores"
    ].shape == (3,)


def test_default_cap_is_100_without_settings() -> None:
    boxes = [[float(i), 0.0, i + 5.0, 5.0] for i in range(0, 600, 5)]  # 120 disjoint boxes
    outputs = [_pred(boxes, [0.5] * 120, [0] * 120)] + [_empty() for _ in range(2)]
    result = predict_tiled(
        ScriptedDetector(outputs).eval(), [torch.zeros(3, 50, 600)], grid=(2, 1), overlap=0.25
    )[0]
    assert result["boxes"].shape == (100, 4)


def test_masks_are_refused() -> None:
    outputs = [dict(_pred([[0, 0, 5, 5]], [0.9], [0]), masks=torch.zeros(1, 1, 32, 32))]
    outputs += [_empty() for _ in range(2)]
    with pytest.raises(
        ModelError,
        match=r"^tile_grid_size is set but the model predicts masks "
        r"\(instance segmentation\): tiling is supported for object detection only",
    ):
        predict_tiled(
            ScriptedDetector(outputs).eval(), [torch.zeros(3, 32, 32)], grid=(2, 1), overlap=0.25
        )


def test_needs_eval_mode_and_valid_settings() -> None:
    detector = SmallBlindDetector()
    with pytest.raises(ValueError, match=r"needs the detector in eval mode"):
        predict_tiled(detector, [torch.zeros(3, 32, 32)], grid=(2, 2))
    with pytest.raises(ConfigError, match=r"tile_predictions_nms_threshold=1.5 is invalid"):
        predict_tiled(detector.eval(), [torch.zeros(3, 32, 32)], grid=(2, 2), nms_thresh=1.5)


# ---------------------------------------------------------------- TiledDetector


def test_tiled_detector_eval_uses_tiles_and_train_passes_through() -> None:
    inner = SmallBlindDetector()
    model = TiledDetector(inner, tile_grid_size="2x2", tile_overlap_ratio=0.25)
    image = _squares_image()
    model.train()
    assert inner.training
    losses = model([image], [{"boxes": torch.zeros(0, 4)}])
    assert list(losses) == ["loss_blob"] and losses["loss_blob"].item() == 1.0
    assert inner.calls[-1] == [(3, 256, 256)]
    model.eval()
    assert not inner.training
    assert _matches(model([image])[0]["boxes"]) == [1, 1, 1, 1, 1]
    model.set_inference_settings(tile_grid_size=None)
    assert model([image])[0]["boxes"].shape == (0, 4)
    assert inner.calls[-1] == [(3, 256, 256)]


def test_tiled_detector_settings() -> None:
    inner = SmallBlindDetector()
    model = TiledDetector(inner)
    assert model.inference_settings() == {
        "box_detections_per_img": 100,
        "tile_grid_size": None,
        "tile_overlap_ratio": 0.25,
        "tile_predictions_nms_thresh": 0.25,
    }
    model.set_inference_settings(
        tile_grid_size="(3, 2)",
        tile_predictions_nms_threshold=0.4,
        box_detections_per_img=7,
        min_size=320,
    )
    assert model.tile_grid == (3, 2)
    assert inner.settings == {"box_detections_per_img": 7, "min_size": 320}
    assert model.inference_settings() == {
        "box_detections_per_img": 7,
        "min_size": 320,
        "tile_grid_size": "3x2",
        "tile_overlap_ratio": 0.25,
        "tile_predictions_nms_thresh": 0.4,
    }
    # A bad value changes nothing, not even the valid settings given with it.
    with pytest.raises(ConfigError, match=r"^tile_overlap_ratio=1\.0 is invalid"):
        model.set_inference_settings(tile_grid_size="2x1", tile_overlap_ratio=1.0, min_size=64)
    with pytest.raises(ConfigError, match=r"^tile_grid_size='1x1' is invalid"):
        model.set_inference_settings(tile_grid_size="1x1")
    assert model.tile_grid == (3, 2) and model.tile_overlap_ratio == 0.25
    assert inner.settings["min_size"] == 320


def test_tiled_detector_state_dict_is_the_inner_one_prefixed() -> None:
    inner = nn.Sequential(nn.Conv2d(3, 4, 1))
    model = TiledDetector(inner, tile_grid_size="2x1")
    assert sorted(model.state_dict()) == ["detector.0.bias", "detector.0.weight"]

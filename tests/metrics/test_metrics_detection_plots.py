"""Detection charts: each function writes a real PNG with something drawn on it."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from visionauto.metrics.detection import DetectionEvaluator, DetectionResult
from visionauto.metrics.detection_plots import plot_detections, plot_pr_curves


def _check_png(path: Path, min_width: int = 300) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 5_000
    image = Image.open(path)
    assert image.format == "PNG"
    assert image.width >= min_width and image.height >= 200
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20  # not blank
    return image


def _pred(boxes: list, scores: list, labels: list) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _target(boxes: list, labels: list) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_pr_curves_png_with_an_undefined_class(tmp_path: Path) -> None:
    evaluator = DetectionEvaluator(["can", "carton", "never_seen"])
    evaluator.update(
        [_pred([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10]], [0.9, 0.8, 0.4], [0, 0, 1])],
        [_target([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 1, 0])],
    )
    out = plot_pr_curves(evaluator.compute(), tmp_path / "sub" / "pr.png")
    assert out == tmp_path / "sub" / "pr.png"
    _check_png(out)


def test_pr_curves_png_for_coco_only_results(tmp_path: Path) -> None:
    result = DetectionResult(scalars={"mean_average_precision": 0.4, "coco_map": 0.2})
    _check_png(plot_pr_curves(result, tmp_path / "pr.png"), min_width=200)


def test_detections_grid_with_boxes_masks_and_pil_images(tmp_path: Path) -> None:
    tensor_image = torch.rand(3, 64, 96) * 0.3
    pil_image = Image.new("RGB", (80, 60), (200, 200, 200))
    masks = torch.zeros(2, 1, 64, 96)
    masks[0, 0, 10:30, 10:40] = 0.9
    masks[1, 0, 40:60, 50:90] = 0.2  # below 0.5: not drawn as a mask
    preds = [
        {**_pred([[10, 10, 40, 30], [50, 40, 90, 60]], [0.95, 0.6], [0, 1]), "masks": masks},
        _pred([[5, 5, 30, 30], [40, 20, 70, 50]], [0.8, 0.1], [1, 0]),  # 0.1: below threshold
    ]
    gt_masks = torch.zeros(1, 64, 96, dtype=torch.uint8)
    gt_masks[0, 12:32, 8:38] = 1
    targets = [
        {**_target([[8, 12, 38, 32]], [0]), "masks": gt_masks, "iscrowd": torch.tensor([0])},
        _target([[6, 4, 31, 29], [0, 0, 20, 20]], [1, 0]),
    ]
    out = plot_detections(
        [tensor_image, pil_image], preds, targets, ["a_rather_long_class_name", "b"],
        tmp_path / "detections.png",
    )  # fmt: skip
    image = _check_png(out)
    rgb = image.convert("RGB")
    colours = {c for _, c in rgb.getcolors(maxcolors=1 << 20)}
    assert (44, 160, 44) in colours  # ground-truth green (#2ca02c)
    assert (214, 39, 40) in colours  # first prediction colour (#d62728)


def test_detections_grid_limits_the_number_of_images(tmp_path: Path) -> None:
    images = [torch.rand(3, 32, 32) for _ in range(12)]
    preds = [_pred([], [], []) for _ in images]
    targets = [_target([], []) for _ in images]
    small = _check_png(plot_detections(images, preds, targets, ["a"], tmp_path / "two.png",
                                       max_images=2), min_width=200)  # fmt: skip
    many = _check_png(plot_detections(images, preds, targets, ["a"], tmp_path / "many.png"))
    assert many.height > small.height  # 8 images: 2 rows of 4; 2 images: one row

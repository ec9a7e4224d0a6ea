"""Our detection metrics against independent references on the same random predictions.

- COCO stats: pycocotools' COCOeval (the reference implementation) must agree to 1e-3 (our
  numbers come from torchmetrics + faster-coco-eval, float32).
- VOC AP: a plain-Python re-implementation written here from the VOC devkit's definition
  (loops, own IoU, ``mrec``/``mpre`` padding) must agree to 1e-9. pycocotools' precision table at
  IoU 0.5 is a second check within 0.02: pycocotools samples the same monotone curve at 101 recall
  points (r = 0, 0.01, ..., 1) and averages, a Riemann sum of the area we compute exactly; for a
  non-increasing curve in [0, 1] the two differ by at most ~2/101.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionauto.metrics.detection import DetectionEvaluator

NAMES = ["cat", "dog", "bird"]
HEIGHT, WIDTH = 120, 160


def _random_box(rng: np.random.Generator) -> list[float]:
    w, h = rng.uniform(6, 110), rng.uniform(6, 100)
    x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
    return [x, y, x + w, y + h]


def _box_mask(box: list[float]) -> np.ndarray:
    """bool[H,W]: an ellipse inscribed in the box (so mask and box IoU differ)."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def _random_set(seed: int, n_images: int, *, crowd: bool, masks: bool) -> tuple[list, list]:
    """Images with 0-6 objects; each found with prob. 0.8 (jittered), plus 0-4 stray guesses."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_images):
        gt = [_random_box(rng) for _ in range(rng.integers(0, 7))]
        gt_labels = rng.integers(0, len(NAMES), len(gt))
        is_crowd = (rng.random(len(gt)) < 0.1) if crowd else np.zeros(len(gt), dtype=bool)
        boxes, labels = [], []
        for box, label in zip(gt, gt_labels, strict=True):
            if rng.random() < 0.8:
                scale = max(box[2] - box[0], box[3] - box[1]) * 0.08
                jittered = np.clip(np.array(box) + rng.normal(0, scale, 4), 0, [WIDTH, HEIGHT] * 2)
                if jittered[2] - jittered[0] > 1 and jittered[3] - jittered[1] > 1:
                    boxes.append(jittered.tolist())
                    labels.append(label if rng.random() < 0.9 else rng.integers(0, len(NAMES)))
        for _ in range(rng.integers(0, 5)):
            boxes.append(_random_box(rng))
            labels.append(rng.integers(0, len(NAMES)))
        pred = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.from_numpy(rng.random(len(boxes))).float(),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        target = {
            "boxes": torch.tensor(gt, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.from_numpy(gt_labels).long(),
            "iscrowd": torch.from_numpy(is_crowd).long(),
        }
        if masks:
            pred["masks"] = torch.from_numpy(
                np.stack([_box_mask(b) for b in boxes]) if boxes else np.zeros((0, HEIGHT, WIDTH))
            ).float()[:, None]  # Mask R-CNN style probabilities f32[K,1,H,W]
            target["masks"] = torch.from_numpy(
                np.stack([_box_mask(b) for b in gt]) if gt else np.zeros((0, HEIGHT, WIDTH))
            ).to(torch.uint8)
        preds.append(pred)
        targets.append(target)
    return preds, targets


def _pycocotools(preds: list, targets: list, iou_type: str) -> COCOeval:
    """Run pycocotools' COCOeval on the same data (xywh boxes, RLE masks, 1-based ids)."""
    images, annotations, results = [], [], []

    def geometry(item: dict, k: int) -> dict:
        if iou_type == "segm":  # no "bbox": loadRes would then take the box area for results
            mask = (item["masks"][k].reshape(HEIGHT, WIDTH) > 0.5).numpy().astype(np.uint8)
            return {"segmentation": mask_utils.encode(np.asfortranarray(mask)), "area": mask.sum()}
        x0, y0, x1, y1 = item["boxes"][k].double().tolist()
        return {"bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}

    for image_id, (pred, target) in enumerate(zip(preds, targets, strict=True), start=1):
        images.append({"id": image_id, "height": HEIGHT, "width": WIDTH})
        for k in range(len(target["labels"])):
            annotations.append({
                "id": len(annotations) + 1,  # pycocotools treats id 0 as "no match"
                "image_id": image_id,
                "category_id": int(target["labels"][k]),
                "iscrowd": int(target["iscrowd"][k]),
                **geometry(target, k),
            })  # fmt: skip
        for k in range(len(pred["labels"])):
            results.append({
                "image_id": image_id,
                "category_id": int(pred["labels"][k]),
                "score": float(pred["scores"][k]),
                **geometry(pred, k),
            })  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(NAMES)],
        }
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iouType=iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_voc_ap(preds: list, targets: list, cls: int, threshold: float) -> float:
    """VOC devkit style AP of one class (no crowd in the data), written without our code."""
    detections = []  # (score, image index, box)
    num_gt = 0
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        num_gt += int((target["labels"] == cls).sum())
        for box, score, label in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            if label == cls:
                detections.append((score, i, box))
    if num_gt == 0:
        return -1.0
    detections.sort(key=lambda d: -d[0])
    used: dict[int, set[int]] = {}
    tp, fp = [], []
    for _, i, box in detections:
        gts = [
            (j, b)
            for j, (b, label) in enumerate(
                zip(targets[i]["boxes"].tolist(), targets[i]["labels"].tolist(), strict=True)
            )
            if label == cls and j not in used.setdefault(i, set())
        ]
        best = max(gts, key=lambda g: _iou(box, g[1]), default=None)
        hit = best is not None and _iou(box, best[1]) >= threshold
        if hit:
            used[i].add(best[0])
        tp.append(1 if hit else 0)
        fp.append(0 if hit else 1)
    tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
    rec = tp_cum / num_gt
    prec = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_stats_match_pycocotools(iou_type: str) -> None:
    preds, targets = _random_set(7, 40 if iou_type == "bbox" else 16, crowd=True, masks=True)
    evaluator = DetectionEvaluator(NAMES, metric_type="coco", iou_type=iou_type)
    evaluator.update(preds[:5], targets[:5])
    evaluator.update(preds[5:], targets[5:])
    ours = evaluator.compute().scalars
    stats = _pycocotools(preds, targets, iou_type).stats  # AP, AP50, AP75, APs/m/l, AR1/10/100...
    keys = ["coco_map", "coco_map_50", "coco_map_75", "coco_map_small", "coco_map_medium",
            "coco_map_large", "coco_mar_1", "coco_mar_10", "coco_mar_100", "coco_mar_small",
            "coco_mar_medium", "coco_mar_large"]  # fmt: skip
    assert [ours[k] for k in keys] == pytest.approx(stats.tolist(), abs=1e-5)
    assert 0.1 < ours["coco_map"] < 0.9  # a meaningful case, neither trivial nor empty
    assert ours["mean_average_precision"] == ours["coco_map_50"]


@pytest.mark.parametrize("threshold", [0.5, 0.7])
def test_voc_ap_matches_an_independent_implementation(threshold: float) -> None:
    preds, targets = _random_set(11, 60, crowd=False, masks=False)
    evaluator = DetectionEvaluator(NAMES, iou_threshold=threshold)
    evaluator.update(preds, targets)
    result = evaluator.compute()
    expected = [_reference_voc_ap(preds, targets, c, threshold) for c in range(len(NAMES))]
    ours = [result.per_class[n]["average_precision"] for n in NAMES]
    assert ours == pytest.approx(expected, abs=1e-9)
    assert result.scalars["mean_average_precision"] == pytest.approx(np.mean(expected), abs=1e-9)
    # The area under the stored curve is the AP (steps of 1/num_gt in recall).
    for name, ap in zip(NAMES, ours, strict=True):
        curve = result.pr_curves[name]
        widths = np.diff([0.0, *curve["recall"]])
        assert float(np.sum(widths * np.array(curve["precision"]))) == pytest.approx(ap)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_voc_ap_is_close_to_pycocotools_101_point_ap_at_the_same_iou(iou_type: str) -> None:
    preds, targets = _random_set(3, 60 if iou_type == "bbox" else 12, crowd=False, masks=True)
    evaluator = DetectionEvaluator(NAMES, iou_type=iou_type)
    evaluator.update(preds, targets)
    result = evaluator.compute()
    # precision[T, R, K, A, M]: IoU 0.50 (T=0), all areas (A=0), 100 detections (M=2).
    table = _pycocotools(preds, targets, iou_type).eval["precision"][0, :, :, 0, 2]
    for k, name in enumerate(NAMES):
        assert result.per_class[name]["average_precision"] == pytest.approx(
            float(table[:, k].mean()), abs=0.02
        )

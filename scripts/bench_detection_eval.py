"""Detection evaluation benchmark: our DetectionEvaluator vs pycocotools alone (prints numbers).

Synthetic validation set (default 500 images of 640x480, 10 classes, ~7 objects and ~20
predictions per image: jittered copies of the objects with some wrong labels, plus stray boxes).
Times, in seconds (median of ``--repeats`` runs, one CPU thread for torch):

- ours with ``validation_metric_type`` voc, coco and coco_voc: ``update`` batch by batch (16
  images, as a validation loop would) + ``compute``;
- pycocotools alone: ``COCO`` and ``loadRes`` from ready-made dicts, then
  ``evaluate`` + ``accumulate`` + ``summarize`` (building the dicts is not timed);
- faster-coco-eval alone, the same way (the engine behind our COCO numbers).

Usage: python scripts/bench_detection_eval.py [--images 500] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from visionauto.metrics.detection import DetectionEvaluator

WIDTH, HEIGHT, CLASSES, BATCH = 640, 480, 10, 16


def make_set(n_images: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Predictions and targets in the evaluator's format (boxes XYXY pixels, 0-based labels)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_images):
        n_gt = rng.poisson(7)
        wh = rng.uniform(12, 260, (n_gt, 2))
        xy = rng.uniform(0, 1, (n_gt, 2)) * ([WIDTH, HEIGHT] - wh)
        gt = np.concatenate([xy, xy + wh], axis=1)
        gt_labels = rng.integers(0, CLASSES, n_gt)
        found = rng.random(n_gt) < 0.85
        jitter = rng.normal(0, 0.1, (int(found.sum()), 4)) * np.tile(wh[found], 2)
        hits = gt[found] + jitter
        hit_labels = np.where(rng.random(len(hits)) < 0.9, gt_labels[found],
                              rng.integers(0, CLASSES, len(hits)))  # fmt: skip
        n_stray = max(0, 20 - len(hits))
        swh = rng.uniform(12, 260, (n_stray, 2))
        sxy = rng.uniform(0, 1, (n_stray, 2)) * ([WIDTH, HEIGHT] - swh)
        boxes = np.concatenate([hits, np.concatenate([sxy, sxy + swh], axis=1)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([hit_labels, rng.integers(0, CLASSES, n_stray)])
        scores = np.concatenate([rng.uniform(0.3, 1, len(hits)), rng.uniform(0, 0.7, n_stray)])
        preds.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                      "scores": torch.tensor(scores, dtype=torch.float32),
                      "labels": torch.tensor(labels, dtype=torch.int64)})  # fmt: skip
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32),
                        "labels": torch.tensor(gt_labels, dtype=torch.int64),
                        "iscrowd": torch.zeros(n_gt, dtype=torch.int64)})  # fmt: skip
    return preds, targets


def coco_dicts(preds: list[dict], targets: list[dict]) -> tuple[dict, list[dict]]:
    """COCO ground-truth dataset and result list (XYWH boxes, 1-based annotation ids)."""
    images, annotations, results = [], [], []
    for image_id, (pred, target) in enumerate(zip(preds, targets, strict=True), start=1):
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT})
        for (x0, y0, x1, y1), label in zip(target["boxes"].tolist(), target["labels"].tolist(),
                                           strict=True):  # fmt: skip
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": label, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})  # fmt: skip
        for (x0, y0, x1, y1), score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(),
                                                  pred["labels"].tolist(), strict=True):  # fmt: skip
            results.append({"image_id": image_id, "category_id": label, "score": score,
                            "bbox": [x0, y0, x1 - x0, y1 - y0]})  # fmt: skip
    dataset = {"images": images, "annotations": annotations,
               "categories": [{"id": c, "name": str(c)} for c in range(CLASSES)]}  # fmt: skip
    return dataset, results


def run_ours(metric_type: str, preds: list[dict], targets: list[dict]) -> dict[str, float]:
    evaluator = DetectionEvaluator([f"class_{c}" for c in range(CLASSES)], metric_type=metric_type)
    for i in range(0, len(preds), BATCH):
        evaluator.update(preds[i : i + BATCH], targets[i : i + BATCH])
    return evaluator.compute().scalars


def run_cocoapi(coco_cls: type, eval_cls: type, dataset: dict, results: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = coco_cls()
        truth.dataset = dataset
        truth.createIndex()
        evaluation = eval_cls(truth, truth.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from faster_coco_eval import COCO as FastCOCO  # noqa: N811
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    preds, targets = make_set(args.images, args.seed)
    n_gt = sum(len(t["labels"]) for t in targets)
    n_pred = sum(len(p["labels"]) for p in preds)
    print(f"{args.images} images {WIDTH}x{HEIGHT}, {CLASSES} classes, {n_gt} objects, "
          f"{n_pred} predictions; median of {args.repeats} runs; "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    dataset, results = coco_dicts(preds, targets)
    rows = []
    for metric_type in ("voc", "coco", "coco_voc"):
        seconds, scalars = timed(lambda m=metric_type: run_ours(m, preds, targets), args.repeats)
        rows.append((f"visionauto {metric_type}", seconds, scalars))
    for name, coco_cls, eval_cls in (
        ("pycocotools alone", COCO, COCOeval),
        ("faster-coco-eval alone", FastCOCO, COCOeval_faster),
    ):
        seconds, stats = timed(
            lambda c=coco_cls, e=eval_cls: run_cocoapi(c, e, dataset, results), args.repeats
        )
        rows.append((name, seconds, {"coco_map": stats[0], "coco_map_50": stats[1]}))
    print(f"{'':24s} {'seconds':>8s} {'VOC mAP@0.5':>12s} {'COCO mAP':>9s} {'COCO mAP@0.5':>13s}")
    for name, seconds, s in rows:
        voc = f"{s['mean_average_precision']:.4f}" if "precision" in s else "-"
        coco = f"{s['coco_map']:.4f}" if "coco_map" in s else "-"
        coco50 = f"{s['coco_map_50']:.4f}" if "coco_map_50" in s else "-"
        print(f"{name:24s} {seconds:8.2f} {voc:>12s} {coco:>9s} {coco50:>13s}")


if __name__ == "__main__":
    main()

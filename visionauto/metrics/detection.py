"""Object detection and instance segmentation metrics under Azure's names (spec §2.3).

``validation_metric_type`` picks what is computed:

- ``voc`` (default): ``mean_average_precision`` = mean over classes of the all-point VOC AP at
  ``iou_threshold`` (:mod:`visionauto.metrics.voc`), plus ``precision`` and ``recall`` at the
  model's box score threshold (mean over the classes where each is defined) and ``per_class``.
- ``coco``: the 12 COCO stats (``coco_map`` = AP@[.50:.95], ``coco_map_50``, ...) from
  torchmetrics (:mod:`visionauto.metrics.coco`); ``mean_average_precision`` is COCO AP@0.5, the
  value Azure's UI shows. No ``precision``/``recall``/``per_class``, as in Azure.
- ``coco_voc``: both; ``mean_average_precision`` is the VOC value.
- ``none``: nothing is computed.

Instance segmentation (``iou_type="segm"``) matches by mask IoU instead of box IoU. Undefined
values are ``-1.0`` and are left out of means.

Under DDP each process evaluates its shard; ``merge_from(all_gather_object(state()))`` joins the
shards before ``compute`` (nothing is gathered implicitly, so ``compute`` never blocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from visionauto.errors import ConfigError
from visionauto.metrics.coco import CocoAccumulator
from visionauto.metrics.voc import UNDEFINED, VocAccumulator, mean_defined

METRIC_TYPES = ("none", "voc", "coco", "coco_voc")
IOU_TYPES = ("bbox", "segm")

__all__ = ["UNDEFINED", "DetectionEvaluator", "DetectionResult"]


@dataclass
class DetectionResult:
    """Metrics of one evaluation; every value is a plain float, ``-1.0`` when undefined.

    Attributes:
        scalars: ``mean_average_precision`` (+ ``precision``, ``recall`` with VOC, + ``coco_map``,
            ``coco_map_50``, ``coco_map_75``, ``coco_map_small|medium|large``,
            ``coco_mar_1|10|100``, ``coco_mar_small|medium|large`` with COCO).
        per_class: class name -> ``{average_precision, precision, recall}`` (VOC only).
        pr_curves: class name -> ``{"precision": [...], "recall": [...]}``: the monotone VOC
            precision/recall curve at its unique recall points (ascending); empty lists for a
            class without true positives. Its area is the class's average precision.
    """

    scalars: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    pr_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)


class DetectionEvaluator:
    """Accumulates predictions and ground truth over a validation set, then computes metrics.

    Args:
        class_names: C class names; labels are 0-based indices into it.
        iou_threshold: minimum IoU of a VOC match (``validation_iou_threshold``).
        metric_type: ``none``, ``voc``, ``coco`` or ``coco_voc`` (``validation_metric_type``).
        score_threshold: score at or above which a prediction counts for ``precision`` and
            ``recall`` (the model's ``box_score_thresh``). AP always uses every prediction.
        iou_type: ``bbox`` (detection) or ``segm`` (instance segmentation: mask IoU).

    Raises:
        ConfigError: a value above is unknown or out of range.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        iou_threshold: float = 0.5,
        metric_type: str = "voc",
        score_threshold: float = 0.3,
        iou_type: str = "bbox",
    ) -> None:
        _validate_settings(class_names, iou_threshold, metric_type, score_threshold, iou_type)
        self.class_names = list(class_names)
        self.iou_threshold = float(iou_threshold)
        self.metric_type = metric_type
        self.score_threshold = float(score_threshold)
        self.iou_type = iou_type
        self._voc = (
            VocAccumulator(len(self.class_names), self.iou_threshold)
            if metric_type in ("voc", "coco_voc")
            else None
        )
        self._coco = CocoAccumulator(iou_type) if metric_type in ("coco", "coco_voc") else None

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        """Add a batch of images.

        Args:
            preds: per image, the detector's eval output: ``boxes`` f32[K,4] XYXY pixels,
                ``scores`` f32[K], ``labels`` i64[K]; for ``segm`` also ``masks`` (bool, or
                probabilities f32 thresholded at 0.5) [K,H,W] or [K,1,H,W].
            targets: per image, ``boxes`` f32[N,4], ``labels`` i64[N], optional ``iscrowd``
                i64[N] (0/1, default 0); for ``segm`` also ``masks`` u8/bool [N,H,W].
        """
        if len(preds) != len(targets):
            raise ValueError(f"got {len(preds)} predictions for {len(targets)} targets")
        if self._voc is None and self._coco is None:
            return
        coco_preds, coco_targets = [], []
        for index, (pred, target) in enumerate(zip(preds, targets, strict=True)):
            pred = self._standard(pred, f"prediction {index}", scores=True)
            target = self._standard(target, f"target {index}", scores=False)
            if self.iou_type == "segm" and pred["masks"].shape[1:] != target["masks"].shape[1:]:
                raise ValueError(
                    f"image {index}: prediction masks are {tuple(pred['masks'].shape[1:])} but "
                    f"target masks are {tuple(target['masks'].shape[1:])} (H, W); predict at the "
                    "size of the target masks"
                )
            if self._voc is not None:
                geometry = "boxes" if self.iou_type == "bbox" else "masks"
                self._voc.add_image(
                    pred[geometry],
                    pred["scores"],
                    pred["labels"],
                    target[geometry],
                    target["labels"],
                    target["iscrowd"].bool(),
                )
            coco_preds.append(pred)
            coco_targets.append(target)
        if self._coco is not None:
            self._coco.add_images(coco_preds, coco_targets)

    def compute(self) -> DetectionResult:
        """Metrics over every image added since the last :meth:`reset` (or merged in).

        Under DDP each process only saw its shard: call :meth:`merge_from` first.
        """
        result = DetectionResult()
        if self._voc is not None:
            stats = self._voc.compute(self.score_threshold)
            for name, s in zip(self.class_names, stats, strict=True):
                result.per_class[name] = {
                    "average_precision": s.average_precision,
                    "precision": s.precision,
                    "recall": s.recall,
                }
                result.pr_curves[name] = {
                    "precision": s.curve_precision,
                    "recall": s.curve_recall,
                }
            for key, metric in (
                ("mean_average_precision", "average_precision"),
                ("precision", "precision"),
                ("recall", "recall"),
            ):
                result.scalars[key] = mean_defined([s[metric] for s in result.per_class.values()])
        if self._coco is not None:
            coco = self._coco.compute()
            result.scalars.update(coco)
            if self._voc is None:  # coco only: Azure's UI shows mAP at IoU 0.5
                result.scalars["mean_average_precision"] = coco["coco_map_50"]
        return result

    def reset(self) -> None:
        """Forget every image added so far."""
        if self._voc is not None:
            self._voc.reset()
        if self._coco is not None:
            self._coco.reset()

    def state(self) -> dict[str, Any]:
        """Everything accumulated so far, as a picklable object of CPU tensors and lists.

        Small: per prediction a label, a score and a match flag for VOC; boxes or RLE masks
        for COCO. Meant for ``torch.distributed.all_gather_object`` (see :meth:`merge_from`).
        """
        return {
            "voc": None if self._voc is None else self._voc.state(),
            "coco": None if self._coco is None else self._coco.state(),
        }

    def merge_from(self, states: list[dict[str, Any]]) -> None:
        """Replace the accumulated data by the union of ``states``.

        Under DDP: ``evaluator.merge_from(all_gather_object(evaluator.state()))`` on every
        process (the gathered list includes the process's own state), then :meth:`compute`.

        Args:
            states: :meth:`state` of each evaluator to join (same settings and classes).
        """
        if self._voc is not None:
            self._voc.merge([s["voc"] for s in states])
        if self._coco is not None:
            self._coco.merge([s["coco"] for s in states])

    def _standard(self, item: dict, where: str, *, scores: bool) -> dict[str, Tensor]:
        """One prediction (``scores=True``) or target as ``boxes`` f[K,4], ``labels`` i64[K],
        ``scores`` f[K] or ``iscrowd`` i64[K] (default 0), and ``masks`` bool[K,H,W] for segm."""
        labels = item["labels"].long()
        self._check_labels(labels, where)
        out = {"boxes": item["boxes"].reshape(-1, 4), "labels": labels}
        if scores:
            out["scores"] = item["scores"]
        else:
            crowd = item.get("iscrowd")
            out["iscrowd"] = (
                torch.zeros_like(labels) if crowd is None else crowd.long().to(labels.device)
            )
        if self.iou_type == "segm":
            out["masks"] = _binary_masks(item, where)
        return out

    def _check_labels(self, labels: Tensor, where: str) -> None:
        # A label outside [0, C) is a caller bug (e.g. 1-based torchvision labels leaking out).
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names)):
            raise ValueError(
                f"{where}: labels must be 0-based indices below {len(self.class_names)} "
                f"(class_names), got {labels.unique().tolist()}"
            )


def _binary_masks(item: dict, where: str) -> Tensor:
    """``masks`` of a prediction/target as bool[K,H,W]: floats are probabilities (> 0.5)."""
    masks = item.get("masks")
    if masks is None:
        raise ValueError(f"{where} has no 'masks' but iou_type='segm' needs them")
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.is_floating_point():
        return masks > 0.5
    return masks.bool()


def _validate_settings(
    class_names: Sequence[str],
    iou_threshold: float,
    metric_type: str,
    score_threshold: float,
    iou_type: str,
) -> None:
    if metric_type not in METRIC_TYPES:
        raise ConfigError(
            f"validation_metric_type={metric_type!r} is unknown; use one of {', '.join(METRIC_TYPES)}"
        )
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"iou_type={iou_type!r} is unknown; use 'bbox' or 'segm'")
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(
            f"validation_iou_threshold={iou_threshold} is out of range; use a value in (0, 1] "
            "(Azure's default is 0.5)"
        )
    if not 0.0 <= score_threshold <= 1.0:
        raise ConfigError(
            f"box_score_threshold={score_threshold} is out of range; use a value in [0, 1]"
        )
    if not class_names:
        raise ConfigError("the detection evaluator needs at least one class name")
    duplicates = sorted({n for n in class_names if list(class_names).count(n) > 1})
    if duplicates:
        raise ConfigError(f"class names must be unique; repeated: {', '.join(duplicates)}")

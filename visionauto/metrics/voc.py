"""VOC-style detection metrics (spec §2.3): greedy IoU matching and all-point average precision.

Matching, per image and class: predictions are taken in descending score order (ties keep their
input order, as pycocotools does); each one is matched to the unmatched ground-truth object of
its class with the highest IoU, if that IoU is >= the threshold (true positive), else it is a false
positive. A ground-truth object is matched at most once. Crowd objects (``iscrowd=1``) are never
matched and never counted in recall, so a prediction that only overlaps a crowd object is a false
positive (Azure's evaluator tests).

Only ``(class, score, is_true_positive)`` per prediction and the number of non-crowd objects per
class are kept, so memory grows by a few bytes per prediction whatever the image or mask size.

Average precision per class is the area under the monotone precision/recall curve (precision at
each recall = the highest precision at that recall or above) over all unique recall points:
``AP = sum_i (r_i - r_{i-1}) * p_interp(r_i)``. It is ``-1.0`` (undefined) for a class without
ground truth, ``0.0`` for a class with ground truth and no true positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

UNDEFINED = -1.0

# Pixels of prediction masks turned into float at once in mask_iou (~256 MB of float32).
_MASK_CHUNK_PIXELS = 64 * 1024 * 1024


def mask_iou(pred_masks: Tensor, gt_masks: Tensor) -> Tensor:
    """IoU of every prediction mask with every ground-truth mask.

    Args:
        pred_masks: bool[K,H,W].
        gt_masks: bool[N,H,W] (same H, W).

    Returns:
        f64[K,N] IoU; 0 where both masks are empty.
    """
    k, n = pred_masks.shape[0], gt_masks.shape[0]
    if k == 0 or n == 0:
        return torch.zeros((k, n), dtype=torch.float64, device=pred_masks.device)
    pred_flat = pred_masks.reshape(k, -1)
    gt_flat = gt_masks.reshape(n, -1).float()
    # float32 sums of 0/1 values are exact below 2**24 pixels per mask (a 16-megapixel image).
    step = max(1, _MASK_CHUNK_PIXELS // max(1, pred_flat.shape[1]))
    inter = torch.cat(
        [pred_flat[i : i + step].float() @ gt_flat.T for i in range(0, k, step)]
    ).double()
    pred_area = pred_flat.sum(dim=1).double()
    gt_area = gt_flat.sum(dim=1, dtype=torch.float64)
    union = pred_area[:, None] + gt_area[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))


def pairwise_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """Box IoU (f[K,4] vs f[N,4] XYXY) or mask IoU (bool[K,H,W] vs bool[N,H,W]) as f64[K,N]."""
    if pred.dim() == 2:
        # float64: an IoU of exactly the threshold must not fall below it by rounding.
        return box_iou(pred.double(), gt.double())
    return mask_iou(pred, gt)


def _same_class_iou(pred: Tensor, pred_labels: Tensor, gt: Tensor, gt_labels: Tensor) -> Tensor:
    """f64[K,N] IoU of same-class pairs, -1 for pairs of different classes."""
    if pred.dim() == 2:  # boxes are cheap: one matrix for all classes, then mask
        iou = pairwise_iou(pred, gt)
        return torch.where(pred_labels[:, None] == gt_labels[None, :], iou, -1.0)
    # Masks: compute only same-class pairs, mask IoU is the costly part.
    iou = torch.full((len(pred_labels), len(gt_labels)), -1.0, dtype=torch.float64)
    for cls in torch.unique(pred_labels).tolist():
        rows = (pred_labels == cls).nonzero().flatten()
        cols = (gt_labels == cls).nonzero().flatten()
        if cols.numel():
            iou[rows.cpu()[:, None], cols.cpu()[None, :]] = pairwise_iou(pred[rows], gt[cols]).cpu()
    return iou


def match_predictions(
    pred: Tensor,
    pred_scores: Tensor,
    pred_labels: Tensor,
    gt: Tensor,
    gt_labels: Tensor,
    gt_crowd: Tensor,
    iou_threshold: float,
) -> Tensor:
    """Greedy matching of one image's predictions to its ground truth (see module docstring).

    Args:
        pred: f[K,4] XYXY boxes or bool[K,H,W] masks.
        pred_scores: f[K].
        pred_labels: i64[K].
        gt: f[N,4] boxes or bool[N,H,W] masks, in the same space as ``pred``.
        gt_labels: i64[N].
        gt_crowd: bool[N], True for crowd objects (never matched).
        iou_threshold: minimum IoU of a match.

    Returns:
        bool[K] on the CPU, True for true positives.
    """
    k = pred_scores.shape[0]
    tp = np.zeros(k, dtype=bool)
    keep = ~gt_crowd
    gt, gt_labels = gt[keep], gt_labels[keep]
    if k == 0 or gt_labels.numel() == 0:
        return torch.from_numpy(tp)
    iou_np = _same_class_iou(pred, pred_labels, gt, gt_labels).cpu().numpy()
    matched = np.zeros(iou_np.shape[1], dtype=bool)
    order = torch.argsort(pred_scores.cpu(), descending=True, stable=True).numpy()
    for i in order:
        row = np.where(matched, -1.0, iou_np[i])
        j = int(row.argmax())
        if row[j] >= iou_threshold:
            tp[i] = True
            matched[j] = True
    return torch.from_numpy(tp)


@dataclass
class ClassStats:
    """VOC metrics of one class; ``-1.0`` marks an undefined value.

    Attributes:
        average_precision: all-point AP (undefined without ground truth).
        precision: TP / predictions with score >= the score threshold (undefined if none).
        recall: TP at the score threshold / ground-truth objects (undefined without ground truth).
        curve_recall: the unique recall points, ascending.
        curve_precision: the interpolated (monotone) precision at each of those points.
    """

    average_precision: float
    precision: float
    recall: float
    curve_recall: list[float]
    curve_precision: list[float]


def class_stats(scores: Tensor, tp: Tensor, num_gt: int, score_threshold: float) -> ClassStats:
    """VOC metrics of one class from its predictions over the whole evaluation set.

    Args:
        scores: f[P] scores of the class's predictions.
        tp: bool[P] whether each one is a true positive.
        num_gt: number of non-crowd ground-truth objects of the class.
        score_threshold: the score at or above which a prediction counts for precision/recall.
    """
    above = scores >= score_threshold
    n_above = int(above.sum())
    tp_above = int(tp[above].sum())
    precision = tp_above / n_above if n_above else UNDEFINED
    if num_gt == 0:
        return ClassStats(UNDEFINED, precision, UNDEFINED, [], [])
    order = torch.argsort(scores, descending=True, stable=True)
    hits = tp[order].double()
    cum_tp = hits.cumsum(0)
    cum_precision = cum_tp / torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    # Max precision to the right makes the curve monotone (VOC 2010+ interpolation).
    envelope = cum_precision.flip(0).cummax(0).values.flip(0)
    # Recall rises exactly at the true positives, by 1/num_gt each: those are the unique points.
    at_hits = hits.bool()
    curve_precision = envelope[at_hits]
    curve_recall = cum_tp[at_hits] / num_gt
    ap = float(curve_precision.sum()) / num_gt
    return ClassStats(
        average_precision=ap,
        precision=precision,
        recall=tp_above / num_gt,
        curve_recall=curve_recall.tolist(),
        curve_precision=curve_precision.tolist(),
    )


def mean_defined(values: list[float]) -> float:
    """Mean of the defined (>= 0) values; ``-1.0`` when none is defined."""
    defined = [v for v in values if v >= 0]
    return sum(defined) / len(defined) if defined else UNDEFINED


class VocAccumulator:
    """Per-prediction match results and per-class ground-truth counts over many images."""

    def __init__(self, num_classes: int, iou_threshold: float) -> None:
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.reset()

    def reset(self) -> None:
        self._labels: list[Tensor] = []
        self._scores: list[Tensor] = []
        self._tp: list[Tensor] = []
        self._num_gt = torch.zeros(self.num_classes, dtype=torch.int64)

    def add_image(
        self,
        pred: Tensor,
        pred_scores: Tensor,
        pred_labels: Tensor,
        gt: Tensor,
        gt_labels: Tensor,
        gt_crowd: Tensor,
    ) -> None:
        """Match one image (arguments as in :func:`match_predictions`) and keep the results."""
        tp = match_predictions(
            pred, pred_scores, pred_labels, gt, gt_labels, gt_crowd, self.iou_threshold
        )
        self._labels.append(pred_labels.detach().cpu().long())
        self._scores.append(pred_scores.detach().cpu().double())
        self._tp.append(tp)
        self._num_gt += torch.bincount(gt_labels[~gt_crowd].cpu(), minlength=self.num_classes)

    def state(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(labels i64[P], scores f64[P], tp bool[P], num_gt i64[C]) gathered so far."""
        if not self._labels:
            empty = torch.zeros(0)
            return empty.long(), empty.double(), empty.bool(), self._num_gt.clone()
        return (
            torch.cat(self._labels),
            torch.cat(self._scores),
            torch.cat(self._tp),
            self._num_gt.clone(),
        )

    def merge(self, states: list[tuple[Tensor, Tensor, Tensor, Tensor]]) -> None:
        """Replace what was added so far by the union of ``states`` (from :meth:`state`)."""
        self.reset()
        for labels, scores, tp, num_gt in states:
            self._labels.append(labels)
            self._scores.append(scores)
            self._tp.append(tp)
            self._num_gt += num_gt

    def compute(self, score_threshold: float) -> list[ClassStats]:
        """Per-class metrics, in class-index order, over everything added."""
        labels, scores, tp, num_gt = self.state()
        return [
            class_stats(scores[labels == c], tp[labels == c], int(num_gt[c]), score_threshold)
            for c in range(self.num_classes)
        ]

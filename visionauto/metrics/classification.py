"""Multiclass and multilabel classification metrics under Azure's names (spec §2.2).

Conventions (Azure's evaluator: undefined values are ``-1.0`` and left out of means):

- Per class, one-vs-rest. Precision is undefined when the class is never predicted; it is ``0.0``
  if the class is present (the model missed it, as scikit-learn's ``zero_division=0``) and ``-1.0``
  when the class is neither present nor predicted. Recall is ``-1.0`` for a class with no true
  samples; F1 (``2tp / (2tp + fp + fn)``) and IoU (``tp / (tp + fp + fn)``) are ``-1.0`` when
  their denominator is 0. AUC needs both positives and negatives, average precision positives.
- ``*_macro`` = mean over classes with a defined value; ``*_weighted`` = the same weighted by
  support; ``*_micro`` = from counts (or scores) pooled over classes. If nothing is defined: -1.
- Multiclass: the prediction is the arg-max class; micro precision = recall = F1 = accuracy.
  For two classes the ``*_binary`` values are those of class 1 (the second class name).
- Multilabel: a label is predicted when its probability >= ``threshold`` (0.5). ``accuracy`` is
  exact-match (subset) accuracy. ``iou`` (the primary metric) is the mean over images of
  |predicted ∩ true| / |predicted ∪ true| (scikit-learn's ``jaccard_score(average="samples")``),
  where an image with no true and no predicted labels scores 1.0: predicting "nothing" for an
  image that shows nothing is correct (scikit-learn would count it as 0).
- NaN probabilities (a diverged model) are read as 0, so no metric is ever NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_confusion_matrix,
    multilabel_confusion_matrix,
)

UNDEFINED = -1.0


@dataclass
class ClassificationResult:
    """Metrics of one evaluation.

    Attributes:
        scalars: Azure metric name → value (``accuracy``, ``f1_score_macro``, ``iou``, ...).
        per_class: class name → ``{precision, recall, f1_score, support, AUC,
            average_precision}`` (+ ``iou`` for multilabel); undefined values are -1.0.
        confusion_matrix: multiclass only, ``[true][predicted]`` counts in class order.
    """

    scalars: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]] | None


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else UNDEFINED


def _precision(tp: float, fp: float, support: float) -> float:
    if tp + fp > 0:
        return tp / (tp + fp)
    return 0.0 if support > 0 else UNDEFINED


def _averages(values: list[float], support: list[float]) -> tuple[float, float]:
    """(macro, weighted) means over the defined (>= 0) values."""
    pairs = [(v, s) for v, s in zip(values, support, strict=True) if v >= 0]
    if not pairs:
        return UNDEFINED, UNDEFINED
    macro = sum(v for v, _ in pairs) / len(pairs)
    total = sum(s for _, s in pairs)
    weighted = sum(v * s for v, s in pairs) / total if total > 0 else UNDEFINED
    return macro, weighted


def _auc_ap(scores: Tensor, truth: Tensor) -> tuple[float, float]:
    """AUC and average precision of one score column f32[N] against {0,1} truth i64[N]."""
    scores = scores.double()  # float64 so values agree with references to ~1e-12
    positives = int(truth.sum())
    auc = UNDEFINED
    ap = UNDEFINED
    if 0 < positives < truth.numel():
        auc = float(binary_auroc(scores, truth))
    if positives > 0:
        ap = float(binary_average_precision(scores, truth))
    return auc, ap


def _counts(
    probs: Tensor, onehot: Tensor, multilabel: bool, threshold: float
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Per-class tp, fp, fn (f64[C]) and the multiclass confusion matrix i64[C,C]."""
    num_classes = probs.shape[1]
    if multilabel:
        cm2 = multilabel_confusion_matrix(
            probs, onehot, num_labels=num_classes, threshold=threshold
        ).double()  # [C, 2, 2]
        return cm2[:, 1, 1], cm2[:, 0, 1], cm2[:, 1, 0], None
    cm = multiclass_confusion_matrix(probs, onehot.argmax(1), num_classes=num_classes)
    diag = cm.diagonal().double()
    return diag, cm.sum(0).double() - diag, cm.sum(1).double() - diag, cm


def _per_class(
    probs: Tensor, onehot: Tensor, tp: Tensor, fp: Tensor, fn: Tensor, multilabel: bool
) -> list[dict[str, float]]:
    rows = []
    for c in range(probs.shape[1]):
        t, f_p, f_n = float(tp[c]), float(fp[c]), float(fn[c])
        support = t + f_n
        auc, ap = _auc_ap(probs[:, c], onehot[:, c])
        row = {
            "precision": _precision(t, f_p, support),
            "recall": _ratio(t, support),
            "f1_score": _ratio(2 * t, 2 * t + f_p + f_n),
            "support": support,
            "AUC": auc,
            "average_precision": ap,
        }
        if multilabel:
            row["iou"] = _ratio(t, t + f_p + f_n)
        rows.append(row)
    return rows


def _aggregate(
    rows: list[dict[str, float]],
    probs: Tensor,
    onehot: Tensor,
    tp: Tensor,
    fp: Tensor,
    fn: Tensor,
    multilabel: bool,
) -> dict[str, float]:
    support = [r["support"] for r in rows]
    scalars: dict[str, float] = {}
    names = {
        "precision": "precision_score",
        "recall": "recall_score",
        "f1_score": "f1_score",
        "AUC": "AUC",
        "average_precision": "average_precision_score",
    }
    if multilabel:
        names["iou"] = "iou"
    for key, azure in names.items():
        scalars[f"{azure}_macro"], scalars[f"{azure}_weighted"] = _averages(
            [r[key] for r in rows], support
        )
    t, f_p, f_n = float(tp.sum()), float(fp.sum()), float(fn.sum())
    scalars["precision_score_micro"] = _precision(t, f_p, t + f_n)
    scalars["recall_score_micro"] = _ratio(t, t + f_n)
    scalars["f1_score_micro"] = _ratio(2 * t, 2 * t + f_p + f_n)
    scalars["AUC_micro"], scalars["average_precision_score_micro"] = _auc_ap(
        probs.flatten(), onehot.flatten()
    )
    if multilabel:
        scalars["iou_micro"] = _ratio(t, t + f_p + f_n)
    return scalars


def _sample_iou(pred: Tensor, onehot: Tensor) -> float:
    """Mean over images of |pred ∩ true| / |pred ∪ true|; 1.0 for an image with both empty."""
    inter = (pred & onehot.bool()).sum(1).double()
    union = (pred | onehot.bool()).sum(1).double()
    per_image = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return float(per_image.mean())


def _empty_result(class_names: list[str], multilabel: bool) -> ClassificationResult:
    keys = ["precision", "recall", "f1_score", "support", "AUC", "average_precision"]
    keys += ["iou"] if multilabel else []
    per_class = {n: {k: 0.0 if k == "support" else UNDEFINED for k in keys} for n in class_names}
    names = ["precision_score", "recall_score", "f1_score", "AUC", "average_precision_score"]
    names += ["iou"] if multilabel else []
    scalars = {"accuracy": UNDEFINED}
    scalars.update({f"{n}_{a}": UNDEFINED for n in names for a in ("macro", "micro", "weighted")})
    if multilabel:
        scalars["iou"] = UNDEFINED
    size = len(class_names)
    cm = None if multilabel else [[0] * size for _ in range(size)]
    return ClassificationResult(scalars, per_class, cm)


def compute_classification_metrics(
    probs: Tensor,
    targets: Tensor,
    *,
    multilabel: bool,
    class_names: list[str],
    threshold: float = 0.5,
) -> ClassificationResult:
    """Compute Azure's classification metrics on one evaluation set.

    Args:
        probs: f32[N,C] class probabilities (softmax for multiclass, sigmoid for multilabel).
        targets: multiclass i64[N] class indices; multilabel {0,1} f32/i64[N,C].
        multilabel: which of the two tasks.
        class_names: C names, in column order.
        threshold: multilabel decision threshold (Azure: 0.5).

    Returns:
        The scalars (Azure names), per-class metrics and the multiclass confusion matrix.
    """
    probs = torch.nan_to_num(probs.detach().float().cpu(), nan=0.0)
    targets = targets.detach().cpu()
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(f"probs must be [N, {len(class_names)}], got {tuple(probs.shape)}")
    expected = probs.shape if multilabel else probs.shape[:1]
    if targets.shape != expected:
        raise ValueError(f"targets must be {tuple(expected)}, got {tuple(targets.shape)}")
    if probs.shape[0] == 0:
        return _empty_result(class_names, multilabel)
    num_classes = probs.shape[1]
    if multilabel:
        onehot = (targets > 0.5).long()
        pred = probs >= threshold
    else:
        onehot = torch.nn.functional.one_hot(targets.long(), num_classes)
        pred = torch.nn.functional.one_hot(probs.argmax(1), num_classes).bool()
    tp, fp, fn, cm = _counts(probs, onehot, multilabel, threshold)
    rows = _per_class(probs, onehot, tp, fp, fn, multilabel)
    exact = (pred == onehot.bool()).all(1).double().mean()
    scalars = {"accuracy": float(exact)}
    scalars.update(_aggregate(rows, probs, onehot, tp, fp, fn, multilabel))
    if multilabel:
        scalars["iou"] = _sample_iou(pred, onehot)
    elif num_classes == 2:
        binary = rows[1]
        scalars.update(
            {
                "precision_score_binary": binary["precision"],
                "recall_score_binary": binary["recall"],
                "f1_score_binary": binary["f1_score"],
                "AUC_binary": binary["AUC"],
                "average_precision_score_binary": binary["average_precision"],
            }
        )
    return ClassificationResult(
        scalars=dict(sorted(scalars.items())),
        per_class=dict(zip(class_names, rows, strict=True)),
        confusion_matrix=cm.tolist() if cm is not None else None,
    )

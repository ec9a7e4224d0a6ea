"""PNG charts of detection results: per-class precision/recall curves and annotated images.

Same conventions as :mod:`visionauto.metrics.plots` (Agg backend, one PNG per call, returns the
path). Ground truth is drawn in green, predictions in other colours with ``label score``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers, CI and trial subprocesses have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

from visionauto.metrics.detection import DetectionResult  # noqa: E402
from visionauto.metrics.plots import _save, _short  # noqa: E402

_TRUE_COLOUR = "#2ca02c"  # green: ground truth
# Prediction colours (per class), tab10 without its green so they never look like ground truth.
_PRED_COLOURS = [
    "#d62728",
    "#1f77b4",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
]


def plot_pr_curves(result: DetectionResult, path: Path) -> Path:
    """Draw the VOC precision/recall curve of every class, with its AP in the legend.

    Curves are steps through the unique recall points (the monotone curve whose area is the AP).
    Classes without ground truth are listed as ``n/a``; a ``coco``-only result has no curves and
    gets a note instead.

    Args:
        result: a :class:`DetectionResult` (``pr_curves`` and ``per_class`` are read).
        path: the PNG to write.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    cmap = plt.get_cmap("tab20" if len(result.pr_curves) > 10 else "tab10")
    for i, (name, curve) in enumerate(result.pr_curves.items()):
        ap = result.per_class.get(name, {}).get("average_precision", -1.0)
        label = f"{_short(name)} (AP {ap:.3f})" if ap >= 0 else f"{_short(name)} (AP n/a)"
        if not curve["recall"]:  # no true positive: the curve is the point (0, 0) at best
            ax.plot([], [], color=cmap(i % cmap.N), label=label)
            continue
        recall = [0.0, *curve["recall"]]
        precision = [curve["precision"][0], *curve["precision"]]
        ax.step(recall, precision, where="pre", color=cmap(i % cmap.N), label=label, lw=1.8)
    mean_ap = result.scalars.get("mean_average_precision")
    title = "Precision/recall per class"
    if mean_ap is not None:
        title += f" (mAP {mean_ap:.3f})" if mean_ap >= 0 else " (mAP n/a)"
    if not result.pr_curves:
        ax.text(
            0.5,
            0.5,
            "no per-class curves (COCO metrics only)",
            ha="center",
            va="center",
            color="grey",
            transform=ax.transAxes,
        )
    ax.set_title(title)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    if result.pr_curves:
        ax.legend(
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            frameon=False,
            fontsize=9 if len(result.pr_curves) <= 15 else 7,
        )
    return _save(fig, path)


def plot_detections(
    images: list[Tensor | Image.Image],
    preds: list[dict],
    targets: list[dict],
    class_names: list[str],
    path: Path,
    *,
    max_images: int = 8,
    score_threshold: float = 0.3,
) -> Path:
    """A grid of images with ground truth (green) and predictions (label + score) drawn on them.

    Args:
        images: f32[3,H,W] tensors in [0,1] or PIL images.
        preds: per image ``boxes`` f32[K,4] XYXY pixels, ``scores`` f32[K], ``labels`` i64[K],
            optional ``masks`` [K,H,W] or [K,1,H,W] (bool, or probabilities cut at 0.5).
        targets: per image ``boxes`` f32[N,4], ``labels`` i64[N], optional ``masks`` [N,H,W].
        class_names: names of the 0-based labels.
        path: the PNG to write.
        max_images: draw at most this many (the first ones).
        score_threshold: predictions scoring below it are not drawn.
    """
    count = min(len(images), max_images)
    cols = min(4, max(count, 1))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(count):
        ax = axes.flat[i]
        pixels = _to_rgb(images[i])
        target = targets[i] if i < len(targets) else {}
        pred = _keep_scores(preds[i] if i < len(preds) else {}, score_threshold)
        ax.imshow(_overlay(pixels, target, pred))
        _draw_boxes(ax, target, class_names, true=True)
        _draw_boxes(ax, pred, class_names, true=False)
        ax.set_title(
            f"image {i}: {len(target.get('labels', []))} true, "
            f"{len(pred.get('labels', []))} predicted",
            fontsize=9,
        )
    handles = [
        Line2D([], [], color=_TRUE_COLOUR, lw=2, label="ground truth"),
        Line2D(
            [],
            [],
            color=_PRED_COLOURS[0],
            lw=2,
            label=f"prediction, colour per class (score >= {score_threshold:g})",
        ),
    ]
    fig.legend(handles=handles, loc="lower center", ncols=2, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def _to_rgb(image: Tensor | Image.Image) -> np.ndarray:
    """f32[H,W,3] in [0,1] from a CHW tensor in [0,1] or a PIL image."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = image.detach().cpu().float()
    if array.dim() == 2:
        array = array[None]
    array = array.expand(3, *array.shape[1:]) if array.shape[0] == 1 else array[:3]
    return array.permute(1, 2, 0).clamp(0, 1).numpy()


def _keep_scores(pred: dict, threshold: float) -> dict:
    """The prediction with only the entries scoring >= threshold."""
    if "scores" not in pred:
        return pred
    keep = pred["scores"].detach().cpu() >= threshold
    return {k: v.detach().cpu()[keep] for k, v in pred.items() if isinstance(v, Tensor)}


def _masks(item: dict) -> np.ndarray | None:
    masks = item.get("masks")
    if masks is None or len(masks) == 0:
        return None
    masks = masks.detach().cpu()
    masks = masks[:, 0] if masks.dim() == 4 else masks
    return (masks > 0.5 if masks.is_floating_point() else masks.bool()).numpy()


def _overlay(pixels: np.ndarray, target: dict, pred: dict, alpha: float = 0.4) -> np.ndarray:
    """Blend ground-truth masks (green) and predicted masks (class colours) into the image."""
    out = pixels.copy()
    layers = [(_masks(target), [_TRUE_COLOUR] * len(target.get("labels", [])))]
    labels = pred.get("labels", torch.zeros(0, dtype=torch.long)).tolist()
    layers.append((_masks(pred), [_PRED_COLOURS[c % len(_PRED_COLOURS)] for c in labels]))
    for masks, colours in layers:
        if masks is None or masks.shape[1:] != out.shape[:2]:
            continue  # masks of another size (e.g. before a resize) cannot be placed
        for mask, colour in zip(masks, colours, strict=False):
            rgb = np.array(to_rgb(colour), dtype=np.float32)
            out[mask] = (1 - alpha) * out[mask] + alpha * rgb
    return out


def _draw_boxes(ax: Axes, item: dict, class_names: list[str], *, true: bool) -> None:
    boxes = item.get("boxes")
    if boxes is None or len(boxes) == 0:
        return
    labels = item["labels"].detach().cpu().tolist()
    scores = item["scores"].detach().cpu().tolist() if "scores" in item else None
    crowd = item.get("iscrowd")
    for k, (x0, y0, x1, y1) in enumerate(boxes.detach().cpu().reshape(-1, 4).tolist()):
        name = class_names[labels[k]] if 0 <= labels[k] < len(class_names) else str(labels[k])
        colour = _TRUE_COLOUR if true else _PRED_COLOURS[labels[k] % len(_PRED_COLOURS)]
        dashed = crowd is not None and bool(crowd[k])  # crowd regions: dashed, not scored
        ax.add_patch(
            Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                edgecolor=colour,
                lw=1.8,
                ls="--" if dashed else "-",
            )
        )
        if true:
            continue  # the label of ground truth would hide the predictions' labels
        ax.text(
            x0,
            y0,
            f"{_short(name, 14)} {scores[k]:.2f}" if scores else _short(name, 14),
            fontsize=7,
            color="white",
            va="bottom",
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1, "alpha": 0.85},
        )

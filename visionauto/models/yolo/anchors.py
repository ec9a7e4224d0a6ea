"""Anchor boxes: defaults, a fit quality check, and a k-means fit on the data's box sizes.

Anchors are ``f32[9, 2]`` widths and heights in pixels of the letterboxed network input,
sorted by area; rows 0-2 belong to stride 8, 3-5 to stride 16, 6-8 to stride 32.

A box can be learned by an anchor when neither side differs by more than ``ANCHOR_RATIO``
(4.0, spec §1.4 ``anchor_t``) from the anchor's: the head predicts sizes in (0, 4) x anchor.
The "best possible recall" (BPR) is the fraction of boxes that at least one anchor can learn.
"""

from __future__ import annotations

import numpy as np

from visionauto.errors import DataError

ANCHOR_RATIO = 4.0
# k-means anchors of the YOLOv3 paper (Redmon & Farhadi, 2018) for COCO, f32[9, 2] pixels at a
# 640 px input; :func:`default_anchors` scales them to other input sizes.
DEFAULT_ANCHORS = np.array(
    [
        [10, 13],
        [16, 30],
        [33, 23],
        [30, 61],
        [62, 45],
        [59, 119],
        [116, 90],
        [156, 198],
        [373, 326],
    ],
    dtype=np.float32,
)
_KMEANS_ITERATIONS = 50
_EVOLVE_STEPS = 300


def default_anchors(img_size: int) -> np.ndarray:
    """The COCO anchors scaled from a 640 px input to ``img_size``: ``f32[9, 2]`` pixels.

    Objects in a letterboxed image scale with the input size, so the anchors do too.
    """
    return DEFAULT_ANCHORS * (float(img_size) / 640.0)


def box_sizes_at(boxes: np.ndarray, image_sizes: np.ndarray, img_size: int) -> np.ndarray:
    """Box sizes once each image is letterboxed to ``img_size`` (long side = ``img_size``).

    Args:
        boxes: ``[N, 4]`` XYXY normalized to [0, 1] by their image's width and height.
        image_sizes: ``[N, 2]`` (width, height) in pixels of the image of each box.
        img_size: the network input size.

    Returns:
        ``f32[N, 2]`` (width, height) in pixels of the network input.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    scale = img_size / sizes.max(axis=1, keepdims=True)
    wh = (boxes[:, 2:] - boxes[:, :2]) * sizes * scale
    return wh.astype(np.float32)


def _ratio_fit(box_wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``[N, K]`` fit of box i to anchor k: min over sides of min(r, 1/r), in (0, 1]."""
    ratio = box_wh[:, None, :] / anchors[None, :, :]
    return np.minimum(ratio, 1.0 / ratio).min(axis=2)


def anchor_fit_quality(box_wh: np.ndarray, anchors: np.ndarray) -> float:
    """Best possible recall: the fraction of boxes some anchor can learn (ratio < 4 per side).

    Args:
        box_wh: ``[N, 2]`` box widths and heights in pixels at the network input size.
        anchors: ``[K, 2]`` anchor widths and heights, same units.

    Returns:
        A value in [0, 1]; 1.0 when there are no boxes. Below ~0.98 the anchors fit badly.
    """
    wh = _clean_sizes(box_wh)
    if len(wh) == 0:
        return 1.0
    best = _ratio_fit(wh, np.asarray(anchors, dtype=np.float64)).max(axis=1)
    return float((best > 1.0 / ANCHOR_RATIO).mean())


def _clean_sizes(box_wh: np.ndarray) -> np.ndarray:
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    return wh[(wh > 0).all(axis=1) & np.isfinite(wh).all(axis=1)]


def _fitness(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean best-anchor fit, counting only learnable boxes (what training can use)."""
    best = _ratio_fit(wh, anchors).max(axis=1)
    return float(np.where(best > 1.0 / ANCHOR_RATIO, best, 0.0).mean())


def _kmeans_log(wh: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """k-means (k-means++ init) on log sizes: distances then compare ratios, not pixels."""
    points = np.log(wh)
    centers = [points[rng.integers(len(points))]]
    for _ in range(1, n):
        dist = np.min([((points - c) ** 2).sum(axis=1) for c in centers], axis=0)
        total = dist.sum()
        pick = rng.choice(len(points), p=dist / total) if total > 0 else rng.integers(len(points))
        centers.append(points[pick])
    centers_arr = np.stack(centers)
    for _ in range(_KMEANS_ITERATIONS):
        dist = ((points[:, None, :] - centers_arr[None]) ** 2).sum(axis=2)
        nearest = dist.argmin(axis=1)
        for k in range(n):
            members = points[nearest == k]
            if len(members):
                centers_arr[k] = members.mean(axis=0)
    return np.exp(centers_arr)


def _evolve(wh: np.ndarray, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random multiplicative mutations kept only when they raise :func:`_fitness`."""
    best, best_fit = anchors, _fitness(wh, anchors)
    for _ in range(_EVOLVE_STEPS):
        mutate = rng.random(anchors.shape) < 0.9
        factor = np.exp(rng.normal(0.0, 0.1, anchors.shape) * mutate)
        candidate = np.clip(best * factor, 2.0, None)
        fit = _fitness(wh, candidate)
        if fit > best_fit:
            best, best_fit = candidate, fit
    return best


def fit_anchors(box_wh: np.ndarray, n: int = 9, *, seed: int = 0) -> np.ndarray:
    """Fit ``n`` anchors to box sizes: k-means on log sizes, then a short evolution step.

    Args:
        box_wh: ``[N, 2]`` widths and heights in pixels at the network input size (e.g. from
            :func:`box_sizes_at`). Non-positive or non-finite rows are ignored.
        n: number of anchors (9 = 3 levels x 3).
        seed: seed of the random initialisation (the fit is deterministic for a seed).

    Returns:
        ``f32[n, 2]`` anchors sorted by area (smallest first). Check them with
        :func:`anchor_fit_quality`.

    Raises:
        DataError: there is no usable box size.
    """
    wh = _clean_sizes(box_wh)
    if len(wh) == 0:
        raise DataError(
            "Cannot fit anchors: the training data has no boxes with a positive width and "
            "height. Fix: check the labels of the training data (topX < bottomX, topY < bottomY)."
        )
    rng = np.random.default_rng(seed)
    # Fewer distinct boxes than anchors: spread copies over scales so every anchor has a role.
    points = wh
    while len(np.unique(points, axis=0)) < n:
        points = np.concatenate([points, points * 0.7, points * 1.4])
    anchors = _evolve(wh, _kmeans_log(points, n, rng), rng)
    order = np.argsort(anchors.prod(axis=1))
    return anchors[order].astype(np.float32)

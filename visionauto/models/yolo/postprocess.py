"""From raw head outputs to detections: decode boxes, score = objectness x class, NMS."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from visionauto.models.yolo.loss import decode_boxes

# Candidates kept before NMS (by score): bounds NMS time when a threshold near 0 lets
# every prediction through (e.g. mAP evaluation at a low score threshold).
MAX_CANDIDATES = 10000


def decode_outputs(
    outputs: list[torch.Tensor], anchors: torch.Tensor, strides: tuple[int, ...]
) -> torch.Tensor:
    """Decode every prediction of every level into input pixels.

    Args:
        outputs: per level f32[B, A, H, W, 5 + C] raw head outputs.
        anchors: f32[L * A, 2] anchor sizes in input pixels, sorted by level.
        strides: stride of each level.

    Returns:
        f32[B, N, 5 + C]: ``(x0, y0, x1, y1, objectness, class probabilities...)``, boxes in
        pixels of the network input, probabilities after sigmoid; N = sum of A * H * W.
    """
    level_anchors = anchors.to(outputs[0].device, torch.float32).reshape(len(outputs), -1, 2)
    decoded = []
    for pred, stride, anchor in zip(outputs, strides, level_anchors, strict=True):
        pred = pred.float()
        batch, num_anchors, height, width, channels = pred.shape
        ys = torch.arange(height, device=pred.device, dtype=torch.float32)
        xs = torch.arange(width, device=pred.device, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] (x, y)
        box = decode_boxes(pred[..., :4], (anchor / stride).view(1, num_anchors, 1, 1, 2))
        centre = (box[..., :2] + grid) * stride
        size = box[..., 2:] * stride
        xyxy = torch.cat((centre - size / 2, centre + size / 2), dim=-1)
        decoded.append(torch.cat((xyxy, pred[..., 4:].sigmoid()), dim=-1).view(batch, -1, channels))
    return torch.cat(decoded, dim=1)


def select_detections(
    decoded: torch.Tensor,
    *,
    score_thresh: float,
    iou_thresh: float,
    max_detections: int,
) -> list[dict[str, torch.Tensor]]:
    """Per image: every (box, class) pair with objectness x class prob > ``score_thresh``,
    class-aware NMS at ``iou_thresh``, best ``max_detections`` kept.

    Args:
        decoded: f32[B, N, 5 + C] from :func:`decode_outputs`.

    Returns:
        One dict per image: ``boxes`` f32[K, 4] XYXY input pixels, ``scores`` f32[K],
        ``labels`` i64[K] (0-based), sorted by descending score.
    """
    results = []
    for rows in decoded:
        scores = rows[:, 4:5] * rows[:, 5:]  # [N, C]
        box_idx, labels = (scores > score_thresh).nonzero(as_tuple=True)
        values = scores[box_idx, labels]
        if len(values) > MAX_CANDIDATES:
            values, top = values.topk(MAX_CANDIDATES)
            box_idx, labels = box_idx[top], labels[top]
        boxes = rows[box_idx, :4]
        keep = batched_nms(boxes, values, labels, iou_thresh)[:max_detections]
        results.append({"boxes": boxes[keep], "scores": values[keep], "labels": labels[keep]})
    return results

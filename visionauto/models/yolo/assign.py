"""Target assignment: which predictions (image, anchor, cell) learn which ground-truth box.

Rules (one level at a time, all boxes of the batch at once, no Python loop over boxes):

1. Shape match: a box is matched to an anchor of the level when neither side differs by more
   than ``ratio_threshold`` (4.0) from the anchor's side. The head predicts sizes in
   (0, 4) x anchor, so those are the anchors that can reach the box; a box may match several
   anchors and several levels, and a box no anchor of a level fits is not learned there.
2. Cells: the cell containing the box centre, plus the horizontally and the vertically
   neighbouring cell closest to the centre (left if the centre sits in the cell's left half,
   right otherwise; same for up/down). The head predicts centre offsets in (-0.5, 1.5) of a
   cell, so those neighbours can still reach the centre; three positives per match instead of
   one give the small datasets of AutoML more, and better balanced, box-regression signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LevelTargets:
    """Positives of one level; ``P`` rows, one per (box, anchor, cell) assignment.

    Attributes:
        image: i64[P] image index in the batch.
        anchor: i64[P] anchor index within the level (0..A-1).
        grid_y / grid_x: i64[P] cell row and column.
        box: f32[P, 4] target ``(cx, cy, w, h)`` in grid units, centre relative to the cell.
        label: i64[P] class index.
    """

    image: torch.Tensor
    anchor: torch.Tensor
    grid_y: torch.Tensor
    grid_x: torch.Tensor
    box: torch.Tensor
    label: torch.Tensor

    def flat_index(self, num_anchors: int, height: int, width: int) -> torch.Tensor:
        """i64[P] index into a flattened ``[B, A, H, W]`` tensor."""
        return (
            (self.image * num_anchors + self.anchor) * height + self.grid_y
        ) * width + self.grid_x


def assign_level(
    boxes: torch.Tensor,
    anchors: torch.Tensor,
    grid_size: tuple[int, int],
    ratio_threshold: float = 4.0,
) -> LevelTargets:
    """Assign boxes to the anchors and cells of one feature level.

    Args:
        boxes: f32[M, 6] rows ``(image_index, class, cx, cy, w, h)`` with the box in grid units
            of this level (pixels / stride).
        anchors: f32[A, 2] anchor ``(w, h)`` in grid units of this level.
        grid_size: ``(H, W)`` cells of the level.
        ratio_threshold: largest side ratio box/anchor (either way) that still matches.

    Returns:
        The positives (see :class:`LevelTargets`); empty tensors when nothing matches.
    """
    height, width = grid_size
    wh = boxes[:, 4:6]
    ratio = wh[:, None, :] / anchors[None, :, :]
    worst = torch.maximum(ratio, 1.0 / ratio).amax(dim=2)  # [M, A]
    box_idx, anchor_idx = (worst < ratio_threshold).nonzero(as_tuple=True)
    centre = boxes[box_idx, 2:4]  # [P0, 2] (x, y)
    frac = centre - centre.floor()
    limits = centre.new_tensor((width, height))
    low = (frac < 0.5) & (centre > 1.0)  # neighbour to the left / above exists and is closer
    high = (frac >= 0.5) & (limits - centre > 1.0)  # neighbour to the right / below
    step = low.long() * -1 + high.long()  # [P0, 2] in {-1, 0, 1}
    has_x, has_y = step[:, 0] != 0, step[:, 1] != 0
    rows = torch.arange(len(box_idx), device=boxes.device)
    pick = torch.cat((rows, rows[has_x], rows[has_y]))
    offset = torch.zeros(len(pick), 2, dtype=torch.long, device=boxes.device)
    n, nx = len(rows), int(has_x.sum())
    offset[n : n + nx, 0] = step[has_x, 0]
    offset[n + nx :, 1] = step[has_y, 1]
    cell = centre[pick].floor().long() + offset
    cell[:, 0].clamp_(0, width - 1)
    cell[:, 1].clamp_(0, height - 1)
    chosen = box_idx[pick]
    box = torch.cat((centre[pick] - cell.to(centre.dtype), wh[chosen]), dim=1)
    return LevelTargets(
        image=boxes[chosen, 0].long(),
        anchor=anchor_idx[pick],
        grid_y=cell[:, 1],
        grid_x=cell[:, 0],
        box=box,
        label=boxes[chosen, 1].long(),
    )


def targets_to_rows(
    targets: list[dict[str, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image targets into ``(image_index, class, cx, cy, w, h)`` rows, in pixels.

    Args:
        targets: one dict per image with ``boxes`` f32[N, 4] XYXY pixels of the network input,
            ``labels`` i64[N] and optionally ``iscrowd`` i64[N].

    Returns:
        ``(objects f32[M, 6], crowd f32[K, 6])``: crowd boxes are kept apart (they only mask
        the objectness loss, they are never positives).
    """
    rows = []
    for index, target in enumerate(targets):
        boxes = target["boxes"].to(torch.float32).reshape(-1, 4)
        labels = target["labels"].to(torch.float32).reshape(-1, 1)
        labels = labels.to(boxes.device)
        crowd = target.get("iscrowd")
        if crowd is None:
            crowd = torch.zeros(len(boxes), device=boxes.device)
        crowd = crowd.to(boxes.device, torch.float32)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        size = boxes[:, 2:] - boxes[:, :2]
        image = torch.full((len(boxes), 1), float(index), device=boxes.device)
        rows.append(torch.cat((image, labels, centre, size, crowd.reshape(-1, 1)), dim=1))
    table = torch.cat(rows) if rows else torch.zeros(0, 7)
    table = table[(table[:, 4] > 0) & (table[:, 5] > 0)]
    is_crowd = table[:, 6] > 0
    return table[~is_crowd, :6], table[is_crowd, :6]

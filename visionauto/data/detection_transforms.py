"""Azure's R-CNN family presets for detection and instance segmentation (spec §1.8).

Train: random crop that keeps boxes (SSD-style IoU crop), expand (zoom out onto an ImageNet-mean
canvas), horizontal flip. Validation, and training with ``apply_automl_train_augmentations:
false``: none of those. Azure's "normalize, resize" steps are not here on purpose: torchvision
detectors do both inside the model (``GeneralizedRCNNTransform``: ImageNet normalization and
``min_size`` / ``max_size`` resizing), so the pipeline ends with a float image in [0, 1].

Every geometric step is an exact pixel operation (crop, pad, flip; no resampling), applied
jointly to the image, the boxes and the masks, so masks stay aligned with boxes; after a crop,
boxes of objects with masks shrink to the visible part of the mask. A final
``SanitizeBoundingBoxes`` drops boxes the crop removed or cut below one pixel, together with
their ``labels``, ``iscrowd`` and masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from visionauto.data.transforms import IMAGENET_MEAN

# Keys of a target dict that hold one value per box (sanitized together with the boxes).
PER_OBJECT_KEYS = ("labels", "iscrowd", "area")
# Zoom-out canvas: the ImageNet mean, so the padding normalizes to ~0 inside the detector.
IMAGENET_MEAN_UINT8 = tuple(round(255 * m) for m in IMAGENET_MEAN)
IOU_CROP_PROBABILITY = 0.5
ZOOM_OUT_PROBABILITY = 0.5
# At most twice the side: a 4x canvas (SSD's default) shrinks objects past what a detector
# resizing the image to min_size 600 can still see.
ZOOM_OUT_SIDE_RANGE = (1.0, 2.0)


class RandomIoUCropWithBoxes(v2.RandomIoUCrop):
    """``v2.RandomIoUCrop`` applied with probability ``p``, and never to images without boxes.

    ``RandomIoUCrop`` always crops (except when it draws its "leave as is" option) and, with no
    boxes, searches in vain for a crop containing a box center; negatives are left unchanged.
    Boxes whose center falls outside the crop are zeroed (removed by a later
    ``SanitizeBoundingBoxes``); boxes the crop cuts are clipped to it and, when the target has
    ``masks``, shrunk to their mask's visible extent (:func:`shrink_boxes_to_masks`).
    """

    def __init__(self, p: float = IOU_CROP_PROBABILITY, **kwargs: Any) -> None:
        """Args: p: probability of cropping; kwargs: ``v2.RandomIoUCrop`` options."""
        super().__init__(**kwargs)
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(1).item() >= self.p:
            return {}
        boxes = [x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)]
        if not boxes or boxes[0].shape[0] == 0:
            return {}
        return super().make_params(flat_inputs)

    def forward(self, *inputs: Any) -> Any:
        outputs = super().forward(*inputs)
        target = _target_dict(outputs)
        if target is not None and isinstance(target.get("masks"), tv_tensors.Mask):
            before = _target_dict(inputs if len(inputs) > 1 else inputs[0])
            if before is not None and before["boxes"].canvas_size != target["boxes"].canvas_size:
                target["boxes"] = shrink_boxes_to_masks(target["boxes"], target["masks"])
        return outputs


def shrink_boxes_to_masks(
    boxes: tv_tensors.BoundingBoxes, masks: torch.Tensor
) -> tv_tensors.BoundingBoxes:
    """Shrink each box to the extent of its mask (never grow it).

    A crop clips a box to the crop window, but the visible part of a non-rectangular object can
    be much smaller (a window over one corner of a diagonal object's box holds little of the
    object, yet the clipped box fills the corner). With masks
    the tight box is known, so the box targets stay aligned with the masks. An empty mask gives
    an empty box, which ``SanitizeBoundingBoxes`` removes with its object.

    Args:
        boxes: ``BoundingBoxes f32[N, 4]`` (any format) on the masks' canvas.
        masks: ``u8/bool[N, H, W]`` instance masks.

    Returns:
        ``BoundingBoxes f32[N, 4]`` in the boxes' format.
    """
    if boxes.shape[0] == 0 or masks.shape[0] != boxes.shape[0]:
        return boxes
    xyxy = F.convert_bounding_box_format(
        boxes.as_subclass(torch.Tensor), old_format=boxes.format, new_format="XYXY"
    )
    present = masks.as_subclass(torch.Tensor).bool()
    extent = torch.zeros_like(xyxy)
    for axis, (low, high) in ((1, (0, 2)), (2, (1, 3))):  # columns -> x, rows -> y
        hits = present.any(dim=axis).to(torch.uint8)  # [N, W] or [N, H]
        size = hits.shape[1]
        extent[:, low] = hits.argmax(dim=1).to(xyxy.dtype)
        extent[:, high] = (size - hits.flip(dims=(1,)).argmax(dim=1)).to(xyxy.dtype)
    empty = ~present.flatten(1).any(dim=1)
    extent[empty] = 0.0
    tight = torch.cat([torch.maximum(xyxy[:, :2], extent[:, :2]),
                       torch.minimum(xyxy[:, 2:], extent[:, 2:])], dim=1)  # fmt: skip
    tight[empty] = 0.0
    tight = F.convert_bounding_box_format(tight, old_format="XYXY", new_format=boxes.format)
    return tv_tensors.wrap(tight, like=boxes)


def _target_dict(sample: Any) -> dict[str, Any] | None:
    if isinstance(sample, (tuple, list)):
        sample = next((x for x in sample if isinstance(x, dict)), None)
    if isinstance(sample, dict) and isinstance(sample.get("boxes"), tv_tensors.BoundingBoxes):
        return sample
    return None


def per_object_tensors(inputs: Any) -> tuple[torch.Tensor, ...]:
    """``labels_getter`` of ``SanitizeBoundingBoxes`` for our samples.

    Args:
        inputs: the transform's input: ``(image, target)`` or one dict holding the boxes.

    Returns:
        The target's per-object tensors (``labels``, ``iscrowd``, ``area`` when present) so
        they are filtered together with the boxes (masks are filtered by torchvision itself).
    """
    target = inputs
    if isinstance(inputs, (tuple, list)):
        target = next((x for x in inputs if isinstance(x, dict)), {})
    if not isinstance(target, dict):
        return ()
    return tuple(
        target[key]
        for key in PER_OBJECT_KEYS
        if isinstance(target.get(key), torch.Tensor)
        and not isinstance(target[key], tv_tensors.TVTensor)
    )


def build_detection_transforms(*, train: bool, augment: bool) -> v2.Transform:
    """Build the R-CNN family pipeline of training or validation.

    Args:
        train: training pipeline (True) or validation / inference pipeline (False).
        augment: with ``train``: Azure's augmentations (IoU crop with p=0.5, zoom out to
            1-2x with p=0.5 on an ImageNet-mean canvas, horizontal flip with p=0.5). False
            (``apply_automl_train_augmentations: false``) keeps the geometry unchanged.

    Returns:
        A v2 transform mapping ``(image u8[3, H, W], target)`` from ``DetectionDataset.load``
        to ``(image f32[3, H', W'] in [0, 1], target)`` with boxes / masks in the new frame and
        degenerate boxes removed with their labels, crowd flags and masks. Not normalized and
        not resized: the detector's ``GeneralizedRCNNTransform`` does both.
    """
    steps: list[v2.Transform] = []
    if train and augment:
        steps = [
            RandomIoUCropWithBoxes(p=IOU_CROP_PROBABILITY),
            v2.RandomZoomOut(
                fill={tv_tensors.Image: IMAGENET_MEAN_UINT8, tv_tensors.Mask: 0},
                side_range=ZOOM_OUT_SIDE_RANGE,
                p=ZOOM_OUT_PROBABILITY,
            ),
            v2.RandomHorizontalFlip(p=0.5),
        ]
    return v2.Compose(
        [
            *steps,
            v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes(labels_getter=per_object_tensors),
        ]
    )

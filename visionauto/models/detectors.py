"""Detectors: the :class:`Detector` contract, and torchvision's Faster R-CNN, RetinaNet and
Mask R-CNN behind it.

Contract (every detector, YOLO included)::

    model.train(); losses = model(images, targets)    # dict[str, scalar Tensor]; sum = the loss
    model.eval();  preds = model(images)               # list[dict], one per image

``images``: list of ``f32[3,H,W]`` in [0, 1], NOT normalized (each detector normalizes and
resizes internally). ``targets``: list of ``{"boxes": f32[N,4] XYXY pixels, "labels": i64[N]
0-based, "iscrowd": i64[N] (optional), "masks": u8[N,H,W] (Mask R-CNN)}``. ``preds``:
``{"boxes": f32[K,4] XYXY pixels of the input image, "scores": f32[K], "labels": i64[K] 0-based}``
and, for Mask R-CNN, ``"masks": f32[K,1,H,W]`` pixel probabilities.

Class indices are 0-based outside the models; torchvision's R-CNNs reserve index 0 for the
background, so their labels are shifted by one inside (RetinaNet has no background class).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from visionauto.errors import ConfigError, ModelError

FAMILIES = ("fasterrcnn", "retinanet", "maskrcnn")
FAMILY_TITLES = {"fasterrcnn": "Faster R-CNN", "retinanet": "RetinaNet", "maskrcnn": "Mask R-CNN"}
# Azure runtime short names of the inference settings (spec §1.3, §1.4); ``img_size`` is YOLO's.
INFERENCE_SETTING_NAMES = (
    "box_score_thresh",
    "nms_iou_thresh",
    "box_detections_per_img",
    "min_size",
    "max_size",
    "img_size",
)
# Azure's defaults for the torchvision family (torchvision's own are 800 / 0.05 / 100 or 300).
RCNN_DEFAULT_SETTINGS: dict[str, Any] = {
    "min_size": 600,
    "max_size": 1333,
    "box_score_thresh": 0.3,
    "nms_iou_thresh": 0.5,
    "box_detections_per_img": 100,
}
# The v1 runtime's name of the R-CNN NMS threshold (spec §1.6).
SETTING_ALIASES = {"box_nms_thresh": "nms_iou_thresh"}


def validate_inference_setting(name: str, value: Any) -> Any:
    """Check one inference setting and return it in its canonical type.

    ``min_size`` may be one size or a sequence (several sizes: multi-scale training; inference
    uses the last one).

    Raises:
        ConfigError: the value is out of range or of the wrong type.
    """
    if name in ("box_score_thresh", "nms_iou_thresh"):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
        expected = "a number in [0, 1]"
        result: Any = float(value) if ok else None
    elif name == "min_size" and isinstance(value, list | tuple):
        ok = len(value) > 0 and all(_positive_int(v) for v in value)
        expected = "a positive integer or a list of them"
        result = tuple(int(v) for v in value) if ok else None
    else:
        ok = _positive_int(value)
        expected = "a positive integer"
        result = int(value) if ok else None
    if not ok:
        raise ConfigError(f"Inference setting {name}={value!r} is invalid: expected {expected}.")
    return result


def _positive_int(value: Any) -> bool:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return integral and not isinstance(value, bool) and value >= 1


class Detector(nn.Module, ABC):
    """Base class of every detector (torchvision family, YOLO); see the module docstring.

    Attributes:
        num_classes: number of object classes (labels are ``0 .. num_classes - 1``).
    """

    num_classes: int

    @abstractmethod
    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Train mode with targets: scalar losses. Eval mode: one prediction dict per image.

        Args:
            images: ``f32[3,H,W]`` in [0, 1], sizes may differ.
            targets: one dict per image (``boxes`` f32[N,4] XYXY pixels, ``labels`` i64[N]
                0-based, optional ``iscrowd`` i64[N], ``masks`` u8[N,H,W] for Mask R-CNN).
        """

    @abstractmethod
    def set_inference_settings(self, **settings: Any) -> None:
        """Apply Azure inference settings (short names); names this family lacks are ignored."""

    @abstractmethod
    def inference_settings(self) -> dict[str, Any]:
        """The current values of the settings this detector uses."""


class TorchvisionDetector(Detector):
    """torchvision's Faster R-CNN / RetinaNet / Mask R-CNN with 0-based labels and Azure settings.

    Build it with :func:`visionauto.models.registry.create_model`. Parameters live under ``net.``
    with torchvision's names (``net.backbone.body.layer1...``, ``net.roi_heads.box_predictor...``).

    Attributes:
        net: the torchvision model.
        family: ``"fasterrcnn"``, ``"retinanet"`` or ``"maskrcnn"``.
        num_classes: number of object classes.
        freeze_bn: keep the backbone's BatchNorm layers in eval mode with frozen affine parameters
            (pretrained backbones, as torchvision's ``FrozenBatchNorm2d``: detection batches of 2
            images are too small for batch statistics).
    """

    _SETTINGS = (
        "box_score_thresh",
        "nms_iou_thresh",
        "box_detections_per_img",
        "min_size",
        "max_size",
    )
    # Azure name → attribute of the post-processor (roi_heads for R-CNN, the model for RetinaNet).
    _POSTPROCESS_ATTRS = {
        "box_score_thresh": "score_thresh",
        "nms_iou_thresh": "nms_thresh",
        "box_detections_per_img": "detections_per_img",
    }

    def __init__(self, net: nn.Module, *, family: str, num_classes: int, freeze_bn: bool) -> None:
        super().__init__()
        assert family in FAMILIES, family  # the registry only builds these
        self.net = net
        self.family = family
        self.num_classes = num_classes
        self.freeze_bn = freeze_bn
        # R-CNN classifiers have a background class at index 0; RetinaNet's sigmoid heads do not.
        self._label_offset = 0 if family == "retinanet" else 1
        if freeze_bn:
            for module in self._backbone_norms():
                for param in module.parameters():
                    param.requires_grad_(False)

    def _backbone_norms(self) -> list[nn.Module]:
        return [
            m
            for m in self.net.backbone.body.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    def train(self, mode: bool = True) -> TorchvisionDetector:
        """Set train/eval mode; frozen BatchNorm layers stay in eval mode."""
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self._backbone_norms():
                module.eval()
        return self

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """See :meth:`Detector.forward`; in eval mode ``targets`` are ignored."""
        if self.training:
            if targets is None:
                raise ValueError("a detector in train mode needs targets; call .eval() to predict")
            return self.net(list(images), [self._to_internal(t) for t in targets])
        return [self._to_external(p) for p in self.net(list(images))]

    def _to_internal(self, target: dict[str, Tensor]) -> dict[str, Tensor]:
        """0-based labels → the model's labels; crowd regions and empty boxes are left out.

        Crowd regions are not trained on (as torchvision's COCO reference); boxes of zero width or
        height, e.g. left by a crop, would make torchvision raise.
        """
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.int64, device=boxes.device)
        labels = labels.reshape(-1)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if "iscrowd" in target:
            keep &= torch.as_tensor(target["iscrowd"], device=boxes.device).reshape(-1) == 0
        labels = labels[keep]
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ModelError(
                f"Target labels {labels.unique().tolist()} are outside 0..{self.num_classes - 1}: "
                f"the model was built for {self.num_classes} classes. Fix: build it with "
                "num_classes=len(class_names) of the dataset."
            )
        internal = {"boxes": boxes[keep], "labels": labels + self._label_offset}
        if self.family == "maskrcnn":
            if "masks" not in target:
                raise ModelError(
                    "Mask R-CNN needs instance masks in its targets: build the dataset with "
                    "masks=True (task=instance_segmentation with polygon labels)."
                )
            internal["masks"] = torch.as_tensor(target["masks"], dtype=torch.uint8)[keep]
        return internal

    def _to_external(self, prediction: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(prediction)
        out["labels"] = prediction["labels"] - self._label_offset
        return out

    def _postprocessor(self) -> nn.Module:
        return self.net if self.family == "retinanet" else self.net.roi_heads

    def set_inference_settings(self, **settings: Any) -> None:
        """Apply ``box_score_thresh``, ``nms_iou_thresh`` (alias ``box_nms_thresh``),
        ``box_detections_per_img``, ``min_size``, ``max_size``; ``None`` values and other names
        (e.g. YOLO's ``img_size``) are ignored.

        Raises:
            ConfigError: a value is out of range.
        """
        for name, value in settings.items():
            name = SETTING_ALIASES.get(name, name)
            if value is None or name not in self._SETTINGS:
                continue
            value = validate_inference_setting(name, value)
            if name == "min_size":
                self.net.transform.min_size = value if isinstance(value, tuple) else (value,)
            elif name == "max_size":
                self.net.transform.max_size = value
            else:
                setattr(self._postprocessor(), self._POSTPROCESS_ATTRS[name], value)

    def inference_settings(self) -> dict[str, Any]:
        """``{"box_score_thresh", "nms_iou_thresh", "box_detections_per_img", "min_size",
        "max_size"}``; ``min_size`` is an int, or a list when several sizes are set."""
        post = self._postprocessor()
        min_size = tuple(self.net.transform.min_size)
        return {
            "box_score_thresh": float(post.score_thresh),
            "nms_iou_thresh": float(post.nms_thresh),
            "box_detections_per_img": int(post.detections_per_img),
            "min_size": min_size[0] if len(min_size) == 1 else list(min_size),
            "max_size": int(self.net.transform.max_size),
        }

"""``YoloDetector``: the YOLOv5-style network behind the :class:`Detector` contract.

The detector letterboxes internally (as torchvision's R-CNNs resize internally): ``forward``
takes images of any size in [0, 1]; eval mode returns boxes in each input image's pixels.

- Train mode: each image is letterboxed to ``img_size`` (with ``multi_scale``: one random size
  per batch in [0.5, 1.5] x ``img_size``, a multiple of 32), boxes follow, and the losses of
  :mod:`.loss` come back as ``{"loss_box", "loss_obj", "loss_cls"}`` (weighted; sum = loss).
- Eval mode: letterbox to ``img_size``, run the EMA weights (once :meth:`after_optimizer_step`
  has run at least once, else the raw weights) with batch norm folded into the convolutions,
  keep (box, class) pairs with objectness x class probability > ``box_score_thresh``,
  class-aware NMS at ``nms_iou_thresh``, at most ``box_detections_per_img`` per image.

Parameters: ``model.`` (the trained network; backbone layers ``model.backbone.0.`` …
``model.backbone.9.`` for the CSP backbone), ``ema.`` (the average, ``requires_grad=False``),
buffers ``anchors`` f32[9, 2] (pixels at ``img_size``) and ``ema_updates``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visionauto.data.yolo_transforms import letterbox, unletterbox_boxes
from visionauto.errors import ConfigError, ModelError
from visionauto.models.detectors import SETTING_ALIASES, Detector, validate_inference_setting
from visionauto.models.yolo.anchors import default_anchors
from visionauto.models.yolo.blocks import fuse_conv_bn
from visionauto.models.yolo.ema import (
    EMA_DECAY,
    EMA_RAMP_UPDATES,
    ema_decay,
    ema_schedule,
    make_ema_copy,
    update_ema,
)
from visionauto.models.yolo.loss import YoloLoss
from visionauto.models.yolo.net import MODEL_SIZES, SIZE_ALIASES, STRIDES, YoloNet
from visionauto.models.yolo.postprocess import decode_outputs, select_detections

MAX_STRIDE = max(STRIDES)
MULTI_SCALE_RANGE = (0.5, 1.5)
DEFAULT_SETTINGS: dict[str, Any] = {
    "box_score_thresh": 0.1,
    "nms_iou_thresh": 0.5,
    "box_detections_per_img": 100,
}
_SETTINGS = ("box_score_thresh", "nms_iou_thresh", "box_detections_per_img", "img_size")
# The yolo v1 runtime's name of the NMS threshold (spec §1.6).
_ALIASES = {**SETTING_ALIASES, "box_iou_thresh": "nms_iou_thresh"}


def round_image_size(size: int) -> int:
    """``size`` rounded up to a multiple of the largest stride (32), at least 32."""
    return max(MAX_STRIDE, int(math.ceil(size / MAX_STRIDE)) * MAX_STRIDE)


def canonical_model_size(model_size: str) -> str:
    """``"xlarge"`` → ``"extra_large"``; any other unknown size raises.

    Raises:
        ConfigError: not one of nano, small, medium, large, extra_large (xlarge).
    """
    name = SIZE_ALIASES.get(model_size, model_size)
    if name not in MODEL_SIZES:
        raise ConfigError(
            f"yolov5 model_size={model_size!r} is unknown. Fix: use one of small, medium, large, "
            "extra_large (alias xlarge), or nano (a smaller CPU size beyond Azure's list)."
        )
    return name


class YoloDetector(Detector):
    """YOLOv5-style detector (clean-room; see the package docstring). Build with
    :func:`visionauto.models.yolo.build_yolov5`.

    Attributes:
        num_classes: object classes.
        model_size: canonical size name (``"medium"``, ...).
        backbone_name: ``"csp"`` or ``"efficientnet_lite0"``.
        img_size: network input side (multiple of 32) for training and inference.
        multi_scale: random input size per training batch.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        model_size: str = "medium",
        img_size: int = 640,
        multi_scale: bool = False,
        backbone: str = "csp",
        anchors: np.ndarray | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.model_size = canonical_model_size(model_size)
        self.backbone_name = backbone
        self.img_size = round_image_size(img_size)
        self.multi_scale = multi_scale
        net = YoloNet(num_classes, MODEL_SIZES[self.model_size], backbone=backbone)
        # channels_last: oneDNN's (CPU) and cuDNN's fastest convolution layout.
        self.model = net.to(memory_format=torch.channels_last)
        self.ema = make_ema_copy(self.model)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.ema_decay_max, self.ema_ramp = EMA_DECAY, EMA_RAMP_UPDATES
        anchors = default_anchors(self.img_size) if anchors is None else anchors
        self.register_buffer("anchors", torch.as_tensor(np.asarray(anchors), dtype=torch.float32))
        if tuple(self.anchors.shape) != (9, 2):
            raise ConfigError(
                f"yolov5 anchors must be 9 (width, height) pairs, got shape "
                f"{tuple(self.anchors.shape)}. Fix: pass fit_anchors(box_wh, n=9)."
            )
        self.loss_fn = YoloLoss(num_classes, STRIDES)
        self.settings = dict(DEFAULT_SETTINGS)
        self._drop_fused()

    # ----------------------------------------------------------------- contract
    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Train mode: losses. Eval mode: detections in input-image pixels (see module doc).

        Args:
            images: ``f32[3, H, W]`` in [0, 1], sizes may differ.
            targets: train mode only: ``boxes`` f32[N, 4] XYXY input pixels, ``labels`` i64[N]
                0-based, optional ``iscrowd`` i64[N] (crowd boxes are ignored in the loss).
        """
        if self.training:
            if targets is None:
                raise ValueError("a detector in train mode needs targets; call .eval() to predict")
            return self._losses(images, targets)
        return self._predict(images)

    def set_inference_settings(self, **settings: Any) -> None:
        """Apply ``box_score_thresh``, ``nms_iou_thresh`` (aliases ``box_iou_thresh``,
        ``box_nms_thresh``), ``box_detections_per_img`` and ``img_size`` (rounded up to a
        multiple of 32); ``None`` values and other names are ignored.

        Raises:
            ConfigError: a value is out of range.
        """
        for name, value in settings.items():
            name = _ALIASES.get(name, name)
            if value is None or name not in _SETTINGS:
                continue
            value = validate_inference_setting(name, value)
            if name == "img_size":
                self.img_size = round_image_size(value)
            else:
                self.settings[name] = value

    def inference_settings(self) -> dict[str, Any]:
        """``{"img_size", "model_size", "box_score_thresh", "nms_iou_thresh",
        "box_detections_per_img"}`` (spec §4.4's yolov5 keys plus the detections cap)."""
        return {"img_size": self.img_size, "model_size": self.model_size, **self.settings}

    # ---------------------------------------------------------------- training
    def fit_ema_to_schedule(self, total_updates: int) -> None:
        """Scale the EMA's decay and ramp to a run of ``total_updates`` optimizer steps (see
        :func:`visionauto.models.yolo.ema.ema_schedule`); call before training."""
        self.ema_decay_max, self.ema_ramp = ema_schedule(total_updates)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Update the EMA weights; call once after every optimizer step."""
        self.ema_updates += 1
        decay = ema_decay(int(self.ema_updates), self.ema_decay_max, self.ema_ramp)
        update_ema(self.ema, self.model, decay)
        self._drop_fused()

    def optimizer_parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Trainable parameters in two groups: conv weights with ``weight_decay``, batch-norm
        weights and biases without (decaying them only pulls activations toward 0)."""
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (decay if param.ndim > 1 else no_decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def _train_size(self) -> int:
        if not self.multi_scale:
            return self.img_size
        low = math.ceil(MULTI_SCALE_RANGE[0] * self.img_size / MAX_STRIDE)
        high = math.floor(MULTI_SCALE_RANGE[1] * self.img_size / MAX_STRIDE)
        return MAX_STRIDE * int(torch.randint(max(low, 1), max(high, 1) + 1, (1,)))

    def _losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        size = self._train_size()
        pixels, moved = [], []
        for image, target in zip(images, targets, strict=True):
            self._check_labels(target["labels"])
            boxed, new_target, _ = letterbox(image, {"boxes": target["boxes"]}, size)
            assert new_target is not None
            pixels.append(boxed)
            entry = {"boxes": new_target["boxes"], "labels": target["labels"]}
            if "iscrowd" in target:
                entry["iscrowd"] = target["iscrowd"]
            moved.append(entry)
        batch = torch.stack(pixels).contiguous(memory_format=torch.channels_last)
        return self.loss_fn(self.model(batch), moved, self.anchors)

    def _check_labels(self, labels: Tensor) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ModelError(
                f"Target labels {labels.unique().tolist()} are outside 0..{self.num_classes - 1}: "
                f"the model was built for {self.num_classes} classes. Fix: build it with "
                "num_classes=len(class_names) of the dataset."
            )

    # --------------------------------------------------------------- inference
    def _predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        if not images:
            return []
        boxed = [letterbox(image, None, self.img_size) for image in images]
        batch = torch.stack([b[0] for b in boxed]).contiguous(memory_format=torch.channels_last)
        decoded = decode_outputs(self._inference_net()(batch), self.anchors, STRIDES)
        detections = select_detections(
            decoded,
            score_thresh=self.settings["box_score_thresh"],
            iou_thresh=self.settings["nms_iou_thresh"],
            max_detections=self.settings["box_detections_per_img"],
        )
        for det, (_, _, info) in zip(detections, boxed, strict=True):
            det["boxes"] = unletterbox_boxes(det["boxes"], info)
        return detections

    def _inference_net(self) -> nn.Module:
        """The EMA network (raw one before any EMA update), batch norm folded, cached while the
        weights do not change (train(), EMA updates, loading and moving drop the cache)."""
        source = self.ema if int(self.ema_updates) > 0 else self.model
        cached = self.__dict__["_fused"]
        if cached is None or cached[0] is not source:
            fused = fuse_conv_bn(copy.deepcopy(source).eval())
            cached = (source, fused)
            # Set through __dict__: a registered submodule would land in the state dict.
            self.__dict__["_fused"] = cached
        return cached[1]

    def _drop_fused(self) -> None:
        self.__dict__["_fused"] = None

    def train(self, mode: bool = True) -> YoloDetector:
        """Set train/eval mode; the EMA copy always stays in eval mode (it is never trained)."""
        super().train(mode)
        self.ema.eval()
        self._drop_fused()
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> YoloDetector:
        self._drop_fused()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._drop_fused()
        super()._load_from_state_dict(*args, **kwargs)

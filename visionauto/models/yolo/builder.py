"""``build_yolov5``: the registry's builder for ``yolov5`` (spec §1.4 options, weights)."""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch

from visionauto.errors import ConfigError, ModelError
from visionauto.models.detectors import validate_inference_setting
from visionauto.models.weights import (
    _strip_prefix,
    load_efficientnet_lite0_imagenet,
    read_state_dict,
)
from visionauto.models.yolo.detector import YoloDetector
from visionauto.models.yolo.net import EfficientNetLiteBackbone

BACKBONES = ("csp", "efficientnet_lite0")
_HEAD_MARK = ".head.convs."


def build_yolov5(
    num_classes: int,
    *,
    model_size: str = "medium",
    img_size: int = 640,
    multi_scale: bool = False,
    backbone: str = "csp",
    pretrained: bool = False,
    weights_path: str | None = None,
    anchors: np.ndarray | None = None,
    **settings: Any,
) -> YoloDetector:
    """Build the YOLOv5-style detector (clean-room; no Ultralytics code or weights).

    Args:
        num_classes: object classes (labels ``0 .. num_classes - 1``), >= 1.
        model_size: ``small``, ``medium``, ``large``, ``extra_large`` (alias ``xlarge``): depth
            and width multiples 0.33/0.50, 0.67/0.75, 1.0/1.0, 1.33/1.25; ``nano`` (0.33/0.25)
            is an extra CPU-sized option beyond Azure's list.
        img_size: input side for training and inference (rounded up to a multiple of 32).
        multi_scale: train on a random size in [0.5, 1.5] x ``img_size`` per batch.
        backbone: ``"csp"`` (CSP-Darknet style, from scratch) or ``"efficientnet_lite0"``
            (timm ``tf_efficientnet_lite0``, whose ImageNet weights ship with the install).
        pretrained: start the backbone from ImageNet weights; only ``efficientnet_lite0`` has
            offline weights (the CSP backbone has none: YOLOv5's COCO weights are AGPL).
        weights_path: a local state dict of this detector (e.g. a visionauto checkpoint) to
            start from; head tensors of another class count keep their new init.
        anchors: f32[9, 2] anchor sizes in pixels at ``img_size`` (e.g. from
            :func:`visionauto.models.yolo.fit_anchors`); default: COCO anchors scaled.
        **settings: inference settings (``box_score_thresh`` 0.1, ``nms_iou_thresh`` 0.5,
            ``box_detections_per_img`` 100); other names are ignored.

    Returns:
        The detector (:class:`YoloDetector`, a :class:`Detector`).

    Raises:
        ConfigError: bad model_size, backbone, img_size or setting value.
        ModelError: bad ``num_classes``, unavailable pretrained weights, or weights that do not
            fit.
    """
    if num_classes < 1:
        raise ModelError(f"num_classes={num_classes} for yolov5: the data must have a class.")
    if backbone not in BACKBONES:
        raise ConfigError(
            f"yolov5 backbone={backbone!r} is unknown. Fix: use one of {', '.join(BACKBONES)}."
        )
    img_size = validate_inference_setting("img_size", img_size)
    if img_size < 32:
        raise ConfigError(f"yolov5 img_size={img_size!r} is invalid: use an integer >= 32.")
    if pretrained and backbone == "csp" and weights_path is None:
        raise ModelError(
            "yolov5 with the CSP backbone has no pretrained weights: the original YOLOv5 COCO "
            "weights are AGPL-3.0 and are not used, and no ImageNet weights exist offline. Fix: "
            "set model.pretrained=false (train from scratch), or model=yolov5_efficientnet_lite0 "
            "(its ImageNet weights ship with the install), or "
            "model.weights_path=<a yolov5 checkpoint trained with visionauto>."
        )
    detector = YoloDetector(
        num_classes,
        model_size=model_size,
        img_size=img_size,
        multi_scale=bool(multi_scale),
        backbone=backbone,
        anchors=anchors,
    )
    detector.set_inference_settings(**settings)
    if weights_path is not None:
        load_detector_weights(detector, weights_path)
    elif pretrained:
        _load_efficientnet_imagenet(detector)
    return detector


def _load_efficientnet_imagenet(detector: YoloDetector) -> None:
    """Put the offline ImageNet weights of efficientnet_lite0 into the backbone (and its EMA)."""
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_efficientnet_lite0_imagenet(classifier)
    state = classifier.state_dict()
    for net in (detector.model, detector.ema):
        backbone = net.backbone
        assert isinstance(backbone, EfficientNetLiteBackbone)
        missing, _ = backbone.body.load_state_dict(state, strict=False)
        assert not missing, missing  # features_only keeps timm's names: all must be there


def load_detector_weights(detector: YoloDetector, path: str) -> None:
    """Load a state dict of a YoloDetector (prefixes like Lightning's ``model.`` are stripped).

    A file without EMA weights (``ema.``) gets them copied from ``model.`` with no EMA update
    counted; head tensors of another shape (another number of classes) keep their new init.

    Raises:
        ModelError: the file is unreadable or was saved from another backbone / model_size.
    """
    own = detector.state_dict()
    state = _strip_prefix(read_state_dict(path), set(own))
    if not any(key.startswith("ema.") for key in state):
        state.update(
            {"ema." + k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        )
        state["ema_updates"] = torch.zeros((), dtype=torch.long)
    wrong, skipped = [], []
    for key, value in list(state.items()):
        if key in own and value.shape != own[key].shape:
            (skipped if _HEAD_MARK in key else wrong).append(key)
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        examples = ", ".join((wrong + missing + unexpected)[:3])
        raise ModelError(
            f"Weights {path} do not fit yolov5 (model_size={detector.model_size}, backbone="
            f"{detector.backbone_name}): {len(wrong)} tensors of another shape, {len(missing)} "
            f"missing, {len(unexpected)} unexpected (e.g. {examples}). Fix: use the model_size "
            "and backbone the weights were trained with."
        )
    detector.load_state_dict(state)
    if skipped:
        # New classes: the fresh head needs its prior biases, not the pretrained values.
        detector.model.head.reset_biases()
        detector.ema.head.reset_biases()

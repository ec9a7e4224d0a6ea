"""Builds torchvision's Faster R-CNN, RetinaNet and Mask R-CNN on a torchvision ResNet or any timm
backbone, with their pretrained weights (spec §1.3, §1.5; stack-facts §7).

Initial weights, first that applies:

- ``weights_path``: a state dict of the whole detector or of its backbone classifier (see
  :mod:`visionauto.models.detector_weights`);
- ``pretrained`` and a ResNet-50 backbone: torchvision's COCO weights of the same model, with the
  class-specific last layers (box predictor, RetinaNet ``cls_logits``, Mask R-CNN
  ``mask_fcn_logits``) newly initialised for our classes, as detectron2 fine-tunes;
- ``pretrained`` otherwise: ImageNet weights of the backbone (torchvision's for ResNets, timm's for
  other backbones; ``efficientnet_lite0`` ships with the install and works offline).

A detector built from pretrained weights (``pretrained`` or ``weights_path``) freezes the
backbone's BatchNorm layers (``freeze_bn=True``) and its stem and first stage
(``trainable_backbone_layers=3``), as torchvision and Azure do; both options override that, e.g.
for a warm start from a checkpoint loaded after the build.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn
from torchvision import models as tv_models
from torchvision.models.detection import (
    FasterRCNN,
    FasterRCNN_ResNet50_FPN_Weights,
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_Weights,
    RetinaNet,
    RetinaNet_ResNet50_FPN_Weights,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from visionauto.errors import ModelError
from visionauto.models.detector_weights import (
    fetch_torchvision_state,
    load_backbone_state,
    load_detector_state,
    load_weights_file,
    timm_imagenet_state,
)
from visionauto.models.detectors import (
    FAMILY_TITLES,
    INFERENCE_SETTING_NAMES,
    RCNN_DEFAULT_SETTINGS,
    SETTING_ALIASES,
    TorchvisionDetector,
)
from visionauto.models.fpn_adapter import (
    FPN_CHANNELS,
    PyramidBackbone,
    build_resnet_fpn,
    build_timm_fpn,
    freeze_backbone_layers,
    rcnn_anchor_generator,
    retinanet_anchor_generator,
    roi_pooler,
)
from visionauto.models.registry import ModelSpec

_CLASSES = {"fasterrcnn": FasterRCNN, "retinanet": RetinaNet, "maskrcnn": MaskRCNN}
_COCO_WEIGHTS = {
    "fasterrcnn": FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
    "retinanet": RetinaNet_ResNet50_FPN_Weights.COCO_V1,
    "maskrcnn": MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
}
# Tensors that depend on the number of classes.
HEAD_PREFIXES = {
    "fasterrcnn": ("roi_heads.box_predictor.",),
    "retinanet": ("head.classification_head.cls_logits.",),
    "maskrcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
}
# Settings of other families (YOLO) that a sweep or a settings file may pass to any detector.
_OTHER_FAMILY_NAMES = {"img_size", "model_size", "multi_scale"}
# Constructor arguments the builder sets itself; RetinaNet's names of the inference settings are
# reached through the Azure names only, so that one value cannot be given twice.
_RESERVED = {
    "self",
    "backbone",
    "num_classes",
    "kwargs",
    "score_thresh",
    "nms_thresh",
    "detections_per_img",
}
_TRANSFORM_OPTIONS = ("size_divisible", "fixed_size")
# Width options of the neck and heads per family (ours, not torchvision's): FPN channels of a timm
# backbone, the R-CNN box head's hidden size, the Mask R-CNN mask head's conv width.
_WIDTH_OPTIONS = {
    "fasterrcnn": ("fpn_channels", "box_representation_size"),
    "maskrcnn": ("fpn_channels", "box_representation_size", "mask_head_channels"),
    "retinanet": ("fpn_channels",),
}
_TRAINABLE_DEFAULT_PRETRAINED = 3  # torchvision and Azure: stem and stage 1 frozen


def model_label(spec: ModelSpec) -> str:
    """How messages name a detector: ``'fasterrcnn_resnet18_fpn' (Faster R-CNN, resnet18)``."""
    source = "timm " if spec.backbone_source == "timm" else ""
    return f"{spec.name!r} ({FAMILY_TITLES[spec.builder_name]}, {source}{spec.backbone} backbone)"


def family_options(family: str) -> list[str]:
    """Keyword options ``create_model`` passes to torchvision's constructor for a family."""
    params = inspect.signature(_CLASSES[family].__init__).parameters
    names = [p for p in params if p not in _RESERVED and p not in RCNN_DEFAULT_SETTINGS]
    widths = _WIDTH_OPTIONS[family]
    return [*names, *_TRANSFORM_OPTIONS, *widths, "trainable_backbone_layers", "freeze_bn"]


def _split_kwargs(
    family: str, kwargs: dict[str, Any], label: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inference settings, constructor options); unknown names raise."""
    settings, options = {}, {}
    allowed = set(family_options(family))
    for name, value in kwargs.items():
        canonical = SETTING_ALIASES.get(name, name)
        if canonical in INFERENCE_SETTING_NAMES or name in _OTHER_FAMILY_NAMES:
            settings[canonical] = value  # the detector ignores names it has not
        elif name in allowed:
            options[name] = value
        else:
            raise ModelError(
                f"Unknown option {name}={value!r} for model {label}. Inference settings: "
                f"{', '.join(INFERENCE_SETTING_NAMES[:5])}; options: {', '.join(sorted(allowed))}."
            )
    return settings, options


def _build_backbone(spec: ModelSpec, label: str, channels: int | None) -> PyramidBackbone:
    if spec.backbone_source == "timm":
        return build_timm_fpn(
            spec.backbone, spec.builder_name, label=label, channels=channels or FPN_CHANNELS
        )
    if channels not in (None, FPN_CHANNELS):
        raise ModelError(
            f"fpn_channels={channels} for model {label}: ResNet detectors keep torchvision's "
            f"{FPN_CHANNELS}-channel FPN (so that COCO weights load). Fix: drop the option."
        )
    return build_resnet_fpn(spec.backbone, spec.builder_name)


def _width(options: dict[str, Any], name: str, label: str) -> int | None:
    value = options.pop(name, None)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 8):
        raise ModelError(f"{name}={value!r} for model {label} is invalid: expected an integer >= 8.")
    return value


def _rcnn_heads(
    family: str, channels: int, num_classes: int, representation: int | None, mask: int | None
) -> dict[str, Any]:
    """Constructor arguments for the R-CNN heads: torchvision's own (``num_classes`` only) unless a
    width is chosen, then the same layers at that width (box head hidden size, default 1024; mask
    head conv width, default 256). ``num_classes`` counts the background."""
    if representation is None and mask is None:
        return {"num_classes": num_classes}
    representation = representation or 1024
    heads: dict[str, Any] = {
        "box_head": TwoMLPHead(channels * 7 * 7, representation),
        "box_predictor": FastRCNNPredictor(representation, num_classes),
    }
    if family == "maskrcnn":
        mask = mask or 256
        heads["mask_head"] = MaskRCNNHeads(channels, (mask,) * 4, 1)
        heads["mask_predictor"] = MaskRCNNPredictor(mask, mask, num_classes)
    return heads


def _build_net(
    family: str,
    backbone: PyramidBackbone,
    num_classes: int,
    options: dict[str, Any],
    label: str,
) -> nn.Module:
    """torchvision's model on ``backbone``; anchors and RoI poolers follow its levels."""
    # Only the families that have these heads accept them (checked in _split_kwargs).
    representation = _width(options, "box_representation_size", label)
    mask = _width(options, "mask_head_channels", label)
    kwargs: dict[str, Any] = {
        "min_size": RCNN_DEFAULT_SETTINGS["min_size"],
        "max_size": RCNN_DEFAULT_SETTINGS["max_size"],
        "image_mean": list(backbone.image_mean),
        "image_std": list(backbone.image_std),
    }
    if family == "retinanet":
        kwargs["anchor_generator"] = retinanet_anchor_generator(backbone.strides)
        return RetinaNet(backbone.module, num_classes=num_classes, **(kwargs | options))
    kwargs["rpn_anchor_generator"] = rcnn_anchor_generator(backbone.strides)
    kwargs["box_roi_pool"] = roi_pooler(backbone.roi_names, 7)
    if family == "maskrcnn":
        kwargs["mask_roi_pool"] = roi_pooler(backbone.roi_names, 14)
    # R-CNN classifiers count the background as class 0.
    heads = _rcnn_heads(family, backbone.module.out_channels, num_classes + 1, representation, mask)
    return _CLASSES[family](backbone.module, **(kwargs | heads | options))


def _load_pretrained(net: nn.Module, spec: ModelSpec, label: str) -> None:
    family = spec.builder_name
    if spec.backbone_source == "timm":
        state = timm_imagenet_state(spec.backbone, model_label=label)
        load_backbone_state(net.backbone.body, state, source="timm", model_label=label)
    elif spec.backbone == "resnet50":
        weights = _COCO_WEIGHTS[family]
        state = fetch_torchvision_state(weights.url, what="COCO", model_label=label)
        load_detector_state(
            net,
            state,
            head_prefixes=HEAD_PREFIXES[family],
            source=weights.url,
            model_label=label,
            new_heads=True,
        )
    else:
        enum_name = spec.backbone.replace("resnet", "ResNet") + "_Weights"
        url = getattr(tv_models, enum_name).IMAGENET1K_V1.url
        state = fetch_torchvision_state(url, what="ImageNet backbone", model_label=label)
        load_backbone_state(net.backbone.body, state, source=url, model_label=label)


def _trainable_layers(value: Any, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise ModelError(
            f"trainable_backbone_layers={value!r} for model {label} is invalid: expected an "
            "integer in [0, 5] (5 = the whole backbone trains, 0 = frozen)."
        )
    return value


# Width, proposal and RoI budget of the detectors on timm backbones (not Azure's catalog: these
# are the CPU-friendly ones; ResNet detectors keep torchvision's layout so COCO weights load). On a
# CPU the neck and heads cost more than a light backbone: the 256-channel FPN and RPN convs at
# stride 4, RoI-align over 256 channels and the box head's 12544 x 1024 first layer times 512
# sampled RoIs per training image and 1000 test proposals. The proposal budget alone made training
# ~2x and inference ~3x faster; the widths below another ~3x (fridge photos at 320 px,
# efficientnet_lite0, 2 threads, batch 2: 1.4 -> 4.3 training images/s, 246 -> 83 ms per image;
# Mask R-CNN 0.9 -> 2.7 images/s; RetinaNet 2.4 -> 4.6 images/s). Caller options win.
_LIGHT_NECK = {"fpn_channels": 128}
LIGHT_RCNN_BUDGET: dict[str, int] = {
    **_LIGHT_NECK,
    "box_representation_size": 256,
    "box_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 1000,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 300,
}
LIGHT_BUDGET: dict[str, dict[str, int]] = {
    "fasterrcnn": LIGHT_RCNN_BUDGET,
    "maskrcnn": LIGHT_RCNN_BUDGET | {"mask_head_channels": 128},
    "retinanet": _LIGHT_NECK,
}


def build_torchvision_detector(
    spec: ModelSpec,
    *,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | None = None,
    **kwargs: Any,
) -> TorchvisionDetector:
    """Build a torchvision detector for ``num_classes`` object classes.

    Args:
        spec: the registry entry (``spec.source == "torchvision"``; ``builder_name`` is the family,
            ``backbone`` / ``backbone_source`` the backbone).
        num_classes: number of object classes, >= 1 (the background is not counted).
        pretrained: start from COCO (ResNet-50) or ImageNet-backbone weights.
        weights_path: a local state dict of this detector or of its backbone; wins over
            ``pretrained``.
        **kwargs: inference settings (``box_score_thresh``, ``nms_iou_thresh``,
            ``box_detections_per_img``, ``min_size``, ``max_size``; YOLO's ``img_size``,
            ``model_size``, ``multi_scale`` are ignored), ``trainable_backbone_layers`` (0-5;
            default 3 with pretrained weights, else 5), ``freeze_bn`` (keep the backbone's
            BatchNorm in eval mode; default: with pretrained weights), widths
            (``fpn_channels`` for timm backbones, ``box_representation_size``,
            ``mask_head_channels``; timm backbones default to :data:`LIGHT_BUDGET`) and
            torchvision's constructor options (``rpn_pre_nms_top_n_train``,
            ``box_batch_size_per_image``, ``topk_candidates``, ...).

    Returns:
        The detector (see :class:`visionauto.models.detectors.Detector` for its contract).

    Raises:
        ModelError: bad ``num_classes`` or option, or weights that cannot be had or do not fit.
    """
    label = model_label(spec)
    family = spec.builder_name
    if num_classes < 1:
        raise ModelError(
            f"num_classes={num_classes} for model {label}: the data must have at least one class."
        )
    trained = pretrained or weights_path is not None
    default_trainable = _TRAINABLE_DEFAULT_PRETRAINED if trained else 5
    trainable = _trainable_layers(kwargs.pop("trainable_backbone_layers", default_trainable), label)
    freeze_bn = kwargs.pop("freeze_bn", trained)
    if not isinstance(freeze_bn, bool):
        raise ModelError(
            f"freeze_bn={freeze_bn!r} for model {label} is invalid: expected true/false."
        )
    settings, options = _split_kwargs(family, kwargs, label)
    if spec.backbone_source == "timm":
        options = {**LIGHT_BUDGET[family], **options}
    backbone = _build_backbone(spec, label, _width(options, "fpn_channels", label))
    net = _build_net(family, backbone, num_classes, options, label)
    if weights_path is not None:
        load_weights_file(
            net, str(weights_path), head_prefixes=HEAD_PREFIXES[family], model_label=label
        )
    elif pretrained:
        _load_pretrained(net, spec, label)
    freeze_backbone_layers(backbone, trainable)
    detector = TorchvisionDetector(net, family=family, num_classes=num_classes, freeze_bn=freeze_bn)
    detector.set_inference_settings(**(RCNN_DEFAULT_SETTINGS | settings))
    return detector

"""Static model registry: Azure model names → frozen specs, and the one ``create_model`` factory.

The table below is the whole catalog (spec §1.5); grep it to see what a name builds. Users are not
limited to Azure's list:

- any name that timm knows (``timm.list_models()``) is a generic timm classifier:
  ``model=timm model.name=convnext_tiny``;
- ``fasterrcnn_<backbone>_fpn``, ``retinanet_<backbone>_fpn`` (detection) and
  ``maskrcnn_<backbone>_fpn`` (instance segmentation) build torchvision's detector on any
  backbone: a torchvision ResNet (``resnet18`` ... ``resnet152``), a classification catalog name
  (``efficientnet_lite0``, ``seresnext``, ...) or a timm name (``convnext_tiny``), e.g.
  ``model.name=fasterrcnn_efficientnet_lite0_fpn``;
- ``yolov5`` is our clean-room YOLOv5-style detector (CSP backbone, from scratch), and
  ``yolov5_efficientnet_lite0`` the same neck and head on an ImageNet backbone that works offline.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visionauto.errors import ModelError

if TYPE_CHECKING:  # timm and torch load lazily: composing a config must stay fast
    import torch

CLASSIFICATION_TASKS = ("classification", "multilabel")
DETECTION_TASKS = ("detection", "instance_segmentation")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_DETECTOR_NAME = re.compile(r"(?P<family>fasterrcnn|retinanet|maskrcnn)_(?P<backbone>.+)_fpn")


@dataclass(frozen=True)
class ModelSpec:
    """What a model name builds.

    Attributes:
        name: the user-facing name (Azure name such as ``"seresnext"``, or a timm name).
        source: which library builds it: ``"timm"`` (classifiers), ``"torchvision"`` (Faster
            R-CNN, RetinaNet, Mask R-CNN) or ``"yolo"`` (:mod:`visionauto.models.yolo`).
        tasks: the tasks this model can solve.
        builder_name: the name passed to the builder: timm's name for classifiers (e.g.
            ``"seresnext50_32x4d"``), the family for detectors (``"fasterrcnn"``, ``"retinanet"``,
            ``"maskrcnn"``, ``"yolov5"``).
        layer_groups: key into :data:`visionauto.models.freeze.LAYER_GROUPS`, or None when
            ``layers_to_freeze`` is not supported for this model.
        image_size: the input size the model was designed (and pretrained) for; for the torchvision
            detectors Azure's default ``min_size``.
        backbone: detectors: the backbone's name (``"resnet50"``, timm's
            ``"tf_efficientnet_lite0"``; yolov5: ``"csp"`` or ``"efficientnet_lite0"``); None for
            classifiers.
        backbone_source: ``"torchvision"`` or ``"timm"`` for torchvision detectors; None otherwise.
    """

    name: str
    source: str
    tasks: tuple[str, ...]
    builder_name: str
    layer_groups: str | None
    image_size: int = 224
    backbone: str | None = None
    backbone_source: str | None = None


def build_table(specs: Iterable[ModelSpec]) -> dict[str, ModelSpec]:
    """Index specs by name; a name listed twice is a bug in the table and raises at import."""
    table: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"model registry: duplicate model name {spec.name!r}")
        table[spec.name] = spec
    return table


def _cls(name: str, builder: str, groups: str | None) -> ModelSpec:
    return ModelSpec(name, "timm", CLASSIFICATION_TASKS, builder, groups)


def _det(family: str, backbone: str, backbone_source: str = "torchvision") -> ModelSpec:
    """A torchvision detector spec; the name has the Azure form ``<family>_<backbone>_fpn``."""
    task = "instance_segmentation" if family == "maskrcnn" else "detection"
    name = f"{family}_{backbone}_fpn"
    if backbone_source == "timm":
        # A classification catalog alias keeps its user-facing name: efficientnet_lite0 → tf_...
        alias = _CLASSIFIERS.get(backbone)
        backbone = alias.builder_name if alias is not None else backbone
    return ModelSpec(name, "torchvision", (task,), family, None, 600, backbone, backbone_source)


# Azure's legacy classification catalog (spec §1.5) on timm's equivalents (stack-facts §8), plus
# efficientnet_lite0 whose ImageNet weights ship with the install (works offline).
_CLASSIFIERS: dict[str, ModelSpec] = build_table(
    [
        _cls("mobilenetv2", "mobilenetv2_100", "mobilenetv2"),
        _cls("resnet18", "resnet18", "resnet"),
        _cls("resnet34", "resnet34", "resnet"),
        _cls("resnet50", "resnet50", "resnet"),
        _cls("resnet101", "resnet101", "resnet"),
        _cls("resnet152", "resnet152", "resnet"),
        _cls("resnest50", "resnest50d", "resnet"),
        _cls("resnest101", "resnest101e", "resnet"),
        _cls("seresnext", "seresnext50_32x4d", "seresnext"),
        _cls("vits16r224", "vit_small_patch16_224", "vit"),
        _cls("vitb16r224", "vit_base_patch16_224", "vit"),
        _cls("vitl16r224", "vit_large_patch16_224", "vit_large"),
        _cls("efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet"),
    ]
)

# Azure's detection and instance segmentation catalog (spec §1.5; default fasterrcnn_resnet50_fpn
# and maskrcnn_resnet50_fpn). Other backbones are built on the fly by _detector_spec.
MODELS: dict[str, ModelSpec] = build_table(
    [
        *_CLASSIFIERS.values(),
        *(_det("fasterrcnn", r) for r in TORCHVISION_RESNETS),
        _det("retinanet", "resnet50"),
        *(_det("maskrcnn", r) for r in TORCHVISION_RESNETS),
        ModelSpec("yolov5", "yolo", ("detection",), "yolov5", "yolov5_backbone", 640, "csp"),
        # Beyond Azure: the same neck and head on an ImageNet backbone whose weights are offline.
        ModelSpec("yolov5_efficientnet_lite0", "yolo", ("detection",), "yolov5",
                  "yolov5_efficientnet_lite0", 640, "efficientnet_lite0"),
    ]
)

# Azure's per-model defaults of detectors (spec §1.4): epochs, train/val batch size, lr.
_DETECTOR_DEFAULTS = {"torchvision": (15, 2, 1, 0.005), "yolo": (30, 16, 16, 0.01)}

# Beyond Azure: models that train from scratch here (yolov5: no permissive COCO weights) default to
# AdamW, which learns much faster than SGD in an AutoML-sized run (fridge photos, nano, 100
# epochs: COCO mAP@0.5:0.95 0.70 with SGD at Azure's lr 0.01, 0.77 with AdamW at 0.002).
# Adam's learning rate is set per family where Azure's (an SGD rate) does not suit it.
_SCRATCH_OPTIMIZERS = {"yolo": "adamw"}
_ADAM_LEARNING_RATES = {"yolo": 0.002}

# Layer groups frozen by default when a model starts from pretrained weights: the stem and the
# stages at strides 2-8 of yolov5_efficientnet_lite0. Their depthwise backward passes are most of
# its training time on a CPU (320 px, small, bf16, 2 cores: the network's step 9.1 -> 18.5
# images/s, a CLI epoch on the fridge photos 12 s -> 8 s) while COCO mAP@0.5:0.95 at equal epochs
# stays the same (0.768 trained vs 0.764 frozen after 46 epochs).
_PRETRAINED_FROZEN_GROUPS = {"yolov5_efficientnet_lite0": 4}

# Per-model defaults of Azure (spec §1.4): epochs, train/val batch size, lr (multiclass, multilabel).
_CNN_DEFAULTS = (15, 78, 78, 0.01, 0.035)
_VIT_DEFAULTS = {
    "vit_small_patch16_224": (15, 128, 128, 0.0125, 0.025),
    "vit_base_patch16_224": (15, 48, 48, 0.0125, 0.025),
    "vit_large_patch16_224": (15, 10, 10, 0.001, 0.002),
}

# Layer groups of timm names whose module layout is known (see freeze.py); others get None.
_GROUP_PATTERNS = (
    (re.compile(r"(resnet\d+[a-z]*|resnest\d+[a-z]*|resnext\d+\w*|seresnet\d+\w*)"), "resnet"),
    (re.compile(r"seresnext\d+\w*"), "seresnext"),
    (re.compile(r"mobilenetv2_(035|050|075|100|110d|140)"), "mobilenetv2"),
    (re.compile(r"(tf_)?efficientnet_(b[0-3]|lite[0-2])"), "efficientnet"),
    (re.compile(r"vit_(tiny|small|base)_patch(8|14|16|32)_(224|384)\w*"), "vit"),
    (re.compile(r"vit_large_patch(14|16|32)_(224|384)\w*"), "vit_large"),
)


def _infer_layer_groups(timm_name: str) -> str | None:
    arch = timm_name.split(".")[0]
    for pattern, groups in _GROUP_PATTERNS:
        if pattern.fullmatch(arch):
            return groups
    return None


def _timm_spec(name: str) -> ModelSpec:
    """A spec built on the fly for any timm model name (a generic timm classifier)."""
    import timm

    cfg = timm.get_pretrained_cfg(name, allow_unregistered=True)
    input_size = cfg.input_size if cfg is not None else None
    image_size = int(input_size[-1]) if input_size else 224
    return ModelSpec(
        name, "timm", CLASSIFICATION_TASKS, name, _infer_layer_groups(name), image_size
    )


def _detector_spec(name: str) -> ModelSpec | None:
    """A torchvision detector spec for ``<family>_<backbone>_fpn`` names outside the catalog."""
    found = _DETECTOR_NAME.fullmatch(name)
    if found is None:
        return None
    family, backbone = found.group("family"), found.group("backbone")
    if backbone in TORCHVISION_RESNETS:
        return _det(family, backbone)
    if backbone in _CLASSIFIERS:
        return _det(family, backbone, "timm")
    import timm

    return _det(family, backbone, "timm") if timm.is_model(backbone) else None


def _task_models_hint(task: str) -> str:
    """The catalog models of a task, and how to get others."""
    fitting = ", ".join(n for n, s in MODELS.items() if task in s.tasks)
    if task == "detection":
        return (
            f"Models for detection: {fitting}; or any backbone as fasterrcnn_<backbone>_fpn / "
            "retinanet_<backbone>_fpn (a timm name or efficientnet_lite0)."
        )
    if task == "instance_segmentation":
        return (
            f"Models for instance_segmentation: {fitting}; or any backbone as "
            "maskrcnn_<backbone>_fpn (a timm name or efficientnet_lite0)."
        )
    return f"Models for {task}: {fitting or 'none registered yet'}."


def _unknown_name_error(name: str) -> ModelError:
    import timm

    found = _DETECTOR_NAME.fullmatch(name)
    if found is not None:
        backbone = found.group("backbone")
        close = difflib.get_close_matches(backbone, [*TORCHVISION_RESNETS, *_CLASSIFIERS], n=3)
        close += [
            m
            for m in difflib.get_close_matches(backbone, timm.list_models(), n=5)
            if m not in close
        ]
        hint = f" Close backbone names: {', '.join(close)}." if close else ""
        return ModelError(
            f"Unknown model name {name!r}: {backbone!r} is neither a torchvision ResNet "
            f"({', '.join(TORCHVISION_RESNETS)}), a catalog classifier nor a timm model.{hint} "
            "Fix: model.name=<fasterrcnn|retinanet|maskrcnn>_<backbone>_fpn with one of those."
        )
    catalog = list(MODELS)
    close = difflib.get_close_matches(name, catalog, n=5, cutoff=0.5)
    close += [
        m
        for m in difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        if m not in close
    ]
    hint = f" Did you mean: {', '.join(close[:6])}?" if close else ""
    return ModelError(
        f"Unknown model name {name!r}.{hint} Models of the catalog: {', '.join(catalog)}. "
        "Any timm model also works: set model=timm model.name=<timm name> "
        "(names: python -c \"import timm; print(timm.list_models('*resnet*'))\")."
    )


def get_model_spec(name: str, task: str | None = None) -> ModelSpec:
    """Look a model name up in the catalog, or accept it as a generic timm classifier.

    Args:
        name: an Azure name from :data:`MODELS` or any timm model name.
        task: when given, the model must support this task.

    Raises:
        ModelError: the name is unknown (the message lists close matches), or the model does not
            support ``task``.
    """
    spec = MODELS.get(name) or _detector_spec(name)
    if spec is None:
        import timm

        if not timm.is_model(name):
            raise _unknown_name_error(name)
        spec = _timm_spec(name)
    if task is not None and task not in spec.tasks:
        raise ModelError(
            f"Model {name!r} cannot be used for task={task}: it supports "
            f"{', '.join(spec.tasks)}. {_task_models_hint(task)}"
        )
    return spec


def model_defaults(task: str, name: str) -> dict[str, float | int]:
    """Azure's per-model defaults (spec §1.4) for a task and model.

    Args:
        task: ``"classification"`` (multiclass), ``"multilabel"``, ``"detection"`` or
            ``"instance_segmentation"``.
        name: a catalog, detector (``<family>_<backbone>_fpn``) or timm model name.

    Returns:
        ``{"number_of_epochs", "training_batch_size", "validation_batch_size", "learning_rate"}``.

    Raises:
        ModelError: unknown name, or a model that does not solve ``task``.
    """
    spec = get_model_spec(name, task)
    keys = ("number_of_epochs", "training_batch_size", "validation_batch_size", "learning_rate")
    if spec.source in _DETECTOR_DEFAULTS:
        return dict(zip(keys, _DETECTOR_DEFAULTS[spec.source], strict=True))
    epochs, train_bs, val_bs, lr_mc, lr_ml = _VIT_DEFAULTS.get(spec.builder_name, _CNN_DEFAULTS)
    return {
        "number_of_epochs": epochs,
        "training_batch_size": train_bs,
        "validation_batch_size": val_bs,
        "learning_rate": lr_ml if task == "multilabel" else lr_mc,
    }


def default_optimizer(task: str, name: str, optimizer: str | None) -> tuple[str, float | None]:
    """The optimizer of a run that sets ``optimizer`` (None: unset), and the learning rate that
    goes with it when the run sets none (None: the per-model default of :func:`model_defaults`).

    Azure's SGD, except for models that train from scratch (yolov5), which get AdamW. Adam and
    AdamW on yolov5 start from 0.002 (Azure's 0.01 is an SGD rate).

    Raises:
        ModelError: unknown name, or a model that does not solve ``task``.
    """
    spec = get_model_spec(name, task)
    if optimizer is None:
        optimizer = _SCRATCH_OPTIMIZERS.get(spec.source, "sgd")
    adam = optimizer in ("adam", "adamw")
    return optimizer, _ADAM_LEARNING_RATES.get(spec.source) if adam else None


def is_yolo(name: str) -> bool:
    """Whether ``name`` is one of our YOLOv5-style detectors (``yolov5``, ``yolov5_<backbone>``)."""
    spec = MODELS.get(name)
    return spec is not None and spec.source == "yolo"


def default_layers_to_freeze(task: str, name: str, pretrained: bool) -> int | None:
    """``layers_to_freeze`` of a run that sets none: a model-specific count when it starts from
    pretrained weights (see ``_PRETRAINED_FROZEN_GROUPS``), else None (nothing frozen).

    Raises:
        ModelError: unknown name, or a model that does not solve ``task``.
    """
    spec = get_model_spec(name, task)
    return _PRETRAINED_FROZEN_GROUPS.get(spec.name) if pretrained else None


def create_model(
    task: str,
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Look a model up and build it for a task.

    Classifiers map ``image f32[B,3,H,W]`` (normalized) to ``logits f32[B,num_classes]``.
    Detectors are :class:`visionauto.models.detectors.Detector` (list of images in, losses or
    one prediction dict per image out, 0-based labels).

    Args:
        task: ``"classification"``, ``"multilabel"``, ``"detection"`` or
            ``"instance_segmentation"``.
        name: a catalog name (``"seresnext"``, ``"fasterrcnn_resnet50_fpn"``, ``"yolov5"``,
            ``"yolov5_efficientnet_lite0"``, ...),
            ``<fasterrcnn|retinanet|maskrcnn>_<backbone>_fpn``, or any timm classifier name.
        num_classes: number of output classes (the head is new when it differs from the weights');
            for detectors the number of object classes, background not counted.
        pretrained: start from ImageNet (classifiers, detector backbones) or COCO weights (the
            ResNet-50 detectors): downloaded when online; ``efficientnet_lite0`` (also as a
            detector backbone) works offline.
        weights_path: a local ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file to start from;
            takes precedence over ``pretrained``. Detectors take a state dict of the whole
            detector or of its backbone classifier.
        **kwargs: passed to the builder; ``None`` values are dropped. Classifiers: timm options
            (``drop_rate``). torchvision detectors: inference settings (``box_score_thresh``,
            ``nms_iou_thresh``, ``box_detections_per_img``, ``min_size``, ``max_size``),
            ``trainable_backbone_layers`` and torchvision's constructor options (see
            :func:`visionauto.models.torchvision_detectors.build_torchvision_detector`). yolov5
            (its backbone comes from the name): see :func:`visionauto.models.yolo.build_yolov5`.

    Raises:
        ModelError: unknown name, a model/task mismatch, or weights that cannot be had or used.
    """
    spec = get_model_spec(name, task)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if spec.source == "timm":
        from visionauto.models.classifiers import build_timm_classifier

        return build_timm_classifier(
            spec,
            num_classes=num_classes,
            pretrained=pretrained,
            weights_path=weights_path,
            **kwargs,
        )
    if spec.source == "torchvision":
        from visionauto.models.torchvision_detectors import build_torchvision_detector

        return build_torchvision_detector(
            spec,
            num_classes=num_classes,
            pretrained=pretrained,
            weights_path=weights_path,
            **kwargs,
        )
    if spec.source == "yolo":
        from visionauto.models.yolo import build_yolov5

        return build_yolov5(num_classes, backbone=spec.backbone, pretrained=pretrained,
                            weights_path=weights_path, **kwargs)
    raise AssertionError(f"no builder for source {spec.source!r}")  # table invariant

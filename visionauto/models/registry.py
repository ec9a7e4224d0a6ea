"""Static model registry: Azure model names → frozen specs, and the one ``create_model`` factory.

The table below is the whole catalog (spec §1.5); grep it to see what a name builds. Any other
name that timm knows (``timm.list_models()``) is accepted as a generic timm classifier, so users
are not limited to Azure's list: ``model=timm model.name=convnext_tiny``.
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


@dataclass(frozen=True)
class ModelSpec:
    """What a model name builds.

    Attributes:
        name: the user-facing name (Azure name such as ``"seresnext"``, or a timm name).
        source: which library builds it: ``"timm"`` (later: ``"torchvision"``, ``"yolo"``, ``"hf"``).
        tasks: the tasks this model can solve.
        builder_name: the name passed to the builder, e.g. timm's ``"seresnext50_32x4d"``.
        layer_groups: key into :data:`visionauto.models.freeze.LAYER_GROUPS`, or None when
            ``layers_to_freeze`` is not supported for this model.
        image_size: the input size the model was designed (and pretrained) for.
    """

    name: str
    source: str
    tasks: tuple[str, ...]
    builder_name: str
    layer_groups: str | None
    image_size: int = 224


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


# Azure's legacy classification catalog (spec §1.5) on timm's equivalents (stack-facts §8), plus
# efficientnet_lite0 whose ImageNet weights ship with the install (works offline).
MODELS: dict[str, ModelSpec] = build_table(
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


def _unknown_name_error(name: str) -> ModelError:
    import timm

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
    spec = MODELS.get(name)
    if spec is None:
        import timm

        if not timm.is_model(name):
            raise _unknown_name_error(name)
        spec = _timm_spec(name)
    if task is not None and task not in spec.tasks:
        fitting = [n for n, s in MODELS.items() if task in s.tasks]
        choices = ", ".join(fitting) if fitting else "none registered yet"
        raise ModelError(
            f"Model {name!r} cannot be used for task={task}: it supports "
            f"{', '.join(spec.tasks)}. Models for {task}: {choices}."
        )
    return spec


def model_defaults(task: str, name: str) -> dict[str, float | int]:
    """Azure's per-model defaults (spec §1.4) for a task and model.

    Args:
        task: ``"classification"`` (multiclass) or ``"multilabel"``.
        name: a catalog or timm model name.

    Returns:
        ``{"number_of_epochs", "training_batch_size", "validation_batch_size", "learning_rate"}``.
    """
    spec = get_model_spec(name, task)
    epochs, train_bs, val_bs, lr_mc, lr_ml = _VIT_DEFAULTS.get(spec.builder_name, _CNN_DEFAULTS)
    return {
        "number_of_epochs": epochs,
        "training_batch_size": train_bs,
        "validation_batch_size": val_bs,
        "learning_rate": lr_ml if task == "multilabel" else lr_mc,
    }


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

    Args:
        task: one of ``"classification"``, ``"multilabel"`` (more tasks come with their models).
        name: a catalog name (``"seresnext"``, ``"vitb16r224"``, ...) or any timm model name.
        num_classes: number of output classes (the head is new when it differs from the weights').
        pretrained: start from ImageNet weights (downloaded when online; ``efficientnet_lite0``
            works offline).
        weights_path: a local ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file to start from;
            takes precedence over ``pretrained``.
        **kwargs: passed to the builder (e.g. timm's ``drop_rate``); ``None`` values are dropped.

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
    raise AssertionError(f"no builder for source {spec.source!r}")  # table invariant

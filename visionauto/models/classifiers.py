"""timm image classifiers (multiclass and multilabel share the model; the task picks the loss).

Contract: ``model(image f32[B,3,H,W]) -> logits f32[B,num_classes]``; inputs are normalized in the
data pipeline (ImageNet mean/std, spec §1.2).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from visionauto.errors import ModelError
from visionauto.models.registry import ModelSpec
from visionauto.models.weights import (
    create_pretrained_timm,
    load_efficientnet_lite0_imagenet,
    load_weights,
    read_state_dict,
)

# timm names whose ImageNet weights ship with the install (no download, works offline).
_OFFLINE_IMAGENET = {"tf_efficientnet_lite0": load_efficientnet_lite0_imagenet}


def model_label(spec: ModelSpec) -> str:
    """How messages name a model: ``'seresnext' (timm seresnext50_32x4d)``."""
    if spec.name == spec.builder_name:
        return f"{spec.name!r} (timm)"
    return f"{spec.name!r} (timm {spec.builder_name})"


def build_timm_classifier(
    spec: ModelSpec,
    *,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a timm classifier with ``num_classes`` outputs, optionally from pretrained weights.

    Weights, first that applies: ``weights_path`` (a local file, head skipped when its size
    differs); ``pretrained`` with weights shipped in the install (efficientnet_lite0); ``pretrained``
    from timm's cache or download.

    Args:
        spec: the registry entry (``spec.source == "timm"``).
        num_classes: outputs of the classifier head, >= 1.
        pretrained: start from ImageNet weights.
        weights_path: local ``.pth``/``.pt``/``.ckpt``/``.bin``/``.safetensors`` file.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``).

    Returns:
        The model; ``model(x f32[B,3,H,W]) -> f32[B,num_classes]``.

    Raises:
        ModelError: bad ``num_classes``, a weights file that is missing or does not fit, or
            pretrained weights that cannot be had offline.
    """
    if num_classes < 1:
        raise ModelError(
            f"num_classes={num_classes} for model {model_label(spec)}: the data must "
            "have at least one class."
        )
    label = model_label(spec)
    if weights_path is not None:
        state = read_state_dict(weights_path)
        model = timm.create_model(
            spec.builder_name, pretrained=False, num_classes=num_classes, **kwargs
        )
        before = _head_snapshot(model)
        load_weights(model, state, source=str(weights_path), model_label=label)
        if before is not None and torch.equal(before, _head_snapshot(model)):
            init_new_head(model)  # the file's head had another size and was skipped
        return model
    if pretrained and spec.builder_name in _OFFLINE_IMAGENET:
        model = timm.create_model(
            spec.builder_name, pretrained=False, num_classes=num_classes, **kwargs
        )
        _OFFLINE_IMAGENET[spec.builder_name](model)
    elif pretrained:
        model = create_pretrained_timm(
            spec.builder_name, model_label=label, num_classes=num_classes, **kwargs
        )
    else:
        return timm.create_model(
            spec.builder_name, pretrained=False, num_classes=num_classes, **kwargs
        )
    if num_classes != model.pretrained_cfg.get("num_classes", 1000):
        init_new_head(model)
    return model


def init_new_head(model: nn.Module) -> None:
    """Small initial weights for a new head on a pretrained backbone.

    timm initialises EfficientNet/MobileNet heads uniformly in ±1/sqrt(num_classes): with 4
    classes that is ±0.5, so the first logits are huge, the first gradients wreck the pretrained
    features, and fine-tuning on a small dataset ends far below a linear probe. A near-zero head
    (std 0.01, zero bias) starts from uniform probabilities instead.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for module in head.modules() if isinstance(head, nn.Module) else ():
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _head_snapshot(model: nn.Module) -> torch.Tensor | None:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    weight = getattr(head, "weight", None)
    return weight.detach().clone() if isinstance(weight, torch.Tensor) else None

"""timm image classifiers (multiclass and multilabel share the model; the task picks the loss).

Contract: ``model(image f32[B,3,H,W]) -> logits f32[B,num_classes]``; inputs are normalized in the
data pipeline (ImageNet mean/std, spec §1.2).
"""

from __future__ import annotations

from typing import Any

import timm
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
        load_weights(model, state, source=str(weights_path), model_label=label)
        return model
    if pretrained and spec.builder_name in _OFFLINE_IMAGENET:
        model = timm.create_model(
            spec.builder_name, pretrained=False, num_classes=num_classes, **kwargs
        )
        _OFFLINE_IMAGENET[spec.builder_name](model)
        return model
    if pretrained:
        return create_pretrained_timm(
            spec.builder_name, model_label=label, num_classes=num_classes, **kwargs
        )
    return timm.create_model(spec.builder_name, pretrained=False, num_classes=num_classes, **kwargs)

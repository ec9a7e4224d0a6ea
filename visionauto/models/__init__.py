"""Models: the static registry (Azure names + any timm name) and the ``create_model`` factory."""

from __future__ import annotations

from visionauto.models.freeze import LAYER_GROUPS, freeze_layers
from visionauto.models.registry import (
    MODELS,
    ModelSpec,
    create_model,
    get_model_spec,
    model_defaults,
)

__all__ = [
    "LAYER_GROUPS",
    "MODELS",
    "ModelSpec",
    "create_model",
    "freeze_layers",
    "get_model_spec",
    "model_defaults",
]

"""Models: the static registry (Azure names + any timm name) and the ``create_model`` factory.

Layer freezing lives in :mod:`visionauto.models.freeze`.
"""

from __future__ import annotations

from visionauto.models.registry import (
    MODELS,
    ModelSpec,
    create_model,
    get_model_spec,
    model_defaults,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "create_model",
    "get_model_spec",
    "model_defaults",
]

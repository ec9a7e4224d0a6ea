"""Packaged models: settings.json, the Predictor (the one inference path) and the MLflow pyfunc.

``settings`` is imported eagerly (cheap); ``Predictor``/``load_predictor`` (torch) and
``save_model``/``VisionAutoPythonModel`` (MLflow) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from visionauto.packaging.settings import (
    INFERENCE_DEFAULTS,
    apply_overrides,
    build_settings,
    load_settings,
)

_LAZY = {
    "Predictor": "visionauto.packaging.predictor",
    "load_predictor": "visionauto.packaging.predictor",
    "VisionAutoPythonModel": "visionauto.packaging.pyfunc",
    "save_model": "visionauto.packaging.pyfunc",
}

__all__ = ["INFERENCE_DEFAULTS", "apply_overrides", "build_settings", "load_settings", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

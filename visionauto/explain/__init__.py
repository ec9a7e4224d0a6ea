"""Explanations of classification predictions: XRAI, integrated gradients, guided backprop and
guided GradCAM, with Azure's parameters and output format (spec §4.3).

Use ``explain(predictor, images, algorithm="xrai")`` from Python, ``model_explainability`` in an
endpoint request, or ``python -m visionauto.explain`` from the command line. The heavy modules
(torch, captum, saliency) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from visionauto.explain.params import ALGORITHMS, APPROXIMATION_METHODS, ExplainParameters

_LAZY = {
    "explain": "visionauto.explain.explainer",
    "explain_images": "visionauto.explain.explainer",
    "check_explainable": "visionauto.explain.explainer",
    "to_response": "visionauto.explain.explainer",
    "ImageExplanation": "visionauto.explain.explainer",
    "LabelExplanation": "visionauto.explain.explainer",
    "ExplanationCancelled": "visionauto.explain.explainer",
    "render_grid": "visionauto.explain.visualize",
}

__all__ = ["ALGORITHMS", "APPROXIMATION_METHODS", "ExplainParameters", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

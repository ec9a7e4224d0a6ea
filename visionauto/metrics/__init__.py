"""Task metrics under Azure's names (spec §2). Charts live in :mod:`visionauto.metrics.plots`
(imported on demand: it loads matplotlib)."""

from __future__ import annotations

from visionauto.metrics.classification import (
    UNDEFINED,
    ClassificationResult,
    compute_classification_metrics,
)

__all__ = ["UNDEFINED", "ClassificationResult", "compute_classification_metrics"]

"""MLflow tracking: the one place that talks to an MLflow tracking store (MLflow imported lazily)."""

from visionauto.tracking.mlflow_tracking import (
    RunTracker,
    default_tracking_uri,
    flatten_params,
    resolve_tracking_uri,
)

__all__ = ["RunTracker", "default_tracking_uri", "flatten_params", "resolve_tracking_uri"]

"""Serving: the HTTP endpoint (``python -m visionauto.serve``), micro-batching, deployments.

``create_app`` is imported on first use (it pulls in FastAPI, an optional extra: ``.[serve]``).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_app": "visionauto.serve.app",
    "Limits": "visionauto.serve.app",
    "MicroBatcher": "visionauto.serve.batching",
    "DeploymentSet": "visionauto.serve.deployments",
    "DeploymentSpec": "visionauto.serve.deployments",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

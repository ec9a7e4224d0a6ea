"""Explanation parameters with Azure's names and defaults (spec §4.3), validated in one place.

The endpoint reads them from a request's ``xai_parameters`` object, the CLI from its flags and
:func:`visionauto.explain.explain` from keyword arguments; all three build an
:class:`ExplainParameters`, so every caller gets the same checks and the same messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from visionauto.errors import ConfigError

# Azure's quality order, best first; the speed order is the reverse (spec §4.3).
ALGORITHMS = ("xrai", "guided_gradcam", "integrated_gradients", "guided_backprop")
# Guided methods override ReLU gradients: defined for ReLU CNNs only.
GUIDED_ALGORITHMS = ("guided_gradcam", "guided_backprop")
# Azure documents riemann_middle and gausslegendre; its internals (and captum) take all of these.
APPROXIMATION_METHODS = (
    "riemann_middle",
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_trapezoid",
)
EXPLAINABLE_TASKS = ("classification", "multilabel")
# Azure allows [2, inf); a cap keeps one request from allocating the path of a billion steps.
MAX_N_STEPS = 10_000
# ``xai_parameters`` key -> dataclass field (Azure calls the algorithm ``xai_algorithm``).
_REQUEST_KEYS = {
    "xai_algorithm": "algorithm",
    "n_steps": "n_steps",
    "xrai_fast": "xrai_fast",
    "approximation_method": "approximation_method",
    "visualizations": "visualizations",
    "attributions": "attributions",
    "confidence_score_threshold_multilabel": "confidence_score_threshold_multilabel",
}


@dataclass(frozen=True)
class ExplainParameters:
    """What to explain and how (Azure's ``xai_parameters``; defaults as Azure's).

    Attributes:
        algorithm: ``xrai``, ``integrated_gradients``, ``guided_gradcam`` or ``guided_backprop``.
        n_steps: integration steps of integrated gradients (also inside XRAI), >= 2.
        xrai_fast: the fast XRAI region ranking (less precise) instead of the full one.
        approximation_method: integral approximation of integrated gradients (and XRAI's IG).
        visualizations: return the 2x2 PNG (base64).
        attributions: return the raw attributions, f32[3, crop, crop] per explained class.
        confidence_score_threshold_multilabel: multilabel explains every class whose probability
            is above this value.
    """

    algorithm: str = "xrai"
    n_steps: int = 50
    xrai_fast: bool = True
    approximation_method: str = "riemann_middle"
    visualizations: bool = True
    attributions: bool = False
    confidence_score_threshold_multilabel: float = 0.5

    def __post_init__(self) -> None:
        validate_parameters(self)

    @classmethod
    def from_request(
        cls, values: Mapping[str, Any] | None, *, where: str = "xai_parameters"
    ) -> ExplainParameters:
        """Builds parameters from a request's ``xai_parameters`` object (Azure key names).

        ``None`` values take the default, as if the key were absent.

        Raises:
            ConfigError: not an object, an unknown key, or a value of the wrong type or range.
        """
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(
                f'{where} must be an object like {{"xai_algorithm": "xrai", "n_steps": 50}}, '
                f"got {values!r}."
            )
        unknown = sorted(str(key) for key in values if key not in _REQUEST_KEYS)
        if unknown:
            raise ConfigError(
                f"{where} has unknown key(s) {unknown}: allowed keys are "
                f"{', '.join(_REQUEST_KEYS)}."
            )
        given = {_REQUEST_KEYS[k]: v for k, v in values.items() if v is not None}
        return cls(**given)


def validate_parameters(params: ExplainParameters) -> None:
    """Checks types and ranges; messages name the parameter, the allowed values and the fix.

    Raises:
        ConfigError: the first bad value found.
    """
    names = {f.name: _request_name(f.name) for f in fields(params)}
    if params.algorithm not in ALGORITHMS:
        raise ConfigError(
            f"{names['algorithm']}={params.algorithm!r} is unknown: use one of "
            f"{', '.join(ALGORITHMS)} (best quality first; the fastest is the last)."
        )
    steps = params.n_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_N_STEPS:
        raise ConfigError(
            f"n_steps={steps!r} is invalid: expected a whole number >= 2 and <= {MAX_N_STEPS} "
            "(Azure's default 50; results converge from about 50)."
        )
    if params.approximation_method not in APPROXIMATION_METHODS:
        raise ConfigError(
            f"approximation_method={params.approximation_method!r} is unknown: use "
            f"{' or '.join(APPROXIMATION_METHODS[:2])} (also accepted: "
            f"{', '.join(APPROXIMATION_METHODS[2:])})."
        )
    for flag in ("xrai_fast", "visualizations", "attributions"):
        value = getattr(params, flag)
        if not isinstance(value, bool):
            raise ConfigError(f"{flag}={value!r} is invalid: expected true or false.")
    if not (params.visualizations or params.attributions):
        raise ConfigError(
            "visualizations and attributions are both false, so an explanation would return "
            "nothing: set visualizations=true (PNG) and/or attributions=true (raw arrays)."
        )
    threshold = params.confidence_score_threshold_multilabel
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not 0.0 <= threshold <= 1.0
    ):
        raise ConfigError(
            f"confidence_score_threshold_multilabel={threshold!r} is invalid: expected a "
            "probability in [0, 1] (default 0.5)."
        )


def check_task(task: str) -> None:
    """Explanations exist for multiclass and multilabel classification only (as in Azure).

    Raises:
        ConfigError: for detection, instance segmentation or any other task.
    """
    if task not in EXPLAINABLE_TASKS:
        raise ConfigError(
            f"model_explainability is not supported for task={task}: explanations exist for "
            "classification and multilabel. Send model_explainability=false to get the "
            "predictions only."
        )


def _request_name(field_name: str) -> str:
    return next(key for key, value in _REQUEST_KEYS.items() if value == field_name)

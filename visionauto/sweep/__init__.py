"""Sweeps: search spaces, samplers, early-termination pruners and AutoMode (spec §5).

The pure-library half: it turns Azure's ``search_space`` / ``sampling_algorithm`` /
``early_termination`` and Hydra's command-line sweeps into Optuna objects and override dicts.
The Hydra sweeper plugin and the trial pool build on these.
"""

from __future__ import annotations

from visionauto.sweep.automode import AutoModePlan, automode_plan
from visionauto.sweep.expressions import Param
from visionauto.sweep.pruners import (
    BanditPruner,
    MedianStoppingPruner,
    TruncationSelectionPruner,
    build_pruner,
)
from visionauto.sweep.samplers import build_sampler, grid_exhausted, safe_tell
from visionauto.sweep.space import (
    OverrideDict,
    SearchSpace,
    azure_key_to_override,
    build_search_space,
)

__all__ = [
    "AutoModePlan",
    "BanditPruner",
    "MedianStoppingPruner",
    "OverrideDict",
    "Param",
    "SearchSpace",
    "TruncationSelectionPruner",
    "automode_plan",
    "azure_key_to_override",
    "build_pruner",
    "build_sampler",
    "build_search_space",
    "grid_exhausted",
    "safe_tell",
]

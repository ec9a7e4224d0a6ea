"""Exponential moving average of a network's weights (Polyak averaging).

The averaged copy is what the detector evaluates: on small noisy datasets it scores higher and
more steadily than the raw weights of the last step. The decay ramps up from 0 so the first
updates follow the fast-changing raw weights instead of keeping the random initialisation:
``decay(n) = decay_max * (1 - exp(-n / ramp))``.

YOLOv5's constants (0.9999, a ramp of 2000 updates) suit COCO-sized runs; AutoML runs are often a
few hundred updates, where they leave the "average" equal to the last raw weights (decay 0.2
after 500 updates). :func:`ema_schedule` scales both to the run's length.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

EMA_DECAY = 0.9999
EMA_RAMP_UPDATES = 2000.0


def make_ema_copy(net: nn.Module) -> nn.Module:
    """A frozen deep copy of ``net`` (``requires_grad=False``, eval mode) to hold the average."""
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


def ema_decay(updates: int, decay: float = EMA_DECAY, ramp: float = EMA_RAMP_UPDATES) -> float:
    """Decay of the ``updates``-th update (1-based); 0 for the first few means "copy"."""
    return decay * (1.0 - math.exp(-updates / ramp))


def ema_schedule(total_updates: int) -> tuple[float, float]:
    """``(decay_max, ramp)`` for a run of ``total_updates`` optimizer steps: the ramp is at most a
    tenth of the run, and the averaging window ``1 / (1 - decay_max)`` at most a fifth of it, so
    the average follows the schedule instead of remembering its noisy start. Long runs keep
    YOLOv5's constants."""
    total = max(1, int(total_updates))
    ramp = min(EMA_RAMP_UPDATES, max(1.0, total / 10))
    decay_max = min(EMA_DECAY, max(0.0, 1.0 - 5.0 / total))
    return decay_max, ramp


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * net`` for float tensors; integer buffers are copied.

    Parameters and buffers (batch-norm statistics) are both averaged, in one fused call.
    ``ema`` must be a copy of ``net`` (same parameters and buffers in the same order).
    """
    floats_ema, floats_net = [], []
    pairs = zip(
        [*ema.parameters(), *ema.buffers()], [*net.parameters(), *net.buffers()], strict=True
    )
    for target, value in pairs:
        if target.dtype.is_floating_point:
            floats_ema.append(target)
            floats_net.append(value)
        else:
            target.copy_(value)
    if floats_ema:
        torch._foreach_lerp_(floats_ema, floats_net, 1.0 - decay)

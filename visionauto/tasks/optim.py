"""Optimizers and learning-rate schedules with Azure's names and semantics (spec §1.1)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OptimSettings:
    """Azure's optimizer and scheduler knobs, as plain values (no config objects in the model)."""

    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    ams_gradient: bool = False
    learning_rate_scheduler: str = "warmup_cosine"
    warmup_cosine_lr_cycles: float = 0.45
    warmup_cosine_lr_warmup_epochs: int = 2
    step_lr_gamma: float = 0.5
    step_lr_step_size: int = 5


ParamsOrGroups = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


def _trainable(params: ParamsOrGroups) -> list:
    """The parameters (or torch parameter groups) that require gradients."""
    items = list(params)
    if items and isinstance(items[0], dict):
        return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in items]
    return [p for p in items if p.requires_grad]


def build_optimizer(params: ParamsOrGroups, s: OptimSettings) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW (betas, amsgrad); weight decay for all parameters,
    or per group when ``params`` are torch parameter groups that set their own."""
    params = _trainable(params)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.learning_rate, momentum=s.momentum,
                               weight_decay=s.weight_decay,
                               nesterov=bool(s.nesterov) and s.momentum > 0)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[s.optimizer]
    return cls(params, lr=s.learning_rate, betas=(s.beta1, s.beta2), weight_decay=s.weight_decay,
               amsgrad=bool(s.ams_gradient))


def warmup_cosine_factor(step: int, *, warmup_steps: int, total_steps: int, cycles: float) -> float:
    """LR multiplier: linear 0→1 over the warmup, then ``0.5·(1 + cos(2π·cycles·progress))``.

    With Azure's ``cycles=0.45`` the LR ends near 2.4% of the base LR instead of 0.
    """
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(2.0 * math.pi * cycles * min(1.0, progress))))


def build_scheduler(optimizer: torch.optim.Optimizer, s: OptimSettings, *, steps_per_epoch: int,
                    total_steps: int) -> dict | None:
    """A Lightning ``lr_scheduler`` dict: warmup_cosine steps per batch, step per epoch."""
    if s.learning_rate_scheduler == "warmup_cosine":
        warmup = s.warmup_cosine_lr_warmup_epochs * max(1, steps_per_epoch)
        warmup = min(warmup, max(0, total_steps - 1))

        def factor(step: int) -> float:
            return warmup_cosine_factor(step, warmup_steps=warmup, total_steps=total_steps,
                                        cycles=s.warmup_cosine_lr_cycles)

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"scheduler": sched, "interval": "step"}
    if s.learning_rate_scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_lr_step_size,
                                                gamma=s.step_lr_gamma)
        return {"scheduler": sched, "interval": "epoch"}
    return None


def lightning_optimizers(module: Any, params: ParamsOrGroups, s: OptimSettings) -> Any:
    """What a LightningModule's ``configure_optimizers`` returns: the optimizer and, unless the
    scheduler is ``none``, its schedule over the trainer's estimated steps."""
    optimizer = build_optimizer(params, s)
    total = max(1, int(module.trainer.estimated_stepping_batches))
    per_epoch = max(1, total // max(1, module.trainer.max_epochs or 1))
    scheduler = build_scheduler(optimizer, s, steps_per_epoch=per_epoch, total_steps=total)
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": scheduler}

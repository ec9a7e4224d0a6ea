from __future__ import annotations

import math

import pytest
import torch

from visionauto.tasks.optim import (
    OptimSettings,
    build_optimizer,
    build_scheduler,
    warmup_cosine_factor,
)


def test_warmup_is_linear_then_cosine_ends_near_2_4_percent() -> None:
    f = [warmup_cosine_factor(s, warmup_steps=10, total_steps=110, cycles=0.45) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[110] == pytest.approx(0.5 * (1 + math.cos(2 * math.pi * 0.45)))  # ≈ 0.0245
    assert f[110] == pytest.approx(0.0245, abs=1e-4)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # monotone after warmup


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_get_azure_knobs(name: str) -> None:
    p = [torch.nn.Parameter(torch.zeros(2))]
    s = OptimSettings(optimizer=name, learning_rate=0.1, beta1=0.8, beta2=0.99, ams_gradient=True)
    opt = build_optimizer(p, s)
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 1e-4
    if name == "sgd":
        assert group["momentum"] == 0.9 and group["nesterov"] is True
    else:
        assert group["betas"] == (0.8, 0.99) and group["amsgrad"] is True


def test_frozen_parameters_are_not_optimised() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    b.requires_grad_(False)
    opt = build_optimizer([a, b], OptimSettings())
    assert opt.param_groups[0]["params"] == [a]


def test_step_scheduler_halves_every_step_size_epochs() -> None:
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimSettings(learning_rate=0.4))
    sched = build_scheduler(opt, OptimSettings(learning_rate_scheduler="step", step_lr_step_size=2),
                            steps_per_epoch=5, total_steps=50)
    assert sched["interval"] == "epoch"
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert lrs == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1])

"""AutoMode: a valid portfolio tried first, then TPE over a default space, with bandit pruning."""

from __future__ import annotations

import optuna
import pytest
from hydra import compose, initialize_config_dir

from visionauto.__main__ import CONF_DIR
from visionauto.config import to_objects
from visionauto.config.resolve import resolve_defaults
from visionauto.config.schema import RootConfig
from visionauto.config.store import register_configs
from visionauto.sweep.automode import AutoModePlan, automode_plan
from visionauto.sweep.pruners import BanditPruner, build_pruner
from visionauto.sweep.samplers import build_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)


def _compose_all(task: str, points: list[dict[str, str]]) -> list[RootConfig]:
    register_configs()
    out = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for point in points:
            cfg = compose(
                "config", overrides=[f"task={task}", *(f"{k}={v}" for k, v in point.items())]
            )
            cfg.output_dir = None
            out.append(resolve_defaults(to_objects(cfg)))
    return out


def _run(plan: AutoModePlan, n: int) -> list[dict[str, str]]:
    """What the sweeper does: queue the portfolio, then ask; returns the overrides in order."""
    study = optuna.create_study(
        direction="maximize",
        sampler=build_sampler(plan.sampling_algorithm, plan.space, seed=0),
        pruner=build_pruner(plan.early_termination),
    )
    for entry in plan.portfolio:
        study.enqueue_trial(plan.space.params_for(entry))
    tried = []
    for i in range(n):
        trial = study.ask()
        tried.append(plan.space.suggest(trial))
        study.tell(trial, 0.5 + 0.01 * (i % 7))
    return tried


@pytest.mark.parametrize("task", ["classification", "multilabel"])
@pytest.mark.parametrize("offline", [False, True])
def test_portfolio_and_space_compose_and_resolve(task: str, offline: bool) -> None:
    plan = automode_plan(task, max_trials=40, offline=offline)
    tried = _run(plan, len(plan.portfolio) + 12)
    configs = _compose_all(task, tried)
    assert all(c.task.name == task for c in configs)
    if offline:
        assert {c.model.name for c in configs} == {"efficientnet_lite0"}
    else:
        assert {c.model.name for c in configs[:4]} == {
            "seresnext",
            "vitb16r224",
            "resnet50",
            "efficientnet_lite0",
        }


@pytest.mark.parametrize("offline", [False, True])
def test_portfolio_is_tried_first_in_order_then_tpe(offline: bool) -> None:
    plan = automode_plan("classification", max_trials=40, offline=offline)
    assert len(plan.portfolio) >= 5
    tried = _run(plan, len(plan.portfolio) + 3)
    assert tried[: len(plan.portfolio)] == plan.portfolio
    assert len({tuple(sorted(o.items())) for o in tried[len(plan.portfolio) :]}) == 3


def test_online_portfolio_starts_with_azures_defaults() -> None:
    first = automode_plan("classification", max_trials=5, offline=False).portfolio[0]
    assert first == {
        "model": "seresnext",
        "training.learning_rate": "0.01",
        "training.number_of_epochs": "15",
        "training.optimizer": "sgd",
        "training.layers_to_freeze": "0",
    }
    multilabel = automode_plan("multilabel", max_trials=5, offline=False).portfolio
    assert [p["training.learning_rate"] for p in multilabel[:2]] == ["0.035", "0.025"]


def test_portfolio_is_cut_to_the_budget() -> None:
    full = automode_plan("classification", max_trials=1000, offline=False).portfolio
    assert automode_plan("classification", max_trials=3, offline=False).portfolio == full[:3]
    assert len(automode_plan("classification", max_trials=2, offline=True).portfolio) == 2


def test_space_is_a_bayesian_space_and_policy_is_bandit() -> None:
    plan = automode_plan("classification", max_trials=20, offline=False)
    assert plan.sampling_algorithm == "bayesian"
    assert isinstance(build_sampler("bayesian", plan.space, seed=0), optuna.samplers.TPESampler)
    assert not plan.space.is_conditional
    assert set(plan.space.subspaces[0]) == {
        "model",
        "training.learning_rate",
        "training.number_of_epochs",
        "training.optimizer",
        "training.layers_to_freeze",
    }
    et = plan.early_termination
    assert (et.type, et.slack_factor, et.evaluation_interval, et.delay_evaluation) == (
        "bandit",
        0.2,
        1,
        3,
    )
    assert isinstance(build_pruner(et), BanditPruner)


@pytest.mark.parametrize(("task", "offline", "first"), [
    ("detection", True, "fasterrcnn_efficientnet_lite0_fpn"),
    ("detection", False, "fasterrcnn_resnet50_fpn"),
    ("instance_segmentation", True, "maskrcnn_efficientnet_lite0_fpn"),
    ("instance_segmentation", False, "maskrcnn_resnet50_fpn"),
])
def test_object_tasks_have_a_portfolio(task: str, offline: bool, first: str) -> None:
    plan = automode_plan(task, max_trials=2, offline=offline)
    assert len(plan.portfolio) == 2 and plan.portfolio[0]["model"] == first
    assert "training.layers_to_freeze" not in plan.portfolio[0]
    for entry in plan.portfolio:  # every entry is a point of the TPE space
        plan.space.params_for(entry)

"""``python -m visionauto ... -m`` through our Hydra sweeper: discovery, errors, planning.

Pruning end to end is in test_sweep_postgres.py, a full sweep and its resume in
test_sweep_resume.py.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.sweep.sweep_helpers import sweep
from visionauto.config.schema import EarlyTerminationConfig, LimitsConfig, RootConfig, SweeperConfig
from visionauto.sweep.orchestrate import SweepRequest, is_automode, plan_sweep

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_hydra_finds_our_sweeper() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert "VisionAutoSweeper" in names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["training.learnin_rate=interval(0.001,0.1)"],
            "Sweep override training.learnin_rate: unknown training parameter 'learnin_rate'",
        ),
        (
            ["sweeper.sampling_algorithm=grid", "training.learning_rate=interval(0.001,0.1)"],
            "grid sampling needs",
        ),
        (["limits.max_trials=0"], "limits.max_trials=0 is invalid"),
    ],
)
def test_bad_sweep_exits_2_before_reading_data(
    args: list[str], message: str, tmp_path: Path
) -> None:
    proc = sweep(tmp_path / "missing.jsonl", tmp_path / "sw", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sw" / "data").exists()


def _base(**limits) -> RootConfig:  # noqa: ANN003
    return RootConfig(limits=LimitsConfig(**limits))


def _request(
    base: RootConfig, sweeps: dict | None = None, fixed: set | None = None
) -> SweepRequest:
    return SweepRequest(
        base=base,
        compose=lambda o: base,
        sweep_dir=Path("sw"),
        cwd=Path("."),
        sweep_overrides=sweeps or {},
        fixed_keys=fixed or set(),
    )


def test_automode_only_when_nothing_but_a_budget_is_given() -> None:
    assert is_automode(_base(max_trials=5), {}, {"model"})
    assert not is_automode(_base(max_trials=1), {}, set())
    assert not is_automode(_base(max_trials=5), {"model": "choice(a,b)"}, set())
    assert not is_automode(_base(max_trials=5), {}, {"sweeper.sampling_algorithm"})
    policy = RootConfig(
        limits=LimitsConfig(max_trials=5),
        sweeper=SweeperConfig(
            early_termination=EarlyTerminationConfig(type="bandit", slack_factor=0.1)
        ),
    )
    assert not is_automode(policy, {}, set())


def test_automode_keeps_what_the_user_fixed() -> None:
    plan = plan_sweep(
        _request(_base(max_trials=4), fixed={"model", "model.name", "training.number_of_epochs"}),
        offline=True,
    )
    assert plan.mode == "automode" and plan.algorithm == "bayesian"
    assert plan.early_termination.type == "bandit"
    assert len(plan.portfolio) == 4
    for entry in plan.portfolio:
        assert set(entry) == {
            "training.learning_rate",
            "training.optimizer",
            "training.layers_to_freeze",
        }
        params = plan.space.params_for(entry)  # the portfolio is queued as points of the space
        assert "model" not in params
    assert plan.drop_keys >= {"model", "model.name", "training.number_of_epochs"}


def test_grid_budget_is_capped_at_the_grid_size() -> None:
    base = RootConfig(
        limits=LimitsConfig(max_trials=10), sweeper=SweeperConfig(sampling_algorithm="grid")
    )
    plan = plan_sweep(
        _request(
            base, {"training.optimizer": "sgd,adam", "training.learning_rate": "choice(0.01,0.1)"}
        )
    )
    assert plan.max_trials == 4 and plan.mode == "manual"
    assert plan.warnings == [
        "the grid has 4 point(s): the sweep stops after 4 trial(s) (limits.max_trials=10)."
    ]


def test_bayesian_with_early_termination_only_warns() -> None:
    base = RootConfig(
        limits=LimitsConfig(max_trials=4),
        sweeper=SweeperConfig(
            sampling_algorithm="bayesian",
            early_termination=EarlyTerminationConfig(type="median_stopping"),
        ),
    )
    plan = plan_sweep(_request(base, {"training.learning_rate": "interval(0.001,0.1)"}))
    assert plan.algorithm == "bayesian" and plan.early_termination.type == "median_stopping"
    assert len(plan.warnings) == 1
    assert plan.warnings[0].startswith(
        "sweeper.sampling_algorithm=bayesian with early termination: Azure does not support"
    )

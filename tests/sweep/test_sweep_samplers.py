"""Sampling algorithms: which Optuna sampler, what each accepts, and exhaustive grids."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from visionauto.errors import ConfigError
from visionauto.sweep.samplers import build_sampler, grid_exhausted, safe_tell
from visionauto.sweep.space import SearchSpace, build_search_space

optuna.logging.set_verbosity(optuna.logging.ERROR)

CONDITIONAL = [
    {"model_name": "resnet18", "layers_to_freeze": {"type": "choice", "values": [0, 1]}},
    {"model_name": "seresnext", "weight_decay": "choice(0.0001, 0.001)"},
]
LRS = {"training.learning_rate": "choice(0.001, 0.01, 0.1)"}


def _run_grid(space: SearchSpace, algorithm: str = "grid", limit: int = 100) -> list[dict]:
    """Ask/tell until the grid is used up, as the sweeper does; returns the overrides tried."""
    study = optuna.create_study(sampler=build_sampler(algorithm, space, seed=3))
    tried = []
    while not grid_exhausted(study, space) and len(tried) < limit:
        trial = study.ask()
        tried.append(space.suggest(trial))
        told = safe_tell(study, trial, float(len(tried)))
        assert told.state == TrialState.COMPLETE
    return tried


def test_conditional_grid_enumerates_each_subspace_exactly_once() -> None:
    space = build_search_space(CONDITIONAL, LRS)
    sampler = build_sampler("grid", space, seed=0)
    assert isinstance(sampler, optuna.samplers.BruteForceSampler)
    tried = _run_grid(space)
    assert len(tried) == 12 == space.grid_size()
    assert {tuple(sorted(o.items())) for o in tried} == {
        tuple(sorted({"model": model, key: value, "training.learning_rate": lr}.items()))
        for model, key, values in (
            ("resnet18", "training.layers_to_freeze", ("0", "1")),
            ("seresnext", "training.weight_decay", ("0.0001", "0.001")),
        )
        for value in values
        for lr in ("0.001", "0.01", "0.1")
    }


def test_grid_over_one_subspace_uses_grid_sampler_over_the_product() -> None:
    space = build_search_space(
        [{"training_batch_size": "quniform(8, 40, 16)"}],
        {
            "model": "resnet18,seresnext",
            "training.optimizer": "sgd",
            "training.number_of_epochs": "range(5, 15, 5)",
        },
    )
    sampler = build_sampler("grid", space, seed=0)
    assert isinstance(sampler, optuna.samplers.GridSampler)
    tried = _run_grid(space)
    assert len(tried) == 2 * 2 * 3 == space.grid_size()
    assert len({tuple(sorted(o.items())) for o in tried}) == 12
    assert {o["training.training_batch_size"] for o in tried} == {"16", "32", "48"}


def test_grid_counts_running_trials_as_taken() -> None:
    space = build_search_space(None, {"training.optimizer": "sgd,adam"})
    study = optuna.create_study(sampler=build_sampler("grid", space, seed=0))
    first, second = study.ask(), study.ask()
    assert {
        space.suggest(first)["training.optimizer"],
        space.suggest(second)["training.optimizer"],
    } == {"sgd", "adam"}
    assert grid_exhausted(study, space)  # both points running: nothing new to ask
    assert not grid_exhausted(study, space, count_running=False)
    safe_tell(study, first, 1.0)
    assert safe_tell(study, second, 2.0).state == TrialState.COMPLETE  # study.stop() swallowed
    assert grid_exhausted(study, space, count_running=False)


def test_grid_needs_enumerable_parameters() -> None:
    space = build_search_space([{"model_name": "resnet18", "learning_rate": "uniform(0.1, 0.2)"}])
    with pytest.raises(
        ConfigError,
        match=r"grid sampling needs choice/randint/q\* parameters; "
        r"learning_rate is uniform \(uniform\(0.1, 0.2\)\)",
    ):
        build_sampler("grid", space, seed=0)
    conditional = build_search_space(CONDITIONAL, {"training.momentum": "interval(0.8, 0.9)"})
    with pytest.raises(ConfigError, match=r"training.momentum \(sub-space 0\) is interval"):
        build_sampler("grid", conditional, seed=0)


@pytest.mark.parametrize(
    "expression",
    ["normal(0.01, 0.001)", "loguniform(-9, -4)", "randint(3)", "qloguniform(-9, -4, 0.0001)"],
)
def test_bayesian_accepts_only_azures_expressions(expression: str) -> None:
    space = build_search_space([{"learning_rate": expression}])
    kind = expression.split("(")[0]
    with pytest.raises(
        ConfigError,
        match=r"bayesian sampling needs choice, uniform and quniform "
        rf"parameters \(as in Azure\); learning_rate is {kind}",
    ):
        build_sampler("bayesian", space, seed=0)


def test_bayesian_is_multivariate_tpe_grouped_for_conditional_spaces() -> None:
    space = build_search_space(
        [
            {"model_name": "resnet18", "learning_rate": "uniform(0.01, 0.1)"},
            {"model_name": "seresnext", "learning_rate": "quniform(0.001, 0.01, 0.001)"},
        ],
        {"training.momentum": "tag(log, interval(0.5, 0.99))", "training.optimizer": "sgd,adam"},
    )
    sampler = build_sampler("bayesian", space, seed=0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert (sampler._multivariate, sampler._group, sampler._constant_liar) == (True, True, True)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(14):  # past TPE's 10 startup trials
        trial = study.ask()
        overrides = space.suggest(trial)
        study.tell(trial, float(overrides["training.learning_rate"]))
    assert len(study.trials) == 14 and study.best_value > 0
    single = build_sampler("bayesian", build_search_space(None, LRS), seed=0)
    assert single._group is False


def test_random_and_sobol_samplers_are_seeded() -> None:
    space = build_search_space(
        [{"learning_rate": "uniform(0.001, 0.01)", "momentum": "uniform(0.5, 0.99)"}]
    )

    def draw(rule: str, seed: int) -> list[dict]:
        study = optuna.create_study(sampler=build_sampler("random", space, seed=seed, rule=rule))
        out = []
        for _ in range(8):
            trial = study.ask()
            out.append(space.suggest(trial))
            study.tell(trial, 0.0)
        return out

    assert isinstance(build_sampler("random", space, seed=1), optuna.samplers.RandomSampler)
    assert isinstance(
        build_sampler("random", space, seed=1, rule="sobol"), optuna.samplers.QMCSampler
    )
    for rule in ("random", "sobol"):
        first = draw(rule, 7)
        assert first == draw(rule, 7) and first != draw(rule, 8)
        assert all(0.001 <= float(o["training.learning_rate"]) <= 0.01 for o in first)
    assert len({o["training.learning_rate"] for o in draw("sobol", 7)}) == 8


def test_unknown_algorithm_and_rule() -> None:
    space = build_search_space(None)
    with pytest.raises(ConfigError, match="sweeper.sampling_algorithm='hyperband' is invalid"):
        build_sampler("hyperband", space, seed=None)
    with pytest.raises(
        ConfigError, match="sweeper.rule='halton' is invalid: expected one of random, sobol"
    ):
        build_sampler("random", space, seed=None, rule="halton")

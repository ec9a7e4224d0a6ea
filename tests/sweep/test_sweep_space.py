"""Search spaces: Azure expressions (dict and string forms) and Hydra sweeps as Optuna suggestions."""

from __future__ import annotations

import math
import statistics
from statistics import NormalDist
from typing import Any

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from visionauto.__main__ import CONF_DIR
from visionauto.config import to_objects
from visionauto.config.store import register_configs
from visionauto.errors import ConfigError, ModelError
from visionauto.sweep.expressions import format_value
from visionauto.sweep.hydra_syntax import parse_hydra_param
from visionauto.sweep.space import SearchSpace, azure_key_to_override, build_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[dict, dict, dict]]:
    """``n`` random points: (overrides, trial params, trial distributions)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((space.suggest(trial), trial.params, trial.distributions))
    return out


E = math.exp
# (key, Azure dict form, the same as a REST string, expected distribution, check of sampled values)
AZURE_CASES: list[tuple[str, Any, str, Any, Any]] = [
    (
        "optimizer",
        {"type": "choice", "values": ["sgd", "adam"]},
        "choice('sgd', 'adam')",
        CategoricalDistribution(("sgd", "adam")),
        lambda vs: set(vs) == {"sgd", "adam"},
    ),
    (
        "layers_to_freeze",
        {"type": "randint", "upper": 5},
        "randint(5)",
        IntDistribution(0, 4),
        lambda vs: set(vs) == {"0", "1", "2", "3", "4"},
    ),
    (
        "learning_rate",
        {"type": "uniform", "min_value": 0.001, "max_value": 0.01},
        "uniform(0.001, 0.01)",
        FloatDistribution(0.001, 0.01),
        lambda vs: all(0.001 <= float(v) <= 0.01 for v in vs),
    ),
    (
        "number_of_epochs",
        {"type": "quniform", "min_value": 1, "max_value": 10, "q": 3},
        "quniform(1, 10, 3)",
        IntDistribution(0, 9, step=3),
        lambda vs: set(vs) == {"0", "3", "6", "9"},
    ),
    (
        "weight_decay",
        {"type": "quniform", "min_value": 0.001, "max_value": 0.01, "q": 0.002},
        "quniform(0.001, 0.01, 0.002)",
        FloatDistribution(0.002, 0.01, step=0.002),
        lambda vs: set(vs) == {"0.002", "0.004", "0.006", "0.008", "0.01"},
    ),
    (
        "learning_rate",
        {"type": "loguniform", "min_value": -9, "max_value": -4},
        "loguniform(-9, -4)",
        FloatDistribution(E(-9), E(-4), log=True),
        lambda vs: (
            all(E(-9) <= float(v) <= E(-4) for v in vs)
            and 0.35 < sum(float(v) < E(-6.5) for v in vs) / len(vs) < 0.65
        ),
    ),  # log-uniform median
    (
        "training_batch_size",
        {"type": "qloguniform", "min_value": math.log(16), "max_value": math.log(128), "q": 16},
        f"qloguniform({math.log(16)}, {math.log(128)}, 16)",
        IntDistribution(1, 8, log=True),
        lambda vs: set(vs) <= {str(16 * k) for k in range(1, 9)} and {"16", "128"} <= set(vs),
    ),
    (
        "learning_rate",
        {"type": "normal", "mu": 10, "sigma": 2},
        "normal(10, 2)",
        FloatDistribution(1e-6, 1 - 1e-6),
        lambda vs: (
            abs(statistics.fmean(map(float, vs)) - 10) < 0.4
            and abs(statistics.stdev(map(float, vs)) - 2) < 0.4
        ),
    ),
    (
        "training_batch_size",
        {"type": "qnormal", "mu": 32, "sigma": 8, "q": 4},
        "qnormal(32, 8, 4)",
        FloatDistribution(1e-6, 1 - 1e-6),
        lambda vs: all(int(v) % 4 == 0 for v in vs),
    ),
    (
        "learning_rate",
        {"type": "lognormal", "mu": 0, "sigma": 1},
        "lognormal(0, 1)",
        FloatDistribution(1e-6, 1 - 1e-6),
        lambda vs: (
            all(float(v) > 0 for v in vs) and abs(statistics.median(map(float, vs)) - 1.0) < 0.25
        ),
    ),
    (
        "training_batch_size",
        {"type": "qlognormal", "mu": 3, "sigma": 0.5, "q": 2},
        "qlognormal(3, 0.5, 2)",
        FloatDistribution(1e-6, 1 - 1e-6),
        lambda vs: all(int(v) % 2 == 0 and int(v) >= 0 for v in vs),
    ),
]


@pytest.mark.parametrize("form", ["dict", "string"])
@pytest.mark.parametrize(
    ("key", "as_dict", "as_string", "distribution", "check"),
    AZURE_CASES,
    ids=[c[2].split("(")[0] for c in AZURE_CASES],
)
def test_azure_expression_maps_to_optuna_distribution(
    form: str, key: str, as_dict: dict, as_string: str, distribution: Any, check: Any
) -> None:
    space = build_search_space([{key: as_dict if form == "dict" else as_string}])
    points = _sample(space, 300)
    assert all(dists == {key: distribution} for _, _, dists in points)
    assert all(set(o) == {f"training.{key}"} for o, _, _ in points)
    assert check([o[f"training.{key}"] for o, _, _ in points])


def test_loguniform_bounds_are_exponents() -> None:
    param = build_search_space([{"learning_rate": "loguniform(-9, -4)"}]).subspaces[0][
        "learning_rate"
    ]
    assert (param.kind, param.low, param.high) == ("loguniform", -9.0, -4.0)
    trial = optuna.trial.FixedTrial({"learning_rate": E(-9)})
    assert build_search_space([{"learning_rate": "loguniform(-9, -4)"}]).suggest(trial) == {
        "training.learning_rate": repr(E(-9))
    }


@pytest.mark.parametrize(
    ("spec", "u", "expected"),
    [
        ("normal(10, 2)", 0.5, 10.0),
        ("normal(10, 2)", NormalDist().cdf(1.0), 12.0),
        ("qnormal(10, 2, 4)", NormalDist().cdf(1.0), 12),
        ("lognormal(0, 1)", 0.5, 1.0),
        ("lognormal(1, 0.5)", NormalDist().cdf(-2.0), math.e**0.0),
        ("qlognormal(2, 0.5, 2)", 0.5, 8),  # exp(2) = 7.39 -> round(3.69) * 2
    ],
)
def test_normal_family_maps_the_quantile_through_the_inverse_cdf(
    spec: str, u: float, expected: float
) -> None:
    space = build_search_space([{"training_batch_size": spec}])
    value = space.suggest(optuna.trial.FixedTrial({"training_batch_size": u}))
    assert float(value["training.training_batch_size"]) == pytest.approx(expected, abs=1e-9)


def test_string_forms_accept_named_arguments_and_sdk_ranges() -> None:
    space = build_search_space(
        [
            {
                "learning_rate": "uniform(min_value=0.1, max_value=0.2)",
                "number_of_epochs": "choice(range(1, 4))",
                "optimizer": " choice ( 'sgd' , \"adam\" ) ",
            }
        ]
    )
    dists = _sample(space, 1)[0][2]
    assert dists == {
        "learning_rate": FloatDistribution(0.1, 0.2),
        "number_of_epochs": CategoricalDistribution((1, 2, 3)),
        "optimizer": CategoricalDistribution(("sgd", "adam")),
    }


def test_fixed_values_are_not_suggested_but_returned() -> None:
    space = build_search_space(
        [{"model_name": "seresnext", "learning_rate": 0.02, "optimizer": "uniform"}]
    )
    overrides, params, _ = _sample(space, 1)[0]
    assert overrides == {
        "model": "seresnext",
        "training.learning_rate": "0.02",
        "training.optimizer": "uniform",
    }
    assert params == {}


@pytest.mark.parametrize(
    ("text", "distribution", "values"),
    [
        ("interval(1e-4,1e-2)", FloatDistribution(1e-4, 1e-2), None),
        ("tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True), None),
        ("tag(int, interval(1, 10))", IntDistribution(1, 10), None),
        ("tag(log, int, interval(1, 64))", IntDistribution(1, 64, log=True), None),
        ("range(5,15,5)", IntDistribution(5, 10, step=5), {"5", "10"}),
        ("range(0.1, 0.4, 0.1)", CategoricalDistribution((0.1, 0.2, 0.3)), {"0.1", "0.2", "0.3"}),
        ("sgd,adam", CategoricalDistribution(("sgd", "adam")), {"sgd", "adam"}),
        ("choice(sgd, adamw)", CategoricalDistribution(("sgd", "adamw")), {"sgd", "adamw"}),
    ],
)
def test_hydra_sweep_syntax(text: str, distribution: Any, values: set | None) -> None:
    space = build_search_space(None, {"training.momentum": text})
    points = _sample(space, 100)
    assert all(d == {"training.momentum": distribution} for _, _, d in points)
    seen = {o["training.momentum"] for o, _, _ in points}
    if values is not None:
        assert seen == values
    else:
        low, high = distribution.low, distribution.high
        assert all(low <= float(v) <= high for v in seen)


def test_hydra_plain_value_is_fixed_and_model_choice_uses_model_configs() -> None:
    space = build_search_space(
        None, {"training.optimizer": "adam", "model": "choice(resnet18, seresnext)"}
    )
    points = _sample(space, 40)
    assert {o["model"] for o, _, _ in points} == {"resnet18", "seresnext"}
    assert all(o["training.optimizer"] == "adam" and set(p) == {"model"} for o, p, _ in points)


def test_sweep_overrides_apply_to_every_subspace_and_win_over_the_same_key() -> None:
    space = build_search_space(
        [
            {"model_name": "resnet18", "learning_rate": "uniform(0.1, 0.2)"},
            {"model_name": "seresnext", "optimizer": "choice('adam')"},
        ],
        {"training.learning_rate": "interval(0.001, 0.002)"},
    )
    points = _sample(space, 60)
    assert {o["model"] for o, _, _ in points} == {"resnet18", "seresnext"}
    assert all(0.001 <= float(o["training.learning_rate"]) <= 0.002 for o, _, _ in points)
    assert space.describe() == (
        "s0: model_name=resnet18, training.learning_rate=interval(0.001, 0.002)\n"
        "s1: model_name=seresnext, optimizer=choice(adam), "
        "training.learning_rate=interval(0.001, 0.002)"
    )


def test_conditional_space_prefixes_names_per_subspace() -> None:
    space = build_search_space(
        [
            {"model_name": "resnet18", "learning_rate": "uniform(0.01, 0.02)"},
            {"model_name": "vitb16r224", "learning_rate": "uniform(0.0001, 0.001)"},
        ]
    )
    assert space.is_conditional
    for overrides, params, _ in _sample(space, 30):
        index = params["subspace"]
        assert set(params) == {"subspace", f"s{index}:learning_rate"}
        assert overrides["model"] == ("resnet18", "vitb16r224")[index]


def test_azure_key_to_override() -> None:
    assert azure_key_to_override("model_name", "seresnext") == {"model": "seresnext"}
    assert azure_key_to_override("model_name", "convnext_atto") == {
        "model": "timm",
        "model.name": "convnext_atto",
    }
    assert azure_key_to_override("learning_rate", 0.003) == {"training.learning_rate": "0.003"}
    assert azure_key_to_override("nesterov", 1) == {"training.nesterov": "true"}
    assert azure_key_to_override("training_batch_size", 32.0) == {
        "training.training_batch_size": "32"
    }
    assert azure_key_to_override("learning_rate", "0.01") == {"training.learning_rate": "0.01"}
    assert azure_key_to_override("number_of_epochs", "15") == {"training.number_of_epochs": "15"}
    assert azure_key_to_override("optimizer", "adam") == {"training.optimizer": "adam"}
    with pytest.raises(
        ConfigError,
        match="unknown search-space parameter 'learnin_rate'. Did you mean learning_rate",
    ):
        azure_key_to_override("learnin_rate", 0.1)


def test_suggested_overrides_compose_with_the_real_configs() -> None:
    space = build_search_space(
        [
            {
                "model_name": "convnext_atto",
                "nesterov": "choice(0, 1)",
                "training_batch_size": "quniform(8, 40, 16)",
            },
            {
                "model_name": {"type": "choice", "values": ["resnet18", "efficientnet_lite0"]},
                "learning_rate": "loguniform(-9, -4)",
                "optimizer": "choice('sgd', 'adamw')",
            },
        ]
    )
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for overrides, _, _ in _sample(space, 12):
            cfg = compose("config", overrides=[f"{k}={v}" for k, v in overrides.items()])
            cfg.output_dir = None
            root = to_objects(cfg)
            assert root.model.name == overrides.get("model.name", overrides["model"])


def test_params_for_inverts_suggest() -> None:
    space = build_search_space(
        [
            {
                "model_name": "convnext_atto",
                "training_batch_size": "qloguniform(2.7, 4.2, 8)",
                "layers_to_freeze": "randint(3)",
            },
            {
                "model_name": "choice('resnet18', 'seresnext')",
                "nesterov": "choice(0, 1)",
                "learning_rate": "normal(0.01, 0.001)",
                "weight_decay": "quniform(0, 0.01, 0.002)",
            },
        ],
        {"training.number_of_epochs": "range(5, 20, 5)"},
    )
    for overrides, params, _ in _sample(space, 40):
        inverted = space.params_for(overrides)
        assert inverted.keys() == params.keys()
        for name, value in params.items():  # floats of the normal family go through the CDF
            assert inverted[name] == (pytest.approx(value) if isinstance(value, float) else value)
    with pytest.raises(ConfigError, match="are not a point of the search space"):
        space.params_for({"model": "resnet18", "training.number_of_epochs": "7"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "gaussian", "mu": 0},
            "unknown expression type 'gaussian'; expected one of choice",
        ),
        (
            {"type": "uniform", "min_value": 1},
            r"uniform takes min_value, max_value \(missing max_val",
        ),
        ({"type": "uniform", "min": 0, "max_value": 1}, r"\(missing min_value\)"),
        ({"type": "randint", "upper": 5, "lower": 1}, r"randint takes upper \(unexpected lower\)"),
        ({"min_value": 1}, "a mapping needs a 'type' key"),
        ("uniform(0.01, 0.001)", "min_value=0.01 is larger than max_value=0.001"),
        ("uniform(0.001", r"lacks its closing '\)'"),
        ("uniform(0.001, x)", "cannot read the expression 'uniform\\(0.001, x\\)'"),
        ("uniform(1, 2, 3)", "has 3 arguments; uniform takes 2: min_value, max_value"),
        ("uniform('a', 1)", "min_value='a' must be a number"),
        ("randint(0)", r"randint upper=0 must be an integer >= 1"),
        ("normal(0, -1)", "sigma=-1 must be > 0"),
        ("quniform(1, 10, 0)", "q=0 must be > 0"),
        ("choice()", "choice needs a non-empty list of values"),
        ("choice([1, 2], [3])", r"the value \[1, 2\] is a list"),
        ("loguniform(0.0001, 1000)", "bounds are exponents"),
        ("qloguniform(-5, -4, 1)", "gives no positive multiple of q"),
        ([0.1, 0.2], r"a list is not a search expression; write \{type: choice"),
    ],
)
def test_bad_azure_expressions_fail_with_location(spec: Any, message: str) -> None:
    with pytest.raises(
        ConfigError, match=r"sweeper\.search_space\[0\]\.learning_rate: .*" + message
    ):
        build_search_space([{"learning_rate": spec}])


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            {"training.learnin_rate": "interval(0.1, 0.2)"},
            ConfigError,
            "unknown training parameter 'learnin_rate'. Did you mean training.learning_rate",
        ),
        (
            {"model": "choice(resnet18, seresnxt)"},
            ConfigError,
            "no model config 'seresnxt'. Did you mean seresnext",
        ),
        (
            {"model.name": "choice(convnext_atto, not_a_model_xyz)"},
            ModelError,
            "Sweep override model.name: Unknown model name 'not_a_model_xyz'",
        ),
        (
            {"training.learning_rate": "interval(1e-2, 1e-4)"},
            ConfigError,
            "the start 0.01 is larger than the end 0.0001",
        ),
        (
            {"training.learning_rate": "tag(log, interval(0, 1))"},
            ConfigError,
            "a log interval needs a start > 0",
        ),
        ({"training.learning_rate": "tag(fast, interval(0, 1))"}, ConfigError, "unknown tag"),
        (
            {"training.learning_rate": "interval(1,"},
            ConfigError,
            r"training.learning_rate=interval\(1,: not a valid Hydra sweep",
        ),
        ({"model": "glob(*)"}, ConfigError, "Glob sweeps are not supported"),
    ],
)
def test_bad_hydra_sweeps_fail(overrides: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build_search_space(None, overrides)


def test_bad_keys_and_models_in_azure_space() -> None:
    with pytest.raises(
        ConfigError,
        match=r"sweeper.search_space\[1\].learnin_rate: unknown "
        "search-space parameter 'learnin_rate'. Did you mean",
    ):
        build_search_space([{"learning_rate": 0.1}, {"learnin_rate": 0.1}])
    with pytest.raises(
        ModelError,
        match=r"sweeper.search_space\[0\].model_name: Unknown model "
        "name 'seresnxt'. Did you mean: seresnext",
    ):
        build_search_space([{"model_name": {"type": "choice", "values": ["seresnxt"]}}])
    with pytest.raises(ConfigError, match=r"sweeper.search_space\[0\] must map parameter names"):
        build_search_space(["learning_rate"])


@pytest.mark.parametrize("value", ["seresnext", "a b", "it's", "3x2", "true", "a,b", "x=1"])
def test_format_value_round_trips_through_hydra(value: str) -> None:
    assert parse_hydra_param("training.optimizer", format_value(value)).values == (value,)


def test_grid_size_and_discreteness() -> None:
    space = build_search_space(
        [
            {"model_name": "resnet18", "layers_to_freeze": "choice(0, 1)"},
            {"model_name": "seresnext", "training_batch_size": "quniform(8, 40, 16)"},
        ],
        {"training.learning_rate": "choice(0.001, 0.01, 0.1)"},
    )
    assert space.is_discrete and space.grid_size() == 2 * 3 + 3 * 3
    assert build_search_space([{"learning_rate": "uniform(0, 1)"}]).grid_size() is None
    assert build_search_space(None).grid_size() == 1

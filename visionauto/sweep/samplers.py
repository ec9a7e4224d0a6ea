"""Azure's sampling algorithms (``sweeper.sampling_algorithm``, spec §5.2) as Optuna samplers.

- ``random``: :class:`~optuna.samplers.RandomSampler`; ``rule="sobol"`` uses a scrambled Sobol
  sequence (:class:`~optuna.samplers.QMCSampler`).
- ``grid``: every point once. One sub-space: :class:`~optuna.samplers.GridSampler` over the
  product of the value lists; a conditional space: :class:`~optuna.samplers.BruteForceSampler`,
  which enumerates the define-by-run tree (each sub-space's own product). Only enumerable
  parameters are allowed (choice, randint, quniform, qloguniform, Hydra ranges/int intervals).
- ``bayesian``: multivariate TPE with ``constant_liar`` (running trials count as pending, which
  matters with concurrent trials) and ``group=True`` for conditional spaces. As in Azure, only
  choice, uniform and quniform (and Hydra's choice/range/interval) are accepted.

In ask-and-tell mode both grid samplers call ``study.stop()`` from ``study.tell`` once the grid is
used up, which raises ``RuntimeError`` outside ``study.optimize`` (the trial is still recorded):
tell through :func:`safe_tell` and check :func:`grid_exhausted` before asking a new point.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from visionauto.errors import ConfigError
from visionauto.sweep.space import SearchSpace

ALGORITHMS = ("random", "grid", "bayesian")
RULES = ("random", "sobol")
# Azure's Bayesian sampling takes choice, uniform and quniform; Hydra's sweeps map onto those.
BAYESIAN_KINDS = ("fixed", "choice", "uniform", "quniform", "interval", "int")


def build_sampler(
    algorithm: str, space: SearchSpace, *, seed: int | None, rule: str = "random"
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of an Azure sampling algorithm, checked against the space.

    Args:
        algorithm: ``random``, ``grid`` or ``bayesian``.
        space: the sweep's search space (checked: grid needs enumerable parameters, bayesian
            Azure's accepted expressions).
        seed: seed of the sampler (None: random).
        rule: ``random`` sampling only: ``random`` or ``sobol``.

    Raises:
        ConfigError: unknown algorithm or rule, or a parameter the algorithm cannot sample.
    """
    algorithm = algorithm.strip().lower()
    # BruteForce, QMC and TPE's multivariate/group options warn "experimental" on creation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if algorithm == "random":
            return _random_sampler(rule, seed)
        if algorithm == "grid":
            _check_kinds(
                space,
                "grid",
                ("fixed", "choice", "randint", "quniform", "qloguniform", "int"),
                "choice/randint/q* parameters",
            )
            if space.is_conditional:
                return optuna.samplers.BruteForceSampler(seed=seed)
            return optuna.samplers.GridSampler(space.grid_values(), seed=seed)
        if algorithm == "bayesian":
            _check_kinds(
                space,
                "bayesian",
                BAYESIAN_KINDS,
                "choice, uniform and quniform parameters (as in Azure)",
            )
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=space.is_conditional, constant_liar=True
            )
    raise ConfigError(
        f"sweeper.sampling_algorithm={algorithm!r} is invalid: expected one of "
        f"{', '.join(ALGORITHMS)}."
    )


def _random_sampler(rule: str, seed: int | None) -> optuna.samplers.BaseSampler:
    rule = rule.strip().lower()
    if rule == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if rule == "sobol":
        # Scrambled: an unscrambled Sobol sequence starts at the lower corner of the space.
        return optuna.samplers.QMCSampler(
            qmc_type="sobol",
            scramble=True,
            seed=seed,
            warn_independent_sampling=False,
            warn_asynchronous_seeding=False,
        )
    raise ConfigError(
        f"sweeper.rule={rule!r} is invalid: expected one of {', '.join(RULES)} "
        "(random sampling only)."
    )


def _check_kinds(space: SearchSpace, algorithm: str, allowed: tuple[str, ...], what: str) -> None:
    for index, name, param in space.items():
        if param.kind not in allowed:
            where = f"{name} (sub-space {index})" if space.is_conditional else name
            fix = (
                "make it a choice(...) or use random/bayesian sampling"
                if algorithm == "grid"
                else "use random sampling, or write it as choice/uniform/quniform "
                "(on the command line also tag(log, interval(a, b)))"
            )
            raise ConfigError(
                f"{algorithm} sampling needs {what}; {where} is {param.kind} "
                f"({param.describe()}). Fix: {fix}."
            )


def grid_exhausted(study: optuna.Study, space: SearchSpace, *, count_running: bool = True) -> bool:
    """Whether every grid point has been tried (or is running, with ``count_running``).

    Counts distinct parameter sets among the study's trials, so it works for ``GridSampler`` and
    ``BruteForceSampler`` alike; the study must have been sampled from ``space`` only. Check it
    before asking for a new point: past the end both samplers repeat points. Queued trials
    (``enqueue_trial``, e.g. retries) are not new points and are not counted.
    """
    size = space.grid_size()
    if size is None:
        return False
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    if count_running:
        states += (TrialState.RUNNING,)
    seen = {
        tuple(sorted(t.params.items(), key=lambda kv: kv[0]))
        for t in study.get_trials(deepcopy=False, states=states)
    }
    return len(seen) >= size


def safe_tell(
    study: optuna.Study,
    trial: optuna.trial.Trial | int,
    values: Any = None,
    state: TrialState | None = None,
) -> FrozenTrial:
    """``study.tell`` that ignores the grid samplers' ``study.stop()`` outside ``optimize``.

    The trial's result is stored before the sampler's ``after_trial`` raises, so swallowing that
    one error loses nothing. Returns the told trial.
    """
    try:
        return study.tell(trial, values, state=state)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
    number = trial if isinstance(trial, int) else trial.number
    return study.get_trials(deepcopy=False)[number]

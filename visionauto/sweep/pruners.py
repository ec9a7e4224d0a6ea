"""Azure's early-termination policies (``sweeper.early_termination``, spec §5.3) as Optuna pruners.

Optuna's own pruners compare a trial only with COMPLETE trials, so with concurrent trials nothing
is cut until trials finish. These pruners, like Azure, compare with every trial that reported:
RUNNING, COMPLETE and PRUNED ones (FAILED trials are ignored: a crash says nothing about the
configuration's learning curve).

Steps and intervals, precisely. A trial reports its primary metric once per validation with
``trial.report(value, step)``, ``step = 0, 1, 2, ...`` (the evaluation index). Azure counts these
reports as *intervals*; report number ``n = step + 1``. A policy is applied after report ``n``
when ``n % evaluation_interval == 0`` and ``n >= delay_evaluation`` ("the policy applies at every
multiple of evaluation_interval that is greater than or equal to delay_evaluation"). So
``interval=2, delay=6`` checks after reports 6, 8, 10, ... (steps 5, 7, 9, ...), and
``interval=1, delay=5`` after reports 5, 6, 7, ... ("starting at evaluation interval 5").
At other steps ``should_prune()`` is False.

The direction comes from ``study.direction`` (or the ``direction`` argument). Intermediate values
that are NaN count as the worst possible value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from visionauto.config.schema import EarlyTerminationConfig
from visionauto.errors import ConfigError

SEEN_STATES = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


class _IntervalPolicy(BasePruner):
    """Shared part: when a policy applies, who it compares with, and the direction."""

    def __init__(
        self, evaluation_interval: int = 1, delay_evaluation: int = 0, direction: str | None = None
    ) -> None:
        if evaluation_interval < 1:
            raise ConfigError(
                f"sweeper.early_termination.evaluation_interval="
                f"{evaluation_interval} is invalid: expected an integer >= 1."
            )
        if delay_evaluation < 0:
            raise ConfigError(
                f"sweeper.early_termination.delay_evaluation={delay_evaluation} "
                "is invalid: expected an integer >= 0."
            )
        if direction not in (None, "maximize", "minimize"):
            raise ConfigError(f"direction={direction!r} is invalid: expected maximize or minimize.")
        self.evaluation_interval = evaluation_interval
        self.delay_evaluation = delay_evaluation
        self.direction = direction

    def applies_at(self, step: int) -> bool:
        """Whether the policy is applied after the report of ``step`` (0-based)."""
        n = step + 1
        return n % self.evaluation_interval == 0 and n >= self.delay_evaluation

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or not self.applies_at(step):
            return False
        return self._prune_at(study, trial, step)

    def _prune_at(self, study: optuna.Study, trial: FrozenTrial, step: int) -> bool:
        raise NotImplementedError

    def _maximize(self, study: optuna.Study) -> bool:
        if self.direction is not None:
            return self.direction == "maximize"
        return study.direction == StudyDirection.MAXIMIZE

    @staticmethod
    def _others(
        study: optuna.Study, trial: FrozenTrial, states: tuple[TrialState, ...] = SEEN_STATES
    ) -> list[FrozenTrial]:
        return [
            t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number
        ]


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def best_so_far(trial: FrozenTrial, step: int, maximize: bool) -> float | None:
    """The best intermediate value of ``trial`` at steps ``<= step`` (None: none or all NaN)."""
    values = _finite(v for s, v in trial.intermediate_values.items() if s <= step)
    if not values:
        return None
    return max(values) if maximize else min(values)


class BanditPruner(_IntervalPolicy):
    """Azure's bandit policy: stop a trial whose best value so far is outside the slack of the
    best value any trial reached at the same step or earlier.

    Maximize: prune if ``best_self < best / (1 + slack_factor)`` or
    ``best_self < best - slack_amount`` (best 0.8, factor 0.2: cut below 0.667). Minimize,
    mirrored: prune if ``best_self > best * (1 + slack_factor)`` or ``best_self > best +
    slack_amount``. ``best`` is over every RUNNING/COMPLETE/PRUNED trial (this one included)
    and their values at steps ``<=`` the current one.

    Args:
        slack_factor: relative slack; give exactly one of ``slack_factor`` and ``slack_amount``.
        slack_amount: absolute slack.
        evaluation_interval: apply after every this many reports (see the module doc).
        delay_evaluation: first report number at which the policy may apply.
        direction: ``maximize``/``minimize``; None reads ``study.direction``.
    """

    def __init__(
        self,
        slack_factor: float | None = None,
        slack_amount: float | None = None,
        evaluation_interval: int = 1,
        delay_evaluation: int = 0,
        direction: str | None = None,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation, direction)
        if (slack_factor is None) == (slack_amount is None):
            raise ConfigError(
                "sweeper.early_termination.type=bandit needs exactly one of "
                "slack_factor or slack_amount."
            )
        for key, value in (("slack_factor", slack_factor), ("slack_amount", slack_amount)):
            if value is not None and not value >= 0:
                raise ConfigError(
                    f"sweeper.early_termination.{key}={value} is invalid: expected a number >= 0."
                )
        self.slack_factor = slack_factor
        self.slack_amount = slack_amount

    def _prune_at(self, study: optuna.Study, trial: FrozenTrial, step: int) -> bool:
        maximize = self._maximize(study)
        own = best_so_far(trial, step, maximize)
        bests = _finite(
            b
            for t in self._others(study, trial)
            if (b := best_so_far(t, step, maximize)) is not None
        )
        if own is None:  # only NaN so far: worse than any finite value
            return bool(bests)
        best = max([own, *bests]) if maximize else min([own, *bests])
        return own < self.threshold(best) if maximize else own > self.threshold(best, False)

    def threshold(self, best: float, maximize: bool = True) -> float:
        """The cut-off value: trials whose best is worse than this are stopped."""
        if self.slack_factor is not None:
            return best / (1 + self.slack_factor) if maximize else best * (1 + self.slack_factor)
        assert self.slack_amount is not None
        return best - self.slack_amount if maximize else best + self.slack_amount


class MedianStoppingPruner(_IntervalPolicy):
    """Azure's median stopping policy: stop a trial whose best value so far is worse than the
    median of the other trials' running averages at this step.

    A trial's running average at step ``s`` is the mean of its values at steps ``<= s``; only
    trials that reported step ``s`` take part (RUNNING, COMPLETE or PRUNED, not this one). With
    no such trial nothing is stopped. Worse means strictly lower (maximize) / higher (minimize).

    Args:
        evaluation_interval: apply after every this many reports (see the module doc).
        delay_evaluation: first report number at which the policy may apply.
        direction: ``maximize``/``minimize``; None reads ``study.direction``.
    """

    def _prune_at(self, study: optuna.Study, trial: FrozenTrial, step: int) -> bool:
        maximize = self._maximize(study)
        averages = []
        for other in self._others(study, trial):
            if step not in other.intermediate_values:
                continue
            values = _finite(v for s, v in other.intermediate_values.items() if s <= step)
            if values:
                averages.append(statistics.fmean(values))
        if not averages:
            return False
        median = statistics.median(averages)
        own = best_so_far(trial, step, maximize)
        if own is None:
            return True
        return own < median if maximize else own > median


class TruncationSelectionPruner(_IntervalPolicy):
    """Azure's truncation selection: at each applied step, stop the trials whose value at that
    step is among the lowest ``truncation_percentage`` % of all trials' values at that step.

    The pool is every trial that reported this step (RUNNING, COMPLETE, PRUNED; only RUNNING ones
    with ``exclude_finished_jobs``), this one included: ``n`` trials. The ``floor(n * pct / 100)``
    worst are cut: this trial is stopped when fewer than that many trials are strictly worse than
    it (so trials tied at the cut line are all stopped). With ``n * pct < 100`` nothing is cut.

    Args:
        truncation_percentage: integer in [1, 99].
        evaluation_interval: apply after every this many reports (see the module doc).
        delay_evaluation: first report number at which the policy may apply.
        exclude_finished_jobs: rank only against trials still running.
        direction: ``maximize``/``minimize``; None reads ``study.direction``.
    """

    def __init__(
        self,
        truncation_percentage: int,
        evaluation_interval: int = 1,
        delay_evaluation: int = 0,
        exclude_finished_jobs: bool = False,
        direction: str | None = None,
    ) -> None:
        super().__init__(evaluation_interval, delay_evaluation, direction)
        if not (isinstance(truncation_percentage, int) and 1 <= truncation_percentage <= 99):
            raise ConfigError(
                f"sweeper.early_termination.truncation_percentage="
                f"{truncation_percentage!r} is invalid: expected an integer in "
                "[1, 99]."
            )
        self.truncation_percentage = truncation_percentage
        self.exclude_finished_jobs = exclude_finished_jobs

    def _prune_at(self, study: optuna.Study, trial: FrozenTrial, step: int) -> bool:
        sign = 1.0 if self._maximize(study) else -1.0
        states = (TrialState.RUNNING,) if self.exclude_finished_jobs else SEEN_STATES
        pool = [
            t.intermediate_values[step]
            for t in self._others(study, trial, states)
            if step in t.intermediate_values
        ]
        n_cut = (len(pool) + 1) * self.truncation_percentage // 100
        if n_cut == 0:
            return False

        def goodness(value: float) -> float:
            return -math.inf if math.isnan(value) else sign * value

        own = goodness(trial.intermediate_values[step])
        worse = sum(1 for value in pool if goodness(value) < own)
        return worse < n_cut


def build_pruner(cfg: EarlyTerminationConfig) -> BasePruner | None:
    """The pruner of ``sweeper.early_termination``; None for ``type: none``.

    Pass the same pruner to ``optuna.load_study`` in every process that calls
    ``trial.should_prune()``: Optuna does not store the pruner with the study.

    Raises:
        ConfigError: an unknown type or invalid knobs.
    """
    common = {
        "evaluation_interval": cfg.evaluation_interval,
        "delay_evaluation": cfg.delay_evaluation,
    }
    if cfg.type == "none":
        return None
    if cfg.type == "bandit":
        return BanditPruner(slack_factor=cfg.slack_factor, slack_amount=cfg.slack_amount, **common)
    if cfg.type == "median_stopping":
        return MedianStoppingPruner(**common)
    if cfg.type == "truncation_selection":
        if cfg.truncation_percentage is None:
            raise ConfigError(
                "sweeper.early_termination.type=truncation_selection needs "
                "truncation_percentage (an integer in [1, 99])."
            )
        return TruncationSelectionPruner(
            cfg.truncation_percentage, exclude_finished_jobs=cfg.exclude_finished_jobs, **common
        )
    raise ConfigError(
        f"sweeper.early_termination.type={cfg.type!r} is invalid: expected none, "
        "bandit, median_stopping or truncation_selection."
    )

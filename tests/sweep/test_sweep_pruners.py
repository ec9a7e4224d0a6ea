"""Early-termination policies on hand-made learning curves: exactly which trial stops, and when.

Each scenario plays trials one after another in an in-memory study: a trial reports its curve
(step 0, 1, ...) and is told PRUNED at the first step where ``should_prune()`` is True, else
COMPLETE; ``running=True`` leaves it RUNNING (never told), like a concurrent trial.
"""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.pruners import BasePruner
from optuna.trial import TrialState

from visionauto.config.schema import EarlyTerminationConfig
from visionauto.errors import ConfigError
from visionauto.sweep.pruners import (
    BanditPruner,
    MedianStoppingPruner,
    TruncationSelectionPruner,
    build_pruner,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)


class Play:
    """An in-memory study driven by hand-made curves."""

    def __init__(self, pruner: BasePruner, direction: str = "maximize") -> None:
        self.study = optuna.create_study(direction=direction, pruner=pruner)

    def run(self, curve: list[float], *, running: bool = False) -> int | None:
        """Report ``curve``; return the step at which the trial was pruned (None: not pruned)."""
        trial = self.study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
            if trial.should_prune():
                self.study.tell(trial, state=TrialState.PRUNED)
                return step
        if not running:
            self.study.tell(trial, curve[-1])
        return None


def test_bandit_slack_factor_cuts_below_best_over_one_plus_factor() -> None:
    play = Play(BanditPruner(slack_factor=0.2))
    assert play.run([0.5, 0.8, 0.8]) is None  # leader A
    # Step 1: best so far over all trials = 0.8 -> cut below 0.8 / 1.2 = 0.6667.
    assert play.run([0.6, 0.66, 0.9]) == 1
    assert play.run([0.58, 0.67, 0.5]) is None  # its best (0.67) stays above the cut
    # Step 0 compares with values at step 0 only: 0.55 >= 0.6 / 1.2 survives, though A's later
    # 0.8 would have cut it.
    assert play.run([0.55]) is None
    # The best at step 0 (0.6) belongs to the pruned trial: pruned trials count (else the cut
    # would be 0.58 / 1.2 = 0.483).
    assert play.run([0.49]) == 0
    assert [t.state for t in play.study.trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    ]


def test_bandit_compares_with_running_trials() -> None:
    with_running = Play(BanditPruner(slack_factor=0.2))
    assert with_running.run([0.9], running=True) is None
    assert with_running.run([0.7, 0.7]) == 0  # best at step 0 is the running trial's 0.9
    alone = Play(BanditPruner(slack_factor=0.2))
    assert alone.run([0.7, 0.7]) is None
    # Optuna's own pruners see only COMPLETE trials: a running leader changes nothing there.
    builtin = Play(optuna.pruners.PercentilePruner(25.0, n_startup_trials=0))
    assert builtin.run([0.9], running=True) is None
    assert builtin.run([0.1, 0.1]) is None


def test_bandit_slack_amount_and_minimize_mirror() -> None:
    play = Play(BanditPruner(slack_amount=0.1))
    assert play.run([0.8, 0.9]) is None
    assert play.run([0.75, 0.79]) == 1  # step 1: best 0.9, cut below 0.8
    assert play.run([0.75, 0.81]) is None
    loss = Play(BanditPruner(slack_factor=0.5), direction="minimize")
    assert loss.run([0.4, 0.2]) is None
    assert loss.run([0.5, 0.31]) == 1  # best loss 0.2 -> cut above 0.2 * 1.5 = 0.3
    assert loss.run([0.5, 0.29]) is None
    assert loss.run([0.61]) == 0  # step 0: best 0.4 -> cut above 0.6


def test_bandit_nan_curve_is_the_worst() -> None:
    play = Play(BanditPruner(slack_factor=0.2))
    assert play.run([0.5, 0.5]) is None
    assert play.run([math.nan, 0.7]) == 0


@pytest.mark.parametrize(
    ("interval", "delay", "pruned_at"),
    [
        (1, 0, 0),
        (1, 1, 0),
        (1, 5, 4),
        (2, 0, 1),
        (2, 3, 3),
        (2, 4, 3),
        (2, 6, 5),
        (3, 4, 5),
    ],
)
def test_policies_apply_at_multiples_of_the_interval_from_the_delay_on(
    interval: int, delay: int, pruned_at: int
) -> None:
    """Report number n = step + 1; applied when n % interval == 0 and n >= delay."""
    policies = [
        BanditPruner(slack_factor=0.2, evaluation_interval=interval, delay_evaluation=delay),
        MedianStoppingPruner(evaluation_interval=interval, delay_evaluation=delay),
        TruncationSelectionPruner(50, evaluation_interval=interval, delay_evaluation=delay),
    ]
    for pruner in policies:
        play = Play(pruner)
        assert play.run([1.0] * 10) is None
        assert play.run([0.1] * 10) == pruned_at, type(pruner).__name__
        expected = [s for s in range(10) if (s + 1) % interval == 0 and s + 1 >= delay]
        assert [s for s in range(10) if pruner.applies_at(s)] == expected


def test_median_stopping_compares_best_so_far_with_median_of_running_averages() -> None:
    def scenario(with_running: bool) -> list[int | None]:
        play = Play(MedianStoppingPruner())
        results = [
            play.run([0.2, 0.4, 0.6]),  # A: running averages 0.2, 0.3, 0.4
            play.run([0.5, 0.5, 0.5]),
        ]  # B: 0.5, 0.5, 0.5
        if with_running:
            results.append(play.run([0.4, 0.6], running=True))  # C: 0.4, 0.5
        return results + [
            play.run([0.45, 0.46, 0.9]),  # D
            play.run([0.55, 0.4, 0.3]),  # E
            play.run([0.47, 0.47]),
        ]  # F

    # D, step 1: best 0.46 < median(A 0.3, B 0.5, C 0.5) = 0.5. E, step 1: its value 0.4 is
    # below the median but its best 0.55 is not; step 2: only A and B reached it (median 0.45).
    # F, step 1: best 0.47 < median(0.3, 0.5, 0.5, D 0.455, E 0.475) = 0.475.
    assert scenario(with_running=True) == [None, None, None, 1, None, 1]
    # Without the running C, D survives step 1 (median(0.3, 0.5) = 0.4) and F falls at step 0
    # (median(A 0.2, B 0.5, D 0.45, E 0.55) = 0.475 > 0.47).
    assert scenario(with_running=False) == [None, None, None, None, 0]


def test_median_stopping_needs_other_trials_at_the_step() -> None:
    play = Play(MedianStoppingPruner(delay_evaluation=3))
    assert play.run([0.1, 0.1, 0.1, 0.1]) is None  # alone: nothing to compare with
    assert play.run([0.9, 0.9]) is None  # shorter curve: never reaches the delay
    # Step 2 (report 3): median of running averages of trials with a step 2 = 0.1.
    assert play.run([0.05, 0.05, 0.05]) == 2


def test_median_stopping_minimize() -> None:
    play = Play(MedianStoppingPruner(), direction="minimize")
    assert play.run([1.0, 0.8]) is None
    assert play.run([1.2, 1.0]) == 0  # best 1.2 > median 1.0
    assert play.run([0.9, 0.95]) is None


def test_truncation_selection_cuts_the_lowest_percentage_at_each_step() -> None:
    play = Play(TruncationSelectionPruner(25))
    assert play.run([0.9, 0.9]) is None  # A
    assert play.run([0.8, 0.85]) is None  # B: 2 trials, floor(2 * 25%) = 0 cut
    assert play.run([0.7, 0.6], running=True) is None  # C: 3 trials, 0 cut
    assert play.run([0.6]) == 0  # D: 4 trials -> 1 cut, and D is the lowest
    # E: at step 0, 5 trials -> 1 cut; D (pruned) still ranks below E. At step 1 the pool is
    # A 0.9, B 0.85, C 0.6 and E: 1 cut, C is lower than E.
    assert play.run([0.65, 0.61]) is None
    # G at step 1: pool A, B, C (0.6), E (0.61), G -> 1 cut: G 0.59 is the lowest.
    assert play.run([0.95, 0.59]) == 1


def test_truncation_selection_exclude_finished_jobs() -> None:
    def scenario(exclude: bool) -> int | None:
        play = Play(TruncationSelectionPruner(50, exclude_finished_jobs=exclude))
        assert play.run([0.7], running=True) is None  # C: running, worse than G
        assert play.run([0.9]) is None  # A: finished, better than G (pool C, A: C is cut)
        assert play.run([0.8]) is None  # B: finished, better than G
        return play.run([0.72])  # G

    assert scenario(exclude=False) == 0  # pool C, A, B, G: 2 cut, only C is below G
    assert scenario(exclude=True) is None  # pool C, G: 1 cut, C


def test_truncation_selection_minimize_and_ties() -> None:
    play = Play(TruncationSelectionPruner(50), direction="minimize")
    assert play.run([0.3]) is None
    assert play.run([0.5]) == 0  # pool 2, 1 cut: the higher loss
    tie = Play(TruncationSelectionPruner(50))
    assert tie.run([0.5], running=True) is None
    assert tie.run([0.5]) == 0  # tied at the cut line: stopped too


def test_build_pruner_from_config() -> None:
    assert build_pruner(EarlyTerminationConfig()) is None
    bandit = build_pruner(
        EarlyTerminationConfig(
            type="bandit", slack_factor=0.2, evaluation_interval=2, delay_evaluation=6
        )
    )
    assert isinstance(bandit, BanditPruner)
    assert (
        bandit.slack_factor,
        bandit.slack_amount,
        bandit.evaluation_interval,
        bandit.delay_evaluation,
    ) == (0.2, None, 2, 6)
    assert bandit.threshold(0.8) == pytest.approx(0.8 / 1.2)
    median = build_pruner(EarlyTerminationConfig(type="median_stopping", delay_evaluation=5))
    assert isinstance(median, MedianStoppingPruner) and median.delay_evaluation == 5
    trunc = build_pruner(
        EarlyTerminationConfig(
            type="truncation_selection", truncation_percentage=20, exclude_finished_jobs=True
        )
    )
    assert isinstance(trunc, TruncationSelectionPruner)
    assert (trunc.truncation_percentage, trunc.exclude_finished_jobs) == (20, True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BanditPruner(), "needs exactly one of slack_factor or slack_amount"),
        (lambda: BanditPruner(slack_factor=0.1, slack_amount=0.1), "needs exactly one of"),
        (lambda: BanditPruner(slack_factor=-0.1), "slack_factor=-0.1 is invalid"),
        (lambda: TruncationSelectionPruner(0), "truncation_percentage=0 is invalid"),
        (lambda: MedianStoppingPruner(evaluation_interval=0), "evaluation_interval=0 is invalid"),
        (lambda: MedianStoppingPruner(delay_evaluation=-1), "delay_evaluation=-1 is invalid"),
    ],
)
def test_invalid_policy_knobs(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]

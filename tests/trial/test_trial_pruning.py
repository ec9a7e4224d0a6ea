"""The trial side of pruning: report to the shared study, stop when pruned, write status.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from visionauto.config.schema import EarlyTerminationConfig, RootConfig, SweeperConfig
from visionauto.sweep.study import open_storage
from visionauto.trial.pruning import StudyReporter
from visionauto.trial.status import STOP_FILE, read_status, study_env

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """A journal study with one finished trial (0.9 at every step) and one running trial."""
    spec = str(tmp_path / "optuna_journal.log")
    study = optuna.create_study(storage=open_storage(spec), study_name="s", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={0: 0.9, 1: 0.9}))
    trial = study.ask()
    for key, value in study_env(spec, "s", trial._trial_id, trial.number).items():
        monkeypatch.setenv(key, value)
    return study, trial


def _cfg(**early) -> RootConfig:  # noqa: ANN003
    policy = EarlyTerminationConfig(**early) if early else EarlyTerminationConfig()
    return RootConfig(sweeper=SweeperConfig(early_termination=policy))


def _trainer() -> SimpleNamespace:
    return SimpleNamespace(is_global_zero=True, world_size=1, should_stop=False)


def test_not_started_by_a_sweep_means_no_reporter(tmp_path: Path) -> None:
    assert StudyReporter.from_env(_cfg(), tmp_path) is None


def test_bandit_prunes_a_lagging_trial_and_says_so(shared, tmp_path: Path) -> None:  # noqa: ANN001
    study, trial = shared
    reporter = StudyReporter.from_env(_cfg(type="bandit", slack_factor=0.2), tmp_path)
    trainer = _trainer()
    reporter.setup(trainer, None, "fit")
    reporter(0, {"accuracy": 0.8, "loss": 1.0})  # 0.8 >= 0.9 / 1.2 = 0.75: keeps going
    assert not trainer.should_stop
    reporter(1, {"accuracy": 0.7})  # best so far 0.8 is still inside the slack
    assert not trainer.should_stop
    reporter.cfg = _cfg(type="bandit", slack_amount=0.05)  # a fresh process with a tighter slack
    reporter._trial = None
    reporter(2, {"accuracy": 0.6})  # best so far 0.8 < 0.9 - 0.05
    assert trainer.should_stop and reporter.pruned
    frozen = study.trials[trial.number]
    assert frozen.intermediate_values == {0: 0.8, 1: 0.7, 2: 0.6}
    reporter.finish({"primary_metric_value": 0.8, "epochs_run": 3}, "run123")
    assert read_status(tmp_path) == {
        "state": "pruned",
        "last_value": 0.6,
        "step": 2,
        "value": 0.8,
        "epochs_run": 3,
        "mlflow_run_id": "run123",
        "stopped_by_sweeper": False,
    }


def test_without_a_policy_the_trial_completes(shared, tmp_path: Path) -> None:  # noqa: ANN001
    study, _ = shared
    for _ in range(5):  # enough finished trials for Optuna's default MedianPruner to cut
        study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={0: 0.9}))
    reporter = StudyReporter.from_env(_cfg(), tmp_path)
    trainer = _trainer()
    reporter.setup(trainer, None, "fit")
    reporter(0, {"accuracy": 0.1})
    assert not trainer.should_stop
    reporter.finish({"primary_metric_value": 0.1, "epochs_run": 1}, None)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "complete" and status["value"] == 0.1


def test_stop_file_makes_the_trial_finish(shared, tmp_path: Path) -> None:  # noqa: ANN001
    reporter = StudyReporter.from_env(_cfg(), tmp_path)
    trainer = _trainer()
    reporter.on_train_batch_end(trainer, None, None, None, 0)
    assert not trainer.should_stop
    (tmp_path / STOP_FILE).touch()
    reporter._next_stop_check = 0.0
    reporter.on_train_batch_end(trainer, None, None, None, 1)
    assert trainer.should_stop and reporter.stopped_by_sweeper

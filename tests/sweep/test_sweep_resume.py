"""A sweep end to end, then resumed: outputs contract, killed-sweep recovery, no overshoot.

(That a spent budget starts nothing is checked without training in test_sweep_runner.py.)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from tests.sweep.sweep_helpers import make_data, sweep
from visionauto.sweep.study import default_study_name, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]
optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = "training.learning_rate=interval(0.001,0.1)"


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(
        study_name=default_study_name(sweep_dir),
        storage=open_storage(str(sweep_dir / "optuna_journal.log")),
    )


def _children(tmp_path: Path, parent_tag: str) -> tuple[object, list]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("visionauto")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("visionauto.sweep_dir") == parent_tag]
    assert len(parents) == 1
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


def test_sweep_outputs_then_resume_after_a_kill(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    sweep_dir = tmp_path / "sw"
    args = [SPACE, "sweeper.seed=0", "limits.max_concurrent_trials=2"]

    # 1. Two trials at once into a fresh sweep folder.
    proc = sweep(data, sweep_dir, "limits.max_trials=2", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[sweep] starting sweep in" in proc.stdout
    assert (
        "[sweep] 2/2 done (complete 2, pruned 0, failed 0) | running 0 | best accuracy"
        in proc.stdout
    )
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    assert list(board.columns) == [
        "rank",
        "trial",
        "state",
        "model_name",
        "learning_rate",
        "accuracy",
        "epochs",
        "seconds",
    ]
    assert board["rank"].tolist() == [1, 2] and set(board["trial"]) == {0, 1}
    assert (board["state"] == "complete").all() and (board["epochs"] == 2).all()
    assert board["accuracy"].is_monotonic_decreasing
    best = json.loads((sweep_dir / "best" / "trial.json").read_text())
    assert best["trial"] == board["trial"][0]
    assert json.loads((sweep_dir / "best" / "metrics.json").read_text())[
        "primary_metric_value"
    ] == pytest.approx(board["accuracy"][0])
    for path in (
        "best/model/MLmodel",
        "best/model/settings.json",
        "best/config.yaml",
        "plots/optimization_history.png",
        "plots/param_importances.png",
        "sweep.json",
        "data/train.jsonl",
        "validation_report.txt",
        "trial_000/trial.log",
        "trial_001/status.json",
        "trial_001/model/MLmodel",
    ):
        assert (sweep_dir / path).is_file(), path
    cfg = yaml.safe_load((sweep_dir / "trial_001" / "config.yaml").read_text())
    assert cfg["data"]["prepared"] is True
    assert cfg["data"]["train"] == str(sweep_dir / "data" / "train.jsonl")
    assert cfg["output_dir"] == str(sweep_dir / "trial_001")
    assert cfg["trainer"]["num_threads"] >= 1 and cfg["trainer"]["max_time"].startswith("06:23:")
    assert float(cfg["training"]["learning_rate"]) == pytest.approx(
        float(board.set_index("trial").loc[1, "learning_rate"])
    )
    parent, kids = _children(tmp_path, str(sweep_dir))
    assert len(kids) == 2
    assert parent.data.tags["automl_best_child_run_id"] in {k.info.run_id for k in kids}

    # 2. Simulate a sweep killed while a trial ran: a RUNNING trial whose sweeper is gone.
    study = _study(sweep_dir)
    dead = study.ask({"training.learning_rate": optuna.distributions.FloatDistribution(0.001, 0.1)})
    study._storage.set_trial_user_attr(dead._trial_id, "worker", f"{socket.gethostname()}:99999999")
    before = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}

    # Rerunning with max_trials=3: the dead trial fails, is retried once, and that is trial 3.
    args.append("tracking.enabled=false")  # (MLflow was checked above; this saves time)
    proc = sweep(data, sweep_dir, "limits.max_trials=3", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[sweep] resuming sweep in" in proc.stdout
    trials = _study(sweep_dir).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    assert {t.number: t.value for t in trials[:2]} == before  # never started over
    assert trials[2].user_attrs["stale"] is True
    assert trials[3].user_attrs["retry_of"] == 2 and trials[3].params == dead.params
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    assert board["state"].tolist() == ["complete"] * 3 + ["failed"]
    assert "the sweep was stopped while this trial ran" in board["note"].iloc[-1]

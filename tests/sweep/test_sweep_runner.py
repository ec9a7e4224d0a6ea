"""The async trial pool, driven by fake trials (tiny Python processes, no training)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from visionauto.errors import ConfigError
from visionauto.sweep import study as st
from visionauto.sweep.orchestrate import hide_password
from visionauto.sweep.runner import SweepLimits, TrialLaunch, TrialPool
from visionauto.sweep.trials import slot_resources, trial_max_time

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A fake trial: sleeps, then writes metrics.json (value = its number / 10) and exits 0.
SLEEPER = """
import json, pathlib, sys, time
d = pathlib.Path(sys.argv[1]); time.sleep(float(sys.argv[2]))
(d / "metrics.json").write_text(json.dumps({"primary_metric_value": int(sys.argv[3]) / 10}))
"""
# Runs until the sweeper's stop file appears (or forever with "ignore"), then finishes cleanly.
STOPPABLE = """
import json, pathlib, sys, time
d = pathlib.Path(sys.argv[1])
while sys.argv[2] == "ignore" or not (d / "stop_requested").exists():
    time.sleep(0.05)
(d / "metrics.json").write_text(json.dumps({"primary_metric_value": 0.5}))
"""


def _study() -> optuna.Study:
    return optuna.create_study(direction="maximize")


def _propose(trial: optuna.Trial) -> dict[str, str]:
    return {"training.learning_rate": str(trial.suggest_float("lr", 1e-4, 1e-1, log=True))}


def _preparer(root: Path, script: str, args_of):  # noqa: ANN001, ANN202
    def prepare(number: int, overrides: dict, slot: int, seconds_left: float) -> TrialLaunch:
        trial_dir = root / f"trial_{number:03d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", script, str(trial_dir), *map(str, args_of(number))]
        return TrialLaunch(trial_dir, cmd, {}, model_name="fake")

    return prepare


def _pool(
    study: optuna.Study,
    prepare,
    *,
    max_trials: int,
    concurrent: int = 2,  # noqa: ANN001
    timeout: float = 600.0,
    grace: float = 30.0,
    propose=_propose,  # noqa: ANN001
    lines: list[str] | None = None,
) -> TrialPool:
    out = lines if lines is not None else []
    return TrialPool(
        study,
        propose=propose,
        prepare=prepare,
        limits=SweepLimits(max_trials, concurrent, timeout, grace),
        primary_metric="accuracy",
        echo=out.append,
    )


def test_next_trial_starts_as_soon_as_a_slot_frees(tmp_path: Path) -> None:
    durations = {0: 2.0, 1: 0.3, 2: 0.3, 3: 0.3}
    study = _study()
    stats = _pool(
        study, _preparer(tmp_path, SLEEPER, lambda n: (durations[n], n)), max_trials=4
    ).run()
    spans = {n: (start, end) for n, _slot, start, end in stats.timeline}
    # Trials 1, 2, 3 run one after another in the second slot while trial 0 still runs.
    for prev, nxt in ((1, 2), (2, 3)):
        assert spans[nxt][0] - spans[prev][1] < 0.25, spans
    assert spans[3][1] < spans[0][1]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert [t.value for t in study.trials] == [0.0, 0.1, 0.2, 0.3]
    assert all(t.user_attrs["worker"] == st.worker_id() for t in study.trials)
    assert study.trials[2].user_attrs["overrides"]["training.learning_rate"]


def test_batch_mode_waits_for_the_slowest_trial(tmp_path: Path) -> None:
    durations = {0: 1.0, 1: 0.2, 2: 0.2, 3: 0.2}
    pool = _pool(_study(), _preparer(tmp_path, SLEEPER, lambda n: (durations[n], n)), max_trials=4)
    pool.batch = True
    spans = {n: (s, e) for n, _slot, s, e in pool.run().timeline}
    assert spans[2][0] >= spans[0][1] - 0.01  # the second batch waited for trial 0


def test_failed_and_pruned_trials_are_recorded_and_the_study_goes_on(tmp_path: Path) -> None:
    script = """
import json, pathlib, sys
d = pathlib.Path(sys.argv[1]); n = int(sys.argv[2])
if n == 0:
    print("Traceback ...\\nRuntimeError: CUDA out of memory. Tried to allocate 2 GiB")
    sys.exit(1)
if n == 1:
    (d / "status.json").write_text(json.dumps({"state": "pruned", "last_value": 0.25,
                                                "step": 2, "epochs_run": 3}))
(d / "metrics.json").write_text(json.dumps({"primary_metric_value": 0.75}))
"""

    def propose(trial: optuna.Trial) -> dict[str, str]:
        trial.report(0.25, 2)  # what a real trial reports through the shared storage
        return _propose(trial)

    study = _study()
    lines: list[str] = []
    _pool(
        study,
        _preparer(tmp_path, script, lambda n: (n,)),
        max_trials=3,
        concurrent=1,
        propose=propose,
        lines=lines,
    ).run()
    failed, pruned, complete = study.trials
    assert failed.state == TrialState.FAIL
    reason = failed.user_attrs["fail_reason"]
    assert reason.startswith("exit code 1 (out of memory); see ")
    assert "RuntimeError: CUDA out of memory" in reason
    assert (tmp_path / "trial_000" / "trial.log").read_text().startswith("Traceback")
    assert (pruned.state, pruned.value, pruned.user_attrs["epochs_run"]) == (
        TrialState.PRUNED,
        0.25,
        3,
    )
    assert (complete.state, complete.value) == (TrialState.COMPLETE, 0.75)
    assert any(
        "trial 0 failed: exit code 1 (out of memory): RuntimeError: CUDA out of memory" in ln
        for ln in lines
    )
    assert any("trial 1 pruned after evaluation 3 (accuracy=0.2500)" in ln for ln in lines)
    assert lines[-1].startswith(
        "[sweep] 3/3 done (complete 1, pruned 1, failed 1) | running 0 "
        "| best accuracy 0.7500 (trial 2)"
    )


def test_an_invalid_trial_config_fails_that_trial_only(tmp_path: Path) -> None:
    inner = _preparer(tmp_path, SLEEPER, lambda n: (0, n))

    def prepare(number: int, overrides: dict, slot: int, seconds_left: float) -> TrialLaunch:
        if number == 0:
            raise ConfigError("model=vitb16r224 is a ViT: crops must match.")
        return inner(number, overrides, slot, seconds_left)

    study = _study()
    _pool(study, prepare, max_trials=2).run()
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["fail_reason"] == (
        "invalid trial config: model=vitb16r224 is a ViT: crops must match."
    )


def test_budget_counts_trials_already_in_storage(tmp_path: Path) -> None:
    study = _study()
    for value in (0.1, 0.2):
        study.add_trial(optuna.trial.create_trial(value=value))
    _pool(study, _preparer(tmp_path, SLEEPER, lambda n: (0, n)), max_trials=3).run()
    assert len(study.trials) == 3 and study.trials[2].state == TrialState.COMPLETE
    # The same budget again: it is spent, nothing starts (a rerun never overshoots).
    stats = _pool(study, _preparer(tmp_path, SLEEPER, lambda n: (0, n)), max_trials=3).run()
    assert len(study.trials) == 3 and stats.timeline == []


def test_deadline_asks_running_trials_to_finish_then_stops_stragglers(tmp_path: Path) -> None:
    study = _study()
    lines: list[str] = []
    mode = {0: "stop", 1: "ignore"}
    stats = _pool(
        study,
        _preparer(tmp_path, STOPPABLE, lambda n: (mode[n],)),
        max_trials=10,
        timeout=1.0,
        grace=1.0,
        lines=lines,
    ).run()
    assert stats.hit_deadline and len(study.trials) == 2  # nothing started after the deadline
    polite, straggler = study.trials
    assert (polite.state, polite.value) == (TrialState.COMPLETE, 0.5)
    assert straggler.state == TrialState.FAIL
    assert straggler.user_attrs["fail_reason"].startswith("terminated after the time limit")
    assert any("asking 2 running trial(s) to finish" in ln for ln in lines)


def test_stale_running_trials_fail_and_are_retried_once(tmp_path: Path) -> None:
    study = optuna.create_study(
        storage=st.open_storage(str(tmp_path / "j.log")), study_name="s", direction="maximize"
    )
    here = socket.gethostname()
    dead = study.ask({"lr": optuna.distributions.FloatDistribution(0.001, 0.1)})
    study._storage.set_trial_user_attr(dead._trial_id, "worker", f"{here}:99999999")
    study._storage.set_trial_user_attr(dead._trial_id, "overrides", {"training.lr": "0.01"})
    remote = study.ask()
    study._storage.set_trial_user_attr(remote._trial_id, "worker", "another-machine:12")
    assert st.recover_stale_trials(study) == [dead.number]
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["stale"] is True
    assert trials[1].state == TrialState.RUNNING  # another machine's trial is left alone
    waiting = trials[2]
    assert waiting.state == TrialState.WAITING
    assert waiting.user_attrs == {"overrides": {"training.lr": "0.01"}, "retry_of": 0}
    assert st.budget_used(study) == 1  # the stale failure does not use up the budget
    retry = study.ask()
    assert retry.params == {} and retry.number == 2
    assert retry.suggest_float("lr", 0.001, 0.1) == dead.params["lr"]
    study._storage.set_trial_user_attr(retry._trial_id, "worker", f"{here}:99999999")
    assert st.recover_stale_trials(study) == [2]
    assert not st.has_waiting(study)  # a retry of a retry is not queued again


def test_slot_resources_split_the_machine() -> None:
    assert slot_resources(0, 2, cpus=2, gpus=[]) == {
        "threads": 1,
        "workers": 0,
        "cuda_visible_devices": None,
    }
    assert slot_resources(1, 2, cpus=16, gpus=[]) == {
        "threads": 6,
        "workers": 2,
        "cuda_visible_devices": None,
    }
    assert slot_resources(0, 4, cpus=2, gpus=[])["threads"] == 1
    assert slot_resources(1, 2, cpus=16, gpus=["0", "1", "2", "3"])["cuda_visible_devices"] == "2,3"
    assert slot_resources(1, 2, cpus=16, gpus=["5", "7"]) == {
        "threads": 1,
        "workers": 7,
        "cuda_visible_devices": "7",
    }
    assert [
        slot_resources(s, 3, cpus=6, gpus=["0", "1"])["cuda_visible_devices"] for s in range(3)
    ] == ["0", "1", "0"]


def test_trial_max_time_and_password_hiding() -> None:
    assert trial_max_time(None, 90061.7) == "01:01:01:01"
    assert trial_max_time("00:00:10:00", 3600) == "00:00:10:00"
    assert trial_max_time(None, 0.2) == "00:00:00:01"
    assert hide_password("postgresql://bob:s3cret@127.0.0.1:5432/db") == (
        "postgresql://bob:***@127.0.0.1:5432/db"
    )


def test_journal_and_default_study_name(tmp_path: Path) -> None:
    spec = st.storage_spec(tmp_path / "sw", None)
    assert spec == str((tmp_path / "sw" / "optuna_journal.log").resolve())
    assert st.storage_spec(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
    name = st.default_study_name(tmp_path / "sw")
    assert name.startswith("visionauto-sw-") and name == st.default_study_name(tmp_path / "sw")
    study = st.create_or_load_study(
        spec, name, sampler=optuna.samplers.RandomSampler(), pruner=None
    )
    study.add_trial(optuna.trial.create_trial(value=0.5))
    again = st.create_or_load_study(
        spec, name, sampler=optuna.samplers.RandomSampler(), pruner=None
    )
    assert [t.value for t in again.trials] == [0.5]
    assert json.loads(json.dumps(st.trial_overrides(again.trials[0]))) == {}


def test_a_space_the_sampler_cannot_draw_from_stops_the_sweep(tmp_path: Path) -> None:
    from visionauto.sweep.study import SweepError

    def propose(trial: optuna.Trial) -> dict[str, str]:
        if trial.number == 1:
            trial.suggest_categorical("lr", ["a", "b"])  # same name as trial 0, other kind
        return _propose(trial)

    study = _study()
    pool = _pool(
        study, _preparer(tmp_path, SLEEPER, lambda n: (30, n)), max_trials=3, propose=propose
    )
    start = time.monotonic()
    with pytest.raises(SweepError, match="cannot sample a trial from the search space: "):
        pool.run()
    assert time.monotonic() - start < 15  # the 30 s trial 0 was stopped, not waited for
    assert study.trials[1].state == TrialState.FAIL
    assert study.trials[0].state == TrialState.RUNNING  # retried by the next run of the sweep


def test_sigterm_stops_the_running_trials_too(tmp_path: Path) -> None:
    import os
    import signal
    import threading

    from visionauto.sweep.runner import SweepTerminated, _raise_terminated

    pool = _pool(_study(), _preparer(tmp_path, SLEEPER, lambda n: (30, n)), max_trials=2)
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    start = time.monotonic()
    with pytest.raises(SweepTerminated):
        pool.run()
    assert time.monotonic() - start < 15
    assert len(pool._running) == 2
    assert all(run.process.poll() is not None for run in pool._running.values())
    assert signal.getsignal(signal.SIGTERM) is not _raise_terminated  # handler restored

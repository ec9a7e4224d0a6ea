"""A sweep whose study lives in a real PostgreSQL server (the many-machines storage), with
trials that report to it and get pruned by the bandit policy (early termination end to end).

The test starts its own throw-away server from the Debian ``postgresql`` binaries on a free
loopback port (as the ``postgres`` user when run as root: the server refuses root).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from tests.sweep.sweep_helpers import make_data, sweep
from visionauto.sweep.study import default_study_name, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="visionauto-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    data, port = root / "data", _free_port()
    subprocess.run(
        _as_server_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        _as_server_user(
            [
                postgres,
                "-D",
                str(data),
                "-k",
                str(root),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=port, user="postgres", dbname="postgres"
                )
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE studies")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/studies"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_sweep_on_postgresql_prunes_lagging_trials(postgres_url: str, tmp_path: Path) -> None:
    data = make_data(tmp_path)
    sweep_dir = tmp_path / "sw"
    storage = open_storage(postgres_url)
    # A reference trial in the study (as if run earlier, on another machine) whose curve is
    # above any accuracy: with bandit slack 0, each real trial is behind it at its first
    # evaluation, so it is pruned there, stops after one epoch and still writes its outputs.
    study = optuna.create_study(
        storage=storage, direction="maximize", study_name=default_study_name(sweep_dir)
    )
    study.add_trial(
        optuna.trial.create_trial(
            value=1.5,
            intermediate_values={i: 1.5 for i in range(5)},
            user_attrs={"model_name": "reference"},
        )
    )
    proc = sweep(
        data,
        sweep_dir,
        f"sweeper.storage={postgres_url}",
        "limits.max_trials=3",
        "limits.max_concurrent_trials=2",
        "training.optimizer=sgd,adam",
        "training.number_of_epochs=3",
        "training.early_stopping=false",
        "sweeper.early_termination.type=bandit",
        "sweeper.early_termination.slack_amount=0",
        "tracking.enabled=false",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"in {postgres_url}" in proc.stdout
    assert not (sweep_dir / "optuna_journal.log").exists()
    trials = optuna.load_study(study_name=default_study_name(sweep_dir), storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 2
    for trial in trials[1:]:
        assert list(trial.intermediate_values) == [0] and trial.value <= 1.0
        assert trial.user_attrs["overrides"]["training.optimizer"] in ("sgd", "adam")
        trial_dir = Path(trial.user_attrs["trial_dir"])
        status = json.loads((trial_dir / "status.json").read_text())
        assert (status["state"], status["step"], status["epochs_run"]) == ("pruned", 0, 1)
        assert json.loads((trial_dir / "metrics.json").read_text())["epochs_run"] == 1
        assert (trial_dir / "model" / "MLmodel").is_file()
        assert f"trial {trial.number} pruned after evaluation 1" in proc.stdout
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    assert board["state"].tolist() == ["complete", "pruned", "pruned"]
    assert board["model_name"].tolist() == ["reference", "test_resnet", "test_resnet"]
    assert board["rank"].tolist() == [1, 2, 3] and board["epochs"].tolist()[1:] == [1, 1]
    assert "best/ not written" in proc.stdout  # the best trial ran elsewhere

"""RunTracker writes runs, params, metrics and artifacts to a SQLite store under the output root."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from visionauto.errors import ConfigError
from visionauto.tracking import (
    RunTracker,
    default_tracking_uri,
    flatten_params,
    resolve_tracking_uri,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output root (one mlflow.db) for the module: creating the schema takes seconds."""
    return tmp_path_factory.mktemp("outputs")


def test_default_and_resolved_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path.resolve()
    assert default_tracking_uri(tmp_path) == f"sqlite:///{root}/mlflow.db"
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{root}/mlflow.db"
    assert resolve_tracking_uri("", tmp_path) == f"sqlite:///{root}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert (
        resolve_tracking_uri("sqlite:///runs/x.db", Path("other")) == f"sqlite:///{root}/runs/x.db"
    )
    assert resolve_tracking_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "/data/mlruns"])
def test_file_store_is_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"tracking.uri='{uri}' is MLflow's file store, which "
        r"MLflow 3 refuses\. Use a SQLite file",
    ):
        resolve_tracking_uri(uri, tmp_path)


def test_flatten_params() -> None:
    flat = flatten_params(
        {
            "training": {"learning_rate": 0.01, "optimizer": "sgd"},
            "model": "resnet18",
            "sizes": [1, 2],
            "empty": {},
            "long": "x" * 7000,
        }
    )
    assert {k: v for k, v in flat.items() if k != "long"} == {
        "training.learning_rate": "0.01",
        "training.optimizer": "sgd",
        "model": "resnet18",
        "sizes": "[1, 2]",
        "empty": "{}",
    }
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")


def test_run_params_metrics_artifacts_land_in_sqlite(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # nothing may be written relative to the current folder
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "settings.json").write_text("{}")
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5}')

    with RunTracker(
        uri=None,
        output_root=root,
        experiment_name="fridge",
        run_name="job",
        tags={"task": "classification"},
    ) as parent:
        with RunTracker(
            uri=None,
            output_root=root,
            experiment_name="fridge",
            run_name="trial_0",
            parent_run_id=parent.run_id,
        ) as child:
            child.log_params({"training": {"learning_rate": 0.01}, "model": "resnet18"})
            child.log_metrics(
                {"accuracy": 0.5, "loss": float("nan"), "bad": float("inf"), "name": "x"}, step=1
            )
            child.log_metrics({"accuracy": 0.75}, step=2)
            child.log_artifacts(model_dir, artifact_path="model")
            child.log_artifact(tmp_path / "metrics.json")
        parent.set_tags({"best_child_run_id": child.run_id})

    assert (root / "mlflow.db").is_file()
    assert not (workdir / "mlruns").exists() and not list(workdir.iterdir())
    client = MlflowClient(tracking_uri=f"sqlite:///{root.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("fridge")
    assert experiment.artifact_location == (root.resolve() / "mlartifacts").as_uri()
    run = client.get_run(child.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "trial_0"
    assert run.data.params == {"training.learning_rate": "0.01", "model": "resnet18"}
    assert run.data.metrics == {"accuracy": 0.75}
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    history = client.get_metric_history(child.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    artifacts = sorted(a.path for a in client.list_artifacts(child.run_id))
    assert artifacts == ["metrics.json", "model"]
    assert [a.path for a in client.list_artifacts(child.run_id, "model")] == ["model/settings.json"]
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(
        root.resolve() / "mlartifacts"
    )
    parent_run = client.get_run(parent.run_id)
    assert parent_run.data.tags["task"] == "classification"
    assert parent_run.data.tags["best_child_run_id"] == child.run_id


def test_experiment_is_reused_and_failures_are_recorded(root: Path) -> None:
    first = RunTracker(uri=None, output_root=root, experiment_name="e", run_name="a")
    first.end()
    first.end("FAILED")  # a second end changes nothing
    with (
        pytest.raises(RuntimeError),
        RunTracker(uri=None, output_root=root, experiment_name="e", run_name="b") as second,
    ):
        raise RuntimeError("boom")
    assert first.experiment_id == second.experiment_id
    client = MlflowClient(tracking_uri=default_tracking_uri(root))
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert client.get_run(second.run_id).info.status == "FAILED"


def test_deleted_experiment_is_reported(root: Path) -> None:
    tracker = RunTracker(uri=None, output_root=root, experiment_name="gone", run_name="a")
    tracker.end()
    MlflowClient(tracking_uri=default_tracking_uri(root)).delete_experiment(tracker.experiment_id)
    with pytest.raises(
        ConfigError,
        match=r"MLflow experiment 'gone' in sqlite:///.* is deleted: "
        r"restore it",
    ):
        RunTracker(uri=None, output_root=root, experiment_name="gone", run_name="b")


def test_disabled_tracker_does_nothing(tmp_path: Path) -> None:
    with RunTracker(
        uri=None, output_root=tmp_path, experiment_name="e", run_name="r", enabled=False
    ) as tracker:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"m": 1.0}, step=0)
        tracker.log_artifacts(tmp_path / "missing")
        tracker.log_artifact(tmp_path / "missing.txt")
        tracker.set_tags({"t": 1})
    assert (tracker.run_id, tracker.experiment_id, tracker.enabled) == (None, None, False)
    assert list(tmp_path.iterdir()) == []

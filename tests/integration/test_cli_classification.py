"""End to end through the CLI: compose → validate data → trial subprocess → run folder."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.conftest import TINY, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METRICS_KEYS = {"task", "primary_metric", "primary_metric_value", "metrics", "model_name",
                "epochs_run", "train_seconds"}


@pytest.fixture(scope="module")
def multiclass_run(synthetic_sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    run_dir = out / "mc"
    proc = run_cli("task=classification", f"data.train={synthetic_sets['classification']}",
                   *TINY, f"hydra.run.dir={run_dir}", f"output_root={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run folder : {run_dir}" in proc.stdout
    return run_dir


def test_run_folder_follows_the_contract(multiclass_run: Path) -> None:
    metrics = json.loads((multiclass_run / "metrics.json").read_text())
    assert set(metrics) == METRICS_KEYS
    assert metrics["task"] == "classification" and metrics["primary_metric"] == "accuracy"
    assert metrics["model_name"] == "test_resnet" and metrics["epochs_run"] == 2
    assert 0.0 <= metrics["primary_metric_value"] <= 1.0
    assert metrics["primary_metric_value"] == metrics["metrics"]["accuracy"]
    for name in ("precision_score_macro", "recall_score_weighted", "f1_score_micro", "AUC_macro",
                 "average_precision_score_weighted", "train_images_per_second"):
        assert name in metrics["metrics"]
    for path in ("config.yaml", "validation_report.txt", "validation_report.json",
                 "data/train.jsonl", "data/validation.jsonl", "checkpoints/best.ckpt",
                 "plots/confusion_matrix.png", "plots/per_class_metrics.png",
                 "plots/training_curves.png", "model/MLmodel", "model/settings.json",
                 "history.csv", "per_class_metrics.json", "confusion_matrix.json"):
        assert (multiclass_run / path).is_file(), path
    assert (multiclass_run.parent / "mlflow.db").is_file()


def test_model_folder_is_an_mlflow_pyfunc_with_azure_response(multiclass_run: Path,
                                                               synthetic_sets: dict[str, Path]) -> None:
    import mlflow

    settings = json.loads((multiclass_run / "model" / "settings.json").read_text())
    assert settings["task"] == "classification"
    assert (settings["valid_resize_size"], settings["valid_crop_size"]) == (72, 64)
    first = json.loads(synthetic_sets["classification"].read_text().splitlines()[0])
    image = synthetic_sets["classification"].parent / first["image_url"]
    b64 = base64.b64encode(image.read_bytes()).decode()
    out = mlflow.pyfunc.load_model(str(multiclass_run / "model")).predict(
        pd.DataFrame({"image": [b64, b64]}))
    assert list(out.columns) == ["probs", "labels"] and len(out) == 2
    assert out["labels"][0] == settings["class_names"]
    assert sum(out["probs"][0]) == pytest.approx(1.0, abs=1e-5)


def test_trial_reruns_from_its_run_folder_without_hydra(multiclass_run: Path, tmp_path: Path) -> None:
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    (rerun / "config.yaml").write_text((multiclass_run / "config.yaml").read_text())
    proc = run_cli(str(rerun), module="visionauto.trial")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((rerun / "metrics.json").read_text())["epochs_run"] == 2


def test_incremental_training_from_a_run_folder(multiclass_run: Path,
                                                synthetic_sets: dict[str, Path],
                                                tmp_path: Path) -> None:
    proc = run_cli("task=classification", f"data.train={synthetic_sets['classification']}", *TINY,
                   f"training.checkpoint={multiclass_run}", f"hydra.run.dir={tmp_path / 'warm'}",
                   f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start from" in proc.stderr + proc.stdout


def test_incremental_training_with_other_classes_needs_new_head(multiclass_run: Path,
                                                                tmp_path: Path) -> None:
    src = (multiclass_run / "data" / "train.jsonl").read_text().splitlines()
    renamed = [json.dumps({**json.loads(ln), "label": "x_" + json.loads(ln)["label"]}) for ln in src]
    data = tmp_path / "renamed.jsonl"
    data.write_text("\n".join(renamed) + "\n")
    args = ["task=classification", f"data.train={data}", *TINY,
            f"training.checkpoint={multiclass_run}", f"output_root={tmp_path}"]
    proc = run_cli(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode == 2
    assert "Set training.checkpoint_new_head=true" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli(*args, "training.checkpoint_new_head=true", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_multilabel_end_to_end(synthetic_sets: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "ml"
    proc = run_cli("task=multilabel", f"data.train={synthetic_sets['multilabel']}", *TINY,
                   f"hydra.run.dir={run_dir}", f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["primary_metric"] == "iou"
    for name in ("iou", "iou_micro", "iou_macro", "iou_weighted", "accuracy"):
        assert 0.0 <= metrics["metrics"][name] <= 1.0
    assert not (run_dir / "confusion_matrix.json").exists()  # Azure drops it for multilabel


@pytest.mark.parametrize(("override", "message"), [
    ("training.learnin_rate=0.1", "Could not override 'training.learnin_rate'"),
    ("training.optimizer=rmsprop", "training.optimizer='rmsprop' is invalid"),
    ("model=nosuchmodel", "Could not find 'model/nosuchmodel'"),
])
def test_bad_config_exits_2_without_traceback(override: str, message: str, tmp_path: Path) -> None:
    proc = run_cli("data.train=whatever.jsonl", override, f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_train_file_exits_2(tmp_path: Path) -> None:
    proc = run_cli("task=classification", f"data.train={tmp_path / 'nope.jsonl'}", *TINY,
                   f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "Traceback" not in proc.stderr

"""The real fridge photos end to end through the converters and the CLI, and messy data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_fridge_thumbnails_train_through_the_cli(shared_data: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "fridge.jsonl"
    proc = run_cli("folder", "--images", str(shared_data / "fridgeObjects_thumbnails" / "small-150"),
                   "--label-from-filename", "--output", str(jsonl), module="visionauto.data.convert")
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    # Pretrained efficientnet_lite0 (offline ImageNet weights) at 128 px for a few epochs.
    proc = run_cli("task=classification", f"data.train={jsonl}", "model=efficientnet_lite0",
                   "training.number_of_epochs=4", "training.training_batch_size=16",
                   "training.training_crop_size=128", "training.validation_resize_size=146",
                   "training.validation_crop_size=128", "training.early_stopping=false",
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}",
                   f"output_root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    classes = json.loads((run_dir / "data" / "classes.json").read_text())
    assert classes == ["can", "carton", "milk_bottle", "water_bottle"]
    n_val = len((run_dir / "data" / "validation.jsonl").read_text().splitlines())
    assert n_val == 26  # 20% of 134, stratified
    assert metrics["primary_metric_value"] >= 0.8, metrics["metrics"]
    cm = json.loads((run_dir / "confusion_matrix.json").read_text())
    assert sum(map(sum, cm["matrix"])) == n_val


def test_messy_data_stops_with_the_report_and_exit_2(tmp_path: Path) -> None:
    from visionauto.data.synthetic import make_messy_dataset

    jsonl = make_messy_dataset(tmp_path / "messy")
    before = {p: p.read_bytes() for p in (tmp_path / "messy").rglob("*") if p.is_file()}
    run_dir = tmp_path / "run"
    proc = run_cli("task=classification", f"data.train={jsonl}", "model=efficientnet_lite0",
                   f"hydra.run.dir={run_dir}", f"output_root={tmp_path}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for expected in ("train.jsonl:19: not valid JSON", "missing.png does not exist",
                     "truncated.jpg cannot be decoded", "not_an_image.jpg cannot be decoded",
                     "train.jsonl:23: the label is empty", "data.on_invalid=drop"):
        assert expected in proc.stderr, expected
    assert "corrupt_image" in (run_dir / "validation_report.txt").read_text()
    report = json.loads((run_dir / "validation_report.json").read_text())
    assert report["n_records"] == 23 and report["n_valid"] == 18
    # nothing the user had is touched
    assert {p: p.read_bytes() for p in (tmp_path / "messy").rglob("*") if p.is_file()} == before
    assert not (run_dir / "checkpoints").exists()

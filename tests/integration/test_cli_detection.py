"""Detection and instance segmentation end to end through the CLI: train, package, score.

Tiny models from scratch on synthetic shapes (exact boxes and polygons); the numbers are not the
point here (benchmarks measure accuracy), the contracts are: metrics.json, per-label metrics,
plots, a model folder whose predictor answers in Azure's response format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ["training.number_of_epochs=2", "training.training_batch_size=4",
         "training.validation_batch_size=4", "training.number_of_workers=0",
         "trainer.enable_progress_bar=false", "model.pretrained=false", "tracking.enabled=false",
         "training.early_stopping=false"]
RCNN = ["training.min_size=64", "training.max_size=96"]


@pytest.fixture(scope="module")
def object_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from visionauto.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("objects")
    return {task: make_synthetic_dataset(root / task, task, n_images=16, image_size=64, seed=3)
            for task in ("detection", "instance_segmentation")}


def _train(tmp_path: Path, task: str, data: Path, *overrides: str) -> Path:
    run_dir = tmp_path / "run"
    result = run_cli(f"task={task}", f"data.train={data}", f"hydra.run.dir={run_dir}",
                     *SMALL, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _check_run(run_dir: Path, task: str, model: str) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["model_name"] == model
    assert metrics["primary_metric"] == "mean_average_precision"
    assert 0.0 <= metrics["primary_metric_value"] <= 1.0
    assert {"precision", "recall"} <= set(metrics["metrics"])
    per_label = json.loads((run_dir / "per_label_metrics.json").read_text())
    assert set(per_label) == {"circle", "square", "triangle"}
    assert all(set(v) >= {"average_precision", "precision", "recall"} for v in per_label.values())
    assert (run_dir / "plots" / "validation_predictions.png").stat().st_size > 0
    settings = json.loads((run_dir / "model" / "settings.json").read_text())
    assert settings["task"] == task and settings["model_name"] == model
    return settings


def _score(run_dir: Path, data: Path, **overrides: object) -> list[dict]:
    from visionauto.packaging.predictor import load_predictor

    line = json.loads(data.read_text().splitlines()[0])
    image = (data.parent / line["image_url"]).read_bytes()
    return load_predictor(run_dir).predict([image, image], overrides=overrides or None)


def _check_boxes(response: list[dict], *, polygons: bool) -> None:
    assert len(response) == 2 and response[0] == response[1]
    for entry in response[0]["boxes"]:
        assert set(entry) == {"box", "label", "score"} | ({"polygon"} if polygons else set())
        box = entry["box"]
        assert 0.0 <= box["topX"] < box["bottomX"] <= 1.0
        assert 0.0 <= box["topY"] < box["bottomY"] <= 1.0


def test_faster_rcnn_trains_packages_and_scores(tmp_path: Path, object_sets: dict) -> None:
    data = object_sets["detection"]
    run_dir = _train(tmp_path, "detection", data, "model=fasterrcnn_resnet18_fpn", *RCNN,
                     "training.validation_metric_type=coco_voc")
    settings = _check_run(run_dir, "detection", "fasterrcnn_resnet18_fpn")
    assert (settings["min_size"], settings["max_size"], settings["box_score_thresh"]) == (64, 96, 0.3)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert "coco_map" in metrics
    _check_boxes(_score(run_dir, data, box_score_threshold=0.0), polygons=False)
    # box_detections_per_image is honoured per request
    assert all(len(r["boxes"]) <= 1 for r in _score(run_dir, data, box_score_threshold=0.0,
                                                     box_detections_per_image=1))


def test_mask_rcnn_answers_with_polygons(tmp_path: Path, object_sets: dict) -> None:
    data = object_sets["instance_segmentation"]
    run_dir = _train(tmp_path, "instance_segmentation", data, "model=maskrcnn_resnet18_fpn", *RCNN)
    settings = _check_run(run_dir, "instance_segmentation", "maskrcnn_resnet18_fpn")
    assert settings["max_number_of_polygon_points"] == 100
    _check_boxes(_score(run_dir, data, box_score_threshold=0.0), polygons=True)


def test_yolov5_trains_with_mosaic(tmp_path: Path, object_sets: dict) -> None:
    data = object_sets["detection"]
    run_dir = tmp_path / "run"
    result = run_cli("task=detection", f"data.train={data}", f"hydra.run.dir={run_dir}", *SMALL,
                     "model=yolov5", "training.image_size=64", "training.model_size=small",
                     "training.layers_to_freeze=2", "training.mosaic_off_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    # The last epoch trains on whole images; the optimizer is AdamW unless the user sets one.
    assert "epoch 2: mosaic off" in result.stderr and "epoch 1: mosaic" not in result.stderr
    config = (run_dir / "config.yaml").read_text()
    assert "optimizer: adamw" in config and "learning_rate: 0.002" in config
    settings = _check_run(run_dir, "detection", "yolov5")
    assert (settings["img_size"], settings["box_score_thresh"]) == (64, 0.1)
    assert settings["model_kwargs"]["model_size"] == "small"
    _check_boxes(_score(run_dir, data, box_score_threshold=0.0), polygons=False)


def test_yolov5_on_the_offline_imagenet_backbone(tmp_path: Path, object_sets: dict) -> None:
    data = object_sets["detection"]
    run_dir = tmp_path / "run"
    result = run_cli("task=detection", f"data.train={data}", f"hydra.run.dir={run_dir}", *SMALL,
                     "model=yolov5_efficientnet_lite0", "model.pretrained=true",
                     "training.image_size=64", "training.model_size=nano")
    assert result.returncode == 0, result.stderr[-3000:]
    # Pretrained (offline ImageNet weights): the stem and stages 0-2 train frozen by default.
    assert "layers_to_freeze=4: backbone.body.conv_stem., backbone.body.bn1., " in result.stderr
    assert "layers_to_freeze: 4" in (run_dir / "config.yaml").read_text()
    assert "in eval mode" not in result.stderr  # Lightning's warning: intended here
    settings = _check_run(run_dir, "detection", "yolov5_efficientnet_lite0")
    assert (settings["img_size"], settings["box_score_thresh"]) == (64, 0.1)
    # The package rebuilds the same backbone from the model name alone.
    _check_boxes(_score(run_dir, data, box_score_threshold=0.0), polygons=False)


def test_tiling_for_yolo_or_segmentation_is_refused(tmp_path: Path, object_sets: dict) -> None:
    result = run_cli("task=instance_segmentation", f"data.train={object_sets['detection']}",
                     "training.tile_grid_size=3x2", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "training.tile_grid_size=3x2 works for task=detection" in result.stderr

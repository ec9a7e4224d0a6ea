"""Charts: each function writes a real PNG of sensible size."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from visionauto.metrics.plots import (
    plot_confusion_matrix,
    plot_per_class_metrics,
    plot_training_curves,
)


def _check_png(path: Path, min_width: int = 300) -> None:
    assert path.is_file() and path.stat().st_size > 5_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_width and image.height >= 200
        # Not a blank canvas: a chart has many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20


def test_confusion_matrix_png(tmp_path: Path) -> None:
    cm = [[5, 1, 0], [0, 7, 2], [1, 0, 4]]
    out = plot_confusion_matrix(cm, ["can", "carton", "milk_bottle"], tmp_path / "sub" / "cm.png")
    assert out == tmp_path / "sub" / "cm.png"
    _check_png(out)


def test_confusion_matrix_with_an_empty_row_and_many_classes(tmp_path: Path) -> None:
    names = [f"class_with_a_rather_long_name_{i}" for i in range(40)]
    cm = [[(i == j) * 3 for j in range(40)] for i in range(40)]
    cm[0] = [0] * 40  # a class absent from the validation set
    _check_png(plot_confusion_matrix(cm, names, tmp_path / "cm40.png"))


def test_per_class_metrics_png_with_undefined_values(tmp_path: Path) -> None:
    per_class = {
        "can": {"precision": 0.9, "recall": 0.8, "f1_score": 0.85, "support": 10.0},
        "carton": {"precision": 0.5, "recall": 1.0, "f1_score": 0.667, "support": 4.0},
        "absent": {"precision": -1.0, "recall": -1.0, "f1_score": -1.0, "support": 0.0},
    }
    _check_png(plot_per_class_metrics(per_class, tmp_path / "per_class.png"))


def test_training_curves_png_with_sparse_validation(tmp_path: Path) -> None:
    history = [
        {"epoch": 0, "train_loss": 1.2, "val_loss": 1.0, "accuracy": 0.4},
        {"epoch": 1, "train_loss": 0.9},  # evaluation_frequency=2: no validation this epoch
        {"epoch": 2, "train_loss": 0.6, "val_loss": 0.7, "accuracy": 0.7},
        {"epoch": 3, "train_loss": 0.5},
        {"epoch": 4, "train_loss": 0.4, "val_loss": 0.65, "accuracy": 0.65},
    ]
    _check_png(
        plot_training_curves(history, tmp_path / "curves.png", primary_metric="accuracy"),
        min_width=600,
    )


def test_training_curves_without_any_metric(tmp_path: Path) -> None:
    history = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "train_loss": 0.8}]
    out = plot_training_curves(history, tmp_path / "curves.png", primary_metric="iou")
    assert out.is_file()
